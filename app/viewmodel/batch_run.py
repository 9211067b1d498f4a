"""A protect batch while it runs: engine.batch's events, on the window's thread, moving the queue's items.

engine.batch runs the batch on the engine thread (planning, journal, export); the window sees its events
(engine.events: Started, Progress read/protect/save, Result, …) and keeps, per item, a bar that moves with the clock
between them (app.progress.JobClock, from the times learned on this machine).
"""

from __future__ import annotations

import time
from typing import Iterable, Protocol

from engine.batch import ImageDone
from engine.events import Event, Failed, Message, Progress, Result, Started, Stopped
from engine.jobs import ProtectProgress, ProtectSettings

from ..progress import JobClock, JobTimes
from .estimates import TimeEstimates
from .queue import ItemState, QueueItem
from .words import format_duration, one_line


class BatchHost(Protocol):
    """What a running batch asks of the workspace that runs it."""

    stopping: bool
    estimates: TimeEstimates

    def touch(self, item: QueueItem) -> None: ...
    def set_batch_text(self, text: str) -> None: ...
    def report_problem(self, text: str) -> None: ...
    def estimate_seconds(self, items: Iterable[QueueItem] | None = None) -> float | None: ...


class BatchRun:
    """One batch: its items by engine.batch's index, the one being protected and its clock, what is left."""

    def __init__(self, host: BatchHost, items: list[QueueItem], settings: ProtectSettings):
        self.host = host
        self.items = list(items)
        self.remaining = list(items)
        self.settings = settings
        self.request_id: int | None = None  # the bridge's, whose job_progress carries this batch's events
        self.active: QueueItem | None = None
        self.clock: JobClock | None = None
        self.position = (0, len(self.items))  # (1-based index of the active item, total)
        self.done = 0
        self.failed: list[QueueItem] = []
        # The time left as last shown, and why it last rose: it never rises without the window saying why.
        self._last_eta: tuple[float, float] | None = None  # (seconds left, when shown)
        self._eta_reason = ""
        self._eta_reason_until = 0.0

    def on_event(self, event: Event) -> None:
        """One event of this batch (engine.batch's, in engine.events' types)."""
        if isinstance(event, Message):
            self.host.report_problem(one_line(event.text))
            return
        if event.index is None or not 0 <= event.index < len(self.items):
            return
        item = self.items[event.index]
        if isinstance(event, (Result, Failed, Stopped)):
            item.late = ""
        match event:
            case Started(index=index, total=total):
                if item in self.remaining:
                    self.remaining.remove(item)
                self.position = (index + 1, total)
                self.active = item
                item.state, item.progress, item.error, item.note, item.phase = ItemState.PROTECTING, 0.0, "", "", "setup"
                item.protected, item.preview, item.report = None, None, None
                self.clock = self._job_clock(item)
                self.host.touch(item)
                self.show_position()
            case Progress(phase="read", detail=read):
                item.original, item.icc_profile, item.size = read.pixels, read.icc_profile, read.pixels.shape[:2]
                self.host.touch(item)
            case Progress(phase="protect", detail=progress):
                self._on_step(item, progress)
            case Progress(phase="save"):
                if self.clock is not None:
                    self.clock.enter("saving")
                item.phase = "saving"
                self.tick()
            case Result(value=ImageDone() as done):
                self._on_image_done(item, done)
            case Failed(message=message):
                # The whole reason: the row elides it at its end, its tooltip shows it complete.
                item.state, item.error, item.phase, item.progress = ItemState.FAILED, one_line(message, 2000), "", 0.0
                self.failed.append(item)
                self._end_item(item)
            case Stopped():
                item.state, item.progress, item.preview, item.phase = ItemState.STOPPED, 0.0, None, ""
                self._end_item(item)

    def _job_clock(self, item: QueueItem) -> JobClock:
        steps = self.settings.steps
        expected = self.host.estimates.expected(item.pixel_size, self.settings) or JobTimes(0.0, 0.0, 0.0)
        return JobClock(
            [("setup", expected.setup_s), ("steps", expected.step_s * steps), ("saving", expected.finish_s)],
            steps_phase="steps", steps=steps,
        )

    def _on_image_done(self, item: QueueItem, event) -> None:
        result, clock = event.result, self.clock
        if result is not None:
            # the strength travels with the pixels: a later Export (JPEG) is checked against it
            item.protected, item.preview = result.protected, None
            item.metrics = {**result.metrics, "strength_levels": result.settings.strength_levels}
            item.mark_written(event.target)
            item.note = f"saved as {event.target.name}"
            if result.plan:  # the memory plan the engine chose (engine.plan), as the command line says it
                item.note += f"; {result.plan}"
            if clock is not None:
                clock.finish()
                self.host.estimates.learn(clock, result.original.shape, self.settings)
            item.state = ItemState.DONE
            self.done += 1
        elif event.protected is not None:  # exported by an earlier run with these settings: shown, not redone
            item.original, item.protected, item.icc_profile = event.original, event.protected, event.icc_profile
            item.size, item.output_path = event.original.shape[:2], event.target
            item.metrics = {**(event.metrics or {}), "strength_levels": self.settings.strength_levels}
            item.note = f"already exported as {event.target.name} by an earlier run"
            item.state = ItemState.DONE
            self.done += 1
        else:  # a file of that name exists and the artist chose to skip it
            item.state, item.note = ItemState.WAITING, "skipped: a file with that name exists"
        if event.note:
            item.note = f"{item.note}; {event.note}"
        item.progress, item.phase = (1.0 if item.state is ItemState.DONE else 0.0), ""  # 100 % only now: the file is written
        self._end_item(item)

    def _end_item(self, item: QueueItem) -> None:
        if self.active is item:
            self.active, self.clock = None, None
        self.host.touch(item)

    def _on_step(self, item: QueueItem, progress: ProtectProgress) -> None:
        if item is not self.active:
            return
        entered = False
        if self.clock is not None and progress.step > 0:
            self.clock.step(progress.step, progress.total)
            if item.phase != "stopping":
                entered, item.phase = item.phase != "steps", "steps"
        if progress.preview is not None:
            item.preview = progress.preview
        # The heartbeat moves the bar 4 times a second; redrawing the window for every engine report
        # (up to 20 a second) would take CPU from the engine on a 2-core machine.
        if entered or progress.preview is not None:
            self.tick()

    def tick(self) -> None:
        """Move the active item's bar and the batch's ETA with the clock, between engine reports."""
        item, clock = self.active, self.clock
        if item is None or clock is None or item.state is not ItemState.PROTECTING:
            return
        item.progress = clock.fraction()
        item.late = self._late_words(clock)
        self.host.touch(item)
        self.show_position()

    @staticmethod
    def _late_words(clock: JobClock) -> str:
        """Why this item's bar is slower than planned, in words (empty when it is not)."""
        if not clock.overrunning():
            return ""
        if clock.phase == "setup":
            return "set-up is taking longer than expected"
        if clock.phase == "steps":
            return "the steps are slower than expected"
        return f"{clock.phase} is taking longer than expected"

    def show_position(self) -> None:
        if self.host.stopping:
            self.host.set_batch_text("Stopping…")
            return
        position, total = self.position
        current = self.clock.remaining() if self.clock is not None and self.host.estimates.times is not None else None
        rest = self.host.estimate_seconds(self.remaining)
        eta = None if current is None or rest is None else current + rest
        text = f"{position} of {total}"
        if eta is None:
            self.host.set_batch_text(text + " · time left: measuring…")
            return
        now = time.monotonic()
        late = self._late_words(self.clock) if self.clock is not None else ""
        if late:  # a phase runs long: the time left is being revised up as it goes
            self._eta_reason, self._eta_reason_until = late, now + 15.0
        elif self._last_eta is not None:
            shown, at = self._last_eta
            if eta > shown - (now - at) + 1.0:  # it rose against the clock: say why, for a while
                self._eta_reason = "this image is slower than the ones measured before"
                self._eta_reason_until = now + 15.0
        # The anchor moves only while the time left runs down as planned, so slow creeps add up and show.
        if self._last_eta is None or eta <= self._last_eta[0] - (now - self._last_eta[1]) or late:
            self._last_eta = (eta, now)
        text += f" · time left ≈ {format_duration(eta)}"
        if self._eta_reason and now < self._eta_reason_until:
            text += f" (revised up: {self._eta_reason})"
        self.host.set_batch_text(text)

    def mark_stopping(self) -> None:
        """Stop was pressed: the active item says so until the engine ends it (within one step)."""
        if self.active is not None:
            self.active.phase = "stopping"
            self.host.touch(self.active)

    def end(self) -> None:
        """The batch is over: an item the engine never finished is stopped, not left protecting."""
        if self.active is not None and self.active.state is ItemState.PROTECTING:
            self.active.state, self.active.progress, self.active.phase = ItemState.STOPPED, 0.0, ""
            self.host.touch(self.active)
        self.active, self.clock, self.remaining = None, None, []

    def summary(self, stopped: bool) -> str:
        parts = [f"{self.done} of {len(self.items)} protected"]
        if self.failed:
            names = ", ".join(i.name for i in self.failed[:3]) + (" …" if len(self.failed) > 3 else "")
            parts.append(f"{len(self.failed)} failed ({names}); the reason is on each image")
        if stopped:
            parts.append("stopped")
        return "; ".join(parts) + "."
