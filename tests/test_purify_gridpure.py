"""GrIDPure does what its paper says: purified crops blended back with the previous round, round after round."""

from __future__ import annotations

import numpy as np

from engine.purify import purify
from tests.conftest import make_image

# 48×64 with 32-px crops: six crops at stride 16 and the corner mosaic, one denoising step each on the tiny model.
GRID = {"crop": 32, "t": 10}


def _gridpure(model, img, **params):
    return purify(model, img, "gridpure", seed=5, **{**GRID, **params}).astype(np.float64)


def test_gridpure_blends_each_round_with_gamma_and_repeats(tiny_model):
    """x ← (1−γ)·pure + γ·x: γ = 1 keeps the image, γ = 0 is the purified crops alone, γ = ½ lies halfway
    between the two (within the rounding of the 8-bit output); a second round purifies again.

    An identity purifier fails the γ = 0 line, one that ignores γ the γ = ½ line, one that ignores
    `rounds` the last.
    """
    img = make_image(48, 64)
    x = img.astype(np.float64)
    kept = _gridpure(tiny_model, img, rounds=1, gamma=1.0)
    pure = _gridpure(tiny_model, img, rounds=1, gamma=0.0)
    half = _gridpure(tiny_model, img, rounds=1, gamma=0.5)
    assert np.array_equal(kept, x)
    assert np.abs(pure - x).mean() > 5, "with γ = 0 the output is the purified crops, not the input"
    assert np.abs(half - (pure + x) / 2).max() <= 1.0  # round(½·pure + ½·x) against ½·round(pure) + ½·x
    twice = _gridpure(tiny_model, img, rounds=2, gamma=0.5)
    assert np.abs(twice - half).mean() > 1, "the second round must purify the first round's output again"
