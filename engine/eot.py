"""Expectation over transformation (MetaCloak-style): random, differentiable image transforms.

Each optimizer step applies one transform drawn from the chosen set, so the perturbation is pushed
to survive blur, rescaling, JPEG and flips rather than one exact pixel grid. Tensors in [0, 1].
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.jobs import EOT_TRANSFORMS  # (kept there, torch-free, for the command line's choices)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, device=generator.device))


def gaussian_blur(x: torch.Tensor, sigma: float, kernel: int = 7) -> torch.Tensor:
    r = kernel // 2
    coords = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k1 = torch.exp(-(coords**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k1.view(1, 1, 1, -1).expand(c, 1, 1, kernel), groups=c)
    return F.conv2d(x, k1.view(1, 1, -1, 1).expand(c, 1, kernel, 1), groups=c)


def jpeg_straight_through(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG in the forward pass, identity gradient in the backward pass."""
    arr = (x.detach()[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255.0
    y = torch.from_numpy(back).permute(2, 0, 1)[None].to(x.device, x.dtype)
    return x + (y - x).detach()


def draw_transform(names: tuple[str, ...], generator: torch.Generator):
    """One random transform from `names`, its parameters drawn now: a function x -> T(x) that applies the
    same T to any image of the same size (the clean reference of a method, say)."""
    if not names:
        return lambda x: x
    name = names[int(torch.randint(len(names), (), generator=generator, device=generator.device))]
    if name == "blur":
        sigma = _uniform(generator, 0.5, 1.5)
        return lambda x: gaussian_blur(x, sigma)
    if name == "resize":
        s = _uniform(generator, 0.5, 0.9)

        def resize(x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2:]
            small = F.interpolate(x, size=(max(8, int(h * s)), max(8, int(w * s))), mode="bilinear", align_corners=False, antialias=True)
            return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)

        return resize
    if name == "jpeg":
        quality = int(_uniform(generator, 50, 90))
        return lambda x: jpeg_straight_through(x, quality)
    if name == "flip":
        return lambda x: torch.flip(x, dims=[-1])
    if name == "identity":
        return lambda x: x
    raise ValueError(f"unknown EOT transform {name!r}; known: {EOT_TRANSFORMS}")


def apply_random_transform(x: torch.Tensor, names: tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    return draw_transform(names, generator)(x)
