"""AdvDM: maximize the latent-diffusion denoising loss (Liang et al. 2023). methods.md §4."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine import diffusion as D
from engine.methods.base import MethodContext, ProtectionMethod, setting


@dataclass
class AdvDMParams:
    t_min: int = setting(0, "first training timestep drawn", int, 0, 999)
    t_max: int | None = setting(None, "training timesteps drawn stop below it; none: the model's whole range",
                                int, 1, 1000, optional=True)


def semantic_loss(ctx: MethodContext, z: torch.Tensor, generator: torch.Generator, t_min: int = 0, t_max: int | None = None) -> torch.Tensor:
    """L_sem = E_t,n ||model(z_t, t, c) - target||^2, several timesteps batched in one UNet call."""
    t = D.sample_timesteps(ctx.model, ctx.timesteps_per_step, generator, t_min, t_max)
    noise = D.randn_like(z.expand(t.shape[0], -1, -1, -1), generator)
    return D.denoising_loss(ctx.model, z, ctx.cond, t, noise)


class AdvDM(ProtectionMethod):
    name = "advdm"
    label = "AdvDM (baseline)"
    summary = "Classic baseline: makes the image hard for the model to learn. Weak against purification."
    Params = AdvDMParams

    def memory_profile(self, timesteps_per_step):
        from engine.plan import MemoryProfile

        return MemoryProfile(unet_batch=timesteps_per_step)

    def loss_from_latent(self, ctx, z, x, generator):
        loss = semantic_loss(ctx, z, generator, self.params.t_min, self.params.t_max)
        return loss, {"semantic": float(loss.detach())}

    def params_problem(self):
        p = self.params
        if p.t_max is not None and p.t_min >= p.t_max:
            return f"t_min ({p.t_min}) must be below t_max ({p.t_max})"
        return None
