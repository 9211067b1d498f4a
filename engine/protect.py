"""The one optimizer loop every protection method runs in.

Projected sign-gradient ascent (PGD) on δ within an L-infinity ball of `strength_levels` pixel levels:
    δ <- clip_ε(δ + α · sign(∇_δ loss)),  then x + δ clipped to [0, 1].

Large images: with large_image="resize" (default) δ is optimized on a copy whose longer side is
`working_size` and resized back bilinearly (a convex interpolation, so |δ| stays within ε); this is
Mist-v2's choice and matches what a mimic feeds a model. With "tiles" δ is optimized at full resolution
on overlapping working_size tiles and blended with convex weights. Either way the output is the
original at full resolution plus δ, rounded to 8 bits and clamped so the strength holds on the file.
Before the first step the memory plan (engine.plan) picks how the job runs: one pass, two-pass,
checkpointing, tiles or a smaller working size, the cheapest whose estimated peak fits the device; on
out-of-memory the job restarts once with the next smaller plan and says so.

Speed and memory (ProtectSettings.precision, two_pass, channels_last, low_vram, compile_unet): the
gradient is the same whichever is on (tests/test_fastpath.py). The two-pass backward (Mist-v2) applies
to methods that define `loss_from_latent(ctx, z, x, generator)`, the loss with z = E(x) given: the loop
takes ∂loss/∂z (and ∂loss/∂x) with the encoder outside the graph, frees the UNet graph, then runs one
encoder backward with that gradient, so the UNet and VAE graphs never hold memory at the same time.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from engine import diffusion as D
from engine.eot import EOT_TRANSFORMS, draw_transform
from engine.errors import ArtveilError, Cancelled
from engine.faults import is_out_of_memory
from engine.events import Progress
from engine.jobs import STRENGTH_RANGE, Job, ProtectProgress, ProtectResult, ProtectSettings, check_seed
from engine.methods import MethodContext, get_method
from engine.metrics import image_metrics, to_tensor
from engine.models import ModelBundle, compile_available, speed_mode
from engine.plan import Estimate, Plan, PlanChoice, candidate_plans, choose_plan, device_memory, next_smaller, shape_of

LOW_VRAM_TILE = 256  # a quarter of the activations of a 512-px region
PRECISIONS = ("auto", "bf16")
WARMUP_STEPS = 2  # excluded from the ETA: the first steps pay for allocation and kernel selection
# Draws for a job's objective_start/end (docs/benchmarks.md: at most 10 % of a default job). Start and end
# share them, so their difference is steadier than either value; method_objective keeps the full count.
JOB_OBJECTIVE_SEEDS = (101,)
JOB_OBJECTIVE_BATCH = 16


# Budgets shorter than this many steps take ε/10 per step when that is more than 1 level (methods.md §2).
SHORT_BUDGET_STEPS = 100


def default_step_levels(strength_levels: float, steps: int) -> float:
    """α in pixel levels (methods.md §2): 1 level per step; for short runs (under 100 steps) ε/10
    when that is larger, so δ reaches the border of the ball within 10 steps at any strength."""
    if steps < SHORT_BUDGET_STEPS:
        return max(1.0, strength_levels / 10.0)
    return 1.0


# Timesteps batched into one UNet call per step: more than the schedule has only costs memory.
TIMESTEPS_PER_STEP_RANGE = (1, 1000)


def _is_number(value, whole: bool = False) -> bool:
    """A finite int or float (not a bool); with whole, an int."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return (isinstance(value, (int, np.integer)) if whole else math.isfinite(value))


def validate_settings(settings: ProtectSettings) -> None:
    """Every setting checked before any work starts: ArtveilError("config") with one line naming it.

    The method's parameters are checked by engine.methods.get_method against their declarations."""
    top = STRENGTH_RANGE[1]
    strength = settings.strength_levels
    if not _is_number(strength) or not (0 < strength <= top):
        got = f"{strength:g}" if isinstance(strength, (int, float)) else repr(strength)
        raise ArtveilError("config", f"strength must be more than 0 and at most {top:g} pixel levels, got {got}.")
    if not _is_number(settings.steps, whole=True) or settings.steps < 1:
        raise ArtveilError("config", f"steps must be at least 1, got {settings.steps}.")
    alpha = settings.step_levels
    if alpha is not None and not (_is_number(alpha) and 0 < alpha <= 255):
        # 0 would never move δ (and once read as "automatic"); a negative step optimizes the wrong way.
        raise ArtveilError("config", f"step size must be more than 0 and at most 255 pixel levels (or automatic), got {alpha!r}.")
    low, high = TIMESTEPS_PER_STEP_RANGE
    if not _is_number(settings.timesteps_per_step, whole=True) or not low <= settings.timesteps_per_step <= high:
        raise ArtveilError("config", f"timesteps per step must be a whole number from {low} to {high}, got {settings.timesteps_per_step!r}.")
    check_seed(settings.seed)
    if not _is_number(settings.eot_samples, whole=True) or settings.eot_samples < 1:
        raise ArtveilError("config", f"EOT samples must be at least 1, got {settings.eot_samples!r}.")
    if settings.large_image not in ("resize", "tiles"):
        raise ArtveilError("config", f"large_image must be 'resize' or 'tiles', got {settings.large_image!r}.")
    unknown = set(settings.eot) - set(EOT_TRANSFORMS)
    if unknown:
        raise ArtveilError("config", f"unknown EOT transform(s) {sorted(unknown)}; known: {', '.join(EOT_TRANSFORMS)}.")
    if settings.precision not in PRECISIONS:
        raise ArtveilError("config", f"precision must be one of {', '.join(PRECISIONS)}, got {settings.precision!r}.")
    if not _is_number(settings.working_size, whole=True) or settings.working_size < 64:
        raise ArtveilError("config", f"working size must be at least 64 px, got {settings.working_size}.")


@dataclass
class _Region:
    y0: int
    y1: int
    x0: int
    x1: int


def _axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _tile_regions(h: int, w: int, t: int) -> list[_Region]:
    if max(h, w) <= t:
        return [_Region(0, h, 0, w)]
    overlap = max(16, t // 8)
    return [
        _Region(y, min(h, y + t), x, min(w, x + t))
        for y in _axis_starts(h, t, overlap)
        for x in _axis_starts(w, t, overlap)
    ]


def _region_tile(settings: ProtectSettings, tile: int | None) -> int:
    """Largest region side: the out-of-memory tile, else the working size (capped in low-VRAM mode)."""
    if tile is not None:
        return tile
    return min(settings.working_size, LOW_VRAM_TILE) if settings.low_vram else settings.working_size


def plan_regions(h: int, w: int, settings: ProtectSettings, tile: int | None) -> tuple[tuple[int, int], list[_Region]]:
    """(working height, width) and the regions to optimize in working coordinates.

    tile: the memory plan's tiles. They cut the working copy (the image scaled to the working size under
    "resize"), as low-VRAM's do: a plan changes memory and time, never what is optimized; only its last
    resort, a smaller working size, makes δ coarser."""
    size = settings.working_size
    t = _region_tile(settings, tile)
    if max(h, w) > size and settings.large_image == "resize":
        scale = size / max(h, w)
        wh, ww = max(8, round(h * scale)), max(8, round(w * scale))
        return (wh, ww), _tile_regions(wh, ww, t)
    return (h, w), _tile_regions(h, w, t)


def pad_to_multiple(x: torch.Tensor, m: int) -> tuple[torch.Tensor, int, int]:
    """x [..., h, w] padded on the bottom and right to multiples of m px (reflected where the image is large
    enough, else replicated), and the original h, w to crop back to."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


def working_tensor(pixels: np.ndarray, working_size: int, multiple: int) -> torch.Tensor:
    """[1, 3, h, w] in [0, 1] on the CPU, as the loop optimizes an image: the longer side at most
    working_size (antialiased), padded to a multiple of the latent factor."""
    x = to_tensor(pixels[..., :3])
    h, w = x.shape[-2:]
    if max(h, w) > working_size:
        s = working_size / max(h, w)
        x = F.interpolate(x, size=(max(8, round(h * s)), max(8, round(w * s))), mode="bilinear", align_corners=False,
                          antialias=True)
    return pad_to_multiple(x, multiple)[0]


def _feather(h: int, w: int, ramp: int) -> torch.Tensor:
    """Blend weights for a tile: 1 inside, a linear ramp over `ramp` px at the borders (never 0)."""
    def axis(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32)
        edge = torch.minimum(i + 1, n - i)
        return torch.clamp(edge / max(1, ramp), max=1.0)

    return axis(h)[:, None] * axis(w)[None, :]


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x[0].detach().clamp(0, 1).permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)


def quantize_protected(rgb: np.ndarray, delta_levels: np.ndarray, strength_levels: float) -> np.ndarray:
    """original + δ rounded to 8 bits, clamped so |out - original| <= floor(ε) on every channel."""
    bound = math.floor(strength_levels + 1e-6)
    out = np.clip(np.round(rgb.astype(np.float32) + delta_levels), 0, 255)
    diff = np.clip(out - rgb.astype(np.float32), -bound, bound)
    return (rgb.astype(np.float32) + diff).astype(np.uint8)


def _make_generator(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def two_pass_allowed(method, settings: ProtectSettings) -> bool | None:
    """Which plans may run the two-pass backward: None any (the plan decides), True only those (--two-pass on),
    False none (--two-pass off, or a method whose loss is not its loss_from_latent: engine.methods.base)."""
    if not method.declares_latent_loss():
        return False
    return settings.two_pass


def plan_job(model: ModelBundle, height: int, width: int, settings: ProtectSettings, memory=None, method=None,
             shape=None, forced: Plan | None = None) -> PlanChoice:
    """The cheapest plan (engine.plan) whose estimated peak fits the device for an height×width image; ArtveilError
    ("memory") in one line when none does. --low-vram asks for its plan (two-pass, checkpointing, 256-px tiles)
    and --two-pass on/off restricts the choice; otherwise the estimate alone decides, on the CPU as on CUDA."""
    method = method or get_method(settings.method, settings.method_params)
    memory = memory or device_memory(model.device)
    try:
        shape = shape or shape_of(model)
    except Exception as exc:  # a model the meta trace cannot run: no estimate, the plain plan, and say so
        plan = forced or low_vram_plan(settings, method, height, width) or Plan(working_size=settings.working_size)
        return PlanChoice(plan, Estimate(float("nan"), memory.held_mb, 0.0, float("nan")), memory.budget_mb,
                          memory.memory, note=f"memory not estimated for this model ({type(exc).__name__})")
    return choose_plan(shape, method.memory_profile(settings.timesteps_per_step), height, width,
                       settings.working_size, memory, weights_loaded=True, two_pass=two_pass_allowed(method, settings),
                       forced=forced or low_vram_plan(settings, method, height, width))


def _smaller_plan(model: ModelBundle, height: int, width: int, settings: ProtectSettings, choice: PlanChoice) -> Plan | None:
    method = get_method(settings.method, settings.method_params)
    if choice.note:  # no estimate: the next plan on the ladder
        plans = candidate_plans(settings.working_size, two_pass_allowed(method, settings), height, width)
        after = plans.index(choice.plan) + 1 if choice.plan in plans else 0
        return plans[after] if after < len(plans) else None
    return next_smaller(choice, shape_of(model), method.memory_profile(settings.timesteps_per_step), height, width,
                        settings.working_size, two_pass_allowed(method, settings))


def low_vram_plan(settings: ProtectSettings, method, height: int, width: int) -> Plan | None:
    """The plan --low-vram asks for; None without it."""
    if not settings.low_vram:
        return None
    side = min(settings.working_size, max(height, width))
    return Plan(two_pass=method.declares_latent_loss() and settings.two_pass is not False, checkpointing=True,
                tile=LOW_VRAM_TILE if side > LOW_VRAM_TILE else None, working_size=settings.working_size)


def _autocast(settings: ProtectSettings, device: torch.device):
    if settings.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def step_gradient(method, ctx: MethodContext, x_in: torch.Tensor, delta: torch.Tensor, generator: torch.Generator,
                  two_pass: bool, settings: ProtectSettings) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """∇_δ of the method's loss at x_in (a differentiable function of δ): (gradient, loss, terms).

    Both paths draw the same noise and timesteps from `generator`, so they give the same gradient.
    """
    # The method's scope (a tuned surrogate, swapped attention processors) spans the backward too: under
    # gradient checkpointing the backward recomputes the forward, which must meet the same model.
    with method.graph_scope(ctx):
        return _step_gradient(method, ctx, x_in, delta, generator, two_pass, settings)


def _step_gradient(method, ctx, x_in, delta, generator, two_pass, settings):
    amp = lambda: _autocast(settings, ctx.model.device)  # noqa: E731 (a fresh context per use)
    if not two_pass:
        with amp():
            loss, terms = method.loss(ctx, x_in, generator)
        return torch.autograd.grad(loss, delta)[0], loss.detach(), terms
    with torch.no_grad(), amp():
        z = D.encode(ctx.model, x_in)
    z = z.detach().requires_grad_(True)
    x_leaf = x_in.detach().requires_grad_(True)
    with amp():
        loss, terms = method.loss_from_latent(ctx, z, x_leaf, generator)
    # The UNet (and decoder) graph is freed here, before the encoder graph exists.
    g_z, g_x = torch.autograd.grad(loss, (z, x_leaf), allow_unused=True)
    loss = loss.detach()
    outputs, grads = [], []
    if g_z is not None:
        with amp():
            outputs.append(D.encode(ctx.model, x_in))
        grads.append(g_z)
    if g_x is not None:
        outputs.append(x_in)
        grads.append(g_x)
    if not outputs:
        return torch.zeros_like(delta), loss, terms
    return torch.autograd.grad(outputs, delta, grads)[0], loss, terms


def _project(delta: torch.Tensor, x: torch.Tensor, eps: float, bounds=None) -> torch.Tensor:
    """δ brought back into the budget: |δ| ≤ ε (or the method's tighter per-pixel bounds inside it), and x + δ a
    valid image in [0, 1]."""
    low, high = (-eps, eps) if bounds is None else bounds
    return (x + delta.clamp(low, high)).clamp(0, 1) - x


def _optimize_region(
    model: ModelBundle,
    method,
    x: torch.Tensor,
    settings: ProtectSettings,
    job: Job,
    seed: int,
    step_offset: int,
    total_steps: int,
    clock: dict,
    measure: bool,
    two_pass: bool,
    pool=None,
) -> Iterator[ProtectProgress | tuple[torch.Tensor, float | None, float | None]]:
    """PGD on one working-resolution region. Yields progress; the last item is (δ, obj0, obj1)."""
    dev = model.device
    m = model.vae_scale_factor
    x_pad, h, w = pad_to_multiple(x.to(dev), m)
    eps = settings.strength_levels / 255.0
    alpha = (default_step_levels(settings.strength_levels, settings.steps) if settings.step_levels is None
             else settings.step_levels) / 255.0
    gen = _make_generator(dev, seed)
    eot_gen = _make_generator(torch.device("cpu") if dev.type == "cpu" else dev, seed + 1)
    ctx = MethodContext(
        model=model,
        x_clean=x_pad,
        cond=model.encode_prompt(""),
        generator=gen,
        eps=eps,
        steps=settings.steps,
        timesteps_per_step=settings.timesteps_per_step,
        job=job,
        pool=pool,
    )
    method.setup(ctx)
    bounds = method.delta_bounds(ctx)
    start = method.initial_delta(ctx)
    delta = _project(torch.zeros_like(x_pad) if start is None else start, x_pad, eps, bounds)
    n_eot = max(1, settings.eot_samples) if settings.eot else 1
    for step in range(settings.steps):
        job.check()
        method.between_steps(ctx, (x_pad + delta).detach(), step)
        delta.requires_grad_(True)
        x_adv = x_pad + delta
        grad = torch.zeros_like(delta)
        terms: dict[str, float] = {}
        for _ in range(n_eot):
            ctx.transform = draw_transform(settings.eot, eot_gen) if settings.eot else None
            x_in = ctx.transform(x_adv) if ctx.transform is not None else x_adv
            g, loss, terms = step_gradient(method, ctx, x_in, delta, gen, two_pass, settings)
            grad += g
        ctx.transform = None
        with torch.no_grad():
            delta = _project(delta + alpha * grad.sign(), x_pad, eps, bounds)
        done = step_offset + step + 1
        now = time.perf_counter()
        clock["times"].append(now)
        elapsed = now - clock["start"]
        eta = None
        if len(clock["times"]) > WARMUP_STEPS + 1:
            warm = clock["times"][WARMUP_STEPS:]
            per_step = (warm[-1] - warm[0]) / (len(warm) - 1)
            eta = per_step * (total_steps - done)
        preview = None
        if settings.preview_every and (step + 1) % settings.preview_every == 0 or step + 1 == settings.steps:
            preview = _to_uint8((x_pad + delta)[..., :h, :w])
        terms = dict(terms, loss=float(loss))
        yield ProtectProgress(done, total_steps, terms, elapsed, eta, preview)
    obj0 = obj1 = None
    if measure:
        # Both ends on the method's final state (a tuned surrogate or prompt, for the methods that have
        # one), with the same few draws: the difference is what the protection did, not the tuning.
        obj0 = method.objective(ctx, x_pad, JOB_OBJECTIVE_SEEDS, JOB_OBJECTIVE_BATCH)
        obj1 = method.objective(ctx, (x_pad + delta).detach(), JOB_OBJECTIVE_SEEDS, JOB_OBJECTIVE_BATCH)
    yield delta[..., :h, :w].detach().float().cpu(), obj0, obj1


def _run(model, pixels, settings, job, choice: PlanChoice, notes, pool=None) -> Iterator[ProtectProgress | ProtectResult]:
    start = time.perf_counter()
    plan = choice.plan
    requested = settings
    # The plan's working size and tiles replace the settings' (low_vram's tiles are in the plan already).
    settings = replace(settings, working_size=plan.working_size, low_vram=False)
    tile = plan.tile
    method = get_method(settings.method, settings.method_params)
    rgb = pixels[..., :3]
    h, w = rgb.shape[:2]
    x_full = to_tensor(rgb)
    (wh, ww), regions = plan_regions(h, w, settings, tile)
    x_work = x_full if (wh, ww) == (h, w) else F.interpolate(x_full, size=(wh, ww), mode="bilinear", align_corners=False, antialias=True)
    total = settings.steps * len(regions)
    delta_sum = torch.zeros(1, 3, wh, ww)
    weight_sum = torch.zeros(1, 1, wh, ww)
    clock = {"start": start, "times": [start]}
    obj0 = obj1 = None
    ramp = max(16, _region_tile(settings, tile) // 8)
    if settings.compile_unet:
        why_not = compile_available(model.device)
        if why_not and why_not not in notes:
            notes.append(why_not)
    fast = speed_mode(
        model,
        channels_last=settings.channels_last,
        checkpointing=plan.checkpointing,
        vae_tiling=requested.low_vram,
        compile_unet=settings.compile_unet,
    )
    first_step = True
    with fast:
        for i, r in enumerate(regions):
            crop = x_work[..., r.y0 : r.y1, r.x0 : r.x1]
            measure = settings.measure_objective and i == 0
            for item in _optimize_region(model, method, crop, settings, job, settings.seed + 1000 * i, i * settings.steps,
                                         total, clock, measure, plan.two_pass, pool):
                if isinstance(item, ProtectProgress):
                    if first_step:
                        item.plan, first_step = choice.line(), False
                    yield item
                else:
                    delta, o0, o1 = item
                    if i == 0:
                        obj0, obj1 = o0, o1
            wgt = _feather(r.y1 - r.y0, r.x1 - r.x0, ramp)[None, None] if len(regions) > 1 else torch.ones(1, 1, r.y1 - r.y0, r.x1 - r.x0)
            delta_sum[..., r.y0 : r.y1, r.x0 : r.x1] += delta * wgt
            weight_sum[..., r.y0 : r.y1, r.x0 : r.x1] += wgt
    delta_work = delta_sum / weight_sum
    if (wh, ww) != (h, w):
        # Bilinear without antialias is a convex combination of neighbours: |δ| stays <= ε.
        delta_work = F.interpolate(delta_work, size=(h, w), mode="bilinear", align_corners=False)
    delta_levels = delta_work[0].permute(1, 2, 0).numpy() * 255.0
    protected_rgb = quantize_protected(rgb, delta_levels, settings.strength_levels)
    protected = np.concatenate([protected_rgb, pixels[..., 3:]], axis=2) if pixels.shape[2] == 4 else protected_rgb
    metrics = image_metrics(pixels, protected)
    if metrics["linf_levels"] > settings.strength_levels:
        raise ArtveilError("internal", f"strength check failed: {metrics['linf_levels']} > {settings.strength_levels}")
    yield ProtectResult(
        original=pixels,
        protected=protected,
        settings=requested,
        metrics=metrics,
        seconds=time.perf_counter() - start,
        steps_done=total,
        objective_start=obj0,
        objective_end=obj1,
        notes=list(notes),
        step_seconds=_steady_step_seconds(clock["times"]),
        plan=choice.line(),
    )


def _steady_step_seconds(times: list[float]) -> float | None:
    """Mean seconds per step after the warm-up steps; times = [start, end of step 1, end of step 2, ...].

    The interval from start to the end of step 1 (set-up, first allocations) is never counted.
    """
    steps = len(times) - 1
    if steps < 2:
        return None
    warm = times[max(1, min(WARMUP_STEPS, steps - 1)):]
    return (warm[-1] - warm[0]) / (len(warm) - 1)


def protect_iter(
    model: ModelBundle,
    pixels: np.ndarray,
    settings: ProtectSettings,
    job: Job | None = None,
    pool=None,
    plan: Plan | None = None,
) -> Iterator[ProtectProgress | ProtectResult]:
    """Protect one image (HxWx3/4 uint8). Yields ProtectProgress per step; the last item is the result.

    The memory plan (engine.plan) is chosen before the first step, and the first ProtectProgress and the result
    say which (`.plan`); ArtveilError("memory") in one line, before any work, when no plan fits. plan: run this
    plan instead of choosing (the benchmark's smallest plan), estimated and refused the same way.

    Raises Cancelled once Stop is asked for on `job` (checked before every step), ArtveilError otherwise.
    pool: the set's engine.surrogate.SurrogatePool when engine.batch protects a set (methods that tune a
    surrogate share it); None for an image on its own.
    """
    validate_settings(settings)
    job = job or Job()
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or pixels.dtype != np.uint8:
        raise ArtveilError("input", f"expected an HxWx3 or HxWx4 uint8 image, got {pixels.dtype} {pixels.shape}")
    notes: list[str] = []
    h, w = pixels.shape[:2]
    choice = plan_job(model, h, w, settings, forced=plan)
    retried = False
    while True:
        try:
            yield from _with_stop_points(model, job, settings, _run(model, pixels, settings, job, choice, notes, pool))
            return
        except Cancelled:
            raise
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        # Outside the except block: the failed attempt's frames (and the tensors they held) are gone.
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = None if retried else _smaller_plan(model, h, w, settings, choice)
        if smaller is None:
            raise ArtveilError("memory", f"out of memory even with the plan {choice.plan.describe()}; try a smaller "
                                         "working size or close other GPU programs.")
        retried = True
        choice = replace(choice, plan=smaller)
        message = f"out of memory: retrying with a smaller plan ({smaller.describe()})"
        notes.append(message)
        yield ProtectProgress(0, settings.steps, {}, 0.0, None, None, message=message)


def _blocks(module: torch.nn.Module, depth: int = 4, min_share: float = 1 / 64) -> list[torch.nn.Module]:
    """The model's blocks where a Stop may land inside a step: every entry of a ModuleList or Sequential at most
    `depth` names down (a UNet's down/mid/up blocks and their resnets and attentions, an autoencoder's layers)
    that holds at least `min_share` of the module's weights: a hook on each of a tiny autoencoder's small
    convolutions cost 5 % of a 64-px step, and Stop needs no finer grain than the large blocks."""
    named = dict(module.named_modules())
    total = sum(p.numel() for p in module.parameters())
    found = []
    for name, m in named.items():
        parent, _, _ = name.rpartition(".")
        if name and name.count(".") < depth and isinstance(named.get(parent), (torch.nn.ModuleList, torch.nn.Sequential)):
            if sum(p.numel() for p in m.parameters()) >= min_share * total:
                found.append(m)
    return found


class StopPoints:
    """While a job computes, Stop is also read at every large block of the UNet and the autoencoder, forward
    and backward: on a CPU one step of a real-size model at 512² takes minutes, and its set-up several steps'
    worth, so "within one step" is not soon enough. A forward pre-hook calls job.check() before each block
    runs; a hook on each block's output calls it again when the backward reaches it. Not installed around a
    compiled UNet (a hook there recompiles it; a GPU's steps are short)."""

    def __init__(self, modules: list[torch.nn.Module], job: Job):
        self.modules = modules
        self.job = job
        self.handles: list = []

    @staticmethod
    def blocks_of(model: ModelBundle, settings: ProtectSettings) -> list[torch.nn.Module]:
        """The blocks to hook for this job (none around a compiled UNet): found once per job, not per step."""
        return [] if settings.compile_unet else [*_blocks(model.unet, 4), *_blocks(model.vae, 3)]

    def _before(self, module, args):
        self.job.check()

    def _after(self, module, args, output):
        first = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(first, torch.Tensor) and first.requires_grad:
            first.register_hook(self._on_gradient)

    def _on_gradient(self, grad):
        self.job.check()

    def __enter__(self) -> "StopPoints":
        for m in self.modules:
            self.handles.append(m.register_forward_pre_hook(self._before))
            self.handles.append(m.register_forward_hook(self._after))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _with_stop_points(model, job: Job, settings: ProtectSettings, steps: Iterator):
    """The items of `steps`, each computed with StopPoints installed (and removed while the caller has it:
    the model may serve other work between two steps). Closing this closes `steps` at once, as `yield from`
    would: its contexts (speed modes, an applied surrogate) end now, not when it is garbage-collected."""
    modules = StopPoints.blocks_of(model, settings)
    try:
        while True:
            with StopPoints(modules, job):
                try:
                    item = next(steps)
                except StopIteration:
                    return
            yield item
    finally:
        steps.close()


def step_event(progress: ProtectProgress, index: int | None = None) -> Progress:
    """One optimizer step as the event stream carries it (engine.events)."""
    return Progress("protect", progress.step, progress.total, index, progress)


def protect_image(model, pixels, settings, job: Job | None = None) -> ProtectResult:
    """protect_iter, drained: returns the result, reporting each step to job as Progress("protect", step,
    total, detail=the ProtectProgress)."""
    result = None
    for item in protect_iter(model, pixels, settings, job):
        if isinstance(item, ProtectResult):
            result = item
        elif job is not None:
            job.report(step_event(item))
    assert result is not None
    return result


def estimate_step_seconds(model: ModelBundle, settings: ProtectSettings, height: int, width: int,
                          job: Job | None = None) -> float:
    """Seconds per optimizer step measured on this machine at the working size of an HxW image.

    Runs three steps on a flat image and times the last two (the first pays for warm-up). Stop on `job`
    ends it like a job (Cancelled): the window gives way to the artist's own work this way.
    """
    size = settings.working_size
    scale = min(1.0, size / max(height, width))
    h, w = max(64, int(height * scale)) // 8 * 8, max(64, int(width * scale)) // 8 * 8
    probe = np.full((h, w, 3), 128, np.uint8)
    probe_settings = replace(settings, steps=3, preview_every=0, measure_objective=False)
    times = []
    for item in protect_iter(model, probe, probe_settings, job):
        if isinstance(item, ProtectProgress):
            times.append(time.perf_counter())
    return (times[-1] - times[0]) / (len(times) - 1)


def method_objective(model: ModelBundle, pixels: np.ndarray, settings: ProtectSettings, reference: np.ndarray | None = None) -> float:
    """The method's own objective (fixed noise) on an image at working size; higher = stronger.

    reference: the clean image whose latent the method's targets are computed from (defaults to pixels).
    """
    method = get_method(settings.method, settings.method_params)
    ref = pixels if reference is None else reference

    def prepare(arr: np.ndarray) -> torch.Tensor:
        return working_tensor(arr, settings.working_size, model.vae_scale_factor).to(model.device)

    x_ref = prepare(ref)
    ctx = MethodContext(model=model, x_clean=x_ref, cond=model.encode_prompt(""), generator=_make_generator(model.device, settings.seed),
                        eps=settings.strength_levels / 255.0, steps=settings.steps, timesteps_per_step=settings.timesteps_per_step)
    method.setup(ctx)
    return method.objective(ctx, prepare(pixels))
