"""A declared setting: one parameter of a purifier or a protection method, with its kind, range, unit and
default, so that every face (command line, window, evaluation) checks a value the same way before any work.

No torch here: the declarations are plain data, read by `artveil --help` and by the window at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

REFUSED = object()  # what Param.accepts returns for a value outside the parameter's range or kind


@dataclass(frozen=True)
class Param:
    """One setting, in the units its function takes.

    kind: float, int, bool or str. low/high bound a number (None: unbounded on that side); low_open
    excludes low itself, as (0, 1]. choices: the only texts a str parameter takes (empty: any text).
    optional: None is accepted (the code then picks the value, as the unit says). A str parameter
    without choices always accepts None (its default then decides).
    """

    name: str
    default: Any
    unit: str
    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False

    def range_text(self) -> str:
        """'(0, 1]', '1–100', '≥ 0', 'true or false', 'lora or full' or 'text'."""
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return " or ".join(self.choices) if self.choices else "text"
        fmt = (lambda v: f"{v:g}") if self.kind is float else (lambda v: f"{int(v)}")
        if self.low is not None and self.high is not None:
            if self.low_open:
                return f"({fmt(self.low)}, {fmt(self.high)}]"
            return f"{fmt(self.low)}–{fmt(self.high)}"
        if self.low is not None:
            return f"> {fmt(self.low)}" if self.low_open else f"≥ {fmt(self.low)}"
        if self.high is not None:
            return f"≤ {fmt(self.high)}"
        return "any number"

    def expects(self) -> str:
        """'a number in (0, 1]', 'a whole number in 1–100', 'true or false', 'one of lora, full', 'text'."""
        if self.kind is bool:
            text = "true or false"
        elif self.kind is str:
            text = f"one of {', '.join(self.choices)}" if self.choices else "text"
        else:
            text = f"{'a whole number' if self.kind is int else 'a number'} in {self.range_text()}"
        return f"{text} (or null)" if self.optional and not (self.kind is str and not self.choices) else text

    def describe(self) -> str:
        """'strength (0, 1] (fraction of ...; default 0.2)', 'prompt (the re-draw's prompt; default '')'."""
        if self.default is None:
            default = "none"
        elif self.kind is bool:
            default = "true" if self.default else "false"
        elif self.kind is str:
            default = repr(self.default)
        else:
            default = f"{self.default:g}"
        if self.kind is str and not self.choices:
            return f"{self.name} ({self.unit}; default {default})"
        return f"{self.name} {self.range_text()} ({self.unit}; default {default})"

    def accepts(self, value: Any) -> Any:
        """value in the parameter's kind (an int for int, a float for float), or REFUSED."""
        if value is None:
            return None if self.optional or (self.kind is str and not self.choices) else REFUSED
        if self.kind is bool:
            return value if isinstance(value, bool) else REFUSED
        if self.kind is str:
            return value if isinstance(value, str) and (not self.choices or value in self.choices) else REFUSED
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return REFUSED
        if not math.isfinite(value) or (self.kind is int and float(value) != int(value)):
            return REFUSED
        value = int(value) if self.kind is int else float(value)
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return REFUSED
        if self.high is not None and value > self.high:
            return REFUSED
        return value


__all__ = ["REFUSED", "Param"]
