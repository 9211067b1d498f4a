"""Plain data that travels between the engine and its callers (CLI, window, evaluation).

Everything here is Qt-free and safe to hand across threads: numbers, strings, numpy arrays.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from engine.errors import ArtveilError, Cancelled
from engine.events import Event, Failed, Message, Progress, Result, Started, Stopped

EVENT_TYPES = (Started, Progress, Message, Result, Failed, Stopped)

# A job's two main numbers, their limits and their named presets, in this one place: the command line
# (engine.cli_args), the window's settings and sliders (app.settings, app.ui.controls_panel) and
# validation (engine.protect.validate_settings) all read them.
# "maximum" is each range's top, so that the window's Max button ends where its slider does.
# Strength ε in pixel levels (0-255). Validation refuses ε <= 0 and ε above STRENGTH_RANGE's top (plainly
# visible grain); the window offers whole levels across STRENGTH_RANGE.
STRENGTH_RANGE = (1, 32)
STRENGTH_PRESETS = {"subtle": 4.0, "default": 8.0, "strong": 12.0, "maximum": float(STRENGTH_RANGE[1])}
# Budget in optimizer steps. Validation needs at least 1; the window offers BUDGET_RANGE in BUDGET_STEPs.
BUDGET_RANGE = (10, 1000)
BUDGET_STEP = 10
BUDGET_PRESETS = {"quick": 50, "default": 100, "thorough": 200, "maximum": BUDGET_RANGE[1]}

# Seeds feed torch and numpy generators, offset per tile and per purpose (seed + 1000·tile, ...): numpy refuses a
# negative one and torch one past 64 bits, so a seed is a whole number in 32 bits, checked before any work.
SEED_RANGE = (0, 2**32 - 1)


def check_seed(seed) -> None:
    """ArtveilError("config") in one line unless seed is a whole number in SEED_RANGE."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not low <= seed <= high:
        raise ArtveilError("config", f"seed must be a whole number from {low} to {high}, got {seed!r}.")


# The window's purification preview (engine.preview), here so that the window can say what it does
# without importing torch: the diffusion purifiers and the latent comparison run at PREVIEW_SIDE px on
# the longer side, a full re-draw in PREVIEW_STEPS denoising steps (SDEdit runs strength × this many),
# and the preview reports each of PREVIEW_PHASES as it begins.
PREVIEW_SIDE = 384
PREVIEW_STEPS = 20
PREVIEW_PHASES = ("original", "protected", "comparing")


# The expectation-over-transformation transforms (engine.eot). "identity" leaves the image as it is: beside
# another transform (eot=jpeg+identity) it makes part of the steps see the plain image, so robustness to that
# transform is not bought with the damage done without it.
EOT_TRANSFORMS = ("blur", "resize", "jpeg", "flip", "identity")


@dataclass(frozen=True)
class ProtectSettings:
    """What a protection job needs besides the image and the model.

    strength_levels: the strength ε, the L-infinity bound of the change, in pixel levels (0-255 scale); 8 is the product default.
    step_levels: PGD step size in pixel levels; None picks 1 level, or strength/10 for short runs
        (under 100 steps) when that is larger (engine.protect.default_step_levels).
    working_size: images whose longer side exceeds this are optimized at this size (δ resized back)
        or in tiles of this size, as large_image says.
    eot: expectation-over-transformation transforms (EOT_TRANSFORMS).
    method_params: per-method knobs (e.g. AntiPure's lambda_pfg), see each method's Params.
    """

    method: str = "antipure"
    strength_levels: float = STRENGTH_PRESETS["default"]
    steps: int = BUDGET_PRESETS["default"]
    step_levels: float | None = None
    seed: int = 0
    eot: tuple[str, ...] = ()
    working_size: int = 512
    large_image: str = "resize"  # "resize" or "tiles"
    timesteps_per_step: int = 1
    preview_every: int = 10
    eot_samples: int = 1  # transforms averaged per step when eot is set (k transforms: k× the cost)
    measure_objective: bool = True
    method_params: dict[str, Any] = field(default_factory=dict)
    # Speed and memory (docs/benchmarks.md). Apart from low_vram's tiles on images above 256 px, none of
    # these changes δ beyond rounding; tests/test_fastpath.py checks each against the plain path.
    precision: str = "auto"  # "auto": the model's dtype (bf16/fp16 on CUDA, fp32 on CPU); "bf16": autocast to bf16
    two_pass: bool | None = None  # Mist-v2 VAE backward (UNet and encoder graphs never coexist); None: on for CUDA
    channels_last: bool = False  # NHWC convolutions for the UNet and VAE
    low_vram: bool = False  # two-pass + gradient checkpointing + 256-px tiles + sliced/tiled VAE
    compile_unet: bool = False  # torch.compile the UNet: faster after a slow first step, recompiles per size


@dataclass
class ProtectProgress:
    """One optimizer step done. preview is an HxWx3 uint8 image of the current protected state."""

    step: int
    total: int
    losses: dict[str, float]
    elapsed_s: float
    eta_s: float | None
    preview: np.ndarray | None = None
    message: str | None = None  # e.g. "out of memory: retrying with a smaller plan (...)"
    plan: str | None = None  # on a job's first step: the memory plan it runs with (engine.plan.PlanChoice.line)


@dataclass
class ProtectResult:
    """A finished protection: the protected pixels at the original size and mode.

    original, protected: HxWxC uint8 (C = 3 or 4; alpha is copied from the original untouched).
    metrics: psnr, ssim, ms_ssim (dB / unitless), linf_levels, l2_levels (pixel levels).
    """

    original: np.ndarray
    protected: np.ndarray
    settings: ProtectSettings
    metrics: dict[str, float]
    seconds: float
    steps_done: int
    objective_start: float | None = None
    objective_end: float | None = None
    notes: list[str] = field(default_factory=list)
    # Seconds per optimizer step once warm (None for runs too short to tell): `seconds` also holds the
    # fixed costs (set-up, objective measurement, export), which must not inflate per-step estimates.
    step_seconds: float | None = None
    plan: str | None = None  # the memory plan the job ran with (engine.plan.PlanChoice.line)


class Job:
    """One job's Stop flag and event sink, handed explicitly to the engine code that runs it.

    cancel() may be called from any thread. The engine reads Stop only through check(), once per optimizer
    or denoising step (or download chunk): it raises Cancelled once Stop was asked for. report(event) hands
    one engine.events event to on_event, on the thread that runs the job. The CLI, the window and the
    evaluation all use this one object.
    """

    def __init__(self, on_event: Callable[[Event], None] | None = None) -> None:
        self._event = threading.Event()
        self._on_event = on_event

    def cancel(self) -> None:
        self._event.set()

    def check(self, message: str | None = None) -> None:
        """Raise Cancelled (with message, or the default one) once Stop was asked for."""
        if self._event.is_set():
            raise Cancelled(message) if message else Cancelled()

    def report(self, event: Event) -> None:
        if not isinstance(event, EVENT_TYPES):
            raise TypeError(f"Job.report takes an engine.events event, got {type(event).__name__}")
        if self._on_event is not None:
            self._on_event(event)

    def with_events(self, on_event: Callable[[Event], None] | None) -> Job:
        """This job with another event sink: the same Stop flag (cancelling either stops both).

        The window's engine bridge uses it to route the events of a Job made on the window's thread to a
        signal, from the engine thread that runs it.
        """
        job = Job(on_event)
        job._event = self._event
        return job
