"""PhotoGuard encoder attack (Salman et al. 2023): pull E(x') toward the latent of a flat gray image.

The cheapest strong attack: only the VAE encoder runs. methods.md §4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine import diffusion as D
from engine.methods.base import MethodContext, ProtectionMethod, setting


@dataclass
class PhotoGuardParams:
    target_gray: float = setting(0.5, "grey the encoder is pushed toward, in [0, 1]", float, 0.0, 1.0)


class PhotoGuard(ProtectionMethod):
    name = "photoguard"
    label = "PhotoGuard (fast, encoder only)"
    summary = "Fastest: scrambles what the model's image encoder sees. Good against editing, less against training."
    Params = PhotoGuardParams

    def setup(self, ctx: MethodContext) -> None:
        with torch.no_grad():
            gray = torch.full_like(ctx.x_clean, self.params.target_gray)
            ctx.cache["photoguard_target"] = D.encode(ctx.model, gray)

    def loss(self, ctx, x, generator):
        z = D.encode(ctx.model, x)
        distance = ((z - ctx.cache["photoguard_target"]) ** 2).mean()
        return -distance, {"distance_to_target": float(distance.detach())}
