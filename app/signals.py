"""``emit(signal, *args)``: emit a Qt signal from Python without leaking a reference to ``True``.

PySide6 6.12.0's ``SignalInstance.emit`` returns ``True`` without taking a reference to it, so every
``signal.emit(...)`` made from Python takes one reference from the interpreter's ``True``. A window that
reports progress emits thousands of times a minute, and after some minutes Python aborts with "Fatal
Python error: bool_dealloc: deallocating True or False" (seen here in a batch on the real engine).
``emit`` gives the returned object the reference it lacks, and only when a probe at import shows this
PySide6 needs it, so it is a plain emit on versions without the bug.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]
_incref.restype = None


class _Probe(QObject):
    ping = Signal()


def emit_steals_a_reference() -> bool:
    """True when a Python-side emit leaves the interpreter one reference short on its result."""
    probe = _Probe()
    before = sys.getrefcount(True), sys.getrefcount(False)
    for _ in range(8):
        probe.ping.emit()
    after = sys.getrefcount(True), sys.getrefcount(False)
    lost = (before[0] - after[0]) + (before[1] - after[1])
    if lost > 0:  # give back what the probe itself took
        for _ in range(lost):
            _incref(True if before[0] > after[0] else False)
    return lost >= 8


EMIT_NEEDS_FIX = emit_steals_a_reference()


def emit(signal, *args):
    """``signal.emit(*args)``, with the reference PySide6 6.12 forgets on its result given back."""
    result = signal.emit(*args)
    if EMIT_NEEDS_FIX and result is not None:
        _incref(result)
    return result
