"""What a purifier is: one declaration that the command line, the window, the preview and the evaluation read.

A `Purifier` names the function (model, pixels HxWx3 uint8, seed, job, **params) -> pixels of the same size and
declares each of its parameters (`Param`: default, range, unit). `resolve` checks a caller's parameters
against it, so a wrong name or an out-of-range value is refused with the purifier's own list of settings
before any work starts. No torch here: the declarations are plain data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from engine.errors import ArtveilError

REFUSED = object()  # what Param.accepts returns for a value outside the parameter's range or kind


@dataclass(frozen=True)
class Param:
    """One setting of a purifier, in the units its function takes.

    kind: float, int or str. low/high bound a number (None: unbounded on that side); low_open excludes low
    itself, as (0, 1]. A str parameter may also be None (its default then decides).
    """

    name: str
    default: Any
    unit: str
    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def range_text(self) -> str:
        """'(0, 1]', '1–100', '≥ 0' or 'text'."""
        if self.kind is str:
            return "text"
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
        """'a number in (0, 1]', 'a whole number in 1–100', 'text': what a value must be."""
        if self.kind is str:
            return "text"
        return f"{'a whole number' if self.kind is int else 'a number'} in {self.range_text()}"

    def describe(self) -> str:
        """'strength (0, 1] (fraction of ...; default 0.2)', 'prompt (the re-draw's prompt; default '')'."""
        if self.kind is str:
            default = "none" if self.default is None else repr(self.default)
            return f"{self.name} ({self.unit}; default {default})"
        return f"{self.name} {self.range_text()} ({self.unit}; default {self.default:g})"

    def accepts(self, value: Any) -> Any:
        """value in the parameter's kind (an int for int, a float for float), or REFUSED."""
        if self.kind is str:
            return value if value is None or isinstance(value, str) else REFUSED
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


@dataclass(frozen=True)
class Purifier:
    """A purifier: what a mimic runs to wash protective noise off, declared once.

    name: what the command line and the files say (`--purifier sdedit:0.3`); label and summary: what the
    window shows. function(model, rgb, seed, job, **params) -> rgb, called by engine.purify.purify only, with every
    parameter resolved. knob: the main parameter, set by NAME:VALUE on the command line, shown in the
    label and moved by the window's purifier strength; levels: its light, medium and heavy values there.
    needs_model: False when the function never touches the model (it may then be None).
    """

    name: str
    label: str
    summary: str
    function: Callable[..., np.ndarray]
    params: tuple[Param, ...] = ()
    knob: str | None = None
    levels: tuple[Any, Any, Any] | None = None
    needs_model: bool = True

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def settings_text(self) -> str:
        """Every parameter with its range, unit and default, on one line."""
        return "; ".join(p.describe() for p in self.params) or "no settings"

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """The defaults updated by params, each checked; raises ArtveilError naming the purifier's settings."""
        merged = self.defaults
        for key, value in params.items():
            declared = self.param(key)
            if declared is None:
                raise ArtveilError(
                    "config", f"purifier {self.name}: unknown parameter {key!r}; its settings: {self.settings_text()}."
                )
            accepted = declared.accepts(value)
            if accepted is REFUSED:
                raise ArtveilError(
                    "config",
                    f"purifier {self.name}: {key}={value!r} is not {declared.expects()}; "
                    f"its settings: {self.settings_text()}.",
                )
            merged[key] = accepted
        return merged

    def label_for(self, params: dict[str, Any]) -> str:
        """'sdedit 0.3', 'jpeg 50': the name and the knob's value where the knob is a number."""
        value = {**self.defaults, **params}.get(self.knob) if self.knob else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{self.name} {value:g}"
        return self.name


__all__ = ["REFUSED", "Param", "Purifier"]
