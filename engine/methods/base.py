"""What a protection method is: given the model, the image and δ, a loss to maximize.

The optimizer loop (engine.protect) owns everything else once: the strength ε, the sign-gradient step,
tiling, EOT, progress and cancel. A new method is one module here plus one line in the registry.

A method declares its loss once, in one of two forms: `loss_from_latent(ctx, z, x, generator)` when the
loss reads the image through its latent z = E(x) (then `loss` follows from it, and the loop may run the
two-pass backward), or `loss(ctx, x, generator)` itself when it does not.

Its parameters are the fields of its `Params` dataclass, each declared with `setting(default, unit, kind, low,
high)`: one declaration (engine.params.Param, the purifiers' kind) that the constructor checks every value
against, so a wrong name, kind or range (NaN, a string for a number) is refused before any work starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import torch

from engine import diffusion as D
from engine.errors import ArtveilError
from engine.jobs import Job
from engine.models import ModelBundle
from engine.params import REFUSED, Param

_DECLARATION = "artveil_param"


def setting(default: Any, unit: str, kind: type = float, low: float | None = None, high: float | None = None, *,
            low_open: bool = False, choices: tuple[str, ...] = (), optional: bool = False):
    """A field of a method's Params dataclass with its declaration: the field's name and default are the
    Param's; kind, range, choices and optional (None accepted) are checked for every value a caller gives."""
    return field(default=default, metadata={_DECLARATION: dict(unit=unit, kind=kind, low=low, high=high,
                                                               low_open=low_open, choices=choices, optional=optional)})


def declared_params(params_class: type) -> tuple[Param, ...]:
    """The Param of each field of a method's Params dataclass; TypeError for a field declared without setting()."""
    out = []
    for f in dataclasses.fields(params_class):
        spec = f.metadata.get(_DECLARATION)
        if spec is None:
            raise TypeError(f"{params_class.__name__}.{f.name} has no declaration; give it with setting(...)")
        out.append(Param(f.name, f.default, **spec))
    return tuple(out)


@dataclass
class MethodContext:
    """What a method sees of one image (or one tile) being protected.

    x_clean: [1, 3, h, w] in [0, 1], fp32, on the model's device.
    eps: the strength ε, the L-infinity bound of δ, in [0, 1] units (strength_levels / 255).
    cache: per-image scratch space (targets, normalizers) filled by setup().
    job: the engine.jobs.Job; long set-up work calls job.check() between pieces (Cancelled after Stop).
    transform: during an EOT step, the random transform the loss's x went through (x = T(x_clean + δ)),
        so a method can put its clean references through the same T; None otherwise.
    """

    model: ModelBundle
    x_clean: torch.Tensor
    cond: torch.Tensor
    generator: torch.Generator
    eps: float
    steps: int
    timesteps_per_step: int = 1
    cache: dict[str, Any] = field(default_factory=dict)
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    # Stop: long set-up work (AntiPure's normalisation draws) calls job.check() between pieces, so Stop is not
    # held up until the first optimizer step.
    job: Job = field(default_factory=Job)
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
        self.params = self.Params(**self.resolve(params or {}))
        problem = self.params_problem()
        if problem:
            raise ArtveilError("config", f"{self.name}: {problem}")

    @classmethod
    def declared(cls) -> tuple[Param, ...]:
        """Every parameter of the method, as declared in its Params (name, kind, range, unit, default)."""
        return declared_params(cls.Params)

    @classmethod
    def resolve(cls, params: dict[str, Any]) -> dict[str, Any]:
        """params, each checked against its declaration and given in its kind (an int 1 for a float is 1.0);
        ArtveilError("config") on an unknown name or a value outside its kind or range."""
        declared = {p.name: p for p in cls.declared()}
        unknown = sorted(set(params) - set(declared))
        if unknown:
            if not declared:
                raise ArtveilError("config", f"{cls.name} takes no parameters; got {unknown}")
            raise ArtveilError("config", f"{cls.name}: unknown parameter(s) {unknown}; known: {sorted(declared)}")
        resolved = {}
        for key, value in params.items():
            accepted = declared[key].accepts(value)
            if accepted is REFUSED:
                raise ArtveilError("config", f"{cls.name}: {key}={value!r} is not {declared[key].expects()}; "
                                             f"{declared[key].describe()}")
            resolved[key] = accepted
        return resolved

    def params_problem(self) -> str | None:
        """Why these parameters do not fit together (one line), or None. Each value alone is already checked
        against its declaration; a method whose parameters depend on each other (a range's two ends) says so here."""
        return None

    def setup(self, ctx: MethodContext) -> None:
        """Precompute what the loss needs (targets, normalizers). Called once per image or tile."""

    def graph_scope(self, ctx: MethodContext) -> contextlib.AbstractContextManager:
        """The model as the loss sees it, held by the optimizer loop around the loss's forward AND its backward.

        Under gradient checkpointing (a memory plan's) the backward runs each UNet block's forward again: it must
        meet the same model. A method whose loss runs a tuned surrogate or swapped attention processors inside
        the forward returns here what keeps them in place until the gradient is taken; the loss's own scopes
        inside are then re-entered, not repeated. Default: nothing to hold."""
        return contextlib.nullcontext()

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

    def memory_profile(self, timesteps_per_step: int):
        """The graphs one step keeps for its backward pass (engine.plan.MemoryProfile), so that the job's peak
        memory is estimated before it starts. The default: the loss reads the image through the encoder only
        (PhotoGuard); a method with UNet samples in its graph says how many."""
        from engine.plan import MemoryProfile

        return MemoryProfile(encoder=True)

    def initial_delta(self, ctx: MethodContext) -> torch.Tensor | None:
        """Where δ starts, shaped like ctx.x_clean (the loop clips it to ε and to [0, 1]); None: at 0."""
        return None

    def delta_bounds(self, ctx: MethodContext) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per-pixel bounds (low, high) of δ inside [-ε, ε], shaped like ctx.x_clean, when the method keeps part of
        δ fixed (AntiPure's grid_share); the loop projects every step into them. None: the whole [-ε, ε]."""
        return None

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
