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


def void_calls_lose_none(calls: int = 64) -> bool:
    """True when calling a Qt method that returns nothing takes a reference from ``None`` (PySide6 6.12.0:
    every ``label.setText``, ``timer.start`` … does, and the window aborts after some minutes with
    "none_dealloc"). Such a binding cannot be patched from here; the window refuses to start on it."""
    probe = _Probe()
    before = sys.getrefcount(None)
    for _ in range(calls):
        probe.setObjectName("probe")
    lost = before - sys.getrefcount(None)
    for _ in range(max(0, lost)):  # give back what the probe itself took
        _incref(None)
    return lost >= calls // 2


def binding_problem() -> str | None:
    """One line for the user when the installed Qt binding would crash the window, else None."""
    if not void_calls_lose_none():
        return None
    import PySide6

    return (f"artveil: PySide6 {PySide6.__version__} has a reference-counting bug that crashes the window after a "
            "few minutes; install another version: pip install 'PySide6-Essentials!=6.12.0' (the installer does).")


def emit(signal, *args):
    """``signal.emit(*args)``, with the reference PySide6 6.12 forgets on its result given back."""
    result = signal.emit(*args)
    if EMIT_NEEDS_FIX and result is not None:
        _incref(result)
    return result
