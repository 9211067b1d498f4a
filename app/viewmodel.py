"""Observable state and actions of the window: the queue, the batch, the model, the preview.

No widgets live here (krita-ai-diffusion's *model* layer): widgets read properties, listen to
``*_changed`` signals and call actions. Long actions are coroutines on the qasync loop that await the
engine bridge's futures; questions to the user (where to save, what to do about existing files) are
asked synchronously *before* a coroutine starts, so no modal dialog ever nests inside a running task.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QImageReader

from engine import batch
from engine.batch import BatchOptions, PlannedImage
from engine.errors import ArtveilError, Cancelled
from engine.jobs import (
    PREVIEW_PHASES, PREVIEW_SIDE, PREVIEW_STEPS, Job, ProtectProgress, ProtectResult, ProtectSettings,
)

from .backend import EngineInfo, ModelSummary, PurifierRequest
from .bridge import EngineBridge
from .progress import JobClock, JobTimes, learned_times, prior_times
from .settings import Settings
from .signals import emit

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
THUMBNAIL_PX = 160  # decoded once; big enough to stay sharp at 2x on a ~80 px tile
MEASURE_SIDE = 256  # step time is measured at this size and scaled by pixel count
HEARTBEAT_MS = 250  # the bar and the ETA move with the clock between engine reports
EXPORT_SUFFIXES = {"png": "png", "webp": "webp", "jpeg": "jpg"}
MIN_SIDE = 32  # as engine.images: smaller images are refused
MAX_PIXELS = 80_000_000
# What the preview tells the artist it does differently from a mimic's full run (engine.preview).
PREVIEW_NOTE = (f"For a quick answer the preview runs the purifier at {PREVIEW_SIDE} px with {PREVIEW_STEPS} "
                "denoising steps, smaller and shorter than a mimic's full run.")
PHASE_WORDS = {"setup": "setting up", "steps": "protecting", "saving": "saving", "stopping": "stopping…"}

# The purifier strength's three positions; each purifier declares its knob's value at each
# (engine.purify, read through Choice.levels). One without levels runs with its engine defaults.
LEVEL_NAMES = ("light", "medium", "heavy")


class ItemState(enum.Enum):
    WAITING = "waiting"
    PROTECTING = "protecting"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(eq=False)
class QueueItem:
    """One image in the queue. Pixel arrays are HxWxC uint8, as the engine returns them."""

    path: Path
    thumbnail: QImage
    state: ItemState = ItemState.WAITING
    progress: float = 0.0  # 0..1 of the whole job: set-up, optimizer steps, saving
    phase: str = ""  # "setup", "steps", "saving" or "stopping" while protecting
    error: str = ""
    note: str = ""
    original: np.ndarray | None = None
    protected: np.ndarray | None = None
    preview: np.ndarray | None = None
    icc_profile: bytes | None = None
    output_path: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    report: Any = None
    report_purifier: str = ""
    size: tuple[int, int] | None = None  # (height, width) read from the file header
    unreadable: bool = False  # found broken when added: never counted in estimates

    @property
    def counts_for_estimate(self) -> bool:
        return not self.unreadable and self.protected is None
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status_text(self) -> str:
        if self.state is ItemState.PROTECTING:
            if self.phase == "stopping":
                return "stopping…"
            return f"{PHASE_WORDS.get(self.phase, 'protecting')} {int(self.progress * 100)} %"
        if self.state is ItemState.FAILED:
            return f"failed: {self.error}"
        if self.state is ItemState.DONE:
            return "done" + (f" · {self.note}" if self.note else "")
        if self.state is ItemState.STOPPED:
            return "stopped"
        return "waiting"


def one_line(message: str, limit: int = 160) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_thumbnail(path: Path, side: int = THUMBNAIL_PX) -> QImage:
    """A small preview decoded at reduced size; a null image when Qt cannot read the file."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    size = reader.size()
    if size.isValid() and (size.width() > side or size.height() > side):
        reader.setScaledSize(size.scaled(QSize(side, side), Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    return image if not image.isNull() else QImage()


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "under a second"
    if seconds < 60:
        return f"{int(round(seconds))} s"
    if seconds < 3600:
        minutes, secs = divmod(int(round(seconds)), 60)
        return f"{minutes} min" if minutes >= 10 or secs == 0 else f"{minutes} min {secs} s"
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60} min"


def area_factor(height: int, width: int, working_size: int, large_image: str = "resize") -> float:
    """Cost of one step on this image relative to the measured MEASURE_SIDE² step."""
    pixels = height * width
    if large_image == "resize":
        scale = min(1.0, working_size / max(height, width, 1))
        pixels = pixels * scale * scale
    return max(pixels, 64 * 64) / (MEASURE_SIDE * MEASURE_SIDE)


def _percent(value: float) -> str:
    return f"{int(round(100 * max(0.0, min(1.0, value))))} %"


def survival_words(survival: float) -> str:
    if survival >= 0.7:
        return "holds up well"
    if survival >= 0.4:
        return "is weakened but still there"
    if survival >= 0.15:
        return "is mostly washed out"
    return "is removed"


def _field(obj, name, default=None):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def describe_robustness(report, chosen: str) -> str:
    """The robustness report in words an artist reads at a glance.

    survival is the fraction (0..1) of the protection's effect left after a purifier.
    """
    rows = list(_field(report, "rows", []) or [])
    row = next((r for r in rows if _field(r, "name") == chosen), rows[0] if rows else None)
    parts = []
    if row is not None:
        survival = float(_field(row, "survival", 0.0))
        parts.append(
            f"After {_field(row, 'label', chosen)}, about {_percent(survival)} of the protection survives: "
            f"it {survival_words(survival)}."
        )
    worst = _field(report, "worst")
    if isinstance(worst, (int, float)):
        worst_row = min(rows, key=lambda r: float(_field(r, "survival", 1.0)), default=None)
        worst_value = float(worst)
    else:
        worst_row = worst
        worst_value = float(_field(worst, "survival", 0.0)) if worst is not None else None
    verdict = _field(report, "verdict")
    worst_is_chosen = worst_row is not None and _field(worst_row, "name") == _field(row, "name")
    # The engine's verdict already quotes the worst number; name the purifier only when it differs.
    if worst_value is not None and len(rows) > 1 and not (verdict and worst_is_chosen):
        label = _field(worst_row, "label", "the strongest purifier") if worst_row is not None else "the strongest purifier"
        parts.append(f"Worst case of the {len(rows)} purifiers tried ({label}): {_percent(worst_value)} survives.")
    if verdict:
        parts.append(str(verdict))
    return " ".join(parts) if parts else "No purifier was run."


@dataclass(frozen=True)
class PreviewStatus:
    """Where a purification preview is: fraction 0..1, what it is doing, seconds left (None: unknown yet)."""

    fraction: float
    doing: str
    eta_s: float | None

    def line(self) -> str:
        if self.doing == "Stopping…":
            return self.doing
        left = f"about {format_duration(self.eta_s)} left" if self.eta_s is not None else "estimating the time…"
        return f"{self.doing}… {int(self.fraction * 100)} % · {left}"


class Prompts(Protocol):
    """Questions the view-model asks the user. Called synchronously, never inside a coroutine."""

    def choose_output_dir(self, current: str) -> str | None: ...

    def resolve_conflicts(self, paths: list[Path]) -> str | None:
        """'overwrite', 'keep_both' or 'skip' for files that exist already; None cancels."""

    def confirm_quit(self, doing: str) -> bool:
        """True to stop ``doing`` (e.g. "protecting 2 images") and quit; False to keep working."""


class QueueModel(QAbstractListModel):
    """The queue as a list model; the item itself is under ItemRole."""

    ItemRole = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.items: list[QueueItem] = []

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self.items)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.items):
            return None
        item = self.items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.name
        if role == Qt.ItemDataRole.DecorationRole:
            return item.thumbnail
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{item.path}\n{item.status_text}"
        if role == self.ItemRole:
            return item
        return None

    def append(self, items: list[QueueItem]) -> None:
        if not items:
            return
        start = len(self.items)
        self.beginInsertRows(QModelIndex(), start, start + len(items) - 1)
        self.items.extend(items)
        self.endInsertRows()

    def remove(self, item: QueueItem) -> None:
        row = self.items.index(item)
        self.beginRemoveRows(QModelIndex(), row, row)
        del self.items[row]
        self.endRemoveRows()

    def refresh(self, item: QueueItem) -> None:
        if item in self.items:
            index = self.index(self.items.index(item))
            emit(self.dataChanged, index, index)

    def index_of(self, item: QueueItem) -> QModelIndex:
        return self.index(self.items.index(item)) if item in self.items else QModelIndex()


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
        self.prompts = prompts
        self.queue = QueueModel(self)
        self.engine_info: EngineInfo | None = None
        self.model: ModelSummary | None = None
        self.model_status = "No model loaded"
        self.busy = False
        self.batch_text = ""
        self.summary = ""
        self.selected: QueueItem | None = None
        self._times: JobTimes | None = None  # learned on this machine, per MEASURE_SIDE² of working area
        self.stopping = False
        self._clock: JobClock | None = None
        self._preview_clock: JobClock | None = None
        self._heartbeat = QTimer(self)
        self._heartbeat.setInterval(HEARTBEAT_MS)
        self._heartbeat.timeout.connect(self._tick)
        self._cancel = Job()
        self._active_request: int | None = None
        self._active_item: QueueItem | None = None
        self._batch: tuple[int, int] = (0, 0)
        self._batch_remaining: list[QueueItem] = []
        self._batch_items: list[QueueItem] = []  # the running batch, by engine.batch's index
        self._batch_settings: ProtectSettings | None = None
        self._batch_done, self._batch_failed = 0, []
        self._tasks: set[asyncio.Future] = set()
        self._preview_request: int | None = None
        self._preview_item: QueueItem | None = None
        self._preview_known = False
        self.last_preview_seconds: float | None = None
        bridge.job_progress.connect(self._on_progress)
        bridge.job_progress.connect(self._on_preview_progress)
        settings.steps_changed.connect(lambda _: emit(self.estimate_changed))
        settings.method_changed.connect(lambda _: self._on_method_changed())
        settings.strength_levels_changed.connect(lambda _: emit(self.estimate_changed))

    # ---- tasks -------------------------------------------------------------------------------

    def _spawn(self, coro) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Future) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            # Unexpected failures surface in the window; they are never swallowed.
            log.error("window task failed", exc_info=exc)
            self._set_summary(f"Something went wrong: {one_line(exc)}")

    async def idle(self) -> None:
        """Wait until every action started so far (and any it started) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def when_idle(self, callback) -> asyncio.Future:
        """Call ``callback`` once every action running now has ended (Quit after Stop)."""
        running = list(self._tasks)

        async def wait_then_call():
            await asyncio.gather(*running, return_exceptions=True)
            callback()

        return self._spawn(wait_then_call())

    @property
    def previewing(self) -> bool:
        return self._preview_clock is not None

    def _set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            emit(self.busy_changed, busy)

    def _set_summary(self, text: str) -> None:
        self.summary = text
        emit(self.summary_changed, text)

    def _set_batch_text(self, text: str) -> None:
        self.batch_text = text
        emit(self.batch_text_changed, text)

    def _set_model_status(self, text: str) -> None:
        self.model_status = text
        emit(self.model_status_changed, text)

    # ---- engine and model --------------------------------------------------------------------

    def start(self) -> asyncio.Future:
        """Ask the engine thread what it runs on, then load the configured model (if any)."""
        return self._spawn(self._start())

    async def _start(self) -> None:
        try:
            self.engine_info = await self.bridge.call("engine_info")
        except ArtveilError as exc:
            self._set_summary(f"The engine could not start: {exc.message}")
            return
        emit(self.engine_info_changed, self.engine_info)
        if self.settings.model_source:
            await self._load_model(self.settings.model_source)
        else:
            emit(self.model_needed)

    def load_model(self, source: str) -> asyncio.Future:
        return self._spawn(self._load_model(source))

    async def _load_model(self, source: str) -> bool:
        self._set_model_status(f"Loading model {source} …")
        self._set_busy(True)
        try:
            self.model = await self.bridge.call("load_model", source)
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
        self._times = self._stored_times()
        if self._times is None:
            await self._measure_step_seconds()
        emit(self.estimate_changed)
        return True

    def _step_key(self) -> str:
        info = self.engine_info
        raw = f"{self.settings.model_source}|{self.settings.method}|{info.device_name if info else ''}"
        return hashlib.sha1(raw.encode()).hexdigest()[:16]

    def _stored_times(self) -> JobTimes | None:
        """Learned whole-job times for this model, method and device; else a prior from a stored step time."""
        key = self._step_key()
        learned = self.settings.job_times(key)
        if learned is not None:
            return learned
        step = self.settings.step_seconds(key)
        return prior_times(step) if step is not None else None

    async def _measure_step_seconds(self) -> None:
        if self.model is None:
            return
        key = self._step_key()
        try:
            seconds = await self.bridge.call("estimate_step_seconds", self.job_settings(), MEASURE_SIDE, MEASURE_SIDE)
        except ArtveilError as exc:
            log.warning("step time not measured: %s", exc.message)
            return
        if key == self._step_key():
            self.settings.set_step_seconds(key, float(seconds))
            if self.settings.job_times(key) is None:
                self._times = prior_times(float(seconds))
            emit(self.estimate_changed)

    def _on_method_changed(self) -> None:
        self._times = self._stored_times()
        emit(self.estimate_changed)
        if self._times is None and self.model is not None:
            self._spawn(self._measure_step_seconds())

    def _learn_job_times(self, clock: JobClock, shape: tuple[int, ...], settings: ProtectSettings) -> None:
        """A finished job teaches the whole-job times: set-up, each step and saving, as measured here."""
        factor = area_factor(shape[0], shape[1], settings.working_size, settings.large_image)
        measured = learned_times(clock, factor, "setup", "steps", ("saving",))
        if measured is None:
            return  # too short a run to tell the step time from the fixed costs: keep what we have
        # The first real job replaces the prior outright; later ones are averaged in (weighted to the new).
        learned = self.settings.job_times(self._step_key())
        self._times = measured if learned is None else learned.blend(measured)
        self.settings.set_job_times(self._step_key(), self._times)
        self.settings.set_step_seconds(self._step_key(), self._times.step_s)
        emit(self.estimate_changed)

    @property
    def step_seconds(self) -> float | None:
        return None if self._times is None else self._times.step_s

    @property
    def job_times(self) -> JobTimes | None:
        return self._times

    def _expected_times(self, item: QueueItem | None, settings: ProtectSettings | None = None) -> JobTimes | None:
        """Learned times scaled to this item's working area (None: not measured yet)."""
        if self._times is None:
            return None
        settings = settings or self.job_settings()
        if item is None:
            h = w = settings.working_size
        else:
            h, w = self._image_size(item)
        return self._times.scaled(area_factor(h, w, settings.working_size, settings.large_image))

    def estimate_seconds(self, items: Iterable[QueueItem] | None = None, steps: int | None = None) -> float | None:
        """Seconds to protect ``items`` (default: one image at the working size) at ``steps``, whole jobs:
        set-up, optimization and saving. Files found broken when added are not counted."""
        if self._times is None:
            return None
        steps = self.settings.steps if steps is None else steps
        settings = self.job_settings()
        if items is None:
            return self._expected_times(None, settings).total(steps)
        return sum(self._expected_times(i, settings).total(steps) for i in items if not i.unreadable)

    def _image_size(self, item: QueueItem) -> tuple[int, int]:
        if item.original is not None:
            return item.original.shape[0], item.original.shape[1]
        return item.size or (512, 512)

    # ---- settings to a job -------------------------------------------------------------------

    def job_settings(self) -> ProtectSettings:
        """Everything a protection job needs besides the image, from the current controls."""
        steps = int(self.settings.steps)
        return ProtectSettings(
            method=self.settings.method,
            strength_levels=float(self.settings.strength_levels),
            steps=steps,
            # Previews every few steps keep the compare view alive without slowing short runs.
            preview_every=max(1, min(10, steps // 10)),
            # The method's objective before and after (several model passes: most of a short job's time
            # on a CPU) is for the command line's report; the window never showed it.
            measure_objective=False,
        )

    def purifier_requests(self) -> list[PurifierRequest]:
        """The chosen purifier at the chosen level: the only one the preview runs."""
        info = self.engine_info
        chosen = self.settings.purifier
        choice = next((c for c in (info.purifiers if info else ()) if c.name == chosen), None)
        if choice is None:
            return []
        params = {}
        if choice.knob and choice.levels:
            params[choice.knob] = choice.levels[max(0, min(len(choice.levels) - 1, self.settings.purifier_level))]
        return [PurifierRequest(choice.name, params)]

    # ---- the queue ---------------------------------------------------------------------------

    def add_paths(self, paths: Iterable[str | Path]) -> int:
        """Add image files, and the images inside folders (not recursively). Returns how many."""
        known = {item.path for item in self.queue.items}
        new_items = []
        for raw in paths:
            path = Path(raw)
            candidates = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
            for candidate in candidates:
                if candidate.suffix.lower() not in IMAGE_SUFFIXES or not candidate.is_file():
                    continue
                resolved = candidate.resolve()
                if resolved in known:
                    continue
                known.add(resolved)
                item = QueueItem(resolved, load_thumbnail(resolved))
                self._inspect(item)
                new_items.append(item)
        self.queue.append(new_items)
        if new_items:
            emit(self.estimate_changed)
            if self.selected is None:
                self.select(new_items[0])
        return len(new_items)

    @staticmethod
    def _inspect(item: QueueItem) -> None:
        """Read the header now, so a broken file says why at once instead of "waiting" for its turn."""
        header = QImageReader(str(item.path)).size()
        if header.isValid():
            item.size = (header.height(), header.width())
            h, w = item.size
            problem = None
            if h * w > MAX_PIXELS:
                problem = f"{item.name}: refused: larger than {MAX_PIXELS // 1_000_000} megapixels."
            elif min(h, w) < MIN_SIDE:
                problem = f"{item.name}: too small ({w}×{h}); at least {MIN_SIDE}×{MIN_SIDE} pixels are needed."
        else:
            # Qt cannot read it: ask the engine's own reader (torch-free), which names the problem.
            from engine.images import load_image

            try:
                pixels = load_image(item.path).pixels
            except ArtveilError as exc:
                problem = exc.message
            else:
                item.size, problem = pixels.shape[:2], None
        if problem:
            item.state, item.error, item.unreadable = ItemState.FAILED, one_line(problem), True

    def remove_items(self, items: Iterable[QueueItem]) -> int:
        removed = 0
        for item in list(items):
            if item is self._active_item or item not in self.queue.items:
                continue  # the running one is stopped with Stop, not pulled from under the engine
            if item in self._batch_remaining:
                self._batch_remaining.remove(item)
            self.queue.remove(item)
            removed += 1
            if item is self.selected:
                self.select(None)
        if removed:
            emit(self.estimate_changed)
        return removed

    def select(self, item: QueueItem | None) -> None:
        if item is not self.selected:
            self.selected = item
            emit(self.selection_changed, item)

    def _touch(self, item: QueueItem) -> None:
        self.queue.refresh(item)
        emit(self.item_updated, item)

    # ---- protecting --------------------------------------------------------------------------

    def protect(self, items: Iterable[QueueItem]) -> asyncio.Future | None:
        """Protect ``items`` one after the other and save each to the output folder.

        Returns the batch task, or None when nothing was started (no model, no folder, cancelled).
        """
        items = [i for i in items if i in self.queue.items]
        if self.busy or not items:
            return None
        if self.model is None:
            emit(self.model_needed)
            return None
        settings = self.job_settings()
        planned = self._plan_outputs(items, settings)
        if planned is None:
            return None
        return self._spawn(self._run_batch(items, settings, *planned))

    def protect_all(self) -> asyncio.Future | None:
        return self.protect([i for i in self.queue.items if i.state is not ItemState.DONE])

    def protectable(self) -> list[QueueItem]:
        """Images Protect all would start on (not done, not found broken when added)."""
        return [i for i in self.queue.items if i.state is not ItemState.DONE and not i.unreadable]

    def protect_selected(self, items: Iterable[QueueItem] | None = None) -> asyncio.Future | None:
        chosen = list(items) if items is not None else ([self.selected] if self.selected else [])
        return self.protect(chosen)

    def stop(self) -> None:
        """Stop the running job (or preview) at the end of its current step, and the rest of the batch.

        Says "Stopping…" at once: the engine ends within one optimizer or denoising step.
        """
        self._cancel.cancel()
        self._batch_remaining.clear()
        running = self._clock is not None or self._preview_clock is not None  # a batch or a preview
        if running and not self.stopping:
            self.stopping = True
            emit(self.stopping_changed, True)
            self._set_batch_text("Stopping…")
            if self._active_item is not None:
                self._active_item.phase = "stopping"
                self._touch(self._active_item)
            self._tick()

    def _end_stopping(self) -> None:
        if self.stopping:
            self.stopping = False
            emit(self.stopping_changed, False)

    def _ensure_output_dir(self) -> Path | None:
        current = self.settings.output_dir
        if current and Path(current).is_dir():
            return Path(current)
        chosen = self.prompts.choose_output_dir(current)
        if not chosen:
            return None
        Path(chosen).mkdir(parents=True, exist_ok=True)
        self.settings.output_dir = str(chosen)
        return Path(chosen)

    def _batch_options(self, out_dir: Path, **kwargs) -> BatchOptions:
        fmt = EXPORT_SUFFIXES.get(self.settings.export_format, "png")
        return BatchOptions(out_dir, fmt=fmt, model_source=self.settings.model_source or "", **kwargs)

    def _plan_outputs(self, items: list[QueueItem], settings: ProtectSettings | None
                      ) -> tuple[Path, list[PlannedImage], str] | None:
        """engine.batch's plan of each item's output file, asking once about existing files.

        settings: the job's, so that an image this folder's journal says is exported with them is
        resumed (shown, not redone) without a question; None for a re-export. Returns (folder, plan,
        on_existing), or None when the artist cancelled.
        """
        out_dir = self._ensure_output_dir()
        if out_dir is None:
            return None
        options = self._batch_options(out_dir)
        fingerprint = batch.fingerprint_for(settings, options) if settings is not None else None
        plan = batch.plan_batch([item.path for item in items], out_dir, options.fmt, fingerprint)
        conflicts = [p.target for p in plan if p.conflict]
        choice = "overwrite"
        if conflicts:
            choice = self.prompts.resolve_conflicts(conflicts)
            if choice is None:
                return None
        return out_dir, plan, choice

    async def _run_batch(self, items: list[QueueItem], settings: ProtectSettings, out_dir: Path,
                         plan: list[PlannedImage], choice: str) -> None:
        """The batch runs in engine.batch on the engine thread; its events move the items (_on_progress)."""
        self._cancel = Job()
        self._set_busy(True)
        self._set_summary("")
        self._batch_items, self._batch_settings = list(items), settings
        self._batch_remaining = list(items)
        self._batch_done, self._batch_failed = 0, []
        options = self._batch_options(out_dir, on_existing=choice, load_skipped=True, plan=tuple(plan))
        stopped, problem = False, ""
        self._heartbeat.start()
        try:
            request_id, future = self.bridge.protect_batch([item.path for item in items], settings, options,
                                                           self._cancel)
            self._active_request = request_id
            summary = await future
            stopped = summary.stopped
        except Cancelled:
            stopped = True
        except ArtveilError as exc:  # the batch could not start (e.g. another batch writes to that folder)
            problem = one_line(exc.message)
        finally:
            self._heartbeat.stop()
            if self._active_item is not None and self._active_item.state is ItemState.PROTECTING:
                self._active_item.state, self._active_item.progress, self._active_item.phase = ItemState.STOPPED, 0.0, ""
                self._touch(self._active_item)
            self._active_item = None
            self._active_request = None
            self._clock = None
            self._batch_remaining = []
            self._batch_items = []
            self._set_batch_text("")
            self._set_busy(False)
            self._end_stopping()
        if problem:
            self._set_summary(problem)
            emit(self.problem, problem)
            return
        self._set_summary(_batch_summary(self._batch_done, self._batch_failed, stopped or self._cancel.cancelled,
                                         len(items)))

    def _job_clock(self, item: QueueItem, settings: ProtectSettings) -> JobClock:
        expected = self._expected_times(item, settings) or JobTimes(0.0, 0.0, 0.0)
        return JobClock(
            [("setup", expected.setup_s), ("steps", expected.step_s * settings.steps), ("saving", expected.finish_s)],
            steps_phase="steps", steps=settings.steps,
        )

    def _on_batch_event(self, event) -> None:
        """One event of the running batch (engine.batch), on the window's thread."""
        if isinstance(event, batch.BatchNote):
            emit(self.problem, one_line(event.message))
            return
        if not 0 <= getattr(event, "index", -1) < len(self._batch_items):
            return
        item = self._batch_items[event.index]
        if isinstance(event, batch.ImageStarted):
            if item in self._batch_remaining:
                self._batch_remaining.remove(item)
            self._batch = (event.index + 1, event.total)
            self._active_item = item
            item.state, item.progress, item.error, item.note, item.phase = ItemState.PROTECTING, 0.0, "", "", "setup"
            item.protected, item.preview, item.report = None, None, None
            self._clock = self._job_clock(item, self._batch_settings)
            self._touch(item)
            self._update_batch_text()
        elif isinstance(event, batch.ImageLoaded):
            item.original, item.icc_profile, item.size = event.pixels, event.icc_profile, event.pixels.shape[:2]
            self._touch(item)
        elif isinstance(event, batch.ImageStep):
            self._on_step(item, event.progress)
        elif isinstance(event, batch.ImageSaving):
            if self._clock is not None:
                self._clock.enter("saving")
            item.phase = "saving"
            self._tick()
        elif isinstance(event, batch.ImageDone):
            self._on_image_done(item, event)
        elif isinstance(event, batch.ImageFailed):
            item.state, item.error, item.phase, item.progress = ItemState.FAILED, one_line(event.message), "", 0.0
            self._batch_failed.append(item)
            self._end_item(item)
        elif isinstance(event, batch.ImageStopped):
            item.state, item.progress, item.preview, item.phase = ItemState.STOPPED, 0.0, None, ""
            self._end_item(item)

    def _on_image_done(self, item: QueueItem, event) -> None:
        result, clock = event.result, self._clock
        if result is not None:
            item.protected, item.preview, item.metrics = result.protected, None, dict(result.metrics)
            item.output_path = event.target
            item.note = f"saved as {event.target.name}"
            if clock is not None:
                clock.finish()
                self._learn_job_times(clock, result.original.shape, self._batch_settings)
            item.state = ItemState.DONE
            self._batch_done += 1
        elif event.protected is not None:  # exported by an earlier run with these settings: shown, not redone
            item.original, item.protected, item.icc_profile = event.original, event.protected, event.icc_profile
            item.size, item.metrics, item.output_path = event.original.shape[:2], dict(event.metrics or {}), event.target
            item.note = f"already exported as {event.target.name} by an earlier run"
            item.state = ItemState.DONE
            self._batch_done += 1
        else:  # a file of that name exists and the artist chose to skip it
            item.state, item.note = ItemState.WAITING, "skipped: a file with that name exists"
        if event.note:
            item.note = f"{item.note}; {event.note}"
        item.progress, item.phase = (1.0 if item.state is ItemState.DONE else 0.0), ""  # 100 % only now: the file is written
        self._end_item(item)

    def _end_item(self, item: QueueItem) -> None:
        if self._active_item is item:
            self._active_item, self._clock = None, None
        self._touch(item)

    def _on_progress(self, request_id: int, event) -> None:
        if request_id == self._active_request and self._batch_items:
            self._on_batch_event(event)

    def _on_step(self, item: QueueItem, progress: ProtectProgress) -> None:
        if item is not self._active_item:
            return
        if self._clock is not None and progress.step > 0:
            self._clock.step(progress.step, progress.total)
            if item.phase != "stopping":
                item.phase = "steps"
        if progress.preview is not None:
            item.preview = progress.preview
        self._tick()

    def _tick(self) -> None:
        """The heartbeat: move the active job's bar and ETA with the clock, between engine reports."""
        if self._preview_clock is not None:
            status = self._preview_status()
            emit(self.preview_progress, status)
            self._set_batch_text(status.line())
            return
        item, clock = self._active_item, self._clock
        if item is None or clock is None or item.state is not ItemState.PROTECTING:
            return
        item.progress = clock.fraction()
        self._touch(item)
        self._update_batch_text()

    def _update_batch_text(self, _progress: ProtectProgress | None = None) -> None:
        if self.stopping:
            self._set_batch_text("Stopping…")
            return
        position, total = self._batch
        current = self._clock.remaining() if self._clock is not None and self._times is not None else None
        rest = self.estimate_seconds(self._batch_remaining)
        eta = None if current is None or rest is None else current + rest
        text = f"{position} of {total}"
        text += f" · ETA {format_duration(eta)}" if eta is not None else " · ETA measuring…"
        self._set_batch_text(text)

    # ---- export ------------------------------------------------------------------------------

    def export(self, items: Iterable[QueueItem] | None = None) -> asyncio.Future | None:
        """Save protected images (again) to the output folder in the chosen format."""
        chosen = [i for i in (items if items is not None else self.queue.items) if i.protected is not None]
        if self.busy or not chosen:
            return None
        # An existing file, even this window's own earlier export, is never rewritten without asking.
        planned = self._plan_outputs(chosen, None)
        if planned is None:
            return None
        return self._spawn(self._export(chosen, *planned))

    async def _export(self, items: list[QueueItem], out_dir: Path, plan: list[PlannedImage], choice: str) -> None:
        """Save protected pixels again (e.g. in another format), named as a batch names them."""
        self._set_busy(True)
        saved, failed = 0, 0
        taken = {p.target.name.lower() for p in plan if p.target is not None}
        try:
            for item, planned in zip(items, plan):
                target, overwrite = planned.target, False
                if planned.conflict and choice == "skip":
                    continue
                if planned.conflict and choice == "keep_both":
                    target = batch.free_name(target, taken)
                    taken.add(target.name.lower())
                overwrite = planned.conflict and choice == "overwrite"
                try:
                    if planned.problem is not None:
                        raise ArtveilError("output", planned.problem)
                    path = await self.bridge.call("save_image", item.protected, str(target), item.icc_profile, overwrite)
                except ArtveilError as exc:
                    item.error = one_line(exc.message)
                    item.note = f"export failed: {item.error}"
                    failed += 1
                else:
                    item.output_path = Path(path)
                    item.note = f"saved as {item.output_path.name}"
                    saved += 1
                self._touch(item)
        finally:
            self._set_busy(False)
        text = f"Exported {saved} image{'s' if saved != 1 else ''}"
        self._set_summary(text + (f", {failed} could not be saved." if failed else "."))

    # ---- purification preview ----------------------------------------------------------------

    def preview_purification(self, item: QueueItem | None = None) -> asyncio.Future | None:
        item = item or self.selected
        if self.busy or item is None or item.protected is None or item.original is None:
            if item is not None and item.protected is None:
                emit(self.problem, "Protect this image first, then preview what a purifier leaves of it.")
            return None
        return self._spawn(self._preview(item))

    def _preview_key(self, request: PurifierRequest) -> str:
        info = self.engine_info
        raw = f"{self.settings.model_source}|{request.name}|{sorted(request.params.items())}|{info.device_name if info else ''}"
        return hashlib.sha1(raw.encode()).hexdigest()[:16]

    async def _preview(self, item: QueueItem) -> None:
        requests = self.purifier_requests()
        if not requests:
            emit(self.problem, "Choose a purifier to preview.")
            return
        request = requests[0]
        h, w = self._image_size(item)
        area = area_factor(h, w, PREVIEW_SIDE)
        key = self._preview_key(request)
        learned = self.settings.preview_times(key)
        # Purifying the original and the protected image cost the same; comparing is four encodes.
        each = learned[0] * area if learned else None
        compare = learned[1] * area if learned else None
        clock = JobClock([("original", each or 1.0), ("protected", each or 1.0), ("comparing", compare or 0.2)])
        self._preview_clock, self._preview_item, self._preview_known = clock, item, learned is not None
        self._set_busy(True)
        self._cancel = Job()  # Stop ends the preview within one denoising step
        self._heartbeat.start()
        self._tick()
        try:
            request_id, future = self.bridge.call_tracked(
                "preview_purifier", item.original, item.protected, request, job=self._cancel,
            )
            self._preview_request = request_id
            report = await future
        except Cancelled:
            self._set_summary("Purification preview stopped.")
            return
        except ArtveilError as exc:
            emit(self.problem, f"Purification preview failed: {one_line(exc.message)}")
            return
        finally:
            self._heartbeat.stop()
            self._preview_request = None
            self._preview_clock = None
            emit(self.preview_progress, None)
            self._set_batch_text("")
            self._set_busy(False)
            self._end_stopping()
        clock.finish()
        e = clock.phase_elapsed
        purify_s = (e.get("original", 0.0) + e.get("protected", 0.0)) / 2
        self.settings.set_preview_times(key, (purify_s / area, e.get("comparing", 0.0) / area))
        self.last_preview_seconds = clock.elapsed()
        item.report, item.report_purifier = report, request.name
        emit(self.report_changed, item)

    def _on_preview_progress(self, request_id: int, values) -> None:
        clock = self._preview_clock
        if clock is None or request_id != getattr(self, "_preview_request", None) or not isinstance(values, tuple):
            return
        phase = values[0] if values else None
        if phase not in PREVIEW_PHASES:
            return
        if phase == "protected" and not self._preview_known:
            # First preview of this purifier here: the original's time is the estimate for the rest.
            spent = clock.elapsed()
            clock.expect("protected", spent)
            clock.expect("comparing", 0.25 * spent)
            self._preview_known = True
        clock.enter(phase)
        self._tick()

    def _preview_status(self) -> "PreviewStatus | None":
        clock = self._preview_clock
        if clock is None:
            return None
        if self.stopping:
            return PreviewStatus(clock.fraction(), "Stopping…", None)
        words = {"original": "Purifying the original", "protected": "Purifying the protected image",
                 "comparing": "Comparing"}[clock.phase]
        eta = clock.remaining() if self._preview_known else None
        return PreviewStatus(clock.fraction(), words, eta)

    # ---- shutdown ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop any job and the engine thread (blocks at most one optimizer step)."""
        self.stop()
        for task in list(self._tasks):
            task.cancel()
        self.bridge.shutdown()


def _batch_summary(done: int, failed: list[QueueItem], stopped: bool, total: int) -> str:
    parts = [f"{done} of {total} protected"]
    if failed:
        names = ", ".join(i.name for i in failed[:3]) + (" …" if len(failed) > 3 else "")
        parts.append(f"{len(failed)} failed ({names}); the reason is on each image")
    if stopped:
        parts.append("stopped")
    return "; ".join(parts) + "."
