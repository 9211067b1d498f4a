"""What a purifier is: one declaration that the command line, the window, the preview and the evaluation read.

A `Purifier` names the function (model, pixels HxWx3 uint8, seed, job, **params) -> pixels of the same size and
declares each of its parameters (engine.params.Param: default, range, unit). `resolve` checks a caller's parameters
against it, so a wrong name or an out-of-range value is refused with the purifier's own list of settings
before any work starts. No torch here: the declarations are plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from engine.errors import ArtveilError
from engine.params import REFUSED, Param  # shared with the protection methods' declarations


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
