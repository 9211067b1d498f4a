"""Random ±ε: the control every protection must beat (issue 27), not a protection.

δ = ε · s with s a random sign per pixel and channel, drawn once per image from the job's seed: every image of
one size in a batch gets the same s (each image's generator starts from that seed), so the control is one
random pattern shared by the set, as AntiPure's grid is, and says what such consistency does alone. It is
declared as a loss so that it runs through the very pipeline the protections run through (the strength ε, 8-bit
export, the strength check on the file): the loss ⟨s, x⟩ has the constant gradient s, so every sign-gradient
step moves δ by α·s and δ sits on the corner ε·s of the L∞ ball once steps · α ≥ ε (100 steps of 1 level
reach 32 levels). Pixels that would leave [0, 1] are clipped, as for every method.

Kept out of engine.methods.METHODS (the artist's menu); engine.methods.get_method finds it among CONTROLS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.methods.antipure import GRID_COLORS, AntiPureParams, grid_pattern, grid_signs
from engine.methods.base import MethodContext, ProtectionMethod, setting

_ANTIPURE = AntiPureParams()


class RandomSign(ProtectionMethod):
    name = "random"
    label = "Random ±ε (control)"
    summary = "Random sign noise at the full strength: what a protection must beat. Protects nothing by design."

    def setup(self, ctx: MethodContext) -> None:
        g = ctx.fresh_generator(int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator, device=ctx.generator.device)))
        signs = torch.randint(0, 2, ctx.x_clean.shape, generator=g, device=g.device).to(ctx.x_clean) * 2 - 1
        ctx.cache["random_signs"] = signs.to(ctx.x_clean.device)

    def memory_profile(self, timesteps_per_step):
        from engine.plan import MemoryProfile

        return MemoryProfile(encoder=False)

    def loss(self, ctx, x, generator):
        signs = ctx.cache["random_signs"]
        if signs.shape != x.shape:  # an EOT transform or a tile changed the shape: follow the image's own signs
            signs = torch.nn.functional.interpolate(signs, size=x.shape[-2:], mode="nearest")
        return (signs * x).sum(), {}


@dataclass
class GridSignParams:
    # AntiPure's defaults, as parameters: they are part of the evaluation's protect key, so a control measured
    # with another grid is made again, not reused, when AntiPure's defaults change.
    grid_period: int = setting(_ANTIPURE.grid_period, "px of the grid (AntiPure's default)", int, 2, 1024)
    grid_color: str = setting(_ANTIPURE.grid_color, "the grid's channels (AntiPure's default)", str, choices=GRID_COLORS)


class GridSign(RandomSign):
    """δ = ε · sign(g − ½) with g the grid AntiPure's default terms pull toward (engine.methods.antipure's
    grid_pattern at AntiPure's default grid_period and grid_color): the shared grid at the full strength, without
    any optimization. What the grid alone does to a mimic, against what AntiPure's optimized δ does."""

    name = "grid_sign"
    label = "Grid ±ε (control)"
    summary = "AntiPure's grid pattern at the full strength, not optimized: a control, protects nothing by design."
    Params = GridSignParams

    def setup(self, ctx: MethodContext) -> None:
        _, _, h, w = ctx.x_clean.shape
        grid = torch.from_numpy(grid_pattern(h, w, self.params.grid_period, self.params.grid_color))[None]
        ctx.cache["random_signs"] = grid_signs(grid).expand_as(ctx.x_clean).to(ctx.x_clean)
