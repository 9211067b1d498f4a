"""Fault injection for tests: make a named point fail a given number of times.

Production code calls `maybe_fail("unet")` at points where real faults happen (CUDA out of memory,
disk full); tests arm them with `inject`. Unarmed, a call is one dict lookup.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

_armed: dict[str, list] = {}


class SimulatedOutOfMemory(RuntimeError):
    """Stands in for torch.cuda.OutOfMemoryError on machines without a GPU."""


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (SimulatedOutOfMemory, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@contextlib.contextmanager
def inject(point: str, times: int = 1, error: Callable[[], BaseException] | None = None) -> Iterator[None]:
    _armed[point] = [times, error or (lambda: SimulatedOutOfMemory("CUDA out of memory (simulated)"))]
    try:
        yield
    finally:
        _armed.pop(point, None)


def _arm_from_environment() -> None:
    # ARTVEIL_FAULT=unet:2 lets a subprocess test arm a point without code changes.
    spec = os.environ.get("ARTVEIL_FAULT")
    if spec:
        point, _, times = spec.partition(":")
        _armed[point] = [int(times or 1), lambda: SimulatedOutOfMemory("CUDA out of memory (simulated)")]


def maybe_fail(point: str) -> None:
    entry = _armed.get(point)
    if entry and entry[0] > 0:
        entry[0] -= 1
        raise entry[1]()


_arm_from_environment()
