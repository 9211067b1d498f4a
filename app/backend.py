"""The engine as the window sees it: one Qt-free object that the engine thread owns.

Everything the window asks of the engine goes through ``EngineBackend`` so that tests can hand the
bridge a fake with the same methods, and so that the one place that knows the engine's module layout
is this file. Engine modules are imported lazily, on the engine thread, because importing torch
takes seconds and must not freeze the window at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from engine.events import Event
from engine.jobs import Job, ProtectSettings


@dataclass(frozen=True)
class Choice:
    """A method or purifier as a menu entry: internal name, label and one line on what it is for.

    For a purifier: defaults (its parameters, engine units), knob (the parameter the window's purifier
    strength moves) and levels (that parameter's light, medium and heavy values), from its declaration.
    """

    name: str
    label: str
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)
    knob: str | None = None
    levels: tuple[Any, ...] = ()


@dataclass(frozen=True)
class EngineInfo:
    """What the window shows before any job runs: the device and what can be chosen."""

    device_name: str
    device_kind: str  # "cuda", "mps", "cpu"
    vram_gb: float | None
    device_warning: str | None
    methods: tuple[Choice, ...]
    purifiers: tuple[Choice, ...]


@dataclass(frozen=True)
class ModelSummary:
    """A loaded model. native_size: the side in pixels it was trained at (64 for the demo, 512 for SD 1.5);
    the window's speed/detail choice works from it (app.viewmodel.detail)."""

    source: str
    name: str
    description: str
    is_demo: bool
    native_size: int = 512


@dataclass(frozen=True)
class LocalModel:
    """A model that can be loaded without a network: ``source`` goes to load_model as is."""

    source: str
    label: str


@dataclass(frozen=True)
class DownloadOffer:
    """A model the window offers to download: what, how big, under which licence, to where.

    present_path: a complete copy already on disk (then no download is needed), else None.
    """

    name: str
    title: str
    size_bytes: int | None
    licence: str | None
    licence_url: str | None
    destination: str
    present_path: str | None = None


@dataclass(frozen=True)
class ModelChoices:
    """Everything the model dialog offers: the built-in demo, the recommended download, local copies.

    demo_source goes to load_model as is; demo_title/demo_note say honestly what the demo is.
    """

    demo_source: str
    demo_title: str
    demo_note: str
    recommended: DownloadOffer
    local: tuple[LocalModel, ...] = ()


@dataclass(frozen=True)
class PurifierRequest:
    """One purifier to run in the preview: its engine name and parameters (engine units)."""

    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class MemoryPlan:
    """What the engine will do to fit a job in memory, in the words the command line prints, before it starts.
    fits False: no plan fits, and ``line`` is the engine's refusal (the job would be refused the same way)."""

    line: str
    fits: bool


class EngineBackend(Protocol):
    """The calls the engine thread makes. Each runs on the engine thread only.

    A long call takes its engine.jobs.Job as ``job``: it reports engine.events through job.report(event) (or
    yields them: protect_batch) and ends with Cancelled from job.check() once Stop was asked for (within one
    optimizer or denoising step, or one download chunk). app.client has one method per call.
    """

    def engine_info(self) -> EngineInfo: ...
    def load_model(self, source: str) -> ModelSummary: ...
    def estimate_step_seconds(self, settings: ProtectSettings, height: int, width: int, job: Job) -> float:
        """A probe job's seconds per step (engine.protect.estimate_step_seconds); Stop ends it."""
    def memory_plan(self, settings: ProtectSettings, height: int, width: int) -> MemoryPlan:
        """The memory plan the engine will pick for this job (engine.protect.plan_job), or why none fits."""
    def protect_batch(self, inputs: list[Path], settings: ProtectSettings, options: Any, job: Job) -> Iterator[Event]:
        """engine.batch.protect_batch's events for these inputs (options: engine.batch.BatchOptions); the last,
        Result(BatchDone), is the call's result."""
    def save_image(self, pixels: np.ndarray, path: str, icc_profile: bytes | None, overwrite: bool,
                   original: np.ndarray | None = None, strength_levels: float | None = None) -> str:
        """Write pixels to path. With original and strength_levels (pixel levels): measured as the format
        would hold them first, and refused (ArtveilError "output") when the file would exceed the strength."""
    def model_choices(self) -> ModelChoices: ...
    def check_model_source(self, path: str) -> str | None: ...
    def download_model(self, name: str, job: Job) -> str:
        """Reports Progress("download") events (detail: engine.hub.DownloadProgress) to the job."""
    def preview_purifier(
        self, original: np.ndarray, protected: np.ndarray, request: PurifierRequest, job: Job,
    ) -> Any:
        """Reports Progress(phase) to the job as each of engine.jobs.PREVIEW_PHASES begins."""


# The recommended download: the model most style mimicry is fine-tuned from.
RECOMMENDED_MODEL = "sd15"

DEMO_TEXTS = {
    "proxy": ("Built-in proxy model (small, not Stable Diffusion)",
              "A small model the project trained on procedural art, so the whole app can be tried on a CPU in "
              "minutes. It is not Stable Diffusion: images protected with it are NOT protected against real models."),
    "tiny": ("Built-in tiny demo model (random weights)",
             "A tiny random network for trying the app. It gives NO real protection: images protected with it are "
             "not protected against any real model."),
}


def check_model_source(path: str) -> str | None:
    """Why ``path`` is not a model Artveil can load, in one line; None when it looks loadable (no torch)."""
    from engine.model_check import check_model_path

    return check_model_path(path)


def method_choices() -> tuple[Choice, ...]:
    """Every registered protection method (engine.methods.METHODS) as a menu entry. Imports torch."""
    from engine.methods import METHODS

    return tuple(Choice(m.name, m.label, m.summary) for m in METHODS.values())


def purifier_choices() -> tuple[Choice, ...]:
    """Every declared purifier (engine.purify.PURIFIERS) as a menu entry. Imports torch."""
    from engine.purify import PURIFIERS

    return tuple(Choice(p.name, p.label, p.summary, p.defaults, p.knob, tuple(p.levels or ())) for p in PURIFIERS.values())


def native_size(model) -> int:
    """The side in pixels a model was trained at (engine.plan.native_size, which the command line uses too)."""
    from engine.plan import native_size as engine_native_size

    return engine_native_size(model)


class RealBackend:
    """The engine itself. Holds the one loaded model; created on the engine thread."""

    def __init__(self) -> None:
        import torch

        # OpenMP keeps a thread count per calling thread: re-apply the process's torch setting here,
        # on the engine thread, or this thread may run with a different (contending) team size.
        torch.set_num_threads(torch.get_num_threads())
        self.model = None

    def engine_info(self) -> EngineInfo:
        from engine.device import describe_device

        device = describe_device("auto")
        methods, purifiers = method_choices(), purifier_choices()
        return EngineInfo(
            device_name=device.name,
            device_kind=device.kind,
            vram_gb=device.vram_gb,
            device_warning=device.warning,
            methods=methods,
            purifiers=purifiers,
        )

    def load_model(self, source: str) -> ModelSummary:
        from engine.models import load_model

        # Drop the old model first so two large models never share the GPU.
        self.model = None
        model = load_model(source)
        self.model = model
        return ModelSummary(source, model.name, model.description, bool(model.is_demo), native_size(model))

    def _require_model(self):
        from engine.errors import ArtveilError

        if self.model is None:
            raise ArtveilError("model", "No model is loaded. Choose one in File → Model.")
        return self.model

    def estimate_step_seconds(self, settings: ProtectSettings, height: int, width: int, job: Job) -> float:
        from engine.protect import estimate_step_seconds

        return float(estimate_step_seconds(self._require_model(), settings, height, width, job))

    def memory_plan(self, settings: ProtectSettings, height: int, width: int) -> MemoryPlan:
        from engine.errors import ArtveilError
        from engine.protect import plan_job

        try:
            return MemoryPlan(plan_job(self._require_model(), height, width, settings).line(), True)
        except ArtveilError as exc:
            if exc.kind != "memory":
                raise
            return MemoryPlan(exc.message, False)

    def protect_batch(self, inputs, settings, options, job):
        from engine.batch import protect_batch

        return protect_batch(self._require_model(), inputs, settings, options, job)

    def save_image(self, pixels, path, icc_profile, overwrite, original=None, strength_levels=None):
        from engine.batch import measure_as_written
        from engine.images import save_image

        if original is not None and strength_levels is not None:  # JPEG moves pixels again: never past the strength
            measure_as_written(original, pixels, Path(path), strength_levels)
        save_image(pixels, Path(path), icc_profile=icc_profile, overwrite=overwrite)
        return str(path)

    def _local_models(self) -> list[LocalModel]:
        from engine.hub import list_local_models

        # Only complete copies: a half-downloaded model would fail at load time.
        return [
            LocalModel(entry.path, f"{entry.title} ({entry.repo_id})")
            for entry in list_local_models()
            if entry.present and entry.path
        ]

    def model_choices(self) -> ModelChoices:
        from engine.hub import KNOWN_MODELS, download_destination, list_local_models
        from engine.models import demo_source

        source = demo_source()
        title, note = DEMO_TEXTS.get(source, DEMO_TEXTS["tiny"])
        spec = KNOWN_MODELS[RECOMMENDED_MODEL]
        present = next((m.path for m in list_local_models() if m.name == spec.name and m.present), None)
        offer = DownloadOffer(spec.name, spec.title, spec.download_bytes, spec.licence, spec.licence_url,
                              download_destination(), present)
        return ModelChoices(source, title, note, offer, tuple(self._local_models()))

    def check_model_source(self, path: str) -> str | None:
        return check_model_source(path)

    def preview_purifier(self, original, protected, request, job):
        from engine.preview import preview_purification

        return preview_purification(self._require_model(), original, protected, request.name, dict(request.params),
                                    job=job)

    def download_model(self, name, job):
        from engine.hub import download_model

        result = download_model(name, job=job)
        return str(result.path)
