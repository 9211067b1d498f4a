"""Purifiers: what a mimic does to wash protective noise off before training or editing.

Each purifier is one declaration (engine.purify.base.Purifier: name, label, summary, parameters with
ranges, defaults and units, whether it needs the model, the function), kept next to its function;
PURIFIERS lists them. The command line, the window (through app.backend), the preview and the evaluation
all read PURIFIERS and run a purifier through `purify`. methods.md §5.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import ArtveilError
from engine.jobs import Job, check_seed
from engine.purify.base import Param, Purifier
from engine.purify.diffusion import GRIDPURE, SDEDIT, UPSCALE
from engine.purify.simple import JPEG, NOISE

PURIFIERS: dict[str, Purifier] = {p.name: p for p in (SDEDIT, GRIDPURE, JPEG, NOISE, UPSCALE)}


def get_purifier(name: str) -> Purifier:
    try:
        return PURIFIERS[name]
    except KeyError:
        raise ArtveilError("config", f"unknown purifier '{name}'; choose one of: {', '.join(PURIFIERS)}") from None


def parse_purifier(spec: str) -> tuple[str, dict[str, Any]]:
    """'sdedit:0.3' / 'jpeg:50' / 'noise:0.02' / 'gridpure' -> (name, params): the value sets the purifier's
    knob (its main parameter), checked against its declared range."""
    name, _, value = spec.partition(":")
    name = name.strip().lower()
    purifier = get_purifier(name)
    params: dict[str, Any] = {}
    if value:
        knob = purifier.param(purifier.knob) if purifier.knob else None
        if knob is None:
            raise ArtveilError("config", f"purifier '{spec}': {name} takes no value after ':'")
        if knob.kind is str:
            params[knob.name] = value
        else:
            try:
                number = float(value)
            except ValueError:
                raise ArtveilError("config", f"purifier '{spec}': '{value}' is not a number") from None
            if knob.kind is int and not number.is_integer():
                raise ArtveilError("config", f"purifier '{spec}': '{value}' is not a whole number")
            params[knob.name] = int(number) if knob.kind is int else number
        purifier.resolve(params)
    return name, params


def purifier_label(name: str, params: dict[str, Any]) -> str:
    """'sdedit 0.3', 'jpeg 50', 'upscale': how reports and file names call a purifier at its settings."""
    return get_purifier(name).label_for(params)


def purify(model, pixels: np.ndarray, name: str, seed: int = 0, job: Job | None = None, **params: Any) -> np.ndarray:
    """Purify an RGB (or RGBA: alpha passed through) uint8 image; deterministic for a seed.

    params: any of the purifier's declared parameters, in their units (the others keep their defaults); one
    it does not declare, or a value outside its range, raises ArtveilError before any work starts.

    job: the engine.jobs.Job whose Stop the diffusion purifiers check after every denoising step (raises
    Cancelled).
    """
    purifier = get_purifier(name)
    merged = purifier.resolve(params)  # ArtveilError on a parameter it does not declare, or out of its range
    check_seed(seed)
    if purifier.needs_model and model is None:
        raise ArtveilError("model", f"purifier {name} runs on a diffusion model; load one first.")
    rgb = np.ascontiguousarray(pixels[..., :3])
    if job is not None:
        job.check()
    out = purifier.function(model, rgb, seed, job, **merged)
    if pixels.shape[2] == 4:
        out = np.concatenate([out, pixels[..., 3:]], axis=2)
    return out


__all__ = ["PURIFIERS", "Param", "Purifier", "get_purifier", "parse_purifier", "purifier_label", "purify"]
