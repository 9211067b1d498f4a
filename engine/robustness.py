"""How much of a protection survives purification, per purifier and in the worst case.

For each purifier P, with the same seed for both images:
- latent survival = ||E(P(x')) - E(P(x))|| / ||E(x') - E(x)||: how far the purified protected image's
  latent still sits from the purified original's, relative to before purification;
- objective survival = (J(P(x')) - J(P(x))) / (J(x') - J(x)) with J the method's own objective
  (fixed noise): the share of the method's damage still there after purification.
`survival` is the latent ratio clipped to [0, 1] (the objective ratio is noisy when J barely moved);
both ratios are reported. The worst case over the purifiers run is the robustness score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine import diffusion as D
from engine.events import Progress
from engine.jobs import PREVIEW_PHASES, Job, ProtectSettings
from engine.metrics import to_tensor
from engine.models import ModelBundle
from engine.protect import method_objective, pad_to_multiple
from engine.purify import PURIFIERS, purifier_label, purify


@dataclass
class PurifierOutcome:
    name: str
    label: str
    params: dict
    survival: float
    latent_ratio: float
    objective_ratio: float | None
    purified_original: np.ndarray
    purified_protected: np.ndarray


@dataclass
class RobustnessReport:
    rows: list[PurifierOutcome]
    worst: PurifierOutcome | None
    verdict: str

    def as_dict(self) -> dict:
        return {
            "worst": None if self.worst is None else {"purifier": self.worst.label, "survival": self.worst.survival},
            "verdict": self.verdict,
            "purifiers": [
                {"purifier": r.label, "survival": r.survival, "latent_ratio": r.latent_ratio, "objective_ratio": r.objective_ratio}
                for r in self.rows
            ],
        }


@torch.no_grad()
def survival_latent(model: ModelBundle, pixels: np.ndarray, side: int) -> torch.Tensor:
    """The latent the survival measure compares: the image (HxWxC uint8) scaled to at most `side` px on its
    longer side and padded as the protection pads it (engine.protect.pad_to_multiple)."""
    x = to_tensor(pixels[..., :3])
    h, w = x.shape[-2:]
    if max(h, w) > side:
        s = side / max(h, w)
        x = torch.nn.functional.interpolate(x, size=(max(8, round(h * s)), max(8, round(w * s))), mode="bilinear",
                                            align_corners=False, antialias=True)
    x, _, _ = pad_to_multiple(x.to(model.device), model.vae_scale_factor)
    return D.encode(model, x)


def latent_survival(model: ModelBundle, original: np.ndarray, protected: np.ndarray, purified_original: np.ndarray,
                    purified_protected: np.ndarray, side: int) -> float:
    """||E(P(x')) − E(P(x))|| / ||E(x') − E(x)||, unclipped: the share of the protection's latent shift that
    is left after the purifier P (0 when nothing was added: never the 1 a ratio of two zeros could turn into)."""
    before = float((survival_latent(model, protected, side) - survival_latent(model, original, side)).norm())
    after = float((survival_latent(model, purified_protected, side)
                   - survival_latent(model, purified_original, side)).norm())
    return after / max(before, 1e-12)


def verdict_for(survival: float | None, is_demo: bool = False) -> str:
    if survival is None:
        return "No purifier was run."
    pct = round(100 * survival)
    if survival >= 0.6:
        words = f"Most of the protection survives even the strongest clean-up tried ({pct}% left)."
    elif survival >= 0.3:
        words = f"Part of the protection survives the strongest clean-up tried ({pct}% left): consider a higher strength."
    else:
        words = f"Little of the protection survives the strongest clean-up tried ({pct}% left): raise the strength or the steps."
    if is_demo:
        words += " (Demo model: these numbers say nothing about real protection.)"
    return words


def _purifier_spec(spec) -> tuple[str, dict, dict]:
    """(name, params it runs with, params it is shown with) of 'name', (name, params) or (name, params, shown)."""
    if isinstance(spec, str):
        return spec, {}, {}
    if len(spec) == 2:
        return spec[0], spec[1], spec[1]
    return spec[0], spec[1], spec[2]


def robustness_summary(
    model: ModelBundle,
    original: np.ndarray,
    protected: np.ndarray,
    settings: ProtectSettings,
    purifiers: list[str | tuple[str, dict] | tuple[str, dict, dict]],
    seed: int = 0,
    with_objective: bool = True,
    job: Job | None = None,
    side: int | None = None,
) -> RobustnessReport:
    """How much of the protection each purifier leaves, at `side` px (default: settings.working_size).

    A purifier is a name, (name, params), or (name, params, shown): params run it, shown (default params)
    names it in the report (the window's preview runs at a smaller size and step count than it shows).
    For each purifier, Progress events of engine.jobs.PREVIEW_PHASES go to the job as each phase begins;
    Stop on it ends the summary within one denoising step of a diffusion purifier, or between phases
    (raises Cancelled).
    """
    job = job or Job()
    side = settings.working_size if side is None else side
    if with_objective:
        j_o = method_objective(model, original, settings)
        j_p = method_objective(model, protected, settings, reference=original)
    rows = []
    for spec in purifiers:
        name, params, shown = _purifier_spec(spec)
        phases = iter(enumerate(PREVIEW_PHASES, 1))

        def begin() -> None:
            k, phase = next(phases)
            job.check()
            job.report(Progress(phase, k, len(PREVIEW_PHASES)))

        begin()
        po = purify(model, original, name, seed=seed, job=job, **params)
        begin()
        pp = purify(model, protected, name, seed=seed, job=job, **params)
        begin()
        lat = latent_survival(model, original, protected, po, pp, side)
        obj_ratio = None
        if with_objective and abs(j_p - j_o) > 1e-9:
            jpo = method_objective(model, po, settings, reference=original)
            jpp = method_objective(model, pp, settings, reference=original)
            obj_ratio = (jpp - jpo) / (j_p - j_o)
        rows.append(
            PurifierOutcome(
                name=name,
                label=purifier_label(name, shown),
                params=dict(shown),
                survival=float(np.clip(lat, 0.0, 1.0)),
                latent_ratio=lat,
                objective_ratio=obj_ratio,
                purified_original=po,
                purified_protected=pp,
            )
        )
    worst = min(rows, key=lambda r: r.survival) if rows else None
    return RobustnessReport(rows, worst, verdict_for(worst.survival if worst else None, model.is_demo))


__all__ = ["PURIFIERS", "PurifierOutcome", "RobustnessReport", "latent_survival", "robustness_summary", "verdict_for"]
