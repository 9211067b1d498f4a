"""A fine-tunable surrogate of the shared UNet, for ASPL, Anti-Diffusion, AntiPure's ASPL mode and the
customization step of `artveil eval`.

The pipeline is never copied. A `Surrogate` owns only the tensors it trains: LoRA factors (default, via
peft; a few MB, fits small GPUs) or, with mode="full", one trainable copy of the UNet's weights
(DreamBooth-style; twice the UNet's memory). It changes the shared UNet only inside `applied()`:
entering injects peft LoRA layers bound to its own tensors (or swaps its weights in), leaving removes
them again, so the UNet is bit-for-bit what it was whatever happens in between, including an exception
or a cancelled job. The protection loop has no teardown hook, which is why the surrogate is applied per
call instead of being left installed for the whole job.

A set of images protected as one batch (engine.batch) shares one surrogate through a `SurrogatePool`
passed in the method's context: each image's method registers its current protected state in the pool,
and tuning cycles over the whole pool (ASPL trains on the protected set, not on one image).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import torch

from engine import diffusion as D
from engine.errors import ArtveilError
from engine.models import ModelBundle

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
SURROGATE_MODES = ("lora", "full")
_ADAPTER = "artveil_surrogate"


@dataclass
class SurrogateParams:
    """mode: "lora" (default) or "full". lr None: 1e-4 for LoRA, 5e-7 for the full UNet (Anti-Diffusion's
    published value). steps: optimizer steps per `tune()` call. grad_clip: max gradient norm."""

    mode: str = "lora"
    rank: int = 4
    alpha: float | None = None  # None: alpha = rank (LoRA scale 1)
    lr: float | None = None
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    steps: int = 20
    targets: tuple[str, ...] = LORA_TARGETS

    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 5e-7 if self.mode == "full" else 1e-4


def _lora_target_paths(unet: torch.nn.Module, targets: tuple[str, ...]) -> list[str]:
    paths = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            paths.append(name)
    return paths


class Surrogate:
    """Trainable deltas of one model's UNet, applied to the shared UNet only inside `applied()`."""

    def __init__(self, model: ModelBundle, params: SurrogateParams | None = None, seed: int = 0):
        self.model = model
        self.params = params or SurrogateParams()
        if self.params.mode not in SURROGATE_MODES:
            raise ArtveilError("config", f"surrogate mode must be 'lora' or 'full', got {self.params.mode!r}")
        self.tuned_steps = 0
        self._active = False
        unet = model.unet
        gen = torch.Generator().manual_seed(seed)
        self.tensors: dict[str, torch.nn.Parameter] = {}
        if self.params.mode == "lora":
            self._paths = _lora_target_paths(unet, self.params.targets)
            if not self._paths:
                raise ArtveilError("internal", "no attention projections found for LoRA in this UNet")
            r = self.params.rank
            for path in self._paths:
                lin = unet.get_submodule(path)
                # peft's initialization: A Kaiming-uniform, B zero, so the untuned surrogate is the base model.
                bound = 1.0 / math.sqrt(lin.in_features)
                a = (torch.rand(r, lin.in_features, generator=gen) * 2 - 1) * bound
                self.tensors[f"{path}.lora_A"] = torch.nn.Parameter(a.to(model.device, torch.float32))
                self.tensors[f"{path}.lora_B"] = torch.nn.Parameter(torch.zeros(lin.out_features, r, device=model.device))
        else:
            self._paths = []
            # fp32 master weights whatever the model's dtype: at the published lr (5e-7) an Adam step is
            # below bf16's resolution for almost every weight, so a bf16 copy would barely train.
            for name, p in unet.named_parameters():
                self.tensors[name] = torch.nn.Parameter(p.detach().to(torch.float32, copy=True))
        self._optimizer: torch.optim.Optimizer | None = None
        self._cast: dict[str, torch.Tensor] | None = None  # master weights in the model's dtype, no graph

    # -------------------------------------------------------------------------------------- applying

    @property
    def scale(self) -> float:
        alpha = self.params.alpha if self.params.alpha is not None else self.params.rank
        return alpha / self.params.rank

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Run the shared UNet as the surrogate inside the block; restored exactly on exit."""
        if self._active:  # re-entrant: nested callers share the outer application
            yield
            return
        unet = self.model.unet
        wrappers = self.model.lora_wrappers
        if wrappers.active is not None:
            # Two surrogates on one UNet at once would wrap each other's layers; nothing here needs it.
            raise ArtveilError("internal", "another surrogate is already applied to this model's UNet")
        wrappers.active = self
        self._active = True
        try:
            if self.params.mode == "lora":
                with self._lora_installed(unet):
                    yield
            else:
                with self._weights_swapped(unet):
                    yield
        finally:
            self._active = False
            wrappers.active = None

    def _lora_layers(self, unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
        """peft LoRA wrappers around this UNet's projections, built once per model and shape of adapter.

        peft's injection walks the whole UNet (about 0.5 s on the tiny model, seconds on SD), far too slow
        for every optimizer step; swapping prebuilt wrappers in and out costs microseconds. The wrappers
        are cached on the model and shared by its surrogates, which bind their own factors on entry.
        """
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.tuners_utils import BaseTunerLayer

        key = (self.params.rank, self.scale, tuple(self._paths))
        cache = self.model.lora_wrappers.layers
        layers = cache.get(key)
        if layers is not None and all(layers[p].get_base_layer() is unet.get_submodule(p) for p in self._paths):
            return layers
        config = LoraConfig(
            r=self.params.rank,
            lora_alpha=self.params.rank * self.scale,
            target_modules=list(self._paths),
            lora_dropout=0.0,
            init_lora_weights=False,
        )
        # low_cpu_mem_usage: peft builds its factors on the meta device; ours are bound on entry instead.
        inject_adapter_in_model(config, unet, adapter_name=_ADAPTER, low_cpu_mem_usage=True)
        layers = {}
        for path in self._paths:
            layer = unet.get_submodule(path)
            assert isinstance(layer, BaseTunerLayer)
            layers[path] = layer
            self._set_module(unet, path, layer.get_base_layer())
        unet.__dict__.pop("peft_config", None)
        unet.__dict__.pop("_hf_peft_config_loaded", None)
        cache[key] = layers
        return layers

    @staticmethod
    def _set_module(unet: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
        parent_path, _, child = path.rpartition(".")
        parent = unet.get_submodule(parent_path) if parent_path else unet
        # Straight into _modules: nn.Module.__setattr__ is the slow part when swapping per step.
        parent._modules[child] = module

    @contextlib.contextmanager
    def _lora_installed(self, unet: torch.nn.Module) -> Iterator[None]:
        layers = self._lora_layers(unet)
        slots = self.model.lora_wrappers.slots
        installed = []
        try:
            for path in self._paths:
                layer = layers[path]
                a, b = self.tensors[f"{path}.lora_A"], self.tensors[f"{path}.lora_B"]
                la, lb = layer.lora_A[_ADAPTER], layer.lora_B[_ADAPTER]
                if la._parameters.get("weight") is not a:
                    la._parameters["weight"] = a
                    lb._parameters["weight"] = b
                if path not in slots:
                    parent_path, _, child = path.rpartition(".")
                    slots[path] = (unet.get_submodule(parent_path) if parent_path else unet, child)
                parent, child = slots[path]
                parent._modules[child] = layer
                installed.append(path)
            yield
        finally:
            for path in installed:
                parent, child = slots[path]
                parent._modules[child] = layers[path].get_base_layer()

    def _weights_in_model_dtype(self, unet: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The master weights as the UNet runs them. fp32 models use the masters themselves; otherwise a
        cast, differentiable while tuning (gradients reach the fp32 masters) and cached, without a graph,
        for attacks until the next optimizer step."""
        dtypes = {name: p.dtype for name, p in unet.named_parameters()}
        if all(dtypes[k] == v.dtype for k, v in self.tensors.items()):
            return self.tensors
        if any(v.requires_grad for v in self.tensors.values()):
            return {k: v.to(dtypes[k]) for k, v in self.tensors.items()}
        if self._cast is None:
            with torch.no_grad():
                self._cast = {k: v.to(dtypes[k]) for k, v in self.tensors.items()}
        return self._cast

    @contextlib.contextmanager
    def _weights_swapped(self, unet: torch.nn.Module) -> Iterator[None]:
        originals: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
        try:
            for name, tuned in self._weights_in_model_dtype(unet).items():
                owner_path, _, pname = name.rpartition(".")
                owner = unet.get_submodule(owner_path) if owner_path else unet
                originals.append((owner, pname, owner._parameters[pname]))
                owner._parameters[pname] = tuned
            yield
        finally:
            for owner, pname, original in originals:
                owner._parameters[pname] = original

    # -------------------------------------------------------------------------------------- tuning

    def reset_optimizer(self) -> None:
        """Start the next tune() with fresh optimizer state (Anti-DreamBooth builds a new AdamW per call)."""
        self._optimizer = None

    def _optim(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            # On the CPU the fused kernel: one pass over all tensors instead of a loop of small ops per tensor
            # (the proxy UNet's 6 M parameters: 7 ms a step against 23 ms, on 2 cores).
            self._optimizer = torch.optim.AdamW(
                list(self.tensors.values()), lr=self.params.learning_rate(), weight_decay=self.params.weight_decay,
                fused=True if self.model.device.type == "cpu" else None,
            )
        return self._optimizer

    def tune(
        self,
        images: list[torch.Tensor],
        cond: torch.Tensor,
        generator: torch.Generator,
        steps: int | None = None,
        batch_size: int = 1,
        lr_scale: Callable[[int], float] | None = None,
        ema_decay: float = 0.0,
    ) -> list[float]:
        """Fine-tune on images (each [1, 3, h, w] in [0, 1]) with the LDM loss; returns per-step losses.

        cond: [1, 77, d] for every image, or [len(images), 77, d], one caption per image. Each step takes
        the next batch_size images in order, cycling (batch_size > 1 needs images of one size).
        lr_scale(i): the learning rate of step i of this call, as a fraction of params.lr (None: constant).
        ema_decay > 0: the tuned tensors end as the exponential moving average of this call's steps
        (steadier than the last step's weights at a high learning rate).
        """
        steps = self.params.steps if steps is None else steps
        if not images or steps <= 0:
            return []
        if cond.shape[0] not in (1, len(images)):
            raise ValueError(f"cond has {cond.shape[0]} captions for {len(images)} images")
        batch_size = max(1, min(int(batch_size), len(images)))
        if batch_size > 1 and len({tuple(x.shape) for x in images}) > 1:
            raise ValueError("batch_size > 1 needs images of one size")
        model = self.model
        with torch.no_grad():
            latents = torch.cat([D.encode(model, x.to(model.device)) for x in images]) if batch_size > 1 else \
                [D.encode(model, x.to(model.device)) for x in images]
        cond = cond.detach()
        opt = self._optim()
        params = list(self.tensors.values())
        losses = []
        for p in params:
            p.requires_grad_(True)
        self._cast = None
        ema = {k: v.detach().clone() for k, v in self.tensors.items()} if ema_decay > 0 else None
        try:
            base_lr = self.params.learning_rate()
            for i in range(steps):
                if lr_scale is not None:
                    for group in opt.param_groups:
                        group["lr"] = base_lr * float(lr_scale(i))
                # Applied per step: in full mode on a bf16/fp16 model each step casts the updated fp32
                # masters afresh (for LoRA, entering costs microseconds).
                with self.applied():
                    first = (self.tuned_steps + i) * batch_size
                    index = [(first + j) % len(images) for j in range(batch_size)]
                    z = latents[index] if batch_size > 1 else latents[index[0]]
                    c = cond if cond.shape[0] == 1 else cond[index]
                    t = D.sample_timesteps(model, batch_size, generator)
                    noise = D.randn_like(z, generator)
                    loss = D.denoising_loss(model, z, c, t, noise)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                if self.params.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, self.params.grad_clip)
                opt.step()
                if ema is not None:
                    decay = min(float(ema_decay), (1 + i) / (10 + i))
                    with torch.no_grad():
                        for k, v in self.tensors.items():
                            ema[k].lerp_(v.detach(), 1 - decay)
                losses.append(float(loss.detach()))
            if ema is not None:
                with torch.no_grad():
                    for k, v in self.tensors.items():
                        v.copy_(ema[k])
        finally:
            self._cast = None
            for group in opt.param_groups:
                group["lr"] = self.params.learning_rate()
            for p in params:
                p.requires_grad_(False)
                p.grad = None
        self.tuned_steps += steps
        return losses

    # -------------------------------------------------------------------------------------- copies, files

    def clone(self) -> "Surrogate":
        """An independent copy of the current deltas with a fresh optimizer (ASPL's throw-away f')."""
        other = Surrogate.__new__(Surrogate)
        other.model, other.params, other._paths = self.model, self.params, list(self._paths)
        other.tuned_steps, other._active, other._optimizer, other._cast = self.tuned_steps, False, None, None
        other.tensors = {k: torch.nn.Parameter(v.detach().clone()) for k, v in self.tensors.items()}
        return other

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.tensors) - set(state)
        if missing:
            raise ArtveilError("input", f"surrogate weights are missing {len(missing)} tensor(s), e.g. {sorted(missing)[0]}")
        self._cast = None
        with torch.no_grad():
            for k, v in self.tensors.items():
                v.copy_(state[k].to(v.device, v.dtype))

    def save(self, path) -> None:
        from safetensors.torch import save_file

        save_file(self.state_dict(), str(path), metadata={"mode": self.params.mode, "rank": str(self.params.rank)})

    @classmethod
    def load(cls, model: ModelBundle, path, params: SurrogateParams | None = None) -> "Surrogate":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        params = params or SurrogateParams()
        params = replace(params, mode=meta.get("mode", params.mode), rank=int(meta.get("rank", params.rank)))
        s = cls(model, params)
        s.load_state_dict(load_file(str(path)))
        return s


# ------------------------------------------------------------------------------------------ sets of images


@dataclass
class SurrogatePool:
    """One surrogate shared by the methods protecting a set, and the set's current protected images."""

    surrogate: Surrogate | None = None
    images: dict[int, torch.Tensor] = field(default_factory=dict)
    clean: dict[int, torch.Tensor] = field(default_factory=dict)
    current: int = 0
    shared: dict[str, torch.Tensor] = field(default_factory=dict)  # what a method learns once for the set

    def register(self, x_protected: torch.Tensor) -> None:
        self.images[self.current] = x_protected.detach()

    def set_images(self) -> list[torch.Tensor]:
        return [self.images[k] for k in sorted(self.images)]



# ------------------------------------------------------------------------------------------ helpers for methods


def surrogate_for(ctx, params: SurrogateParams) -> Surrogate:
    """The surrogate a method should tune and attack: the set's shared one, else one private to the image.

    Kept in ctx.cache so one image (or tile) keeps its surrogate across steps.
    """
    if "surrogate" not in ctx.cache:
        pool = ctx.pool
        if pool is not None:
            if pool.surrogate is None or pool.surrogate.model is not ctx.model:
                pool.surrogate = Surrogate(ctx.model, params)
            ctx.cache["surrogate"] = pool.surrogate
        else:
            ctx.cache["surrogate"] = Surrogate(ctx.model, params)
    return ctx.cache["surrogate"]


def tuning_set(ctx, x_protected: torch.Tensor) -> list[torch.Tensor]:
    """The protected images to tune on: this image's current state plus, in a batch, the set's others.

    Images of another size than this one's working size are fine: tune() takes them one at a time.
    """
    pool = ctx.pool
    if pool is None:
        return [x_protected.detach()]
    pool.register(x_protected)
    return pool.set_images()


@contextlib.contextmanager
def applied_if_tuned(ctx) -> Iterator[None]:
    """Apply the image's surrogate once it has been tuned at least once; the base model before that."""
    s = ctx.cache.get("surrogate")
    if s is not None and s.tuned_steps > 0:
        with s.applied():
            yield
    else:
        yield


def aspl_between_steps(ctx, x_protected: torch.Tensor, step: int, rounds: int, tune_steps: int, params: SurrogateParams | None = None) -> None:
    """AntiPure's optional ASPL mode: `rounds` LoRA tunings on the protected set, evenly spaced over the steps."""
    if rounds <= 0 or step == 0:
        return
    every = max(1, ctx.steps // (rounds + 1))
    if step % every == 0 and step // every <= rounds:
        s = surrogate_for(ctx, params or SurrogateParams())
        s.tune(tuning_set(ctx, x_protected), ctx.cond, ctx.fresh_generator(50_000 + step), tune_steps)
