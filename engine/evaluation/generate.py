"""Sampling from a (customized) model, and img2img edits: the mimic's outputs that the judges score.

Both use diffusers pipelines over the loaded modules (no copies) with a DDIM scheduler; a customized
surrogate is applied around the call only. Seeds depend only on (prompt index, sample index) so every
condition of an evaluation is sampled from the same noises and differs only by its fine-tuning.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from PIL import Image

from engine.models import ModelBundle


def _to_uint8(images) -> list[np.ndarray]:
    return [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in images]


def generate(model: ModelBundle, prompts: list[str], k: int, size: int, surrogate=None, seed: int = 0,
             steps: int = 30, guidance: float = 7.5, batch_size: int = 16) -> list[list[np.ndarray]]:
    """K images (size×size px, HxWx3 uint8) per prompt: [prompt][sample].

    Sample i of prompt j starts from the noise of seed + 1000·j + i whatever the batch size (one generator
    per image), so batching changes nothing but the speed.
    """
    pipe = model.pipeline("txt2img")
    out: list[list[np.ndarray]] = []
    with (surrogate.applied() if surrogate is not None else contextlib.nullcontext()), torch.no_grad():
        for j, prompt in enumerate(prompts):
            row = []
            for start in range(0, k, batch_size):
                n = min(batch_size, k - start)
                gens = [torch.Generator(device=model.device).manual_seed(seed + 1000 * j + i) for i in range(start, start + n)]
                images = pipe(prompt=prompt, num_images_per_prompt=n, height=size, width=size,
                              num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                              output_type="np").images
                row.extend(_to_uint8(images))
            out.append(row)
    return out


def edit(model: ModelBundle, pixels: np.ndarray, prompt: str, strength: float = 0.5, seed: int = 0,
         steps: int = 30, guidance: float = 7.5, surrogate=None) -> np.ndarray:
    """An SDEdit/img2img edit of an HxWx3 uint8 image (sides multiples of 8) toward `prompt`; same size out."""
    pipe = model.pipeline("img2img")
    g = torch.Generator(device=model.device).manual_seed(seed)
    steps = max(steps, int(np.ceil(1.0 / max(strength, 1e-3))))  # at least one denoising step
    with (surrogate.applied() if surrogate is not None else contextlib.nullcontext()), torch.no_grad():
        images = pipe(prompt=prompt, image=Image.fromarray(pixels[..., :3]), strength=float(strength),
                      num_inference_steps=steps, guidance_scale=guidance, generator=g, output_type="np").images
    return _to_uint8(images)[0]
