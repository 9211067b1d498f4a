"""ASPL (Anti-DreamBooth, Van Le et al. 2023) with a LoRA surrogate instead of a full UNet copy. methods.md §4.

Each round of `pgd_per_round` PGD steps:
1. a throw-away copy f' of the surrogate (only its LoRA factors are copied) is fine-tuned for
   `clean_tune_steps` on the clean image(s): the model a mimic would get from clean art;
2. δ is attacked with AdvDM's denoising loss under f';
3. the kept surrogate f is fine-tuned for `protected_tune_steps` on the current protected image(s),
   so the next round attacks a model that has already learned from the protection.
Every tuning call starts a fresh optimizer, as the reference code does. The original needs a 40 GB
A100 for its full-UNet copies; LoRA factors are a few MB. Inside
a batch (engine.batch) the surrogate and both tuning sets span the whole set of images.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from engine.methods.advdm import semantic_loss
from engine.methods.base import MethodContext, ProtectionMethod, setting
from engine.surrogate import SURROGATE_MODES, SurrogateParams, surrogate_for, tuning_set


@dataclass
class ASPLParams:
    pgd_per_round: int = setting(6, "protection steps between two surrogate tunings", int, 1, 100_000)
    clean_tune_steps: int = setting(3, "surrogate steps on the clean images per round", int, 0, 10_000)
    protected_tune_steps: int = setting(3, "surrogate steps on the protected images per round", int, 0, 10_000)
    surrogate: str = setting("lora", "what the surrogate tunes: LoRA adapters or the full UNet", str,
                             choices=SURROGATE_MODES)
    surrogate_rank: int = setting(4, "LoRA rank of the surrogate", int, 1, 256)
    surrogate_lr: float | None = setting(None, "the surrogate's learning rate; none: 1e-4 (LoRA) or 5e-7 (full UNet)",
                                         float, 0.0, 1.0, low_open=True, optional=True)
    weight_decay: float = setting(1e-2, "the surrogate's AdamW weight decay", float, 0.0, 1.0)
    grad_clip: float = setting(1.0, "the surrogate's largest gradient norm", float, 0.0, 1e6, low_open=True)


class ASPL(ProtectionMethod):
    name = "aspl"
    label = "ASPL (Anti-DreamBooth, LoRA surrogate)"
    summary = "Anti-DreamBooth's defence: attacks a model that keeps learning from the protected pictures."
    Params = ASPLParams

    def _surrogate_params(self) -> SurrogateParams:
        p = self.params
        return SurrogateParams(mode=p.surrogate, rank=p.surrogate_rank, lr=p.surrogate_lr,
                               weight_decay=p.weight_decay, grad_clip=p.grad_clip)

    def setup(self, ctx: MethodContext) -> None:
        ctx.cache["aspl_log"] = []

    def tunes_on_set(self) -> bool:
        return True

    def _clean_set(self, ctx: MethodContext):
        pool = ctx.pool
        if pool is not None and pool.clean:
            return [pool.clean[k] for k in sorted(pool.clean)]
        return [ctx.x_clean]

    def between_steps(self, ctx: MethodContext, x_protected, step: int) -> None:
        p = self.params
        if step % max(1, p.pgd_per_round):
            return
        kept = surrogate_for(ctx, self._surrogate_params())
        if step > 0 and p.protected_tune_steps:
            kept.reset_optimizer()  # a fresh AdamW per tuning call, as Anti-DreamBooth's aspl.py does
            kept.tune(tuning_set(ctx, x_protected), ctx.cond, ctx.fresh_generator(30_000 + step), p.protected_tune_steps)
            ctx.cache["aspl_log"].append(("protected", step, p.protected_tune_steps))
        attack = kept.clone()
        if p.clean_tune_steps:
            attack.tune(self._clean_set(ctx), ctx.cond, ctx.fresh_generator(40_000 + step), p.clean_tune_steps)
            ctx.cache["aspl_log"].append(("clean", step, p.clean_tune_steps))
        ctx.cache["aspl_attack"] = attack

    def graph_scope(self, ctx: MethodContext):
        attack = ctx.cache.get("aspl_attack")
        return attack.applied() if attack is not None and attack.tuned_steps > 0 else contextlib.nullcontext()

    def memory_profile(self, timesteps_per_step):
        from engine.plan import MemoryProfile

        # The surrogate tunes on one image at a time between steps (engine.surrogate).
        return MemoryProfile(unet_batch=timesteps_per_step, tuning_batch=1)

    def loss_from_latent(self, ctx, z, x, generator):
        attack = ctx.cache.get("aspl_attack")
        if attack is not None and attack.tuned_steps > 0:
            with attack.applied():
                loss = semantic_loss(ctx, z, generator)
        else:
            loss = semantic_loss(ctx, z, generator)
        return loss, {"semantic": float(loss.detach())}
