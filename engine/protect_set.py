"""Protecting a set of images in memory: the step between reading the inputs and writing the outputs.

    for event in protect_set(ModelProtector(model), images, settings, job):
        ...

engine.batch puts planning, the journal and the export around this step; tests and the evaluation call it
on arrays. The protector is injected through a small interface (Protector): the engine's own
(ModelProtector, engine.protect on a model) or a stand-in with the same three methods (the window's tests,
whose fake engine has no model). Either way the settings pass engine.protect.validate_settings first.

Methods that tune a surrogate on the protected set (ASPL, Anti-Diffusion's LoRA mode, AntiPure's ASPL
mode) share one across the set: the protector sees every clean image before the first one is protected
(begin), and each protected image once it is final (finished).
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol

import numpy as np

from engine.errors import ArtveilError, Cancelled
from engine.events import Event, Failed, Result, Started, Stopped
from engine.jobs import Job, ProtectProgress, ProtectResult, ProtectSettings


class Protector(Protocol):
    """What turns pixels into protected pixels, one image of a set at a time."""

    def begin(self, settings: ProtectSettings, clean: Callable[[], dict[int, np.ndarray]]) -> None:
        """Before the set's first image. clean() reads every input (index -> HxWxC uint8); call it only
        when the set is shared, since it reads every file."""

    def protect(self, index: int, pixels: np.ndarray, settings: ProtectSettings,
                job: Job) -> Iterator[ProtectProgress | ProtectResult]:
        """One image: ProtectProgress per optimizer step, the ProtectResult last; Cancelled on Stop."""

    def finished(self, index: int, protected: np.ndarray) -> None:
        """The image's final protected pixels (after export), for a set that is shared."""


class ModelProtector:
    """The engine's protector: engine.protect.protect_iter on `model`, the surrogate shared across the set
    (engine.surrogate.SurrogatePool) for the methods that tune one on it."""

    def __init__(self, model) -> None:
        self.model = model
        self.pool = None

    def begin(self, settings: ProtectSettings, clean: Callable[[], dict[int, np.ndarray]]) -> None:
        from engine.methods import get_method
        from engine.surrogate import SurrogatePool

        self.pool = None
        if get_method(settings.method, settings.method_params).tunes_on_set():
            self.pool = SurrogatePool()
            self._working_size = settings.working_size
            for index, pixels in clean().items():
                self.pool.clean[index] = self.pool.images[index] = self._tensor(pixels)

    def protect(self, index, pixels, settings, job):
        from engine.protect import protect_iter

        if self.pool is not None:
            self.pool.current = index
        return protect_iter(self.model, pixels, settings, job, pool=self.pool)

    def finished(self, index: int, protected: np.ndarray) -> None:
        if self.pool is not None:
            self.pool.images[index] = self._tensor(protected)

    def _tensor(self, pixels: np.ndarray):
        """An image as the protection loop optimizes it, kept on the CPU until a tuning step needs it."""
        from engine.protect import working_tensor

        return working_tensor(pixels, self._working_size, self.model.vae_scale_factor).cpu()


class SetRun:
    """One set being protected: begin() once, then image() per image in order, finished() after each."""

    def __init__(self, protector: Protector, settings: ProtectSettings, job: Job | None = None) -> None:
        from engine.protect import validate_settings

        validate_settings(settings)  # whoever the protector is: a stand-in never skips this
        self.protector, self.settings, self.job = protector, settings, job or Job()

    def begin(self, clean: Callable[[], dict[int, np.ndarray]]) -> None:
        self.protector.begin(self.settings, clean)

    def image(self, index: int, pixels: np.ndarray) -> Iterator[Event]:
        """Progress("protect") per optimizer step, then Result(ProtectResult, index)."""
        from engine.protect import step_event

        result = None
        for item in self.protector.protect(index, pixels, self.settings, self.job):
            if isinstance(item, ProtectResult):
                result = item
            else:
                yield step_event(item, index)
        if result is None:
            raise ArtveilError("internal", "the protector ended without a result")
        yield Result(result, index)

    def finished(self, index: int, protected: np.ndarray) -> None:
        self.protector.finished(index, protected)


def protect_set(protector: Protector, images: list[np.ndarray], settings: ProtectSettings,
                job: Job | None = None) -> Iterator[Event]:
    """Every image (HxWxC uint8) protected in order, nothing written: per image Started, Progress("protect")
    per step, then Result(ProtectResult), Failed or Stopped (which ends the set). ArtveilError before the
    first event when the settings are invalid."""
    run = SetRun(protector, settings, job)
    run.begin(lambda: dict(enumerate(images)))
    for index, pixels in enumerate(images):
        yield Started("image", index, len(images))
        try:
            for event in run.image(index, pixels):
                if isinstance(event, Result):
                    run.finished(index, event.value.protected)
                yield event
        except Cancelled:
            yield Stopped(index)
            return
        except ArtveilError as exc:
            yield Failed(exc.message, index, kind=exc.kind)


def protect_images(model, images: list[np.ndarray], settings: ProtectSettings,
                   job: Job | None = None) -> list[ProtectResult]:
    """protect_set with the engine's protector, drained: one ProtectResult per image. The first failure
    raises its ArtveilError; Stop raises Cancelled."""
    results = []
    for event in protect_set(ModelProtector(model), images, settings, job):
        if isinstance(event, Result):
            results.append(event.value)
        elif isinstance(event, Failed):
            raise ArtveilError(event.kind, event.message)
        elif isinstance(event, Stopped):
            raise Cancelled()
    return results
