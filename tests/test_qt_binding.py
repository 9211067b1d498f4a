"""The Qt binding the window runs on keeps Python's reference counts: a binding that loses a reference to
None (or True) on each call aborts the window after minutes of work ("none_dealloc"), as PySide6 6.12.0 did."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QLabel

from app.signals import binding_problem, emit, void_calls_lose_none


class _Pinger(QObject):
    ping = Signal(object)


def _lost(ref, fn, calls: int = 500) -> int:
    before = sys.getrefcount(ref)
    for _ in range(calls):
        fn()
    return before - sys.getrefcount(ref)


def test_calls_that_return_nothing_keep_the_reference_count_of_none(qtbot):
    label, timer = QLabel(), QTimer()
    qtbot.addWidget(label)
    assert abs(_lost(None, lambda: label.setText("x"))) < 50
    assert abs(_lost(None, lambda: timer.start(1000))) < 50
    timer.stop()
    assert not void_calls_lose_none() and binding_problem() is None


def test_emit_keeps_the_reference_count_of_true(qtbot):
    pinger = _Pinger()
    pinger.ping.connect(lambda value: None)
    assert abs(_lost(True, lambda: emit(pinger.ping, None))) < 50
    assert abs(_lost(None, lambda: emit(pinger.ping, None))) < 50
