"""What a protection method is: given the model, the image and δ, a loss to maximize.

The optimizer loop (engine.protect) owns everything else once: the budget, the sign-gradient step,
tiling, EOT, progress and cancel. A new method is one module here plus one line in the registry.

A method declares its loss once, in one of two forms: `loss_from_latent(ctx, z, x, generator)` when the
loss reads the image through its latent z = E(x) (then `loss` follows from it, and the loop may run the
two-pass backward), or `loss(ctx, x, generator)` itself when it does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import torch

from engine import diffusion as D
from engine.errors import ArtveilError
from engine.models import ModelBundle


@dataclass
class MethodContext:
    """What a method sees of one image (or one tile) being protected.

    x_clean: [1, 3, h, w] in [0, 1], fp32, on the model's device.
    budget: the L-infinity budget in [0, 1] units (strength_levels / 255).
    cache: per-image scratch space (targets, normalizers) filled by setup().
    check_cancelled: call between long pieces of set-up work; raises Cancelled after Stop.
    transform: during an EOT step, the random transform the loss's x went through (x = T(x_clean + δ)),
        so a method can put its clean references through the same T; None otherwise.
    """

    model: ModelBundle
    x_clean: torch.Tensor
    cond: torch.Tensor
    generator: torch.Generator
    budget: float
    steps: int
    timesteps_per_step: int = 1
    cache: dict[str, Any] = field(default_factory=dict)
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    # Raises Cancelled when the user pressed Stop: long set-up work (AntiPure's normalisation draws) calls it
    # between pieces, so Stop is not held up until the first optimizer step.
    check_cancelled: Callable[[], None] = lambda: None
    # The set's engine.surrogate.SurrogatePool when engine.batch protects a set; None for one image.
    pool: Any = None

    def fresh_generator(self, seed: int) -> torch.Generator:
        g = torch.Generator(device=self.generator.device)
        g.manual_seed(seed)
        return g


@dataclass
class EmptyParams:
    pass


class ProtectionMethod:
    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Params: ClassVar[type] = EmptyParams
    # Fixed seeds for objective(): the same noises and timesteps every time, so values compare.
    objective_seeds: ClassVar[tuple[int, ...]] = (101, 202, 303, 404)
    # Timesteps per draw when measuring: the gain of a protection is a fraction of a percent of the
    # loss, so the estimate needs many (t, noise) pairs to be steadier than the gain itself.
    objective_batch: ClassVar[int] = 64

    def __init__(self, params: dict[str, Any] | None = None):
        known = {f.name for f in dataclasses.fields(self.Params)}
        unknown = set(params or {}) - known
        if unknown:
            raise ArtveilError(
                "config", f"{self.name}: unknown parameter(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        self.params = self.Params(**(params or {}))

    def setup(self, ctx: MethodContext) -> None:
        """Precompute what the loss needs (targets, normalizers). Called once per image or tile."""

    def loss(self, ctx: MethodContext, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The quantity the optimizer maximizes for the protected image x ([1,3,h,w] in [0,1]).

        Returns the scalar loss and its named terms (plain floats, for progress and logs). Unless a method
        overrides it, this is loss_from_latent at z = E(x).
        """
        return self.loss_from_latent(ctx, D.encode(ctx.model, x), x, generator)

    def loss_from_latent(self, ctx: MethodContext, z: torch.Tensor, x: torch.Tensor,
                         generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The same loss with the latent z = E(x) given ([1,C,h/f,w/f], model units) alongside x.

        engine.protect's two-pass backward calls it with z computed outside the graph, then takes ∂/∂z
        back through the encoder on its own. A method whose loss goes through the latent declares this
        and not loss(); a method that overrides loss() declares its loss there.
        """
        raise NotImplementedError(f"{type(self).__name__} declares neither loss() nor loss_from_latent()")

    @classmethod
    def declares_latent_loss(cls) -> bool:
        """True when the method's loss is its loss_from_latent, i.e. loss() is the interface's own: only
        then may the two-pass backward run it. A subclass that overrides loss() is run through that loss,
        never through a loss_from_latent it inherited."""
        return cls.loss is ProtectionMethod.loss

    def between_steps(self, ctx: MethodContext, x_protected: torch.Tensor, step: int) -> None:
        """Hook for surrogate fine-tuning (ASPL, Anti-Diffusion) between optimizer steps."""

    def tunes_on_set(self) -> bool:
        """True when the method tunes a surrogate on the protected set: a batch then shares one surrogate
        and every image's state across the set (engine.batch, engine.surrogate.SurrogatePool)."""
        return False

    def objective(self, ctx: MethodContext, x: torch.Tensor, seeds: Sequence[int] | None = None, batch: int | None = None) -> float:
        """The method's own objective at x, with fixed noise: higher means stronger protection.

        seeds, batch: the draws (default objective_seeds × objective_batch timesteps). Values measured with
        the same draws compare; the job's own start/end measurement uses fewer (engine.protect).
        """
        seeds = self.objective_seeds if seeds is None else tuple(seeds)
        with torch.no_grad(), measuring(ctx, self.objective_batch if batch is None else batch):
            values = [float(self.loss(ctx, x, ctx.fresh_generator(s))[0]) for s in seeds]
        return sum(values) / len(values)


@contextlib.contextmanager
def measuring(ctx: MethodContext, batch: int):
    """Temporarily draw `batch` timesteps per loss call (objective measurement, not optimization)."""
    saved = ctx.timesteps_per_step
    ctx.timesteps_per_step = max(saved, batch)
    try:
        yield
    finally:
        ctx.timesteps_per_step = saved
