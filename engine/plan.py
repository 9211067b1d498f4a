"""The memory plan of a protection job: its peak memory estimated before the first step, and the least
costly plan that fits the device.

A plan is how the optimizer loop trades time for memory, cheapest first:

    one pass            one graph from pixels to loss (the plain path)
    two-pass            Mist-v2's VAE backward: the UNet/decoder graph and the encoder graph never coexist
                        (one extra encoder forward per step)
    checkpointing       + activations recomputed in the backward pass (about 30 % more time)
    tiles               + δ optimized on overlapping tiles of the working image (256, then 128 px)
    working size        + δ computed at a smaller working size and scaled up (a coarser result: last resort)

The estimate (MiB) = what the process holds before the job (CPU: its resident set; CUDA: what torch holds)
+ the weights (when not loaded yet) + the job's activations. Activations are counted, not guessed: the
UNet, the VAE encoder and the decoder are built from their configs on the meta device (no memory, no
weights) and run forward at the job's size, and every tensor autograd saves for the backward pass is
added up (`saved_bytes`). PyTorch's CPU and CUDA attention kernels are the fused ones, whose backward
keeps q, k, v, the output and the log-sum-exp, so the trace counts those (not the n² attention matrix of
the math path). Under gradient checkpointing only each checkpointed block's inputs are kept, plus the
largest block while it is recomputed. Which graphs live together is the method's `memory_profile`
(engine.methods.base). A measured calibration (ACTIVATION_OVERHEAD, docs/benchmarks.md) covers what the
trace does not see: gradients in flight, the allocator's slack.

Budgets: on the CPU the job shares the artist's RAM with the painting program, the browser and the system:
it may reach at most a third of the machine's memory, and at most what it holds plus half of what the system
reports available when it starts. On CUDA: the free VRAM less a 5 % reserve for the allocator's fragmentation.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.errors import ArtveilError

MIB = 2**20
# Measured peak over traced activations: 1.05-1.42 for SD 1.5's encoder, decoder and UNet, each forward and
# backward on its own in a fresh process on the CPU (docs/benchmarks.md, "The memory plan").
ACTIVATION_OVERHEAD = 1.3
# A flat allowance for what a job allocates besides the graphs (latents, δ, the optimizer's copies) and for the
# library pages its first step touches: a job on the tiny model grew 107-260 MB over 117 MB of traced activations.
STEP_ALLOWANCE_MB = 256.0
CPU_SHARE_OF_AVAILABLE = 0.5
CPU_SHARE_OF_TOTAL = 1 / 3
CUDA_RESERVE = 0.05
# A UNet above this many parameters is a real-size model (SD 1.x has 860 M; the tiny and proxy models
# a few million): on the CPU it gets the CPU defaults below.
REAL_SIZE_UNET_PARAMS = 300_000_000
# The working size for a real-size model on the CPU: a quarter of the work of 512 px (docs/benchmarks.md).
CPU_REAL_SIZE_WORKING_SIZE = 256
TILES = (256, 128)
# The shipped random-weight configs (`--model sd15` in bench and protect: SD's shapes, no download).
RANDOM_CONFIGS = ("sd15", "sd21-base")


@dataclass(frozen=True)
class Plan:
    """How one job runs. tile: the largest region side in working pixels (None: the whole working image);
    working_size: the longer side δ is optimized at (px)."""

    two_pass: bool = False
    checkpointing: bool = False
    tile: int | None = None
    working_size: int = 512

    def describe(self) -> str:
        parts = ["two-pass" if self.two_pass else "one pass"]
        if self.checkpointing:
            parts.append("checkpointing")
        parts.append(f"{self.tile}-px tiles" if self.tile else "whole image")
        parts.append(f"working size {self.working_size} px")
        return ", ".join(parts)


@dataclass(frozen=True)
class Estimate:
    """A job's estimated peak, in MiB, and its parts."""

    peak_mb: float
    held_mb: float  # what the process holds already (weights included once loaded)
    weights_mb: float  # weights still to load (0 once loaded)
    activations_mb: float


@dataclass(frozen=True)
class PlanChoice:
    plan: Plan
    estimate: Estimate
    budget_mb: float
    memory: str  # "RAM" or "VRAM"
    tried: tuple[tuple[Plan, Estimate], ...] = field(default=())
    note: str | None = None  # why there is no estimate (a model the trace cannot run)

    def line(self) -> str:
        """What the CLI and the window say, in one line."""
        if self.note:
            return f"plan: {self.plan.describe()} ({self.note})"
        return (f"plan: {self.plan.describe()} (estimated peak {self.estimate.peak_mb / 1024:.1f} GB of "
                f"{self.budget_mb / 1024:.1f} GB {self.memory} allowed)")


# --- the model's shape, from configs (before loading) or from a loaded bundle -------------------------------

@dataclass
class ModelShape:
    """What the estimate needs of a model: its modules on the meta device (no memory) and its weights' size."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    weights_mb: float
    unet_params: int
    dtype_bytes: int
    vae_scale_factor: int
    latent_channels: int
    cross_attention_dim: int
    name: str = ""
    _cache: dict = field(default_factory=dict, repr=False)


def native_size(model) -> int:
    """The side in pixels a loaded model was trained at: its UNet's latent sample size times the VAE's factor
    (64 for the built-in proxy model, 512 for SD 1.5); 512 where the config does not say."""
    try:
        side = int(model.unet.config.sample_size) * int(model.vae_scale_factor)
    except (AttributeError, TypeError, ValueError):
        return 512
    return side if side >= 32 else 512


def default_working_size(shape: ModelShape, device: torch.device, native: int = 512) -> int:
    """The working size a job gets when the user names none: CPU_REAL_SIZE_WORKING_SIZE for a real-size model on
    the CPU (a 512² step there takes minutes: docs/benchmarks.md), the model's native size otherwise."""
    if device.type == "cpu" and is_real_size(shape):
        return min(native, CPU_REAL_SIZE_WORKING_SIZE)
    return native


def _meta_from_config(cls, config: dict):
    with torch.device("meta"):
        return cls.from_config(config)


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


_DTYPES = {2: torch.bfloat16, 4: torch.float32}


def _shape(name: str, unet, vae, text_params: int, dtype_bytes: int) -> ModelShape:
    # The trace runs in the job's dtype (meta modules convert for free): activations scale with it.
    dtype = _DTYPES.get(dtype_bytes, torch.float32)
    unet, vae = torch.nn.Module.to(unet, dtype), torch.nn.Module.to(vae, dtype)  # diffusers warns on its own .to
    unet_params = sum(p.numel() for p in unet.parameters())
    n = unet_params + sum(p.numel() for p in vae.parameters()) + text_params
    return ModelShape(
        unet=unet, vae=vae, weights_mb=n * dtype_bytes / MIB, unet_params=unet_params, dtype_bytes=dtype_bytes,
        vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1) if hasattr(vae, "config") else 8,
        latent_channels=int(unet.config.in_channels), cross_attention_dim=int(unet.config.cross_attention_dim),
        name=name,
    )


def shape_from_config_dir(root: Path, dtype_bytes: int = 4) -> ModelShape:
    """A diffusers folder's shape from its config files alone (unet/, vae/, text_encoder/config.json)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = Path(root)
    unet = _meta_from_config(UNet2DConditionModel, json.loads((root / "unet" / "config.json").read_text()))
    vae = _meta_from_config(AutoencoderKL, json.loads((root / "vae" / "config.json").read_text()))
    text_params = 0
    if (root / "text_encoder" / "config.json").is_file():
        with torch.device("meta"):
            text = CLIPTextModel(CLIPTextConfig.from_pretrained(root / "text_encoder", local_files_only=True))
        text_params = sum(p.numel() for p in text.parameters())
    return _shape(root.name, unet, vae, text_params, dtype_bytes)


def _meta_copy(module: torch.nn.Module) -> torch.nn.Module:
    config = getattr(module, "config", None)
    if config is not None and hasattr(type(module), "from_config"):
        try:
            return _meta_from_config(type(module), dict(config))
        except Exception:  # a module whose config does not rebuild it: copy it (small models only)
            pass
    return copy.deepcopy(module).to("meta")


def shape_of(model) -> ModelShape:
    """A loaded ModelBundle's shape (its weights are already in memory: weights_mb counts them for the record)."""
    cached = getattr(model, "_plan_shape", None)
    if cached is not None:
        return cached
    unet, vae = _meta_copy(model.unet), _meta_copy(model.vae)
    shape = _shape(model.name, unet, vae, 0, torch.tensor([], dtype=model.dtype).element_size())
    shape.weights_mb = (_param_bytes(model.unet) + _param_bytes(model.vae) + _param_bytes(model.text_encoder)) / MIB
    shape.vae_scale_factor = model.vae_scale_factor
    try:
        object.__setattr__(model, "_plan_shape", shape)
    except Exception:
        pass
    return shape


def is_real_size(shape: ModelShape) -> bool:
    return shape.unet_params >= REAL_SIZE_UNET_PARAMS


# --- counting what autograd keeps ---------------------------------------------------------------------------

class _FusedAttention(torch.autograd.Function):
    """Stands in for F.scaled_dot_product_attention in the trace: keeps what the fused kernels keep."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1]))
        return out

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover (never run: the trace has no backward)
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


_REAL_SDPA = F.scaled_dot_product_attention


def _fused_sdpa(query, key, value, *args, **kwargs):
    if query.device.type != "meta":  # another thread's real work while a trace runs: untouched
        return _REAL_SDPA(query, key, value, *args, **kwargs)
    return _FusedAttention.apply(query, key, value)


class _Counter:
    """Unique tensors saved for backward (weights excluded), and the largest checkpointed block."""

    def __init__(self, weights: set[int]):
        self.weights = weights
        self.stack: list[dict[int, int]] = [{}]
        self.keep: list[torch.Tensor] = []  # keeps ids unique while the trace runs
        self.largest_block = 0

    def pack(self, t: torch.Tensor):
        base = t._base if t._base is not None else t
        if id(base) not in self.weights:
            self.keep.append(base)
            self.stack[-1][id(base)] = base.numel() * base.element_size()
        return t

    def checkpoint(self, fn, *args, **kwargs):
        # Non-reentrant checkpointing keeps the block's inputs and recomputes the rest in the backward pass.
        for a in args:
            if isinstance(a, torch.Tensor):
                self.stack[-1][id(a)] = a.numel() * a.element_size()
                self.keep.append(a)
        self.stack.append({})
        try:
            out = fn(*args, **kwargs)
        finally:
            block = self.stack.pop()
        self.largest_block = max(self.largest_block, sum(block.values()))
        return out


def saved_bytes(module: torch.nn.Module, run, checkpointing: bool) -> float:
    """Bytes autograd keeps for the backward of `run(module)` (meta tensors), plus under checkpointing the
    largest block being recomputed."""
    weights = {id(p) for p in module.parameters()}
    counter = _Counter(weights)
    ckpt_modules = [m for m in module.modules() if hasattr(m, "gradient_checkpointing")]
    saved_state = [(m, m.gradient_checkpointing, m.__dict__.get("_gradient_checkpointing_func")) for m in ckpt_modules]
    try:
        for m in ckpt_modules:
            m.gradient_checkpointing = checkpointing
            if checkpointing:
                m._gradient_checkpointing_func = counter.checkpoint
        F.scaled_dot_product_attention = _fused_sdpa
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
            run(module)
    finally:
        F.scaled_dot_product_attention = _REAL_SDPA
        for m, flag, func in saved_state:
            m.gradient_checkpointing = flag
            if func is None:
                m.__dict__.pop("_gradient_checkpointing_func", None)
            else:
                m._gradient_checkpointing_func = func
    return float(sum(counter.stack[0].values()) + counter.largest_block)


def _with_dtype(t: torch.Tensor, shape: ModelShape) -> torch.Tensor:
    return t.to(_DTYPES.get(shape.dtype_bytes, torch.float32))


def component_mb(shape: ModelShape, part: str, batch: int, h: int, w: int, checkpointing: bool) -> float:
    """MiB autograd keeps for one part ("unet", "encoder", "decoder") at an h×w image (pixels), batch samples."""
    key = (part, batch, h, w, checkpointing)
    if key in shape._cache:
        return shape._cache[key]
    f = shape.vae_scale_factor
    lh, lw = max(1, h // f), max(1, w // f)
    if part == "unet":
        z = _with_dtype(torch.zeros(batch, shape.latent_channels, lh, lw, device="meta"), shape).requires_grad_(True)
        cond = _with_dtype(torch.zeros(batch, 77, shape.cross_attention_dim, device="meta"), shape)
        t = torch.zeros(batch, dtype=torch.long, device="meta")
        run = lambda m: m(z, t, encoder_hidden_states=cond)  # noqa: E731
        module = shape.unet
    elif part == "encoder":
        x = _with_dtype(torch.zeros(batch, 3, h, w, device="meta"), shape).requires_grad_(True)
        run = lambda m: m.encode(x)  # noqa: E731
        module = shape.vae
    else:
        vae_channels = int(getattr(shape.vae.config, "latent_channels", shape.latent_channels))
        z = _with_dtype(torch.zeros(batch, vae_channels, lh, lw, device="meta"), shape).requires_grad_(True)
        run = lambda m: m.decode(z)  # noqa: E731
        module = shape.vae
    value = saved_bytes(module, run, checkpointing) / MIB
    shape._cache[key] = value
    return value


# --- which graphs live together ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryProfile:
    """The graphs one optimizer step of a method keeps for its backward pass.

    unet_batch: UNet samples in the graph (timesteps per step already counted);
    decoder: whether the decoder is in the graph (AntiPure's purifier model);
    encoder: whether the loss reads the image through the encoder;
    tuning_batch: UNet samples a surrogate or prompt tuning keeps between steps (0: none).
    """

    unet_batch: int = 0
    decoder: bool = False
    encoder: bool = True
    tuning_batch: int = 0


def activations_mb(shape: ModelShape, profile: MemoryProfile, h: int, w: int, plan: Plan) -> float:
    """The step's peak of kept activations (MiB) for a region of h×w working pixels under the plan."""
    ck = plan.checkpointing
    unet = component_mb(shape, "unet", profile.unet_batch, h, w, ck) if profile.unet_batch else 0.0
    dec = component_mb(shape, "decoder", 1, h, w, ck) if profile.decoder else 0.0
    enc = component_mb(shape, "encoder", 1, h, w, ck) if profile.encoder else 0.0
    step = max(unet + dec, enc) if plan.two_pass else unet + dec + enc
    if profile.tuning_batch:
        step = max(step, component_mb(shape, "unet", profile.tuning_batch, h, w, ck))
    return step * ACTIVATION_OVERHEAD + STEP_ALLOWANCE_MB


def region_size(height: int, width: int, plan: Plan) -> tuple[int, int]:
    """The largest region (h, w) the loop optimizes for an image of height×width under the plan."""
    scale = min(1.0, plan.working_size / max(height, width))
    h, w = max(8, round(height * scale)), max(8, round(width * scale))
    if plan.tile:
        h, w = min(h, plan.tile), min(w, plan.tile)
    f = 8
    return -(-h // f) * f, -(-w // f) * f


def estimate(shape: ModelShape, profile: MemoryProfile, height: int, width: int, plan: Plan,
             held_mb: float, weights_loaded: bool) -> Estimate:
    h, w = region_size(height, width, plan)
    act = activations_mb(shape, profile, h, w, plan)
    weights = 0.0 if weights_loaded else shape.weights_mb
    return Estimate(peak_mb=held_mb + weights + act, held_mb=held_mb, weights_mb=weights, activations_mb=act)


def candidate_plans(working_size: int, two_pass: bool | None, height: int, width: int,
                    minimum_working_size: int = 128) -> list[Plan]:
    """Every plan, cheapest first (module docstring). two_pass: None any, True only two-pass plans, False none
    (a method whose loss does not go through the latent). Tiles and smaller working sizes only where they cut
    the region."""
    work_side = min(working_size, max(height, width))
    lean = two_pass is not False  # the memory-saving plans use two-pass wherever it is allowed
    plans = []
    if two_pass is not True:
        plans.append(Plan(False, False, None, working_size))
    if two_pass is not False:
        plans.append(Plan(True, False, None, working_size))
    plans.append(Plan(lean, True, None, working_size))
    for tile in TILES:
        if tile < work_side:
            plans.append(Plan(lean, True, tile, working_size))
    size = working_size // 2
    while size >= minimum_working_size:
        if size < work_side:
            plans.append(Plan(lean, True, None, size))
        size //= 2
    return plans


def smallest_plan(working_size: int, two_pass: bool | None, height: int, width: int) -> Plan:
    """The plan with the least memory that keeps the working size (two-pass where allowed, checkpointing and
    the smallest tiles that cut the region): `artveil bench --plan smallest`."""
    keeps = [p for p in candidate_plans(working_size, two_pass, height, width) if p.working_size == working_size]
    return keeps[-1]


# --- the device's budget -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceMemory:
    """What the device offers the job, in MiB. held: what this process holds already on it (CPU: its resident
    set; CUDA: torch's allocations); budget: what the job may reach in total, held included."""

    kind: str  # "cpu" or "cuda"
    budget_mb: float
    held_mb: float

    @property
    def memory(self) -> str:
        return "VRAM" if self.kind == "cuda" else "RAM"


def _meminfo_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def process_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def device_memory(device: torch.device) -> DeviceMemory:
    """The budget on this device now (module docstring)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        held = torch.cuda.memory_allocated(device) / MIB
        # Memory torch has cached but not handed out is free for this job too.
        cached = (torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)) / MIB
        return DeviceMemory("cuda", held + (free / MIB + cached) * (1 - CUDA_RESERVE), held)
    held = process_rss_mb()
    total = _meminfo_mb("MemTotal")
    available = _meminfo_mb("MemAvailable")
    if total is None:  # not Linux
        try:
            import os
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MIB
        except (ValueError, OSError, AttributeError):
            total = 16384.0
    if available is None:
        available = total / 2
    return DeviceMemory("cpu", min(held + available * CPU_SHARE_OF_AVAILABLE, total * CPU_SHARE_OF_TOTAL), held)


# --- choosing ------------------------------------------------------------------------------------------------

def choose_plan(shape: ModelShape, profile: MemoryProfile, height: int, width: int, working_size: int,
                memory: DeviceMemory, weights_loaded: bool, two_pass: bool | None = None,
                forced: Plan | None = None) -> PlanChoice:
    """The cheapest plan whose estimate fits memory.budget_mb; ArtveilError("memory") in one line when none does.

    forced: a plan the caller asked for (--low-vram, --two-pass): estimated and refused the same way, never changed.
    """
    plans = [forced] if forced is not None else candidate_plans(working_size, two_pass, height, width)
    tried = []
    for plan in plans:
        est = estimate(shape, profile, height, width, plan, memory.held_mb, weights_loaded)
        tried.append((plan, est))
        if est.peak_mb <= memory.budget_mb:
            return PlanChoice(plan, est, memory.budget_mb, memory.memory, tuple(tried))
    smallest = min(tried, key=lambda pe: pe[1].peak_mb)
    raise ArtveilError(
        "memory",
        f"this job needs about {smallest[1].peak_mb / 1024:.1f} GB of {memory.memory} even with the smallest plan "
        f"({smallest[0].describe()}), and {memory.budget_mb / 1024:.1f} GB is allowed here; use a smaller working size, "
        f"{'close other GPU programs' if memory.kind == 'cuda' else 'close other programs'} or a lighter method.",
    )


def next_smaller(choice: PlanChoice, shape: ModelShape, profile: MemoryProfile, height: int, width: int,
                 working_size: int, two_pass: bool | None = None) -> Plan | None:
    """The first plan after choice.plan whose activations are estimated lower (the out-of-memory retry); None if
    there is none."""
    plans = candidate_plans(working_size, two_pass, height, width)
    current = choice.estimate.activations_mb
    after = plans.index(choice.plan) + 1 if choice.plan in plans else 0
    for plan in plans[after:]:
        h, w = region_size(height, width, plan)
        if activations_mb(shape, profile, h, w, plan) < current:
            return plan
    return None


@functools.lru_cache(maxsize=4)
def _random_config_shape(name: str, dtype_bytes: int) -> ModelShape:
    from importlib import resources

    return shape_from_config_dir(Path(str(resources.files("resources") / "model_configs" / name)), dtype_bytes)


def shape_before_loading(source: str, device: torch.device) -> ModelShape | None:
    """The shape of the model `source` names, from its configs alone, where they can be read without loading
    it (the shipped random-weight configs, a diffusers folder); None otherwise (then the plan is made once
    the model is loaded)."""
    from engine.device import pick_dtype

    dtype_bytes = torch.tensor([], dtype=pick_dtype(device)).element_size()
    if source in RANDOM_CONFIGS:
        return _random_config_shape(source, dtype_bytes)
    path = Path(source).expanduser()
    if path.is_dir() and (path / "unet" / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        try:
            return shape_from_config_dir(path, dtype_bytes)
        except Exception:
            return None
    return None
