"""Protection methods, one module each; this registry is the only place that lists them."""

from __future__ import annotations

from typing import Any

from engine.errors import ArtveilError
from engine.methods.advdm import AdvDM
from engine.methods.antidiffusion import AntiDiffusion
from engine.methods.antipure import AntiPure
from engine.methods.aspl import ASPL
from engine.methods.base import MethodContext, MethodInfo, ProtectionMethod
from engine.methods.mist import Mist
from engine.methods.photoguard import PhotoGuard
from engine.methods.sds import SDSMinus

_CLASSES: dict[str, type[ProtectionMethod]] = {
    cls.name: cls for cls in (AntiPure, AdvDM, PhotoGuard, Mist, SDSMinus, AntiDiffusion, ASPL)
}


def register(cls: type[ProtectionMethod]) -> type[ProtectionMethod]:
    """Add a method defined elsewhere (used by engine.methods modules that import heavier deps)."""
    _CLASSES[cls.name] = cls
    METHODS[cls.name] = MethodInfo(cls.name, cls.label, cls.summary)
    return cls


METHODS: dict[str, MethodInfo] = {name: MethodInfo(c.name, c.label, c.summary) for name, c in _CLASSES.items()}


def get_method(name: str, params: dict[str, Any] | None = None) -> ProtectionMethod:
    try:
        cls = _CLASSES[name]
    except KeyError:
        raise ArtveilError("config", f"unknown method '{name}'; choose one of: {', '.join(_CLASSES)}") from None
    return cls(params)


__all__ = ["METHODS", "MethodContext", "MethodInfo", "ProtectionMethod", "get_method", "register"]
