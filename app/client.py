"""The window's typed handle on the engine: one method per engine call, so an unused one shows up as unused.

Each method runs the call of app.backend.EngineBackend of the same name on the engine thread (app.bridge)
and returns an asyncio future of its result; the long calls, which take a Job, return (request id, future):
their events (engine.events) arrive as ``events(request_id, event)``, the bridge's job_progress signal.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from engine.jobs import Job, ProtectSettings

from .backend import PurifierRequest
from .bridge import EngineBridge


class EngineClient:
    def __init__(self, bridge: EngineBridge) -> None:
        self.bridge = bridge
        self.events = bridge.job_progress

    def engine_info(self) -> asyncio.Future:
        """EngineInfo: the device and the methods and purifiers to choose from."""
        return self.bridge.call("engine_info")

    def load_model(self, source: str) -> asyncio.Future:
        """ModelSummary of the model now loaded."""
        return self.bridge.call("load_model", source)

    def estimate_step_seconds(self, settings: ProtectSettings, height: int, width: int, job: Job) -> asyncio.Future:
        """Seconds per step of a probe job; Stop on job ends it (Cancelled)."""
        return self.bridge.call("estimate_step_seconds", settings, height, width, job=job)

    def memory_plan(self, settings: ProtectSettings, height: int, width: int) -> asyncio.Future:
        """MemoryPlan: the plan the engine will pick for this job, or its refusal, before anything runs."""
        return self.bridge.call("memory_plan", settings, height, width)

    def protect_batch(self, inputs: list[Path], settings: ProtectSettings, options: Any,
                      job: Job) -> tuple[int, asyncio.Future]:
        """engine.batch on the engine thread: its events arrive with the request id; the future resolves to
        its BatchDone."""
        return self.bridge.call_tracked("protect_batch", list(inputs), settings, options, job=job)

    def save_image(self, pixels: np.ndarray, path: str, icc_profile: bytes | None, overwrite: bool,
                   original: np.ndarray | None = None, strength_levels: float | None = None) -> asyncio.Future:
        """The path written; refused (ArtveilError "output") when the file would exceed the strength."""
        return self.bridge.call("save_image", pixels, path, icc_profile, overwrite, original, strength_levels)

    def preview_purifier(self, original: np.ndarray, protected: np.ndarray, request: PurifierRequest,
                         job: Job) -> tuple[int, asyncio.Future]:
        """A RobustnessReport for one purifier; Progress events of its phases arrive with the request id."""
        return self.bridge.call_tracked("preview_purifier", original, protected, request, job=job)

    def model_choices(self) -> asyncio.Future:
        """ModelChoices: the demo, the recommended download, the local copies."""
        return self.bridge.call("model_choices")

    def check_model_source(self, path: str) -> asyncio.Future:
        """Why path is not a loadable model, in one line; None when it looks loadable."""
        return self.bridge.call("check_model_source", path)

    def download_model(self, name: str, job: Job) -> tuple[int, asyncio.Future]:
        """The downloaded folder's path; Progress("download") events arrive with the request id."""
        return self.bridge.call_tracked("download_model", name, job=job)

    def shutdown(self) -> bool:
        return self.bridge.shutdown()
