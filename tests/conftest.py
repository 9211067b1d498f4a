"""Shared fixtures: the tiny model (built once per session), sample images, CPU thread limits."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

# Two cores on CI: more threads than cores only adds contention. Under pytest-xdist each worker
# is its own process, so one thread each.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model():
    from engine.models import build_tiny_model

    return build_tiny_model(seed=0, device="cpu")


@pytest.fixture
def textured_image():
    """A 64×64 RGB image with structure (gradients + rings + noise), deterministic."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:64, 0:64] / 64.0
    r = np.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2)
    img = np.stack([x, y, 0.5 + 0.5 * np.sin(20 * r)], axis=2)
    img = img * 200 + rng.normal(0, 10, img.shape) + 20
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 / max(w - 1, 1)), (yy * 255 / max(h - 1, 1)), ((xx + yy) % 64) * 4], axis=2)
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    if channels == 4:
        alpha = ((xx // 16 + yy // 16) % 2 * 200 + 30).astype(np.uint8)[..., None]
        img = np.concatenate([img, alpha], axis=2)
    return img


def assert_objective_beats_random_noise(model, original: np.ndarray, protected: np.ndarray, settings) -> None:
    """The method raised its own objective, and clearly more than random ±ε noise of the same budget.

    "Clearly": the margin over random noise is at least twice random noise's own effect.
    """
    from engine.protect import method_objective, quantize_protected

    eps = settings.strength_levels
    random_noise = quantize_protected(original, np.random.default_rng(11).choice([-eps, eps], original.shape), eps)
    j_clean = method_objective(model, original, settings)
    gain = method_objective(model, protected, settings, reference=original) - j_clean
    gain_random = method_objective(model, random_noise, settings, reference=original) - j_clean
    assert gain > 0, (gain, gain_random)
    assert gain - gain_random > 2 * abs(gain_random), (gain, gain_random)


@pytest.fixture(scope="session")
def toy_proxy_model(tmp_path_factory):
    """A proxy-world model trained at toy scale (32 px, a few steps): every file of the real one, learned nothing.

    Read-only: tests that write into a model folder copy it first. Modules using it share the xdist group
    "proxy_toy_model", so it is trained once.
    """
    from engine.proxy import train

    out = tmp_path_factory.mktemp("proxy-source") / "toy"
    train.main(["--out", str(out), "--toy", "--device", "cpu", "--vae-steps", "10", "--unet-steps", "12"])
    return out
