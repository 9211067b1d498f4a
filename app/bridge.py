"""One long-lived engine object on its own QThread, and the window-side handle that awaits it.

Requests go in through queued signals to ``@Slot`` methods of ``EngineWorker`` (so they run on the
engine thread, one at a time, in order); results come back as signals and resolve asyncio futures on
the window's qasync loop. Only plain data crosses: numpy arrays, dataclasses of them, strings.
Cancellation does not queue behind the running job: the window makes the ``Job`` and calls its
cancel() directly (a threading.Event underneath), and the engine checks it once per step. The same Job
carries the job's events back (engine.events): on the engine thread they become ``job_progress`` signals,
through one path with one throttle, whether the backend reports them to the Job or yields them (a batch).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
import weakref
from dataclasses import replace
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine.errors import ArtveilError, Cancelled, ErrorInfo
from engine.events import STEP_PHASES, Event, Progress, Result
from engine.jobs import Job, ProtectProgress
from .signals import emit

# Every engine thread ever started, so tests can fail when one outlives its test.
LIVE_THREADS: "weakref.WeakSet[QThread]" = weakref.WeakSet()

PROGRESS_INTERVAL_S = 0.05  # ~20 updates a second: smooth bars without flooding the event queue


class ProgressThrottle:
    """Lets through at most one step event (engine.events.STEP_PHASES) per interval; every other event gets
    out at once, after the step it overtook, so nothing is reordered and the last step is never lost.

    A dropped step's picture (a ProtectProgress's preview) is carried forward, so previews are never lost to
    throttling, only delivered with the next step that gets through.
    """

    def __init__(self, interval_s: float = PROGRESS_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self._interval = interval_s
        self._clock = clock
        self._last_sent = float("-inf")
        self._pending: Progress | None = None
        self._pending_preview = None

    def offer(self, event: Event) -> list[Event]:
        """The events to send now, in order."""
        if not (isinstance(event, Progress) and event.phase in STEP_PHASES):
            return [*self.flush(), event]
        detail = event.detail
        if isinstance(detail, ProtectProgress) and detail.preview is None and self._pending_preview is not None:
            event = replace(event, detail=replace(detail, preview=self._pending_preview))
        now = self._clock()
        if now - self._last_sent >= self._interval:
            self._last_sent = now
            self._pending = None
            self._pending_preview = None
            return [event]
        self._pending = event
        self._pending_preview = event.detail.preview if isinstance(event.detail, ProtectProgress) else None
        return []

    def flush(self) -> list[Event]:
        event, self._pending, self._pending_preview = self._pending, None, None
        return [] if event is None else [event]


class EngineWorker(QObject):
    """Lives on the engine thread; owns the backend (and so the model)."""

    finished = Signal(int, object)  # request id, result
    failed = Signal(int, object)  # request id, ErrorInfo
    progress = Signal(int, object)  # request id, an engine.events event (steps throttled)

    def __init__(self, backend_factory: Callable[[], Any]):
        super().__init__()
        self._backend_factory = backend_factory
        self._backend = None

    @property
    def backend(self):
        # Built on first use so that its imports (torch) happen on this thread, not the window's.
        if self._backend is None:
            self._backend = self._backend_factory()
        return self._backend

    @Slot(int, str, object, object)
    def call(self, request_id: int, method: str, args: tuple, kwargs: dict) -> None:
        """backend.method(*args, **kwargs) on this thread. The events of the request's Job, and those of a
        call that returns a stream of them (a batch), go to the window through one throttle; a stream's
        last Result (index None) is the call's result."""
        throttle = ProgressThrottle()

        def forward(event: Event) -> None:
            for item in throttle.offer(event):
                emit(self.progress, request_id, item)

        try:
            kwargs = dict(kwargs)
            job = kwargs.get("job")
            if isinstance(job, Job):
                job.check()  # stopped while queued: not started at all
                kwargs["job"] = job.with_events(forward)  # the window's Stop flag, its events sent to the window
            result = getattr(self.backend, method)(*args, **kwargs)
            if inspect.isgenerator(result):
                stream, result = result, None
                for event in stream:
                    if isinstance(event, Result) and event.index is None:
                        result = event.value
                    else:
                        forward(event)
                if result is None:
                    raise ArtveilError("internal", f"The engine ended {method} without a result.")
            for item in throttle.flush():
                emit(self.progress, request_id, item)
        except BaseException as exc:  # errors are values for the window, never lost on this thread
            for item in throttle.flush():
                emit(self.progress, request_id, item)
            emit(self.failed, request_id, ErrorInfo.from_exception(exc))
            return
        emit(self.finished, request_id, result)


class EngineBridge(QObject):
    """The window's handle on the engine thread. Methods return asyncio futures."""

    job_progress = Signal(int, object)  # request id, an engine.events event (steps throttled)

    _call_requested = Signal(int, str, object, object)

    def __init__(self, backend_factory: Callable[[], Any], parent: QObject | None = None):
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._futures: dict[int, asyncio.Future] = {}
        self._thread = QThread()
        self._thread.setObjectName("artveil-engine")
        self._worker = EngineWorker(backend_factory)
        self._worker.moveToThread(self._thread)
        self._thread.finished.connect(self._worker.deleteLater)
        # Cross-thread connections are queued: the slots run on the engine thread, in order.
        self._call_requested.connect(self._worker.call)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._worker.progress.connect(self._on_progress)
        LIVE_THREADS.add(self._thread)
        self._thread.start()

    @property
    def thread(self) -> QThread:
        return self._thread

    def _new_request(self) -> tuple[int, asyncio.Future]:
        request_id = next(self._ids)
        future = asyncio.get_event_loop().create_future()
        self._futures[request_id] = future
        return request_id, future

    def call(self, method: str, *args, **kwargs) -> asyncio.Future:
        """Run ``backend.method(*args, **kwargs)`` on the engine thread."""
        return self.call_tracked(method, *args, **kwargs)[1]

    def call_tracked(self, method: str, *args, **kwargs) -> tuple[int, asyncio.Future]:
        """Like ``call``, also giving the request id that its ``job_progress`` signals carry.

        Pass the request's Job as ``job=job``: Stop on it reaches the engine at once, and each event the
        backend reports (job.report(event)) or yields arrives as ``job_progress(request_id, event)``.
        """
        request_id, future = self._new_request()
        emit(self._call_requested, request_id, method, args, kwargs)
        return request_id, future

    @Slot(int, object)
    def _on_finished(self, request_id: int, result) -> None:
        future = self._futures.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(result)

    @Slot(int, object)
    def _on_failed(self, request_id: int, error: ErrorInfo) -> None:
        future = self._futures.pop(request_id, None)
        if future is not None and not future.done():
            exc = Cancelled(error.message) if error.kind == "cancelled" else ArtveilError(error.kind, error.message)
            future.set_exception(exc)

    @Slot(int, object)
    def _on_progress(self, request_id: int, item) -> None:
        emit(self.job_progress, request_id, item)

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Stop the engine thread after its current request; True when it has stopped."""
        if not self._thread.isRunning():
            return True
        self._thread.quit()
        stopped = self._thread.wait(timeout_ms)
        for future in self._futures.values():
            if not future.done():
                future.cancel()
        self._futures.clear()
        return stopped
