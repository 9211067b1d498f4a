"""Imperceptibility metrics between an original and its protected copy (RGB channels only).

PSNR in dB, SSIM and MS-SSIM unitless in [0, 1] (torchmetrics, offline); L-infinity and L2 of δ in
pixel levels (0-255 scale). LPIPS/DISTS are left out on purpose: their ImageNet backbones cannot be
fetched here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

# MS-SSIM's 5 scales with an 11-px window need the short side > (11 - 1) * 2**4 = 160 px.
_MS_SSIM_MIN_SIDE = 161


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HxWxC uint8 -> [1, 3, H, W] float in [0, 1] (alpha dropped)."""
    return torch.from_numpy(np.ascontiguousarray(pixels[..., :3])).permute(2, 0, 1)[None].float() / 255.0


def image_metrics(original: np.ndarray, protected: np.ndarray) -> dict[str, float]:
    if original.shape != protected.shape:
        raise ValueError(f"shape mismatch {original.shape} vs {protected.shape}")
    a, b = to_tensor(original), to_tensor(protected)
    delta = protected[..., :3].astype(np.int32) - original[..., :3].astype(np.int32)
    mse = float((delta.astype(np.float64) ** 2).mean())
    psnr = math.inf if mse == 0 else float(peak_signal_noise_ratio(b, a, data_range=1.0))
    ssim = float(structural_similarity_index_measure(b, a, data_range=1.0))
    if min(original.shape[:2]) >= _MS_SSIM_MIN_SIDE:
        ms_ssim = float(multiscale_structural_similarity_index_measure(b, a, data_range=1.0))
    else:
        ms_ssim = float("nan")  # too small for 5 scales; reported as missing, not faked
    return {
        "psnr": psnr,
        "ssim": ssim,
        "ms_ssim": ms_ssim,
        "linf_levels": float(np.abs(delta).max()) if delta.size else 0.0,
        "l2_levels": float(np.sqrt((delta.astype(np.float64) ** 2).sum())),
        "rms_levels": math.sqrt(mse),
    }
