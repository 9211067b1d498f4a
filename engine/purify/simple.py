"""Purifiers that need no model: JPEG re-encoding and Gaussian noise."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def purify_jpeg(model, rgb: np.ndarray, seed: int = 0, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8).copy()


def purify_noise(model, rgb: np.ndarray, seed: int = 0, sigma: float = 0.05) -> np.ndarray:
    """Add N(0, sigma^2) in [0, 1] units, clip, round back to 8 bits."""
    rng = np.random.default_rng(seed)
    x = rgb.astype(np.float64) / 255.0 + rng.normal(0.0, sigma, rgb.shape)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
