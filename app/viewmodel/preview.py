"""The purification preview: which purifier the controls ask for, and one preview's progress while it runs.

The preview runs on the engine thread (engine.preview) in engine.jobs.PREVIEW_PHASES, reporting each as it
begins; the window's bar moves with a clock between those reports, its phases timed by earlier previews of
the same purifier on this machine (stored per model, purifier, settings and device).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from engine.jobs import PREVIEW_PHASES, PREVIEW_SIDE, PREVIEW_STEPS

from ..backend import Choice, PurifierRequest
from ..progress import JobClock
from .estimates import area_factor
from .queue import QueueItem
from .words import format_duration

# What the preview tells the artist it does differently from a mimic's full run (engine.preview).
PREVIEW_NOTE = (f"For a quick answer the preview runs the purifier at {PREVIEW_SIDE} px with {PREVIEW_STEPS} "
                "denoising steps, smaller and shorter than a mimic's full run.")
# The purifier strength's three positions; each purifier declares its knob's value at each
# (engine.purify, read through Choice.levels). One without levels runs with its engine defaults.
LEVEL_NAMES = ("light", "medium", "heavy")
PHASE_DOING = dict(zip(PREVIEW_PHASES, ("Purifying the original", "Purifying the protected image", "Comparing")))


def purifier_request(purifiers: tuple[Choice, ...], name: str, level: int) -> PurifierRequest | None:
    """The purifier `name` at strength position `level` (an index into LEVEL_NAMES); None when unknown."""
    choice = next((c for c in purifiers if c.name == name), None)
    if choice is None:
        return None
    params = {}
    if choice.knob and choice.levels:
        params[choice.knob] = choice.levels[max(0, min(len(choice.levels) - 1, level))]
    return PurifierRequest(choice.name, params)


def preview_key(model_source: str, request: PurifierRequest, device_name: str) -> str:
    """Under which key the times of this preview are learned."""
    raw = f"{model_source}|{request.name}|{sorted(request.params.items())}|{device_name}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PreviewStatus:
    """Where a purification preview is: fraction 0..1, what it is doing, seconds left (None: unknown yet)."""

    fraction: float
    doing: str
    eta_s: float | None

    def line(self) -> str:
        if self.doing == "Stopping…":
            return self.doing
        left = f"about {format_duration(self.eta_s)} left" if self.eta_s is not None else "estimating the time…"
        return f"{self.doing}… {int(self.fraction * 100)} % · {left}"


class PreviewRun:
    """One preview of `request` on `item`. learned: (seconds to purify one image, seconds to compare),
    per MEASURE_SIDE² of preview area, from an earlier preview (None: the first here)."""

    def __init__(self, item: QueueItem, request: PurifierRequest, learned: tuple[float, float] | None):
        self.item, self.request = item, request
        self.request_id: int | None = None  # the bridge's, whose job_progress carries this preview's phases
        self.area = area_factor(*item.pixel_size, PREVIEW_SIDE)
        # Purifying the original and the protected image cost the same; comparing is four encodes.
        each = learned[0] * self.area if learned else None
        compare = learned[1] * self.area if learned else None
        original, protected, comparing = PREVIEW_PHASES
        self.clock = JobClock([(original, each or 1.0), (protected, each or 1.0), (comparing, compare or 0.2)])
        self.known = learned is not None  # whether the clock's remaining time means anything yet

    def begin(self, phase) -> bool:
        """The engine began `phase` (one of PREVIEW_PHASES); False for anything else it reported."""
        if phase not in PREVIEW_PHASES:
            return False
        if phase == PREVIEW_PHASES[1] and not self.known:
            # First preview of this purifier here: the original's time is the estimate for the rest.
            spent = self.clock.elapsed()
            self.clock.expect(PREVIEW_PHASES[1], spent)
            self.clock.expect(PREVIEW_PHASES[2], 0.25 * spent)
            self.known = True
        self.clock.enter(phase)
        return True

    def status(self, stopping: bool) -> PreviewStatus:
        if stopping:
            return PreviewStatus(self.clock.fraction(), "Stopping…", None)
        eta = self.clock.remaining() if self.known else None
        return PreviewStatus(self.clock.fraction(), PHASE_DOING[self.clock.phase], eta)

    def learned(self) -> tuple[float, float]:
        """The preview is over: (purify one image, compare) seconds per MEASURE_SIDE², for the next one."""
        self.clock.finish()
        e = self.clock.phase_elapsed
        original, protected, comparing = PREVIEW_PHASES
        purify_s = (e.get(original, 0.0) + e.get(protected, 0.0)) / 2
        return purify_s / self.area, e.get(comparing, 0.0) / self.area
