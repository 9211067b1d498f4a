"""Anti-Diffusion (arXiv 2503.05595): prompt tuning, a semantic disturbance loss and surrogate tuning.

methods.md §3, mapped onto the one PGD loop:

- Prompt tuning (PT): a text embedding [1, 77, d] that starts as the empty prompt's and is the only
  trainable tensor; AdamW (lr 1e-3) on the ordinary denoising loss of the image, UNet and VAE frozen.
- Semantic disturbance loss (SDL): the cross-attention maps of the down and up blocks whose spatial size
  is at most `max_fraction` of the latent's side (16×16 of SD's 64×64 latent at 512 px), averaged;
  A = clamp(scale·A, 0, 1); SDL = −MSE(A, 0). The maps come from attention processors swapped in for
  the duration of one UNet call, so the UNet's own processors are untouched between calls.
- PGD maximizes denoising MSE + λ·SDL under the tuned embedding: the denoising error grows while the
  text tokens stop attending to the image.
- Surrogate tuning: a LoRA (default; fits ≤ 8 GB) or the full UNet (engine.surrogate), AdamW, weight
  decay 1e-2, gradient clip 1.0, `surrogate_steps` steps on the current protected image(s).
- Schedule: PT → protect → `rounds` × [surrogate tuning → protect → PT re-tune], the protect phases
  splitting the loop's `steps` evenly (the published 10 PGD steps per phase is steps = 10·(rounds + 1)).
  The last PT re-tune is skipped: no PGD step would use it.

The public code deep-copies the whole pipeline per batch; here the shared UNet is only ever wrapped for
the duration of a call (engine.surrogate) and is bit-for-bit unchanged afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from engine import diffusion as D
from engine.errors import ArtveilError
from engine.methods.base import MethodContext, ProtectionMethod, setting
from engine.surrogate import SURROGATE_MODES, SurrogateParams, applied_if_tuned, surrogate_for, tuning_set


@dataclass
class AntiDiffusionParams:
    pt_steps: int = setting(30, "prompt-tuning steps per tuning", int, 0, 10_000)
    pt_lr: float = setting(1e-3, "prompt-tuning learning rate", float, 0.0, 1.0, low_open=True)
    rounds: int = setting(5, "re-tunings of the prompt and the surrogate over the steps", int, 1, 1000)
    sdl_weight: float = setting(1.0, "weight of the semantic disturbance loss", float, 0.0, 1e6)
    sdl_scale: float = setting(100.0, "scale inside the semantic disturbance loss", float, 0.0, 1e6)
    # Largest kept attention map, as a fraction of the latent's side. None: 1/4 on a UNet with four
    # resolution levels (SD: 16×16 of a 64×64 latent, the published rule); on shallower UNets such as
    # the tiny test model (two levels, cross-attention only at half the latent's side) 1/2, so that
    # some maps are kept at all.
    sdl_max_fraction: float | None = setting(None, "largest kept attention map, as a fraction of the latent's side; "
                                             "none: by the UNet's depth", float, 0.0, 1.0, low_open=True, optional=True)
    surrogate: str = setting("lora", "what the surrogate tunes: LoRA adapters or the full UNet", str,
                             choices=SURROGATE_MODES)
    surrogate_rank: int = setting(4, "LoRA rank of the surrogate", int, 1, 256)
    surrogate_lr: float | None = setting(None, "the surrogate's learning rate; none: 1e-4 (LoRA) or 5e-7 (full UNet, "
                                         "published)", float, 0.0, 1.0, low_open=True, optional=True)
    surrogate_steps: int = setting(20, "optimizer steps per surrogate tuning", int, 0, 10_000)
    surrogate_weight_decay: float = setting(1e-2, "the surrogate's AdamW weight decay", float, 0.0, 1.0)
    surrogate_grad_clip: float = setting(1.0, "the surrogate's largest gradient norm", float, 0.0, 1e6, low_open=True)


# ------------------------------------------------------------------------------------------ attention maps


def default_max_fraction(model) -> float:
    levels = len(model.unet.config.block_out_channels)
    return min(0.5, 2.0 ** -(levels - 2))


class _CrossAttentionCapture:
    """A cross-attention processor that also stores its probabilities [B, heads, tokens, 77].

    Layers with more query tokens than `max_tokens` run the original processor (SDPA) unchanged.
    """

    def __init__(self, original, store: list | None, max_tokens: int, name: str):
        self.original = original
        self.store = store
        self.max_tokens = max_tokens
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        tokens = hidden_states.shape[1] if hidden_states.ndim == 3 else hidden_states.shape[2] * hidden_states.shape[3]
        if encoder_hidden_states is None or tokens > self.max_tokens or attn.spatial_norm is not None or hidden_states.ndim != 3:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        batch, seq, _ = encoder_hidden_states.shape
        mask = attn.prepare_attention_mask(attention_mask, seq, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, mask)
        if self.store is not None:
            self.store.append((self.name, probs.view(batch, attn.heads, tokens, seq)))
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _is_sdl_layer(name: str) -> bool:
    return name.startswith(("down_blocks.", "up_blocks.")) and ".attn2." in name


@contextlib.contextmanager
def capture_cross_attention(unet, max_tokens: int) -> Iterator[list]:
    """Inside the block, the down/up cross-attention layers with at most max_tokens queries record their
    maps into the yielded list as (layer name, probs [B, heads, tokens, 77]). Processors restored on exit.

    Re-entrant: inside an outer capture of the same layers (AntiDiffusion.graph_scope, which keeps the capturing
    processors in place through the backward for gradient checkpointing's recomputation) it only points them
    at a fresh list, and detaches them again on exit; the computation is the same either way."""
    originals = unet.attn_processors
    store: list = []
    held = [p for p in originals.values() if isinstance(p, _CrossAttentionCapture)]
    if held and all(p.max_tokens == max_tokens for p in held):
        before = [p.store for p in held]
        for p in held:
            p.store = store
        try:
            yield store
        finally:
            for p, s in zip(held, before):
                p.store = s
        return
    swapped = {
        name: (_CrossAttentionCapture(proc, store, max_tokens, name) if _is_sdl_layer(name) else proc)
        for name, proc in originals.items()
    }
    unet.set_attn_processor(swapped)
    try:
        yield store
    finally:
        unet.set_attn_processor(originals)


def semantic_disturbance_loss(maps: list, latent_hw: tuple[int, int], scale: float = 100.0) -> torch.Tensor:
    """SDL = −MSE(A, 0), A = clamp(scale · mean of the captured maps, 0, 1).

    Maps are averaged over heads, laid out on their own grid (the latent's shape divided by the layer's
    downsampling), brought to the largest kept grid bilinearly, then averaged over layers.
    """
    if not maps:
        raise ArtveilError("internal", "no cross-attention maps were captured for the semantic disturbance loss")
    h, w = latent_hw
    grids = []
    for _, probs in maps:
        b, _, tokens, seq = probs.shape
        factor = round((h * w / tokens) ** 0.5)
        gh, gw = max(1, h // factor), max(1, w // factor)
        grids.append(probs.mean(1).transpose(1, 2).reshape(b, seq, gh, gw))
    gh = max(g.shape[-2] for g in grids)
    gw = max(g.shape[-1] for g in grids)
    resized = [g if g.shape[-2:] == (gh, gw) else F.interpolate(g, size=(gh, gw), mode="bilinear", align_corners=False) for g in grids]
    a = torch.stack(resized).mean(0)
    a = torch.clamp(scale * a, 0, 1)
    return -(a**2).mean()


# ------------------------------------------------------------------------------------------ prompt tuning


def tune_prompt(model, x: torch.Tensor, init: torch.Tensor, steps: int, lr: float, generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
    """Prompt tuning: AdamW on a copy of `init` ([1, 77, d]) to lower the denoising loss of x ([1,3,h,w] in [0, 1]).

    Only the embedding is trained; the caller decides which UNet (base or surrogate) is in place.
    Returns the tuned embedding (model dtype, no grad) and the per-step losses.
    """
    with torch.no_grad():
        z = D.encode(model, x)
    emb = torch.nn.Parameter(init.detach().float().clone())
    opt = torch.optim.AdamW([emb], lr=lr)
    losses = []
    for _ in range(steps):
        t = D.sample_timesteps(model, 1, generator)
        noise = D.randn_like(z, generator)
        loss = D.denoising_loss(model, z, emb.to(model.dtype), t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return emb.detach().to(model.dtype), losses


def schedule(steps: int, rounds: int) -> dict[int, tuple[str, ...]]:
    """What runs before each PGD step: {step: actions}, actions among "pt" (re-tune) and "surrogate".

    Step 0's prompt tuning happens in setup(). Phase k (k = 1..rounds) starts at round(k·steps/(rounds+1)).
    """
    plan: dict[int, tuple[str, ...]] = {}
    for k in range(1, rounds + 1):
        start = round(k * steps / (rounds + 1))
        if start <= 0 or start >= steps or start in plan:
            continue
        plan[start] = ("surrogate",) if k == 1 else ("pt", "surrogate")
    return plan


class AntiDiffusion(ProtectionMethod):
    name = "antidiffusion"
    label = "Anti-Diffusion (tuning and editing)"
    summary = "Disrupts both fine-tuning and editing: the model stops linking the picture to any prompt."
    Params = AntiDiffusionParams

    def _surrogate_params(self) -> SurrogateParams:
        p = self.params
        return SurrogateParams(
            mode=p.surrogate, rank=p.surrogate_rank, lr=p.surrogate_lr, steps=p.surrogate_steps,
            weight_decay=p.surrogate_weight_decay, grad_clip=p.surrogate_grad_clip,
        )

    def _max_tokens(self, ctx: MethodContext, z_hw: tuple[int, int]) -> int:
        frac = self.params.sdl_max_fraction or default_max_fraction(ctx.model)
        return int(z_hw[0] * z_hw[1] * frac * frac + 1e-6)

    def _prompt_tune(self, ctx: MethodContext, x: torch.Tensor, seed: int) -> None:
        p = self.params
        with applied_if_tuned(ctx):
            emb, losses = tune_prompt(ctx.model, x, ctx.cache["ad_embedding"], p.pt_steps, p.pt_lr, ctx.fresh_generator(seed))
        ctx.cache["ad_embedding"] = emb
        ctx.cache["ad_log"].append(("pt", len(losses)))

    def setup(self, ctx: MethodContext) -> None:
        ctx.cache["ad_log"] = []
        # PT starts from the empty prompt's embedding, which is what ctx.cond holds.
        ctx.cache["ad_embedding"] = ctx.model.encode_prompt("")
        ctx.cache["ad_schedule"] = schedule(ctx.steps, self.params.rounds)
        self._prompt_tune(ctx, ctx.x_clean, 9_000)
        m = ctx.model.vae_scale_factor
        z_hw = (ctx.x_clean.shape[-2] // m, ctx.x_clean.shape[-1] // m)
        with torch.no_grad(), capture_cross_attention(ctx.model.unet, self._max_tokens(ctx, z_hw)) as maps:
            t = torch.full((1,), ctx.model.num_train_timesteps // 2, device=ctx.model.device, dtype=torch.long)
            # A latent of the UNet's own channel count: 4 for SD, 32 for the proxy model's TAEF2.
            z = torch.zeros(1, ctx.model.unet.config.in_channels, *z_hw, device=ctx.model.device)
            D.unet(ctx.model, z, t, ctx.cache["ad_embedding"])
        if not maps:
            raise ArtveilError(
                "config",
                f"Anti-Diffusion: no cross-attention map is at most {self.params.sdl_max_fraction or default_max_fraction(ctx.model):g} "
                "of the latent's side on this model and image size; raise sdl_max_fraction.",
            )

    def tunes_on_set(self) -> bool:
        return True

    def between_steps(self, ctx: MethodContext, x_protected: torch.Tensor, step: int) -> None:
        actions = ctx.cache["ad_schedule"].get(step, ())
        for action in actions:
            if action == "pt":
                self._prompt_tune(ctx, x_protected, 9_000 + step)
            else:
                surrogate = surrogate_for(ctx, self._surrogate_params())
                losses = surrogate.tune(tuning_set(ctx, x_protected), ctx.cond, ctx.fresh_generator(20_000 + step))
                ctx.cache["ad_log"].append(("surrogate", len(losses)))

    @contextlib.contextmanager
    def graph_scope(self, ctx: MethodContext):
        m = ctx.model.vae_scale_factor
        z_hw = (ctx.x_clean.shape[-2] // m, ctx.x_clean.shape[-1] // m)
        with applied_if_tuned(ctx), capture_cross_attention(ctx.model.unet, self._max_tokens(ctx, z_hw)) as store:
            # Installed, not recording: the loss's own capture records into a list of its own.
            for p in ctx.model.unet.attn_processors.values():
                if isinstance(p, _CrossAttentionCapture) and p.store is store:
                    p.store = None
            yield

    def memory_profile(self, timesteps_per_step):
        from engine.plan import MemoryProfile

        # Prompt and surrogate tuning between steps run one sample at a time.
        return MemoryProfile(unet_batch=timesteps_per_step, tuning_batch=1)

    def loss_from_latent(self, ctx, z, x, generator):
        model = ctx.model
        t = D.sample_timesteps(model, ctx.timesteps_per_step, generator)
        zb = z.expand(t.shape[0], -1, -1, -1)
        noise = D.randn_like(zb, generator)
        with applied_if_tuned(ctx), capture_cross_attention(model.unet, self._max_tokens(ctx, tuple(z.shape[-2:]))) as maps:
            out = D.unet(model, D.add_noise(model, zb, noise, t), t, ctx.cache["ad_embedding"])
        mse = ((out - D.target(model, zb, noise, t)) ** 2).mean()
        sdl = semantic_disturbance_loss(maps, tuple(z.shape[-2:]), self.params.sdl_scale)
        total = mse + self.params.sdl_weight * sdl
        return total, {"denoising": float(mse.detach()), "sdl": float(sdl.detach())}
