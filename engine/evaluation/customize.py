"""What a mimic does with the (purified) images: fine-tune the model on them with an instance prompt.

LoRA by default (rank/lr/steps configurable, methods.md §6: rank 4-8, lr 1e-4, a few hundred steps);
mode="full" is a DreamBooth-style fine-tune of the whole UNet (needs twice the UNet's memory). Both run on
the shared UNet through engine.surrogate, so the loaded model is unchanged afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.metrics import to_tensor
from engine.models import ModelBundle
from engine.surrogate import Surrogate, SurrogateParams


@dataclass(frozen=True)
class CustomizeSettings:
    """lr None: 1e-4 (LoRA) or 5e-6 (full UNet). steps: optimizer steps, cycling over the images,
    batch_size images per step."""

    mode: str = "lora"
    rank: int = 4
    lr: float | None = None
    steps: int = 200
    seed: int = 0
    batch_size: int = 1

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
    losses = surrogate.tune(tensors, cond, generator, settings.steps, batch_size=settings.batch_size)
    return surrogate, losses
