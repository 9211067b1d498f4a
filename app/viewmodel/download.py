"""A model download while it runs: its Stop, its progress in words, its outcome (the model dialog shows it).

The engine downloads on its thread (engine.hub through app.client); its Progress("download") events arrive
here and become a fraction and a line of text; the dialog only draws them.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from engine.errors import ArtveilError, Cancelled
from engine.events import Progress
from engine.jobs import Job

from ..signals import emit
from .words import format_duration, one_line


class Download(QObject):
    """One download: start it with run(name), stop it with stop(); `changed` after every change of state."""

    changed = Signal()

    def __init__(self, engine, parent: QObject | None = None):
        super().__init__(parent)
        self._engine = engine
        self._job: Job | None = None
        self._request: int | None = None
        self.running = False
        self.stopping = False
        self.fraction: float | None = None  # None: not known yet (the bar runs without an end)
        self.text = ""  # on the bar: "Connecting…", "0.52 of 2.1 GB · 3 min left"
        self.note = ""  # after it ended: what happened, what to do
        self.warning = False  # note is a failure
        self.path: str | None = None  # the downloaded folder
        engine.events.connect(self._on_event)

    async def run(self, name: str) -> str | None:
        """Download the model `name`; the folder's path, or None when it was stopped or failed (note says)."""
        self._job = Job()
        self.running, self.stopping, self.fraction, self.text = True, False, None, "Connecting…"
        self.note, self.warning, self.path = "", False, None
        emit(self.changed)
        self._request, future = self._engine.download_model(name, self._job)
        try:
            self.path = await future
        except Cancelled:
            self.note = "Download stopped. Click Download again to resume: finished files are kept."
        except ArtveilError as exc:
            self.note, self.warning = f"Download failed: {one_line(exc.message)} Click Download to try again.", True
        else:
            self.note = f"Downloaded to {self.path}"
        finally:
            self._request, self._job, self.running, self.stopping = None, None, False, False
            emit(self.changed)
        return self.path

    def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.stopping = True
            emit(self.changed)

    def close(self) -> None:
        """The dialog is going: stop the download and hear no more of it."""
        if self._job is not None:
            self._job.cancel()
        try:
            self._engine.events.disconnect(self._on_event)
        except (RuntimeError, TypeError):
            pass

    def _on_event(self, request_id: int, event) -> None:
        if request_id != self._request or not isinstance(event, Progress) or event.phase != "download":
            return
        done, total = event.step, event.total
        if total:
            self.fraction = done / total
            eta = getattr(event.detail, "eta_s", None)
            self.text = f"{done / 1e9:.2f} of {total / 1e9:.1f} GB" + (f" · {format_duration(eta)} left" if eta else "")
            emit(self.changed)
