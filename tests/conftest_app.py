"""Fixtures for the window's tests: a qasync loop, a fake engine, a built window, thread hygiene.

Test modules import these with ``from conftest_app import *`` so that they work without a shared
conftest.py. The fake engine speaks the same ``app.backend.EngineBackend`` protocol as the real one
and records every job that reaches it.

Driving rule: anything that starts a coroutine (clicking Protect, starting the workspace) happens
inside a coroutine run by ``drive``, so Qt events are only ever processed while the asyncio loop runs.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import qasync
from PIL import Image
from PySide6.QtCore import QThread

from app.backend import (
    Choice, DownloadOffer, EngineInfo, LocalModel, MemoryPlan, ModelChoices, ModelSummary, check_model_source,
)
from app.bridge import LIVE_THREADS
from engine.errors import ArtveilError
from engine.events import Progress
from engine.jobs import ProtectProgress, ProtectResult

__all__ = [
    "FakeBackend", "FakePrompts", "app_config_dir", "select_only", "drive", "fake_engine", "main_thread_gc", "make_window",
    "no_thread_left_running",
    "qloop", "until", "write_image",
]


# ---- images ------------------------------------------------------------------------------------

def write_image(path: Path, size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """A small RGB picture with structure (gradients and a disc), saved as PNG/JPEG by suffix."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    disc = ((yy - h / 2) ** 2 + (xx - w / 3) ** 2) < (min(h, w) / 4) ** 2
    pixels = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), np.full_like(xx, 90)], axis=2)
    pixels[disc] = rng.integers(0, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


# ---- the fake engine -----------------------------------------------------------------------------

@dataclass
class FakeEngine:
    """Shared between the test and the backend on the engine thread."""

    step_delay_s: float = 0.0
    preview_delay_s: float = 0.0
    setup_delay_s: float = 0.0  # before the first step, as a method's set-up
    measure_delay_s: float = 0.0  # the step-time probe (estimate_step_seconds)
    save_delay_s: float = 0.0  # writing the file
    purified: list = field(default_factory=list)  # (purifier name, params) the preview ran, in order
    download_delay_s: float = 0.0
    jobs: list = field(default_factory=list)  # ProtectSettings, in arrival order
    steps_run: list = field(default_factory=list)  # steps actually done per job
    calls: list = field(default_factory=list)
    threads: set = field(default_factory=set)  # thread idents the backend ran on
    step_started: threading.Event = field(default_factory=threading.Event)
    models: list = field(default_factory=lambda: [LocalModel("/models/sd15", "Stable Diffusion 1.5 (sd15)")])
    memory_plan: MemoryPlan = MemoryPlan("plan: one pass, whole image, working size 512 px (estimated peak 1.2 GB "
                                         "of 7.8 GB RAM allowed)", True)
    plans_asked: list = field(default_factory=list)  # (method, working size, height, width) per memory_plan call


class FakeBackend:
    METHODS = (
        Choice("antipure", "AntiPure (recommended: survives purification)", "Built to survive clean-up."),
        Choice("photoguard", "PhotoGuard (fast, encoder only)", "Fastest: scrambles the encoder."),
        Choice("advdm", "AdvDM (baseline)", "Classic baseline."),
    )
    PURIFIERS = (
        Choice("sdedit", "SDEdit (light diffusion re-draw)", "Noise and redraw.", {"strength": 0.2}, "strength", (0.1, 0.2, 0.3)),
        Choice("jpeg", "JPEG re-save", "Save as JPEG.", {"quality": 75}, "quality", (95, 75, 50)),
        Choice("noise", "Gaussian noise", "Add noise.", {"sigma": 0.05}, "sigma", (0.02, 0.05, 0.1)),
    )

    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.model = None

    def _record(self, name, *args):
        self.engine.calls.append(name)
        self.engine.threads.add(threading.get_ident())

    def engine_info(self):
        self._record("engine_info")
        return EngineInfo("CPU", "cpu", None, "No NVIDIA GPU found: protection runs on the CPU and is slow.",
                          self.METHODS, self.PURIFIERS)

    def load_model(self, source):
        self._record("load_model", source)
        if source == "broken":
            raise ArtveilError("model", "broken: not a diffusers folder.")
        self.model = source
        demo = source == "tiny"
        return ModelSummary(source, "tiny-sd (demo)" if demo else Path(source).name, "fake", demo)

    def estimate_step_seconds(self, settings, height, width, job):
        self._record("estimate_step_seconds")
        deadline = time.monotonic() + self.engine.measure_delay_s
        while time.monotonic() < deadline:  # the probe job: Stop ends it as it ends a job
            job.check()
            time.sleep(0.005)
        return 0.5

    def memory_plan(self, settings, height, width):
        self._record("memory_plan")
        self.engine.plans_asked.append((settings.method, settings.working_size, height, width))
        return self.engine.memory_plan

    def protect_iter(self, pixels, settings, job):
        self._record("protect_iter")
        self.engine.jobs.append(settings)
        rng = np.random.default_rng(settings.seed)
        delta = rng.integers(-int(settings.strength_levels), int(settings.strength_levels) + 1, pixels.shape[:2] + (3,))
        started = time.perf_counter()
        done = 0
        try:
            deadline = time.monotonic() + self.engine.setup_delay_s
            while time.monotonic() < deadline:  # set-up: the engine reports nothing meanwhile
                time.sleep(0.005)
            for step in range(1, settings.steps + 1):
                job.check()
                self.engine.step_started.set()
                if self.engine.step_delay_s:
                    time.sleep(self.engine.step_delay_s)
                done = step
                current = np.clip(pixels[..., :3].astype(int) + delta * step // settings.steps, 0, 255).astype(np.uint8)
                preview = current if settings.preview_every and step % settings.preview_every == 0 else None
                elapsed = time.perf_counter() - started
                yield ProtectProgress(step, settings.steps, {"loss": 1.0 / step}, elapsed,
                                      elapsed / step * (settings.steps - step), preview)
        finally:
            self.engine.steps_run.append(done)
        protected = pixels.copy()
        protected[..., :3] = np.clip(pixels[..., :3].astype(int) + delta, 0, 255).astype(np.uint8)
        yield ProtectResult(pixels, protected, settings, {"psnr": 40.0, "ssim": 0.99, "linf_levels": float(settings.strength_levels)},
                            time.perf_counter() - started, done)

    def protect_batch(self, inputs, settings, options, job):
        """The real engine.batch pipeline (planning, journal, export), with this fake's optimizer as its
        protector (engine.protect_set.Protector)."""
        self._record("protect_batch")
        from engine.batch import protect_batch
        from engine.images import save_image

        backend = self

        class FakeProtector:
            def begin(self, settings, clean):
                pass

            def protect(self, index, pixels, settings, job):
                return backend.protect_iter(pixels, settings, job)

            def finished(self, index, protected):
                pass

        def save(pixels, path, icc_profile=None, overwrite=False, before_replace=None):
            self._record("save_image", path)
            if self.engine.save_delay_s:
                time.sleep(self.engine.save_delay_s)
            return save_image(pixels, path, icc_profile=icc_profile, overwrite=overwrite, before_replace=before_replace)

        return protect_batch(FakeProtector(), inputs, settings, options, job, save=save)

    def save_image(self, pixels, path, icc_profile, overwrite, original=None, strength_levels=None):
        self._record("save_image", path)
        from engine.batch import measure_as_written
        from engine.images import save_image

        if original is not None and strength_levels is not None:  # as the real backend: the engine's own check
            measure_as_written(original, pixels, Path(path), strength_levels)

        if self.engine.save_delay_s:
            time.sleep(self.engine.save_delay_s)
        return str(save_image(pixels, path, icc_profile=icc_profile, overwrite=overwrite))

    def model_choices(self):
        self._record("model_choices")
        offer = DownloadOffer("sd15", "Stable Diffusion 1.5", 2_133_000_000, "CreativeML OpenRAIL-M",
                              "https://example.org/licence", "/home/artist/.cache/huggingface/hub")
        return ModelChoices("tiny", "Built-in tiny demo model (random weights)",
                            "A tiny random network for trying the app. It gives NO real protection.", offer,
                            tuple(self.engine.models))

    def check_model_source(self, path):
        self._record("check_model_source", path)
        return check_model_source(path)  # the real check: it reads headers only, no torch

    def preview_purifier(self, original, protected, request, job):
        self._record("preview_purifier")
        self.engine.purified.append((request.name, dict(request.params)))
        for k, phase in enumerate(("original", "protected", "comparing"), 1):
            job.check()
            job.report(Progress(phase, k, 3))
            deadline = time.monotonic() + self.engine.preview_delay_s / 3
            while time.monotonic() < deadline:  # a denoising step every 10 ms, each checking Stop
                job.check()
                time.sleep(0.01)
        row = _Row(request.name, f"{request.name} {request.params}", 0.8,
                   np.clip(original.astype(int) // 2 + 60, 0, 255).astype(np.uint8),
                   np.clip(protected.astype(int) // 2 + 60, 0, 255).astype(np.uint8))
        return _Report([row], row, "Most of the protection survives even the strongest clean-up tried.")

    def download_model(self, name, job):
        from engine.hub import DownloadProgress, download_event

        self._record("download_model")
        total = 2_133_000_000
        for i in range(1, 11):  # ten chunks over download_delay_s, Stop honoured between them
            job.check("Download stopped by the user; finished files are kept.")
            time.sleep(self.engine.download_delay_s / 10)
            job.report(download_event(DownloadProgress(total * i // 10, total, 5e7, 10.0 - i,
                                                       "unet/diffusion_pytorch_model.fp16.safetensors")))
        return f"/downloads/{name}"


@dataclass
class _Row:
    name: str
    label: str
    survival: float
    purified_original: np.ndarray
    purified_protected: np.ndarray


@dataclass
class _Report:
    rows: list
    worst: _Row
    verdict: str


class FakePrompts:
    """Canned answers to the window's questions, and a record of what was asked."""

    def __init__(self, output_dir: Path | None, conflict_answer: str | None = "keep_both"):
        self.output_dir = output_dir
        self.conflict_answer = conflict_answer
        self.asked: list = []

    def choose_output_dir(self, current):
        self.asked.append(("output_dir", current))
        return str(self.output_dir) if self.output_dir else None

    def resolve_conflicts(self, paths):
        self.asked.append(("conflicts", [p.name for p in paths]))
        return self.conflict_answer

    quit_answer = True

    def confirm_quit(self, doing):
        self.asked.append(("quit", doing))
        return self.quit_answer


# ---- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def app_config_dir(tmp_path, monkeypatch):
    """Settings go to a temporary folder, never the user's app-data folder."""
    config = tmp_path / "config"
    monkeypatch.setenv("ARTVEIL_CONFIG_DIR", str(config))
    return config


@pytest.fixture(autouse=True)
def main_thread_gc():
    """As in the app (app.gc_guard): Qt garbage is collected on the GUI thread, never the engine's.

    Torn down last, after the window and the qasync loop are gone, so their cycles die here.
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    gc.collect()
    if was_enabled:
        gc.enable()


@pytest.fixture(autouse=True)
def no_thread_left_running(main_thread_gc):
    """Fail any test that leaves an engine QThread (or a new Python thread) running."""
    before = set(threading.enumerate())
    yield
    running = [t for t in list(LIVE_THREADS) if isinstance(t, QThread) and t.isRunning()]
    for thread in running:  # stop them so one failure does not cascade into the next tests
        thread.quit()
        thread.wait(10_000)
    assert not running, f"QThread(s) still running at teardown: {[t.objectName() for t in running]}"
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon
                 and not isinstance(t, threading._DummyThread)]
        if not extra:
            break
        time.sleep(0.05)
    assert not extra, f"Python thread(s) still running at teardown: {[t.name for t in extra]}"


@pytest.fixture
def qloop(qapp):
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    if not loop.is_closed():
        loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def drive(qloop):
    """drive(coroutine, timeout) runs it on the qasync loop (Qt events flow meanwhile)."""

    def run(coro, timeout: float = 30.0):
        return qloop.run_until_complete(asyncio.wait_for(coro, timeout))

    return run


def select_only(view, row: int) -> None:
    """Make row the queue view's current and only selected row, as a plain click does. The view's own
    setCurrentIndex picks its selection command from the view's state (and Qt's idea of the keyboard
    modifiers), which earlier tests in the same process can leave behind: under xdist it was seen adding
    to the selection, so that one Delete removed two images. The cause was not pinned down."""
    from PySide6.QtCore import QItemSelectionModel

    flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
    view.selectionModel().setCurrentIndex(view.model().index(row, 0), flags)


async def until(condition, timeout: float = 10.0, interval: float = 0.01, message: str = ""):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {message or condition}")
        await asyncio.sleep(interval)


@pytest.fixture
def fake_engine():
    return FakeEngine()


@pytest.fixture
def make_window(qloop, qapp, tmp_path, fake_engine):
    """make_window(backend_factory=None, prompts=None, model_source="tiny") → (window, workspace).

    Shows the window, starts the workspace (engine info, model) and, at teardown, closes it the way a
    user would, which stops the engine thread.
    """
    from app.main import create_window
    from app.settings import Settings
    from app.ui.common import apply_theme

    apply_theme(qapp)
    built = []

    def make(backend_factory=None, prompts=None, model_source: str | None = "tiny", start: bool = True):
        settings = Settings()
        if model_source is not None:
            settings.model_source = model_source
        prompts = prompts or FakePrompts(tmp_path / "out")
        window, workspace = create_window(settings, backend_factory or (lambda: FakeBackend(fake_engine)), prompts)
        window.show()
        built.append((window, workspace))
        if start:
            qloop.run_until_complete(asyncio.wait_for(_start(workspace), 540))  # the real engine measures a step at start
        return window, workspace

    yield make
    for window, workspace in built:
        window.close()
        qloop.run_until_complete(asyncio.wait_for(workspace.idle(), 30))
        window.deleteLater()
    qloop.run_until_complete(asyncio.sleep(0.01))
    built.clear()
    # Collect this test's Qt objects here, on the GUI thread. Left to chance, Python's cyclic GC
    # may run them down inside a later test's engine thread, and Qt widgets die only on their own.
    gc.collect()


async def _start(workspace):
    workspace.start()
    await workspace.idle()
