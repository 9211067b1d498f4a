"""Protection methods, one module each; METHODS is the only place that lists them.

A method is declared once, as its class (name, label, summary, Params, its loss); the command line, the
window (through app.backend) and the evaluation all read METHODS, so adding a method is its module plus
its entry in the tuple below.
"""

from __future__ import annotations

from typing import Any

from engine.errors import ArtveilError
from engine.methods.advdm import AdvDM
from engine.methods.antidiffusion import AntiDiffusion
from engine.methods.antipure import AntiPure
from engine.methods.aspl import ASPL
from engine.methods.base import MethodContext, ProtectionMethod
from engine.methods.mist import Mist
from engine.methods.photoguard import PhotoGuard
from engine.methods.random_sign import GridSign, RandomSign
from engine.methods.sds import SDSMinus

METHODS: dict[str, type[ProtectionMethod]] = {
    cls.name: cls for cls in (AntiPure, AdvDM, PhotoGuard, Mist, SDSMinus, AntiDiffusion, ASPL)
}
# Controls for the evaluation (not protections, so not in the artist's menu): what a method must beat.
CONTROLS: dict[str, type[ProtectionMethod]] = {cls.name: cls for cls in (RandomSign, GridSign)}


def get_method(name: str, params: dict[str, Any] | None = None) -> ProtectionMethod:
    try:
        cls = METHODS[name] if name in METHODS else CONTROLS[name]
    except KeyError:
        raise ArtveilError("config", f"unknown method '{name}'; choose one of: {', '.join(METHODS)}") from None
    return cls(params)


__all__ = ["CONTROLS", "METHODS", "MethodContext", "ProtectionMethod", "get_method"]
