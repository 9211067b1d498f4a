"""Mist (Liang & Wu 2023): texture loss toward a target pattern fused with the semantic (AdvDM) loss.

loss (maximized) = w * L_sem - ||E(x') - E(pattern)||^2, as methods.md §4 gives it, with w = 10^4.
The texture term is a sum over the latent's elements (Mist's MSELoss(reduction="sum")), the semantic
term a mean (the LDM loss): a mean texture term would be 4·(H/8)·(W/8) times weaker (16,384 at 512 px)
and Mist would in effect be AdvDM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine import diffusion as D
from engine.methods.advdm import semantic_loss
from engine.methods.base import MethodContext, ProtectionMethod, setting


@dataclass
class MistParams:
    semantic_weight: float = setting(1e4, "weight of the semantic term against the texture term", float, 0, 1e9)
    pattern_period: int = setting(16, "px of the target texture's period", int, 2, 1024)


def target_pattern(height: int, width: int, period: int = 16) -> np.ndarray:
    """A high-contrast, deterministic texture (diagonal bands crossed with a checker) in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    bands = 0.5 + 0.5 * np.sin(2 * np.pi * (x + y) / period)
    checker = ((x // period + y // period) % 2).astype(np.float32)
    gray = 0.6 * bands + 0.4 * checker
    return np.stack([gray, 1 - gray, 0.5 * gray + 0.25], axis=0)


class Mist(ProtectionMethod):
    name = "mist"
    label = "Mist (texture + semantic)"
    summary = "Pushes a visible texture into what models learn from the image. Stronger noise, good against training."
    Params = MistParams

    def setup(self, ctx: MethodContext) -> None:
        _, _, h, w = ctx.x_clean.shape
        pattern = torch.from_numpy(target_pattern(h, w, self.params.pattern_period))[None].to(ctx.x_clean.device)
        with torch.no_grad():
            ctx.cache["mist_target"] = D.encode(ctx.model, pattern)

    def memory_profile(self, timesteps_per_step):
        from engine.plan import MemoryProfile

        return MemoryProfile(unet_batch=timesteps_per_step)

    def loss_from_latent(self, ctx, z, x, generator):
        texture = ((z - ctx.cache["mist_target"]) ** 2).sum()
        semantic = semantic_loss(ctx, z, generator)
        loss = self.params.semantic_weight * semantic - texture
        return loss, {"semantic": float(semantic.detach()), "texture": float(texture.detach())}
