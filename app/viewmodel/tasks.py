"""The view-model's running actions: coroutines on the qasync loop, awaited together, never lost."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

log = logging.getLogger(__name__)


class Tasks:
    """Every action started and not yet ended. An action that fails unexpectedly is logged and its
    error passed to on_failure (the window shows it): never swallowed."""

    def __init__(self, on_failure: Callable[[BaseException], None]):
        self._running: set[asyncio.Future] = set()
        self._on_failure = on_failure

    def spawn(self, coro) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("window task failed", exc_info=exc)
            self._on_failure(exc)

    async def idle(self) -> None:
        """Wait until every action started so far (and any it started) has finished."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    def when_idle(self, callback: Callable[[], None]) -> asyncio.Future:
        """Call ``callback`` once every action running now has ended."""
        running = list(self._running)

        async def wait_then_call():
            await asyncio.gather(*running, return_exceptions=True)
            callback()

        return self.spawn(wait_then_call())

    def cancel_all(self) -> None:
        for task in list(self._running):
            task.cancel()
