"""The window's state and actions: one coordinator over the queue, the batch, the export and the preview.

No widgets live here (krita-ai-diffusion's *model* layer): widgets read properties, listen to
``*_changed`` signals and call actions. Long actions are coroutines on the qasync loop that await the
engine bridge's futures; questions to the user (where to save, what to do about existing files) are
asked synchronously *before* a coroutine starts, so no modal dialog ever nests inside a running task.
One long action runs at a time (``busy``), with one Job whose Stop ends it within one step.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from PySide6.QtCore import QObject, QTimer, Signal

from engine.batch import PlannedImage
from engine.errors import ArtveilError, Cancelled
from engine.events import Progress
from engine.jobs import Job, ProtectSettings

from ..backend import EngineInfo, MemoryPlan, ModelSummary, PurifierRequest
from ..bridge import EngineBridge
from ..client import EngineClient
from ..settings import Settings
from ..signals import emit
from .batch_run import BatchRun
from .detail import DetailLevel, detail_levels, level_for
from .estimates import TimeEstimates
from .export import EXPORT_SUFFIXES, batch_options, export_items, plan_outputs
from .preview import PreviewRun, preview_key, purifier_request
from .prompts import Prompts
from .queue import ItemState, QueueItem, QueueModel, gone_item, new_items
from .tasks import Tasks
from .view import CompareViewState
from .words import one_line

HEARTBEAT_MS = 250  # the bar and the ETA move with the clock between engine reports


class Workspace(QObject):
    """The window's state and actions, between the engine bridge and the widgets."""

    busy_changed = Signal(bool)
    engine_info_changed = Signal(object)
    model_changed = Signal(object)  # ModelSummary or None
    model_status_changed = Signal(str)
    model_needed = Signal()
    batch_text_changed = Signal(str)
    summary_changed = Signal(str)
    estimate_changed = Signal()
    selection_changed = Signal(object)  # QueueItem or None
    item_updated = Signal(object)  # QueueItem
    report_changed = Signal(object)  # QueueItem whose report arrived
    problem = Signal(str)  # a one-line message for the status bar
    stopping_changed = Signal(bool)  # Stop pressed, work not ended yet
    preview_progress = Signal(object)  # PreviewStatus while a purification preview runs, None when it ends

    def __init__(self, settings: Settings, bridge: EngineBridge, prompts: Prompts | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.settings = settings
        self.bridge = bridge
        self.engine = EngineClient(bridge)  # every engine call goes through it
        self.prompts = prompts
        self.queue = QueueModel(self)
        self.view = CompareViewState(self)  # the compare view's zoom and difference toggle
        self.estimates = TimeEstimates(settings, changed=lambda: emit(self.estimate_changed),
                                       working_size=lambda: self.detail_level.working_size)
        self.engine_info: EngineInfo | None = None
        self.model: ModelSummary | None = None
        self.model_status = "No model loaded"
        self.busy = False
        self.batch_text = ""
        self.summary = ""
        self.selected: QueueItem | None = None
        self.chosen: list[QueueItem] = []  # the queue's selected rows: what Protect selected starts on
        self.stopping = False
        self._heartbeat = QTimer(self)
        self._heartbeat.setInterval(HEARTBEAT_MS)
        self._heartbeat.timeout.connect(self._tick)
        self._job = Job()  # the running action's Stop flag
        self._batch: BatchRun | None = None
        self._preview: PreviewRun | None = None
        self._memory_plan: tuple[tuple, MemoryPlan] | None = None  # (what it was asked for, the engine's answer)
        self._memory_plan_asked: tuple | None = None
        # Unexpected failures surface in the window; they are never swallowed.
        self._tasks = Tasks(on_failure=lambda exc: self.set_summary(f"Something went wrong: {one_line(exc)}"))
        self.engine.events.connect(self._on_progress)
        settings.steps_changed.connect(lambda _: emit(self.estimate_changed))
        settings.method_changed.connect(lambda _: self._on_method_changed())
        settings.detail_changed.connect(lambda _: self._on_method_changed())
        settings.strength_levels_changed.connect(lambda _: emit(self.estimate_changed))

    # ---- actions ------------------------------------------------------------------------------

    async def idle(self) -> None:
        """Wait until every action started so far (and any it started) has finished."""
        await self._tasks.idle()

    def when_idle(self, callback) -> asyncio.Future:
        """Call ``callback`` once every action running now has ended (Quit after Stop)."""
        return self._tasks.when_idle(callback)

    # ---- observable state --------------------------------------------------------------------

    @property
    def previewing(self) -> bool:
        return self._preview is not None

    def _set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            emit(self.busy_changed, busy)

    def _spawn_busy(self, work) -> asyncio.Future:
        """Run an action that makes the window busy, busy from this moment: a second click that Qt
        delivers before the task's first step then finds the window busy and starts nothing."""
        self._set_busy(True)
        self.estimates.give_way()
        return self._tasks.spawn(work)

    def set_summary(self, text: str) -> None:
        self.summary = text
        emit(self.summary_changed, text)

    def set_batch_text(self, text: str) -> None:
        self.batch_text = text
        emit(self.batch_text_changed, text)

    def _set_model_status(self, text: str) -> None:
        self.model_status = text
        emit(self.model_status_changed, text)

    def report_problem(self, text: str) -> None:
        emit(self.problem, text)

    def touch(self, item: QueueItem) -> None:
        """The item changed: its row and every view of it redraw."""
        self.queue.refresh(item)
        emit(self.item_updated, item)

    # ---- engine and model --------------------------------------------------------------------

    def start(self) -> asyncio.Future:
        """Ask the engine thread what it runs on, then load the configured model (if any)."""
        return self._tasks.spawn(self._start())

    async def _start(self) -> None:
        try:
            self.engine_info = await self.engine.engine_info()
        except ArtveilError as exc:
            self.set_summary(f"The engine could not start: {exc.message}")
            return
        self.estimates.device_name = self.engine_info.device_name
        emit(self.engine_info_changed, self.engine_info)
        if self.settings.model_source:
            await self._load_model(self.settings.model_source)
        else:
            emit(self.model_needed)

    def load_model(self, source: str) -> asyncio.Future:
        return self._spawn_busy(self._load_model(source))

    async def _load_model(self, source: str) -> bool:
        self._set_model_status(f"Loading model {source} …")
        self._set_busy(True)
        try:
            self.model = await self.engine.load_model(source)
        except ArtveilError as exc:
            self.model = None
            self._set_model_status(f"Model not loaded: {one_line(exc.message)}")
            emit(self.model_changed, None)
            return False
        finally:
            self._set_busy(False)
        self.settings.model_source = source
        self._set_model_status(self.model.name + (" (demo: no real protection)" if self.model.is_demo else ""))
        emit(self.model_changed, self.model)
        self.estimates.reload()
        if self.estimates.times is None:
            await self.estimates.measure(self.engine, self.job_settings())
        emit(self.estimate_changed)
        return True

    def _on_method_changed(self) -> None:
        self.estimates.reload()
        emit(self.estimate_changed)
        if self.estimates.times is None and self.model is not None:
            self._tasks.spawn(self.estimates.measure(self.engine, self.job_settings()))

    # ---- estimates and settings to a job -----------------------------------------------------

    @property
    def step_seconds(self) -> float | None:
        return None if self.estimates.times is None else self.estimates.times.step_s

    def _memory_plan_request(self) -> tuple[ProtectSettings, int, int]:
        """The job the memory plan is asked for: the largest waiting image (the one that needs the most), else
        one image at the working size."""
        settings = self.job_settings()
        pending = [i for i in self.queue.items if i.protected is None and not i.unreadable]
        if pending:
            h, w = max((i.pixel_size for i in pending), key=lambda hw: hw[0] * hw[1])
        else:
            h = w = settings.working_size
        return settings, h, w

    def memory_plan(self) -> MemoryPlan | None:
        """How the engine will fit the next job in memory (plan and estimated peak), or why it cannot, before
        the artist starts; None until the engine has answered (estimate_changed follows its answer)."""
        if self.model is None:
            return None
        settings, h, w = self._memory_plan_request()
        key = (self.model.source, settings.method, settings.working_size, settings.timesteps_per_step, h, w)
        if self._memory_plan is not None and self._memory_plan[0] == key:
            return self._memory_plan[1]
        if self._memory_plan_asked != key and not self.busy:  # the engine thread answers between jobs
            self._memory_plan_asked = key
            self._tasks.spawn(self._ask_memory_plan(key, settings, h, w))
        return None

    async def _ask_memory_plan(self, key: tuple, settings: ProtectSettings, h: int, w: int) -> None:
        try:
            plan = await self.engine.memory_plan(settings, h, w)
        except ArtveilError as exc:
            plan = MemoryPlan(f"memory plan not known: {one_line(exc.message)}", True)
        finally:
            if self._memory_plan_asked == key:
                self._memory_plan_asked = None
        self._memory_plan = (key, plan)
        emit(self.estimate_changed)

    def estimate_seconds(self, items: Iterable[QueueItem] | None = None, steps: int | None = None) -> float | None:
        """Seconds to protect ``items`` (default: one image at the working size) at ``steps``, whole jobs:
        set-up, optimization and saving. Files found broken when added are not counted."""
        settings = self.job_settings()
        if steps is not None:
            settings = replace(settings, steps=steps)
        sizes = None if items is None else [i.pixel_size for i in items if not i.unreadable]
        return self.estimates.seconds(sizes, settings)

    @property
    def native_size(self) -> int:
        """The side in pixels the loaded model was trained at (512 until one is loaded)."""
        return self.model.native_size if self.model is not None else 512

    @property
    def detail_levels(self) -> tuple[DetailLevel, ...]:
        """The speed/detail choices for the loaded model, fastest first."""
        return detail_levels(self.native_size)

    @property
    def detail_level(self) -> DetailLevel:
        return level_for(self.native_size, self.settings.detail)

    def estimate_for_level(self, level: DetailLevel, items: Iterable[QueueItem] | None = None) -> tuple[float | None, bool]:
        """(seconds for ``items`` at this speed/detail choice, whether a whole job here measured it)."""
        settings = replace(self.job_settings(), working_size=level.working_size)
        sizes = None if items is None else [i.pixel_size for i in items if not i.unreadable]
        _, measured = self.estimates.times_for(level.working_size)
        return self.estimates.seconds(sizes, settings), measured

    def job_settings(self) -> ProtectSettings:
        """Everything a protection job needs besides the image, from the current controls."""
        steps = int(self.settings.steps)
        return ProtectSettings(
            method=self.settings.method,
            strength_levels=float(self.settings.strength_levels),
            steps=steps,
            working_size=self.detail_level.working_size,
            # Previews every few steps keep the compare view alive without slowing short runs.
            preview_every=max(1, min(10, steps // 10)),
            # The method's objective before and after (several model passes: most of a short job's time
            # on a CPU) is for the command line's report; the window never showed it.
            measure_objective=False,
        )

    def purifier_requests(self) -> list[PurifierRequest]:
        """The chosen purifier at the chosen level: the only one the preview runs."""
        purifiers = self.engine_info.purifiers if self.engine_info else ()
        request = purifier_request(purifiers, self.settings.purifier, self.settings.purifier_level)
        return [request] if request is not None else []

    # ---- the queue ---------------------------------------------------------------------------

    def add_paths(self, paths: Iterable[str | Path]) -> int:
        """Add image files, and the images inside folders (not recursively). Returns how many."""
        added = new_items(paths, {item.path for item in self.queue.items})
        self.queue.append(added)
        self._remember_queue()
        if added:
            emit(self.estimate_changed)
            if self.selected is None:
                self.select(added[0])
        return len(added)

    def remove_items(self, items: Iterable[QueueItem]) -> int:
        removed = 0
        for item in list(items):
            if (self._batch is not None and item is self._batch.active) or item not in self.queue.items:
                continue  # the running one is stopped with Stop, not pulled from under the engine
            if self._batch is not None and item in self._batch.remaining:
                self._batch.remaining.remove(item)
            self.queue.remove(item)
            removed += 1
            if item is self.selected:
                self.select(None)
            if item in self.chosen:
                self.chosen.remove(item)
        if removed:
            self._remember_queue()
            emit(self.estimate_changed)
        return removed

    def _remember_queue(self) -> None:
        """The queue's files, in order, for the next start. A row for a file that was already gone is
        said once, not carried from session to session."""
        files = [{"path": str(i.path)} for i in self.queue.items if i.path.is_file()]
        self.settings.queue_files = json.dumps(files) if files else ""

    def restore_queue(self) -> int:
        """Put back the files the last session had queued (as waiting: results are in the output folder,
        the settings are the window's own). A file that is gone comes back as a row saying so."""
        try:
            saved = json.loads(self.settings.queue_files or "[]")
            paths = [Path(entry["path"]) for entry in saved]
        except (ValueError, TypeError, KeyError):
            self.report_problem("The last session's queue could not be read; it starts empty.")
            return 0
        known = {item.path for item in self.queue.items}
        restored: list[QueueItem] = []
        for path in paths:
            if path.is_file():
                restored += new_items([path], known | {i.path for i in restored})
            elif path not in known:
                restored.append(gone_item(path))
        self.queue.append(restored)
        self._remember_queue()
        if restored:
            emit(self.estimate_changed)
            if self.selected is None:
                self.select(next((i for i in restored if not i.unreadable), restored[0]))
        return len(restored)

    def set_chosen(self, items: Iterable[QueueItem]) -> None:
        """The rows selected in the queue (Protect selected's images); its estimate follows them."""
        self.chosen = [i for i in items if i in self.queue.items]
        emit(self.estimate_changed)

    def selected_for_protect(self) -> list[QueueItem]:
        """What Protect selected would start on: the selected rows (else the current one) that can be done."""
        chosen = self.chosen or ([self.selected] if self.selected is not None else [])
        return [i for i in chosen if i in self.queue.items and not i.unreadable]

    def select(self, item: QueueItem | None) -> None:
        if item is not self.selected:
            self.selected = item
            emit(self.selection_changed, item)

    # ---- protecting --------------------------------------------------------------------------

    def protect(self, items: Iterable[QueueItem]) -> asyncio.Future | None:
        """Protect ``items`` one after the other and save each to the output folder.

        Returns the batch task, or None when nothing was started (no model, no folder, cancelled).
        """
        # A file found unreadable when added is never started: it would only fail again and count as work.
        items = [i for i in items if i in self.queue.items and not i.unreadable]
        if self.busy or not items:
            return None
        if self.model is None:
            emit(self.model_needed)
            return None
        settings = self.job_settings()
        planned = plan_outputs(self.settings, self.prompts, items, settings)
        if planned is None:
            return None
        return self._spawn_busy(self._run_batch(items, settings, *planned))

    def protect_all(self) -> asyncio.Future | None:
        return self.protect([i for i in self.queue.items if i.state is not ItemState.DONE])

    def protectable(self) -> list[QueueItem]:
        """Images Protect all would start on (not done, not found broken when added)."""
        return [i for i in self.queue.items if i.state is not ItemState.DONE and not i.unreadable]

    def protect_selected(self, items: Iterable[QueueItem] | None = None) -> asyncio.Future | None:
        chosen = list(items) if items is not None else self.selected_for_protect()
        return self.protect(chosen)

    async def _run_batch(self, items: list[QueueItem], settings: ProtectSettings, out_dir: Path,
                         plan: list[PlannedImage], choice: str) -> None:
        """The batch runs in engine.batch on the engine thread; its events move the items (BatchRun)."""
        self._job = Job()
        self._set_busy(True)
        self.set_summary("")
        run = self._batch = BatchRun(self, items, settings)
        options = batch_options(self.settings, out_dir, on_existing=choice, load_skipped=True, plan=tuple(plan))
        stopped, problem = False, ""
        self._heartbeat.start()
        try:
            run.request_id, future = self.engine.protect_batch([item.path for item in items], settings, options,
                                                               self._job)
            stopped = (await future).stopped
        except Cancelled:
            stopped = True
        except ArtveilError as exc:  # the batch could not start (e.g. another batch writes to that folder)
            problem = one_line(exc.message)
        finally:
            self._heartbeat.stop()
            run.end()
            self._batch = None
            self._action_ended()
        if problem:
            self.set_summary(problem)
            self.report_problem(problem)
            return
        summary = run.summary(stopped)
        broken = [i.name for i in self.queue.items if i.unreadable]
        if broken:
            names = ", ".join(broken[:3]) + (" …" if len(broken) > 3 else "")
            summary += f" {len(broken)} left out: can't be read ({names})."
        self.set_summary(summary)

    # ---- Stop, and the running action's progress ----------------------------------------------

    def stop(self) -> None:
        """Stop the running job (or preview) at the end of its current step, and the rest of the batch.

        Says "Stopping…" at once: the engine ends within one optimizer or denoising step.
        """
        self._job.cancel()
        if self._batch is not None:
            self._batch.remaining.clear()
        running = (self._batch is not None and self._batch.clock is not None) or self._preview is not None
        if running and not self.stopping:
            self.stopping = True
            emit(self.stopping_changed, True)
            self.set_batch_text("Stopping…")
            if self._batch is not None:
                self._batch.mark_stopping()
            self._tick()

    def _action_ended(self) -> None:
        self.set_batch_text("")
        self._set_busy(False)
        if self.stopping:
            self.stopping = False
            emit(self.stopping_changed, False)

    def _on_progress(self, request_id: int, event) -> None:
        batch, preview = self._batch, self._preview
        if batch is not None and request_id == batch.request_id and batch.items:
            batch.on_event(event)
        elif preview is not None and request_id == preview.request_id and isinstance(event, Progress):
            if preview.begin(event.phase):
                self._tick()

    def _tick(self) -> None:
        """The heartbeat: move the running action's bar and ETA with the clock, between engine reports."""
        if self._preview is not None:
            status = self._preview.status(self.stopping)
            emit(self.preview_progress, status)
            self.set_batch_text(status.line())
        elif self._batch is not None:
            self._batch.tick()

    # ---- export ------------------------------------------------------------------------------

    def export(self, items: Iterable[QueueItem] | None = None) -> asyncio.Future | None:
        """Save protected images (again) to the output folder in the chosen format."""
        chosen = [i for i in (items if items is not None else self.queue.items) if i.protected is not None]
        if self.busy or not chosen:
            return None
        # A file this window just wrote, in the format asked for, is already the export: saving it again
        # would only offer to duplicate it.
        suffix = "." + EXPORT_SUFFIXES.get(self.settings.export_format, "png")
        written = [i for i in chosen if i.output_path is not None and i.output_path.suffix.lower() == suffix
                   and i.still_as_written() and i.output_path.parent == Path(self.settings.output_dir or "")]
        chosen = [i for i in chosen if i not in written]
        if not chosen:
            names = ", ".join(i.output_path.name for i in written[:3]) + (" …" if len(written) > 3 else "")
            self.set_summary(f"Already saved: {names}. Export saves again in another format or folder.")
            return None
        # An existing file, even this window's own earlier export, is never rewritten without asking.
        planned = plan_outputs(self.settings, self.prompts, chosen, None)
        if planned is None:
            return None
        _, plan, choice = planned
        return self._spawn_busy(self._export(chosen, plan, choice))

    async def _export(self, items: list[QueueItem], plan: list[PlannedImage], choice: str) -> None:
        self._set_busy(True)
        try:
            summary = await export_items(self.engine, items, plan, choice, self.touch)
        finally:
            self._set_busy(False)
        self.set_summary(summary)

    # ---- purification preview ----------------------------------------------------------------

    def preview_purification(self, item: QueueItem | None = None) -> asyncio.Future | None:
        item = item or self.selected
        if self.busy or item is None or item.protected is None or item.original is None:
            if item is not None and item.protected is None:
                self.report_problem("Protect this image first, then preview what a purifier leaves of it.")
            return None
        requests = self.purifier_requests()
        if not requests:
            self.report_problem("Choose a purifier to preview.")
            return None
        return self._spawn_busy(self._run_preview(item, requests[0]))

    async def _run_preview(self, item: QueueItem, request: PurifierRequest) -> None:
        key = preview_key(self.settings.model_source, request, self.estimates.device_name)
        run = self._preview = PreviewRun(item, request, self.settings.preview_times(key))
        self._set_busy(True)
        self._job = Job()  # Stop ends the preview within one denoising step
        self._heartbeat.start()
        self._tick()
        try:
            run.request_id, future = self.engine.preview_purifier(item.original, item.protected, request, self._job)
            report = await future
        except Cancelled:
            self.set_summary("Purification preview stopped.")
            return
        except ArtveilError as exc:
            self.report_problem(f"Purification preview failed: {one_line(exc.message)}")
            return
        finally:
            self._heartbeat.stop()
            self._preview = None
            emit(self.preview_progress, None)
            self._action_ended()
        self.settings.set_preview_times(key, run.learned())
        item.report, item.report_purifier = report, request.name
        emit(self.report_changed, item)

    # ---- shutdown ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop any job and the engine thread (blocks at most one optimizer step)."""
        self.stop()
        self._tasks.cancel_all()
        self.engine.shutdown()
