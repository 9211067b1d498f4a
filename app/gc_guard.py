"""Run Python's cyclic garbage collector on the GUI thread only.

The collector runs in whichever thread happens to allocate when a threshold is crossed. With the
engine thread allocating heavily (torch, imports), unreachable Qt objects from the window (timers,
widgets in reference cycles) would be destroyed on the engine thread, which crashes Qt. So automatic
collection is switched off and a timer on the GUI thread collects instead, generation by generation
as the thresholds say (the recipe PyQt applications use for the same problem).
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 500


class MainThreadCollector(QObject):
    def __init__(self, parent: QObject | None = None, interval_ms: int = INTERVAL_MS):
        super().__init__(parent)
        self._was_enabled = gc.isenabled()
        self._thresholds = gc.get_threshold()
        gc.disable()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.check)
        self._timer.start(interval_ms)

    def check(self) -> None:
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self._thresholds[generation]:
                gc.collect(generation)
                break

    def stop(self) -> None:
        """Collect once more here, then give collection back to Python."""
        self._timer.stop()
        gc.collect()
        if self._was_enabled:
            gc.enable()
