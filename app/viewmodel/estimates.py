"""How long a protection takes on this machine: whole-job times learned per model, method and device.

A job's times (set-up, each optimizer step, saving) are kept for a working area of MEASURE_SIDE² pixels
(app.progress.JobTimes) and scaled by pixel count to each image. Until a real job has run, a measured
step time gives a prior; the first finished job replaces it, later ones are averaged in.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import replace
from typing import Callable, Iterable

from engine.errors import ArtveilError, Cancelled
from engine.jobs import Job, ProtectSettings

from ..progress import JobClock, JobTimes, learned_times, prior_times
from ..settings import Settings

log = logging.getLogger(__name__)

MEASURE_SIDE = 256  # step time is measured at this size and scaled by pixel count


# What a step costs besides its pixels (framework calls, the prompt's tensors, small convolutions), as
# pixels of work: a step costs in proportion to pixels + FIXED_PIXELS. Measured on the demo model at 64 px
# (2026-12-07): a 40×64 working image took 0.82–0.90 of a 64×64 one's time, where the pixel count alone says
# 0.63 and the former floor of 64×64 pixels said 1.0 (it overestimated every non-square image by ~20 %).
FIXED_PIXELS = 64 * 64


def area_factor(height: int, width: int, working_size: int, large_image: str = "resize") -> float:
    """Cost of one step on this image relative to the measured MEASURE_SIDE² step."""
    pixels = height * width
    if large_image == "resize":
        scale = min(1.0, working_size / max(height, width, 1))
        pixels = pixels * scale * scale
    return (pixels + FIXED_PIXELS) / (MEASURE_SIDE * MEASURE_SIDE + FIXED_PIXELS)


class TimeEstimates:
    """The learned JobTimes for the current model, method and device, stored in the settings.

    changed() is called whenever an estimate the window shows may have moved.
    """

    def __init__(self, settings: Settings, changed: Callable[[], None],
                 working_size: Callable[[], int] = lambda: 512):
        self.settings = settings
        self.device_name = ""  # the engine's device, once it has said what it runs on
        self.times: JobTimes | None = None
        self.measured = False  # self.times comes from a whole job on this machine, not from a probe
        self._changed = changed
        self._working_size = working_size
        self._probe: Job | None = None  # the step-time probe running on the engine thread, if any

    def key(self, working_size: int | None = None) -> str:
        """Times are kept per model, method, device and working size: a step at 64 px is not a 512-px
        step scaled by area (fixed costs dominate small sizes)."""
        size = self._working_size() if working_size is None else working_size
        raw = f"{self.settings.model_source}|{self.settings.method}|{self.device_name}|{size}"
        return hashlib.sha1(raw.encode()).hexdigest()[:16]

    def _stored(self, key: str) -> tuple[JobTimes | None, bool]:
        learned = self.settings.job_times(key)
        if learned is not None:
            return learned, True
        step = self.settings.step_seconds(key)
        setup = self.settings.step_seconds(key + "-setup")
        if step is None:
            return None, False
        prior = prior_times(step)
        return (replace(prior, setup_s=setup) if setup is not None else prior), False

    def reload(self) -> None:
        """Learned whole-job times for this model, method, device and working size; else a prior from a
        probe of a few steps; None when neither exists."""
        self.times, self.measured = self._stored(self.key())

    def times_for(self, working_size: int) -> tuple[JobTimes | None, bool]:
        """(times at the reference area, whether a whole job measured them) at another working size.

        Unmeasured sizes are a guess from the current size's times, scaled by the working area: an upper
        bound, since small sizes cost more than their area says.
        """
        times, measured = self._stored(self.key(working_size))
        if times is not None:
            return times, measured
        if self.times is None:
            return None, False
        current = self._working_size()
        return self.times.scaled((working_size / current) ** 2 if current else 1.0), False

    async def measure(self, engine, settings: ProtectSettings) -> None:
        """Time a few optimizer steps on the engine thread, for a prior until a real job has run.

        The probe is a whole tiny job (set-up, then 3 steps), so its wall time less its steps gives the
        set-up, which for AntiPure is several steps' worth; a prior of "3 steps" underestimated it 2.5×.
        """
        key = self.key()
        probe_steps = 3
        started = time.monotonic()
        job = self._probe = Job()
        try:
            seconds = await engine.estimate_step_seconds(settings, MEASURE_SIDE, MEASURE_SIDE, job)
        except Cancelled:
            log.info("step-time probe stopped: the artist's own work needs the engine")
            return
        except ArtveilError as exc:
            log.warning("step time not measured: %s", exc.message)
            return
        finally:
            if self._probe is job:
                self._probe = None
        wall = time.monotonic() - started
        if key == self.key():  # the model, method or working size did not change meanwhile
            factor = area_factor(MEASURE_SIDE, MEASURE_SIDE, settings.working_size, settings.large_image)
            step = float(seconds) / factor
            setup = max(0.0, wall - probe_steps * float(seconds)) / factor
            self.settings.set_step_seconds(key, step)
            self.settings.set_step_seconds(key + "-setup", setup)
            if self.settings.job_times(key) is None:
                self.times, self.measured = replace(prior_times(step), setup_s=setup), False
            self._changed()

    def give_way(self) -> None:
        """Stop a running probe at its next model block: the artist started work, which must not wait behind
        it (a probe at a large working size is a whole small job), and which teaches the times itself."""
        if self._probe is not None:
            self._probe.cancel()

    def learn(self, clock: JobClock, shape: tuple[int, ...], settings: ProtectSettings) -> None:
        """A finished job teaches the whole-job times: set-up, each step and saving, as measured here."""
        factor = area_factor(shape[0], shape[1], settings.working_size, settings.large_image)
        measured = learned_times(clock, factor, "setup", "steps", ("saving",))
        if measured is None:
            return  # too short a run to tell the step time from the fixed costs: keep what we have
        # The first real job replaces the prior outright; later ones are averaged in (weighted to the new).
        key = self.key(settings.working_size)
        learned = self.settings.job_times(key)
        times = measured if learned is None else learned.blend(measured)
        self.settings.set_job_times(key, times)
        self.settings.set_step_seconds(key, times.step_s)
        if settings.working_size == self._working_size():
            self.times, self.measured = times, True
        self._changed()

    def expected(self, size: tuple[int, int] | None, settings: ProtectSettings) -> JobTimes | None:
        """Learned times scaled to an image of this (height, width), None for one at the working size;
        None when nothing is measured yet. settings.working_size picks the times (another size than
        the current one gives times_for's guess)."""
        times = self.times if settings.working_size == self._working_size() else self.times_for(settings.working_size)[0]
        if times is None:
            return None
        h, w = size if size is not None else (settings.working_size, settings.working_size)
        return times.scaled(area_factor(h, w, settings.working_size, settings.large_image))

    def seconds(self, sizes: Iterable[tuple[int, int]] | None, settings: ProtectSettings) -> float | None:
        """Whole-job seconds (set-up, settings.steps optimizer steps, saving) for images of these sizes;
        sizes None: one image at the working size. None when nothing is measured yet."""
        one = self.expected(None, settings)
        if one is None:
            return None
        if sizes is None:
            return one.total(settings.steps)
        return sum(self.expected(size, settings).total(settings.steps) for size in sizes)
