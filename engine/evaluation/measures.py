"""The efficacy curves' measures of a mimic's samples (issue 27): each says how far the mimic's drawing is
from what it draws after learning from the clean images, and which way is better for the artist.

- accuracy (lower is better for the artist): the fraction of samples the style judge calls the artist's style.
- frechet (higher is better): FID's construction (torchmetrics' Fréchet distance, with a custom feature
  network) between the samples and a large set of the artist's clean renders, on the style judge's
  penultimate features projected on their first FRECHET_DIMS principal axes of the clean renders. The
  projection is part of the feature network: with 36 samples per mimic a distance on all 224 features is
  mostly small-sample bias (two halves of one mimic's own samples were 52.9 apart, more than a protection at
  32 levels moved them; shared/reference/efficacy-measures.md), far fewer dimensions are not.
- paired_ssim (lower is better): SSIM of each sample against the clean-trained mimic's sample with the same
  prompt, sample seed and mimic seed, averaged: no judge, only pixels; 1 for the clean mimic itself.
- hf_ratio (higher is better): the share of the samples' spectral power outside the central half of the
  spectrum (greyscale), divided by the clean mimic's share at the same mimic seed: grain and grid patterns
  raise it. A protection that only smooths the mimic's drawing lowers it (Mist at 32 levels did), so it is
  read beside the others, never alone.

All take uint8 H x W x 3 samples. Nothing here reads a method's own loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# name -> the side that is better for the artist
DIRECTIONS: dict[str, str] = {"accuracy": "lower", "frechet": "higher", "paired_ssim": "lower", "hf_ratio": "higher"}
MEASURES = tuple(DIRECTIONS)
FRECHET_DIMS = 8


@dataclass
class FeatureSpace:
    """The judge's penultimate features centred and projected on `dims` principal axes of a reference set."""

    mean: np.ndarray  # (224,)
    axes: np.ndarray  # (dims, 224)

    @classmethod
    def fit(cls, reference_features: np.ndarray, dims: int = FRECHET_DIMS) -> "FeatureSpace":
        mean = reference_features.mean(0)
        _, _, vt = np.linalg.svd(reference_features - mean, full_matrices=False)
        return cls(mean=mean, axes=vt[:dims])

    def project(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) @ self.axes.T


class _Projected(torch.nn.Module):
    """Feature network for torchmetrics' Fréchet distance: uint8 N x 3 x H x W -> projected judge features."""

    def __init__(self, judge, space: FeatureSpace):
        super().__init__()
        self.judge, self.space = judge, space

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
        return torch.from_numpy(self.space.project(self.judge.features(images))).double()


class Frechet:
    """Fréchet distances of sample sets to one reference set, in the projected judge feature space:
    torchmetrics' FID with this feature network, the reference side computed once and kept."""

    def __init__(self, judge, space: FeatureSpace, reference: list[np.ndarray] | np.ndarray):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.fid = FrechetInceptionDistance(feature=_Projected(judge, space), normalize=False, reset_real_features=False)
        self.fid.update(_as_batch(reference), real=True)

    def __call__(self, samples: list[np.ndarray] | np.ndarray) -> float:
        self.fid.reset()  # the samples' side only (reset_real_features=False)
        self.fid.update(_as_batch(samples), real=False)
        return float(self.fid.compute())


def frechet(judge, space: FeatureSpace, samples: list[np.ndarray] | np.ndarray,
            reference: list[np.ndarray] | np.ndarray) -> float:
    """Fréchet distance between two sets of uint8 images in the projected judge feature space."""
    return Frechet(judge, space, reference)(samples)


def _as_batch(images) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack([np.asarray(i)[..., :3] for i in images]))).permute(0, 3, 1, 2)


def paired_ssim(samples: list[np.ndarray], clean_samples: list[np.ndarray]) -> float:
    """Mean SSIM of sample i against clean sample i (same prompt and seeds), data range [0, 1]."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    if len(samples) != len(clean_samples) or len(samples) == 0:
        raise ValueError(f"paired_ssim needs pairs: {len(samples)} samples against {len(clean_samples)}")
    a = _as_batch(samples).float() / 255.0
    b = _as_batch(clean_samples).float() / 255.0
    return float(structural_similarity_index_measure(a, b, data_range=1.0, reduction="elementwise_mean"))


def hf_share(samples: list[np.ndarray]) -> float:
    """Mean over samples of the spectral power outside the central half of the (centred) spectrum, of the
    greyscale image with its mean removed: 0 for a flat image, about 0.75 for white noise."""
    shares = []
    for img in samples:
        g = np.asarray(img, dtype=np.float64)[..., :3].mean(-1) / 255.0
        power = np.abs(np.fft.fftshift(np.fft.fft2(g - g.mean()))) ** 2
        h, w = power.shape
        inner = power[h // 4 : h - h // 4, w // 4 : w - w // 4].sum()
        total = power.sum()
        shares.append(0.0 if total <= 0 else float((total - inner) / total))
    return float(np.mean(shares))


def hf_ratio(samples: list[np.ndarray], clean_samples: list[np.ndarray]) -> float:
    """hf_share of the samples ÷ hf_share of the clean mimic's samples (1 for the clean mimic itself)."""
    ref = hf_share(clean_samples)
    return float("nan") if ref <= 0 else hf_share(samples) / ref


def better(direction: str, a: float, b: float) -> bool:
    """True when value a is on the artist's side of value b for a measure with this direction."""
    return a < b if direction == "lower" else a > b
