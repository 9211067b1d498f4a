"""SDS(-) (Xue et al. 2024): the score-distillation gradient, descending, through the encoder only.

The UNet runs without a graph, so a step costs about half of AdvDM's time and memory. The gradient
(eps_hat(z_t) - n) dz/dx approximates that of the denoising loss; the '-' variant descends it, which
the authors found protects better. Its objective (see objective()) is the SDS objective to first
order around the original. methods.md §4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine import diffusion as D
from engine.methods.base import ProtectionMethod, measuring, setting


@dataclass
class SDSParams:
    descend: bool = setting(True, "SDS(−); false gives SDS(+), which ascends like AdvDM", bool)


class SDSMinus(ProtectionMethod):
    name = "sds"
    label = "SDS(−) (fast, half the memory)"
    summary = "Light and fast: nudges the image along the model's own score. Good for small GPUs."
    Params = SDSParams

    def loss(self, ctx, x, generator):
        z = D.encode(ctx.model, x)
        model = ctx.model
        t = D.sample_timesteps(model, ctx.timesteps_per_step, generator)
        zb = z.expand(t.shape[0], -1, -1, -1)
        noise = D.randn_like(zb, generator)
        with torch.no_grad():
            z_t = D.add_noise(model, zb.detach(), noise, t)
            eps = D.predict_eps(model, z_t, t, D.unet(model, z_t, t, ctx.cond))
            residual = eps - noise
        # Surrogate whose gradient w.r.t. z is exactly the SDS residual (mean over the batch).
        surrogate = (residual * zb).sum() / zb.shape[0]
        sign = -1.0 if self.params.descend else 1.0
        return sign * surrogate, {"sds_residual": float(residual.pow(2).mean())}

    def objective(self, ctx, x, seeds=None, batch=None):
        """The SDS objective to first order around the original: -E[<eps_hat(z_t) - n, E(x) - E(x_clean)>].

        SDS(-) follows exactly this direction (the residual, UNet Jacobian dropped), so it is the
        quantity the method raises whatever the model; random noise leaves it near zero. The residual
        is taken at the original's latent with fixed noise, so values at different x compare.
        """
        model = ctx.model
        sign = 1.0 if self.params.descend else -1.0
        total = 0.0
        seeds = self.objective_seeds if seeds is None else tuple(seeds)
        with torch.no_grad(), measuring(ctx, self.objective_batch if batch is None else batch):
            z_ref = D.encode(model, ctx.x_clean)
            shift = D.encode(model, x) - z_ref
            for s in seeds:
                g = ctx.fresh_generator(s)
                t = D.sample_timesteps(model, ctx.timesteps_per_step, g)
                zb = z_ref.expand(t.shape[0], -1, -1, -1)
                noise = D.randn_like(zb, g)
                z_t = D.add_noise(model, zb, noise, t)
                residual = D.predict_eps(model, z_t, t, D.unet(model, z_t, t, ctx.cond)) - noise
                total += float(-(residual.mean(dim=0, keepdim=True) * shift).sum())
        return sign * total / len(seeds)
