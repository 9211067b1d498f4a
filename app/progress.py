"""One progress bar for a whole job, made of phases whose durations are learned on this machine.

The engine reports the optimizer steps, but a job also spends time where it reports nothing: reading the
image, setting the method up, and writing the file. ``JobClock`` turns "which phase are we in, and since
when" into one fraction that moves with the clock inside every phase (so the bar never sits still),
never goes backwards, never overshoots a phase that has not ended, and reaches 1 only when the last
phase (the file written) is over. Its remaining time is the learned duration of what is left, revised
upwards when a phase runs long. Qt-free: the view-model ticks it from a timer.

``JobTimes`` holds what was learned: seconds for the fixed phases and per optimizer step, all for a
working area of ``MEASURE_SIDE``² pixels and scaled by pixel count for other images.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

# Within a phase the clock runs linearly to this share of the phase at its expected end, then creeps
# towards the phase's end (never reaching it) until the phase is reported over.
LINEAR_SHARE = 0.9
# However wrong the plan, the bar closes at least this share of its remaining gap per second (about 2 % of
# the gap in 10 s): it never stands still while work runs.
MIN_CREEP_PER_S = 0.002


@dataclass(frozen=True)
class JobTimes:
    """Learned seconds at the reference area: set-up before the first step, each step, the end."""

    setup_s: float
    step_s: float
    finish_s: float

    def scaled(self, factor: float) -> "JobTimes":
        return JobTimes(self.setup_s * factor, self.step_s * factor, self.finish_s * factor)

    def total(self, steps: int) -> float:
        return self.setup_s + self.step_s * steps + self.finish_s

    def blend(self, other: "JobTimes", weight: float = 0.7) -> "JobTimes":
        """Weighted towards ``other`` (a new measurement) but not all the way: one run can be noisy."""
        mix = lambda a, b: (1 - weight) * a + weight * b  # noqa: E731
        return JobTimes(mix(self.setup_s, other.setup_s), mix(self.step_s, other.step_s),
                        mix(self.finish_s, other.finish_s))

    def as_text(self) -> str:
        return f"{self.setup_s:.6g},{self.step_s:.6g},{self.finish_s:.6g}"

    @classmethod
    def from_text(cls, text) -> "JobTimes | None":
        try:
            values = [float(v) for v in str(text).split(",")]
        except (TypeError, ValueError):
            return None
        if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values):
            return None
        return cls(*values)


def prior_times(step_s: float) -> JobTimes:
    """Before any job has run: the step time measured on this machine; set-up and the end guessed
    as a few steps' worth (a method's set-up is a few gradient passes; saving is quick)."""
    return JobTimes(setup_s=3 * step_s, step_s=step_s, finish_s=0.5 * step_s)


@dataclass
class _Phase:
    name: str
    expected_s: float
    weight: float  # share of the bar, from expected durations when the job started


class JobClock:
    """Progress of one job through named phases in a fixed order.

    phases: (name, expected seconds) in order. A phase with steps (``steps_phase``) also moves with
    reported step counts. ``enter(name)`` ends every earlier phase; ``finish()`` ends the job.
    """

    def __init__(self, phases: list[tuple[str, float]], steps_phase: str | None = None, steps: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        total = sum(max(0.0, s) for _, s in phases) or 1.0
        self.phases = [_Phase(n, max(0.0, s), max(0.0, s) / total) for n, s in phases]
        self.steps_phase = steps_phase
        self.steps = max(0, steps)
        self.steps_done = 0
        self.started = clock()
        self.index = 0
        self.phase_started = self.started
        self.phase_elapsed: dict[str, float] = {}
        self.phase_starts: dict[str, float] = {self.phases[0].name: self.started}
        self.done = False
        self._last_fraction = 0.0
        self._last_fraction_at = self.started
        self._last_step_at = self.started
        self._first_step: int | None = None

    @property
    def phase(self) -> str:
        return self.phases[min(self.index, len(self.phases) - 1)].name

    def _index_of(self, name: str) -> int:
        return next(i for i, p in enumerate(self.phases) if p.name == name)

    def enter(self, name: str) -> None:
        target = self._index_of(name)
        if target <= self.index:
            return
        now = self._clock()
        self.phase_elapsed[self.phase] = now - self.phase_started
        for skipped in self.phases[self.index + 1 : target]:
            self.phase_elapsed.setdefault(skipped.name, 0.0)
        self.index, self.phase_started = target, now
        self.phase_starts[name] = now

    def expect(self, name: str, seconds: float) -> None:
        """Revise the expected duration of a phase that has not ended (its share of the bar stays)."""
        self.phases[self._index_of(name)].expected_s = max(0.0, seconds)

    def step(self, done: int, total: int | None = None) -> None:
        """The engine finished ``done`` optimizer steps (entering the steps phase if need be).

        The steps phase starts at the first report, so the first step's time counts as set-up.
        """
        if self.steps_phase is not None:
            self.enter(self.steps_phase)
        if total:
            self.steps = total
        if done > self.steps_done:
            self.steps_done = done
            self._last_step_at = self._clock()
            if self._first_step is None:
                self._first_step = done

    def finish(self) -> None:
        if not self.done:
            self.phase_elapsed[self.phase] = self._clock() - self.phase_started
            self.done = True
            self.index = len(self.phases)

    def elapsed(self) -> float:
        return self._clock() - self.started

    def _expected_per_step(self) -> float:
        phase = self.phases[self._index_of(self.steps_phase)] if self.steps_phase else None
        return phase.expected_s / self.steps if phase is not None and self.steps else 0.0

    def _within(self, phase: _Phase, now: float) -> float:
        """0..1 through the current phase, from steps where reported, else from the clock."""
        if phase.name == self.steps_phase and self.steps:
            per_step = self._expected_per_step()
            # Between two step reports the clock carries the bar on, up to just short of the next step.
            since = _creep(now - self._last_step_at, per_step) if per_step else 0.0
            return min((self.steps_done + since) / self.steps, 1.0 - 1e-9)
        return _creep(now - self.phase_started, phase.expected_s)

    def fraction(self) -> float:
        """0..1 for the whole job; 1 only after finish(). Never decreases, and never stands still.

        Within the planned times it follows the phases; when a phase runs past its expected end, the bar
        follows the time so far against the revised time left (elapsed / (elapsed + remaining)), and in
        any case closes at least MIN_CREEP_PER_S of the remaining gap each second, so it keeps moving
        while the status says the phase is taking longer than expected.
        """
        if self.done:
            self._last_fraction = 1.0
            return 1.0
        now = self._clock()
        before = sum(p.weight for p in self.phases[: self.index])
        current = self.phases[self.index]
        value = before + current.weight * self._within(current, now)
        elapsed, left = now - self.started, self.remaining()
        if elapsed > 0 and elapsed + left > 0:
            value = max(value, elapsed / (elapsed + left)) if self.overrunning() else value
        dt = max(0.0, now - self._last_fraction_at)
        floor = self._last_fraction + (1 - self._last_fraction) * (1 - math.exp(-MIN_CREEP_PER_S * dt))
        value = min(max(value, floor), 1.0 - 1e-6)
        self._last_fraction = max(self._last_fraction, value)
        self._last_fraction_at = now
        return self._last_fraction

    def overrunning(self) -> bool:
        """The current phase has run past its expected end (or the steps are slower than expected)."""
        if self.done:
            return False
        now = self._clock()
        current = self.phases[self.index]
        if current.name == self.steps_phase and self.steps:
            per_step = self._expected_per_step()
            measured = self.measured_step_s()
            return bool(per_step and measured and measured > 1.15 * per_step)
        return now - self.phase_started > current.expected_s * 1.05 + 0.5

    def measured_step_s(self) -> float | None:
        """Seconds per step over the steps reported so far in the steps phase (None before two)."""
        if self._first_step is None or self.steps_done <= self._first_step:
            return None
        return (self._last_step_at - self.phase_starts[self.steps_phase]) / (self.steps_done - self._first_step)

    def remaining(self) -> float:
        """Seconds still to go: the rest of the current phase (at the measured pace for steps, at
        least a little while a phase runs long) plus the expected durations of the phases after it."""
        if self.done:
            return 0.0
        now = self._clock()
        current = self.phases[self.index]
        if current.name == self.steps_phase and self.steps:
            per_step = self.measured_step_s() or self._expected_per_step()
            rest = max(0.0, per_step * (self.steps - self.steps_done) - (now - self._last_step_at))
        else:
            # Past its expected end a phase is expected to take a fifth longer again than it has so far.
            in_phase = now - self.phase_started
            rest = max(current.expected_s - in_phase, 0.2 * in_phase, 0.1 * current.expected_s)
        return rest + sum(p.expected_s for p in self.phases[self.index + 1 :])


def _creep(elapsed: float, expected: float) -> float:
    """Linear to LINEAR_SHARE at the expected end, then ever slower towards (never reaching) 1."""
    if expected <= 0:
        return LINEAR_SHARE
    if elapsed <= 0:
        return 0.0
    t = elapsed / expected
    if t <= LINEAR_SHARE:
        return t
    over = t - LINEAR_SHARE
    return LINEAR_SHARE + (1 - LINEAR_SHARE) * (1 - math.exp(-over / 0.5))


def learned_times(clock: JobClock, area: float, setup: str, steps_phase: str, finish: tuple[str, ...]) -> JobTimes | None:
    """What a finished job says about this machine, per reference area; None if it did not finish
    or ran too few steps to tell the step time from the set-up."""
    step_s = clock.measured_step_s()
    if not clock.done or step_s is None or area <= 0:
        return None
    e = clock.phase_elapsed
    # The first step ran inside the set-up phase (the steps phase starts at its report).
    setup_s = max(0.0, e.get(setup, 0.0) - step_s * (clock._first_step or 0))
    steps_tail = e.get(steps_phase, 0.0) - (clock._last_step_at - clock.phase_starts[steps_phase])
    finish_s = sum(e.get(n, 0.0) for n in finish) + max(0.0, steps_tail)
    return JobTimes(setup_s / area, step_s / area, finish_s / area)


__all__ = ["JobClock", "JobTimes", "learned_times", "prior_times"]
