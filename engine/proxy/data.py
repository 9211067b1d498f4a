"""Data sets of procedural art for the proxy model, the judge and the sanity checks.

Each use draws from its own range of seeds, so no image the judge or a test sees was in the proxy model's
training set. Images are rendered on the fly (a few ms each) or cached to an .npz file.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from engine.proxy.styles import STYLES, caption, content_of, render

# First seed of each use; each range is 1,000,000 seeds wide, far more than any use needs.
SEEDS = {
    "judge_train": 0,
    "judge_holdout": 1_000_000,  # the judge card's accuracy
    "judge_test": 2_000_000,  # the shipped-judge test
    "model_train": 3_000_000,  # the proxy model (VAE + UNet)
    "artist": 4_000_000,  # the held-out style's "artist images" that LoRA and protections use
    "sanity": 5_000_000,  # SDEdit inputs in the sanity bar
}


@dataclass
class ArtSet:
    """Rendered images: images N x H x W x 3 uint8 (0-255), labels N (index into STYLES), captions N."""

    images: np.ndarray
    labels: np.ndarray
    captions: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, images=self.images, labels=self.labels, captions=np.array(self.captions))

    @classmethod
    def load(cls, path: str | Path) -> "ArtSet":
        with np.load(path) as f:
            return cls(f["images"], f["labels"], [str(c) for c in f["captions"]])


def _render_one(job: tuple[str, int, int]) -> np.ndarray:
    style, seed, size = job
    return render(style, seed, size)


def render_set(
    styles: Sequence[str], per_style: int, size: int = 128, use: str = "model_train", offset: int = 0,
    workers: int = 0,
) -> ArtSet:
    """per_style images of each style, seeds SEEDS[use] + offset + 0 .. per_style - 1 (same seeds per style).

    workers > 1 renders in that many processes (worth it above a few thousand images).
    """
    base = SEEDS[use] + offset
    jobs = [(s, base + i, size) for s in styles for i in range(per_style)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            images = list(pool.map(_render_one, jobs, chunksize=64))
    else:
        images = [_render_one(j) for j in jobs]
    labels = np.array([STYLES.index(s) for s, _, _ in jobs], dtype=np.int64)
    captions = [caption(s, content_of(s, seed)) for s, seed, _ in jobs]
    return ArtSet(np.stack(images), labels, captions)


def cached_set(path: str | Path, styles: Sequence[str], per_style: int, size: int = 128, use: str = "model_train",
               workers: int = 0) -> ArtSet:
    """render_set, cached in an .npz file (rendered again when the file's shape does not match the request)."""
    path = Path(path)
    if path.exists():
        art = ArtSet.load(path)
        expected = {STYLES.index(s) for s in styles}
        if len(art) == per_style * len(styles) and art.images.shape[1] == size and set(art.labels) == expected:
            return art
    art = render_set(styles, per_style, size, use, workers=workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    art.save(path)
    return art


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 (0-255) -> float N x 3 x H x W in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float N x 3 x H x W in [-1, 1] -> uint8 N x H x W x 3 (0-255)."""
    scaled = (tensor.detach().float().clamp(-1, 1) + 1) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class ProxyArtDataset(torch.utils.data.Dataset):
    """Items {"pixel_values": 3 x H x W float in [-1, 1], "caption": str, "label": int (index into STYLES)}."""

    def __init__(self, art: ArtSet):
        self.art = art

    def __len__(self) -> int:
        return len(self.art)

    def __getitem__(self, index: int) -> dict:
        return {
            "pixel_values": to_tensor(self.art.images[index : index + 1])[0],
            "caption": self.art.captions[index],
            "label": int(self.art.labels[index]),
        }
