"""Judges: how well did the mimic succeed? Every score is "higher = better for the mimic".

- image_stats: −distance between simple image statistics (colour histograms, per-channel mean and
  spread, edge energy, all at 64×64) of the generations and of the artist's clean images. No network.
- denoise_loss: −(the customized model's denoising loss on held-out clean images of the artist, with
  the instance prompt), fixed noises and timesteps: a model that learned the style predicts it better.
- style: the proxy world's style classifier (engine.proxy.classifier.load_judge, imported lazily and
  optional): mean probability that the generations are in the artist's style.
- style_accuracy: the same classifier's verdicts: the fraction of generations it calls the artist's style
  (the efficacy table's number, docs/efficacy.md).

A judge returns None when it cannot score (e.g. no classifier); reports then leave that column out.
Customization damage = score(clean-trained control) − score(condition).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine import diffusion as D
from engine.metrics import to_tensor


@dataclass
class JudgeInputs:
    """generated / reference / heldout: lists of HxWx3 uint8 images. surrogate: the condition's customized
    model (engine.surrogate.Surrogate) or None; prompt: the instance prompt it was trained with."""

    model: Any
    generated: list[np.ndarray] = field(default_factory=list)
    reference: list[np.ndarray] = field(default_factory=list)
    heldout: list[np.ndarray] = field(default_factory=list)
    surrogate: Any = None
    prompt: str = ""
    style: str | None = None


def image_features(images: list[np.ndarray]) -> np.ndarray:
    """N × 35 features: per channel 8-bin histogram (fractions), mean, std ([0, 1] units), and edge energy."""
    feats = []
    for img in images:
        x = to_tensor(img[..., :3])
        x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
        hist = [torch.histc(x[c], bins=8, min=0, max=1) / x[c].numel() for c in range(3)]
        gx = (x[:, :, 1:] - x[:, :, :-1]).abs().mean()
        gy = (x[:, 1:, :] - x[:, :-1, :]).abs().mean()
        feats.append(torch.cat(hist + [x.mean((1, 2)), x.std((1, 2)), torch.stack([gx, gy])]).double().numpy())
    return np.stack(feats)


def image_stats_score(inputs: JudgeInputs) -> float | None:
    if not inputs.generated or not inputs.reference:
        return None
    a, b = image_features(inputs.generated).mean(0), image_features(inputs.reference).mean(0)
    return -float(np.linalg.norm(a - b))


@torch.no_grad()
def denoise_loss_score(inputs: JudgeInputs, seeds: tuple[int, ...] = (11, 22, 33, 44), timesteps: int = 8) -> float | None:
    model = inputs.model
    if model is None or not inputs.heldout:
        return None
    cond = model.encode_prompt(inputs.prompt)
    losses = []
    ctx = inputs.surrogate.applied() if inputs.surrogate is not None else _null()
    with ctx:
        for img in inputs.heldout:
            z = D.encode(model, to_tensor(img[..., :3]).to(model.device))
            for s in seeds:
                g = torch.Generator(device=model.device).manual_seed(s)
                t = D.sample_timesteps(model, timesteps, g)
                noise = D.randn_like(z.expand(timesteps, -1, -1, -1), g)
                losses.append(float(D.denoising_loss(model, z, cond, t, noise)))
    return -float(np.mean(losses))


def _style_judge_and_images(inputs: JudgeInputs):
    """(the style judge, the generations as N x H x W x 3) or None when the style cannot be judged."""
    if not inputs.generated or not inputs.style:
        return None
    judge = load_style_judge()
    if judge is None or inputs.style not in judge.styles:
        return None
    return judge, np.stack([g[..., :3] for g in inputs.generated])


def style_score(inputs: JudgeInputs) -> float | None:
    found = _style_judge_and_images(inputs)
    if found is None:
        return None
    judge, images = found
    return float(judge.probabilities(images)[:, judge.styles.index(inputs.style)].mean())


def style_accuracy_score(inputs: JudgeInputs) -> float | None:
    found = _style_judge_and_images(inputs)
    return None if found is None else float(found[0].style_accuracy(found[1], inputs.style))


_STYLE_JUDGE: list = []


def load_style_judge():
    """The proxy world's style classifier, or None where it (or its weights) is not available."""
    if not _STYLE_JUDGE:
        try:
            from engine.proxy.classifier import load_judge

            _STYLE_JUDGE.append(load_judge())
        except Exception:  # optional: missing module, weights not trained yet, or an old format
            _STYLE_JUDGE.append(None)
    return _STYLE_JUDGE[0]


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


JUDGES: dict[str, Callable[[JudgeInputs], float | None]] = {
    "image_stats": image_stats_score,
    "denoise_loss": denoise_loss_score,
    "style": style_score,
    "style_accuracy": style_accuracy_score,
}


def register_judge(name: str, fn: Callable[[JudgeInputs], float | None]) -> None:
    """Plug in another judge (same contract: higher = the mimic did better; None = cannot score)."""
    JUDGES[name] = fn


def damage_retained(score_clean: float | None, score_purified: float | None, score_unpurified: float | None) -> float | None:
    """(score_clean − score_protected_purified) / (score_clean − score_protected_unpurified); None if undefined."""
    if score_clean is None or score_purified is None or score_unpurified is None:
        return None
    denom = score_clean - score_unpurified
    if abs(denom) < 1e-12:
        return None
    return (score_clean - score_purified) / denom
