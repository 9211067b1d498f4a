"""Purifiers: what a mimic does to wash protective noise off before training or editing.

Each is a function (model, pixels HxWx3 uint8, seed, **params) -> pixels of the same size; the preview,
the command line and the evaluation call the same functions through `purify`. methods.md §5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from engine.errors import ArtveilError, Cancelled
from engine.purify.diffusion import CANCEL, purify_gridpure, purify_sdedit, purify_upscale
from engine.purify.simple import purify_jpeg, purify_noise


@dataclass(frozen=True)
class PurifierInfo:
    name: str
    label: str
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)
    needs_model: bool = True


PURIFIERS: dict[str, PurifierInfo] = {
    "sdedit": PurifierInfo("sdedit", "SDEdit (light diffusion re-draw)", "Noise the image a little and let the model redraw it.", {"strength": 0.2}),
    "gridpure": PurifierInfo("gridpure", "GrIDPure (tiled, repeated)", "Many very light re-draws on overlapping crops.", {"rounds": 20, "t": 10, "gamma": 0.1, "crop": 256}),
    "jpeg": PurifierInfo("jpeg", "JPEG re-save", "Save as JPEG, as a website would.", {"quality": 75}, needs_model=False),
    "noise": PurifierInfo("noise", "Gaussian noise", "Add film-grain-like noise.", {"sigma": 0.05}, needs_model=False),
    "upscale": PurifierInfo("upscale", "Noisy upscaling (SD ×4 upscaler)", "Add noise, then the SD ×4 upscaler (needs its weights).", {"sigma": 0.1, "noise_level": 320, "upscaler": None}),
}

_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "sdedit": purify_sdedit,
    "gridpure": purify_gridpure,
    "jpeg": purify_jpeg,
    "noise": purify_noise,
    "upscale": purify_upscale,
}


def parse_purifier(spec: str) -> tuple[str, dict[str, Any]]:
    """'sdedit:0.3' / 'jpeg:50' / 'noise:0.02' / 'gridpure' -> (name, params). The number is the main knob."""
    name, _, value = spec.partition(":")
    name = name.strip().lower()
    if name not in PURIFIERS:
        raise ArtveilError("config", f"unknown purifier '{name}'; choose one of: {', '.join(PURIFIERS)}")
    params: dict[str, Any] = {}
    if value:
        key = {"sdedit": "strength", "jpeg": "quality", "noise": "sigma", "gridpure": "rounds", "upscale": "upscaler"}[name]
        try:
            params[key] = value if key == "upscaler" else (int(value) if key in ("quality", "rounds") else float(value))
        except ValueError:
            raise ArtveilError("config", f"purifier '{spec}': '{value}' is not a number") from None
    return name, params


def purifier_label(name: str, params: dict[str, Any]) -> str:
    merged = {**PURIFIERS[name].defaults, **params}
    knob = {"sdedit": "strength", "jpeg": "quality", "noise": "sigma", "gridpure": "rounds"}.get(name)
    return f"{name} {merged[knob]:g}" if knob else name


def purify(model, pixels: np.ndarray, name: str, seed: int = 0, cancel=None, **params: Any) -> np.ndarray:
    """Purify an RGB (or RGBA: alpha passed through) uint8 image; deterministic for a seed.

    cancel: a CancelToken; the diffusion purifiers check it after every denoising step (raises Cancelled).
    """
    if name not in _FUNCTIONS:
        raise ArtveilError("config", f"unknown purifier '{name}'; choose one of: {', '.join(PURIFIERS)}")
    info = PURIFIERS[name]
    unknown = set(params) - set(info.defaults) - {"max_side", "steps", "prompt"}
    if unknown:
        raise ArtveilError("config", f"purifier {name}: unknown parameter(s) {sorted(unknown)}")
    merged = {**info.defaults, **params}
    rgb = np.ascontiguousarray(pixels[..., :3])
    if cancel is not None and cancel.cancelled:
        raise Cancelled()
    scope = CANCEL.set(cancel)
    try:
        out = _FUNCTIONS[name](model, rgb, seed=seed, **merged)
    finally:
        CANCEL.reset(scope)
    if pixels.shape[2] == 4:
        out = np.concatenate([out, pixels[..., 3:]], axis=2)
    return out


__all__ = ["PURIFIERS", "PurifierInfo", "parse_purifier", "purifier_label", "purify"]
