"""The window's purification preview: one purifier, at a preview size, in phases that report progress.

Same measure as engine.robustness (latent survival: ||E(P(x')) − E(P(x))|| / ||E(x') − E(x)||, clipped
to [0, 1]) for the one purifier the artist chose, but without the method-objective ratio (four more
objective evaluations, the slow part of a full robustness report, which the preview never shows), and
with the diffusion purifiers run at ``max_side`` pixels and ``steps`` denoising steps so that it answers
in seconds on a CPU. The report says which size and steps it used.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch
import torch.nn.functional as F

from engine import diffusion as D
from engine.jobs import PREVIEW_SIDE, PREVIEW_STEPS, Job
from engine.metrics import to_tensor
from engine.purify import get_purifier, purifier_label, purify
from engine.robustness import PurifierOutcome, RobustnessReport, verdict_for


@dataclass(frozen=True)
class PreviewOptions:
    max_side: int = PREVIEW_SIDE
    steps: int = PREVIEW_STEPS


def preview_params(name: str, params: dict, options: PreviewOptions) -> dict:
    """The purifier's parameters with the preview's size and step count where the purifier declares them."""
    merged = dict(params)
    declared = get_purifier(name)
    for key, value in (("max_side", options.max_side), ("steps", options.steps)):
        if declared.param(key) is not None:
            merged.setdefault(key, value)
    return merged


@torch.no_grad()
def _latent(model, pixels: np.ndarray, side: int) -> torch.Tensor:
    x = to_tensor(pixels[..., :3])
    h, w = x.shape[-2:]
    if max(h, w) > side:
        s = side / max(h, w)
        x = F.interpolate(x, size=(max(8, round(h * s)), max(8, round(w * s))), mode="bilinear",
                          align_corners=False, antialias=True)
    m = model.vae_scale_factor
    ph, pw = (-x.shape[-2]) % m, (-x.shape[-1]) % m
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return D.encode(model, x.to(model.device))


def preview_purification(
    model,
    original: np.ndarray,
    protected: np.ndarray,
    name: str,
    params: dict,
    options: PreviewOptions = PreviewOptions(),
    seed: int = 0,
    job: Job | None = None,
) -> RobustnessReport:
    """Run one purifier on both images (HxWxC uint8) and say how much of the protection survives.

    job.report(phase) is called as each of engine.jobs.PREVIEW_PHASES begins; Stop on the job ends the
    preview within one denoising step, or between phases, with Cancelled.
    """
    job = job or Job()

    def begin(phase: str) -> None:
        job.check()
        job.report(phase)

    run_params = preview_params(name, params, options)
    begin("original")
    purified_original = purify(model, original, name, seed=seed, job=job, **run_params)
    begin("protected")
    purified_protected = purify(model, protected, name, seed=seed, job=job, **run_params)
    begin("comparing")
    side = options.max_side
    before = float((_latent(model, protected, side) - _latent(model, original, side)).norm())
    after = float((_latent(model, purified_protected, side) - _latent(model, purified_original, side)).norm())
    ratio = after / max(before, 1e-12)
    row = PurifierOutcome(
        name=name,
        label=purifier_label(name, params),
        params=dict(params),
        survival=float(np.clip(ratio, 0.0, 1.0)),
        latent_ratio=ratio,
        objective_ratio=None,
        purified_original=purified_original,
        purified_protected=purified_protected,
    )
    return RobustnessReport([row], row, verdict_for(row.survival, model.is_demo))
