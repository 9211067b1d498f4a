"""How long a protection takes on this machine: whole-job times learned per model, method and device.

A job's times (set-up, each optimizer step, saving) are kept for a working area of MEASURE_SIDE² pixels
(app.progress.JobTimes) and scaled by pixel count to each image. Until a real job has run, a measured
step time gives a prior; the first finished job replaces it, later ones are averaged in.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Callable, Iterable

from engine.errors import ArtveilError
from engine.jobs import ProtectSettings

from ..progress import JobClock, JobTimes, learned_times, prior_times
from ..settings import Settings

log = logging.getLogger(__name__)

MEASURE_SIDE = 256  # step time is measured at this size and scaled by pixel count


def area_factor(height: int, width: int, working_size: int, large_image: str = "resize") -> float:
    """Cost of one step on this image relative to the measured MEASURE_SIDE² step."""
    pixels = height * width
    if large_image == "resize":
        scale = min(1.0, working_size / max(height, width, 1))
        pixels = pixels * scale * scale
    return max(pixels, 64 * 64) / (MEASURE_SIDE * MEASURE_SIDE)


class TimeEstimates:
    """The learned JobTimes for the current model, method and device, stored in the settings.

    changed() is called whenever an estimate the window shows may have moved.
    """

    def __init__(self, settings: Settings, changed: Callable[[], None]):
        self.settings = settings
        self.device_name = ""  # the engine's device, once it has said what it runs on
        self.times: JobTimes | None = None
        self._changed = changed

    def key(self) -> str:
        raw = f"{self.settings.model_source}|{self.settings.method}|{self.device_name}"
        return hashlib.sha1(raw.encode()).hexdigest()[:16]

    def reload(self) -> None:
        """Learned whole-job times for this model, method and device; else a prior from a stored step time."""
        key = self.key()
        learned = self.settings.job_times(key)
        if learned is None:
            step = self.settings.step_seconds(key)
            learned = prior_times(step) if step is not None else None
        self.times = learned

    async def measure(self, bridge, settings: ProtectSettings) -> None:
        """Time a few optimizer steps on the engine thread, for a prior until a real job has run."""
        key = self.key()
        try:
            seconds = await bridge.call("estimate_step_seconds", settings, MEASURE_SIDE, MEASURE_SIDE)
        except ArtveilError as exc:
            log.warning("step time not measured: %s", exc.message)
            return
        if key == self.key():  # the model or method did not change meanwhile
            self.settings.set_step_seconds(key, float(seconds))
            if self.settings.job_times(key) is None:
                self.times = prior_times(float(seconds))
            self._changed()

    def learn(self, clock: JobClock, shape: tuple[int, ...], settings: ProtectSettings) -> None:
        """A finished job teaches the whole-job times: set-up, each step and saving, as measured here."""
        factor = area_factor(shape[0], shape[1], settings.working_size, settings.large_image)
        measured = learned_times(clock, factor, "setup", "steps", ("saving",))
        if measured is None:
            return  # too short a run to tell the step time from the fixed costs: keep what we have
        # The first real job replaces the prior outright; later ones are averaged in (weighted to the new).
        learned = self.settings.job_times(self.key())
        self.times = measured if learned is None else learned.blend(measured)
        self.settings.set_job_times(self.key(), self.times)
        self.settings.set_step_seconds(self.key(), self.times.step_s)
        self._changed()

    def expected(self, size: tuple[int, int] | None, settings: ProtectSettings) -> JobTimes | None:
        """Learned times scaled to an image of this (height, width), None for one at the working size;
        None when nothing is measured yet."""
        if self.times is None:
            return None
        h, w = size if size is not None else (settings.working_size, settings.working_size)
        return self.times.scaled(area_factor(h, w, settings.working_size, settings.large_image))

    def seconds(self, sizes: Iterable[tuple[int, int]] | None, settings: ProtectSettings) -> float | None:
        """Whole-job seconds (set-up, settings.steps optimizer steps, saving) for images of these sizes;
        sizes None: one image at the working size. None when nothing is measured yet."""
        if self.times is None:
            return None
        if sizes is None:
            return self.expected(None, settings).total(settings.steps)
        return sum(self.expected(size, settings).total(settings.steps) for size in sizes)
