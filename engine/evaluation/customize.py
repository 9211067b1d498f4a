"""What a mimic does with the (purified) images: fine-tune the model on them with an instance prompt.

LoRA by default (rank/lr/steps configurable, methods.md §6: rank 4-8, lr 1e-4, a few hundred steps);
mode="full" is a DreamBooth-style fine-tune of the whole UNet (needs twice the UNet's memory). Both run on
the shared UNet through engine.surrogate, so the loaded model is unchanged afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.metrics import to_tensor
from engine.models import ModelBundle
from engine.surrogate import Surrogate, SurrogateParams


AUGMENTS = ("none", "flip", "dihedral")


def augmented(x: torch.Tensor, augment: str) -> list[torch.Tensor]:
    """The variants of one [1, 3, h, w] image that a fine-tune sees (the image itself first)."""
    if augment == "none":
        return [x]
    if augment == "flip" or x.shape[-1] != x.shape[-2]:
        return [x, x.flip(-1)]
    turns = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return turns + [t.flip(-1) for t in turns]


@dataclass(frozen=True)
class CustomizeSettings:
    """lr None: 1e-4 (LoRA) or 5e-6 (full UNet). steps: optimizer steps, cycling over the images,
    batch_size images per step. repeats: each image enters every batch this many times, each with its own
    noise and timestep (a steadier gradient from a small set). schedule: "constant", or "cosine" (a short
    warm-up, then the learning rate falls to zero by the last step). augment: "none", "flip" (each image
    also mirrored left-right, as trainers' --random_flip does) or "dihedral" (the eight flips and quarter
    turns of a square image: a style of textures, unlike a face, reads the same turned), shuffled once.
    """

    mode: str = "lora"
    rank: int = 4
    lr: float | None = None
    steps: int = 200
    seed: int = 0
    batch_size: int = 1
    repeats: int = 1
    schedule: str = "constant"
    augment: str = "none"
    ema: float = 0.0  # > 0: end on the moving average of the steps' weights (engine.surrogate.tune)

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown schedule {self.schedule!r}: constant or cosine")
        if self.augment not in AUGMENTS:
            raise ValueError(f"unknown augment {self.augment!r}: {', '.join(AUGMENTS)}")
        if self.repeats < 1:
            raise ValueError("repeats must be at least 1")

    def lr_scale(self):
        """The learning rate of step i as a fraction of lr (None: constant)."""
        if self.schedule == "constant":
            return None
        steps, warm = self.steps, max(1, self.steps // 20)

        def scale(i: int) -> float:
            if i < warm:
                return (i + 1) / warm
            return 0.5 * (1.0 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))

        return scale

    def surrogate_params(self) -> SurrogateParams:
        lr = self.lr if self.lr is not None else (5e-6 if self.mode == "full" else 1e-4)
        # No weight decay: a mimic's LoRA run, not a surrogate kept close to the base model.
        return SurrogateParams(mode=self.mode, rank=self.rank, lr=lr, weight_decay=0.0, grad_clip=1.0, steps=self.steps)


def customize(model: ModelBundle, images: list[np.ndarray], prompt: str | list[str],
              settings: CustomizeSettings) -> tuple[Surrogate, list[float]]:
    """Fine-tune on HxWx3 uint8 images (all the same size, multiples of 8) captioned `prompt`, or one
    caption per image (a list as long as images, as LoRA trainers read from .txt files beside the images).

    Returns the tuned surrogate (apply it with `.applied()`) and the per-step training losses.
    """
    surrogate = Surrogate(model, settings.surrogate_params(), seed=settings.seed)
    tensors = [to_tensor(img[..., :3]).to(model.device) for img in images]
    generator = torch.Generator(device=model.device).manual_seed(settings.seed)
    if isinstance(prompt, str):
        cond = model.encode_prompt(prompt)
    else:
        if len(prompt) != len(images):
            raise ValueError(f"{len(prompt)} captions for {len(images)} images")
        cond = torch.cat([model.encode_prompt(p) for p in prompt])
    if settings.augment != "none":
        variants = [augmented(x, settings.augment) for x in tensors]
        index = [(i, v) for i in range(len(tensors)) for v in range(len(variants[i]))]
        order = torch.randperm(len(index), generator=torch.Generator().manual_seed(settings.seed)).tolist()
        index = [index[o] for o in order]
        tensors = [variants[i][v] for i, v in index]
        cond = cond if cond.shape[0] == 1 else cond[[i for i, _ in index]]
    if settings.repeats > 1:
        tensors = tensors * settings.repeats
        cond = cond if cond.shape[0] == 1 else cond.repeat(settings.repeats, 1, 1)
    batch = settings.batch_size * settings.repeats
    losses = surrogate.tune(tensors, cond, generator, settings.steps, batch_size=batch,
                            lr_scale=settings.lr_scale(), ema_decay=settings.ema)
    return surrogate, losses
