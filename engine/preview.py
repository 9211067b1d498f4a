"""The window's purification preview: one purifier, at a preview size, in phases that report progress.

engine.robustness's summary, the one survival measure (||E(P(x')) − E(P(x))|| / ||E(x') − E(x)||, clipped to
[0, 1]), for the one purifier the artist chose, without the method-objective ratio (four more objective
evaluations, the slow part of a full report, which the preview never shows), and with the diffusion
purifiers run at ``max_side`` pixels and ``steps`` denoising steps so that it answers in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.jobs import PREVIEW_SIDE, PREVIEW_STEPS, Job, ProtectSettings
from engine.purify import get_purifier
from engine.robustness import RobustnessReport, robustness_summary


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
    """Run one purifier on both images (HxWxC uint8) and say how much of the protection survives: the
    robustness summary (engine.robustness) for this one purifier, at the preview's size and steps.

    Progress(phase) goes to the job as each of engine.jobs.PREVIEW_PHASES begins; Stop on the job ends the
    preview within one denoising step, or between phases, with Cancelled.
    """
    settings = ProtectSettings(working_size=options.max_side)
    return robustness_summary(model, original, protected, settings, [(name, preview_params(name, params, options), params)],
                              seed=seed, with_objective=False, job=job, side=options.max_side)
