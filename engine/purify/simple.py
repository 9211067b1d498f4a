"""Purifiers that need no model: JPEG re-encoding and Gaussian noise."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from engine.purify.base import Param, Purifier


def purify_jpeg(model, rgb: np.ndarray, seed: int, job=None, *, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8).copy()


def purify_noise(model, rgb: np.ndarray, seed: int, job=None, *, sigma: float) -> np.ndarray:
    """Add N(0, sigma^2) in [0, 1] units, clip, round back to 8 bits."""
    rng = np.random.default_rng(seed)
    x = rgb.astype(np.float64) / 255.0 + rng.normal(0.0, sigma, rgb.shape)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


JPEG = Purifier(
    "jpeg", "JPEG re-save", "Save as JPEG, as a website would.", purify_jpeg,
    (Param("quality", 75, "JPEG quality", int, 1, 100),),
    knob="quality", levels=(95, 75, 50), needs_model=False,
)
NOISE = Purifier(
    "noise", "Gaussian noise", "Add film-grain-like noise.", purify_noise,
    (Param("sigma", 0.05, "standard deviation in [0, 1] pixel units", float, 0.0, 1.0),),
    knob="sigma", levels=(0.02, 0.05, 0.1), needs_model=False,
)
