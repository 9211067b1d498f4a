"""The one batch pipeline: what protecting a set of images means, for the window, the CLI and `artveil eval`.

    for event in protect_batch(model, inputs, settings, BatchOptions(out_dir, model_source=...), job):
        match event:
            case Started(index=i, source=src): ...
            case Result(value=BatchDone() as summary): ...

It owns everything a batch means, so a figure of the evaluation is a figure of what the window does:
reading and checking each input, planning output names (`plan_batch`, also called by the window before
it starts, to ask about existing files once), the journal and resume (an input already exported with
the same settings and model is skipped, its file intact) and the export, around the in-memory step that
protects the set (engine.protect_set: the protector, and the surrogate the set shares for the methods
that tune one on it). The caller only shows the events (engine.events): one line per file (CLI), a bar
per image (window).

Output names: `{stem}.protected.{fmt}` in the output folder. When two inputs of one batch map to one
name (a.png and a.jpg), the later one gets `{stem}.protected-2.{fmt}` (-3, ...), and so does an input
whose name is one of the inputs (an original is never written): the suffix depends only on the batch,
never on what else is on disk, so a re-run plans the same names and resumes. An existing file that is
not this input's finished export is handled as `on_existing` says: "error" (the CLI's default: named,
never replaced), "overwrite", "skip" or "keep_both" (the first free `-N` name).

This module imports no torch at import time: the window plans a batch on its own thread.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.errors import ArtveilError, Cancelled
from engine.events import Event, Failed, ImageRead, Message, Progress, Result, Started, Stopped
from engine.jobs import Job, ProtectResult, ProtectSettings

ON_EXISTING = ("error", "overwrite", "skip", "keep_both")


# ----------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PlannedImage:
    """Where one input goes. problem: why it cannot be protected (then target may be None);
    exists: a file is at target now; done_before: the journal says target is this input's finished
    export with these settings and model, intact."""

    index: int
    source: Path
    target: Path | None
    exists: bool = False
    done_before: bool = False
    problem: str | None = None

    @property
    def conflict(self) -> bool:
        """A file is in the way that is not this input's own finished export: on_existing decides."""
        return self.problem is None and self.exists and not self.done_before


def file_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _numbered(target: Path, n: int) -> Path:
    """`a.protected.png` -> `a.protected-2.png`."""
    return target.with_name(f"{target.stem}-{n}{target.suffix}")


def plan_batch(inputs: list[Path], out_dir: Path, fmt: str, fingerprint: str | None = None,
               redo: bool = False) -> list[PlannedImage]:
    """Each input's output file, decided before any work (pure file-system reads; no lock, no torch).

    fingerprint: engine.journal.settings_fingerprint of the job; with it (and redo False) an input whose
    finished export is on disk is marked done_before.
    """
    from engine.images import output_path_for
    from engine.journal import BatchJournal, input_identity

    out_dir = Path(out_dir)
    entries = BatchJournal.read_entries(out_dir) if fingerprint is not None and not redo else []
    originals = {k for k in (file_key(Path(p)) for p in inputs) if k is not None}
    names: set[str] = set()
    plan = []
    for index, source in enumerate(inputs):
        source = Path(source)
        try:
            target = output_path_for(source, out_dir, fmt)
        except ArtveilError as exc:
            plan.append(PlannedImage(index, source, None, problem=exc.message))
            continue
        target = batch_name(target, names, originals)
        done = None
        if entries:
            try:
                done = finished_export(entries, input_identity(source), fingerprint, target)
            except OSError:
                done = None  # the input itself is unreadable: reading it says why
        if done is not None:
            names.add(done.name.lower())  # a later input of the batch must not be planned onto this copy
            plan.append(PlannedImage(index, source, done, exists=True, done_before=True))
            continue
        exists = file_key(target) is not None or target.is_symlink()
        plan.append(PlannedImage(index, source, target, exists))
    return plan


def finished_export(entries: list[dict], identity: dict, fingerprint: str, target: Path) -> Path | None:
    """Where this input's finished export with these settings lies intact: target, or a `-N` copy of it that
    "keep_both" wrote because another file had target's name (so protecting again finds that copy instead of
    asking about the other file and making a third); None when there is none. The journal's identity check
    keeps another input's numbered export (a.jpg's a.protected-2.png) from counting as this one's."""
    from engine.journal import BatchJournal

    pattern = re.compile(rf"{re.escape(target.stem)}-([1-9][0-9]*){re.escape(target.suffix)}")
    numbers = {int(m.group(1)) for e in entries if isinstance(e.get("output"), str)
               for m in [pattern.fullmatch(e["output"])] if m is not None}
    for candidate in [target, *(_numbered(target, n) for n in sorted(numbers))]:
        if BatchJournal.entries_say_finished(entries, identity, fingerprint, candidate):
            return candidate
    return None


def batch_name(target: Path, names: set[str], originals: set[tuple[int, int]]) -> Path:
    """target, or its first `-N` variant that no earlier input of the batch got and that is not one of
    the inputs themselves (an original is never written): decided by the batch alone, not by the disk."""
    candidate, n = target, 1
    while candidate.name.lower() in names or file_key(candidate) in originals:
        n += 1
        candidate = _numbered(target, n)
    names.add(candidate.name.lower())
    return candidate


def free_name(target: Path, taken: set[str]) -> Path:
    """The first `-N` variant of target that is neither on disk nor taken (lower-case names) in this batch."""
    n = 2
    while True:
        candidate = _numbered(target, n)
        if not candidate.exists() and not candidate.is_symlink() and candidate.name.lower() not in taken:
            return candidate
        n += 1


# ----------------------------------------------------------------------------------------------- events
# A batch speaks engine.events: per image (index) Started("image", source, target), Progress("read") with
# the pixels as read (ImageRead), Progress("protect") per optimizer step, Progress("save"), then Result(ImageDone),
# Failed or Stopped; Message for a note about the batch; Result(BatchDone) (index None) last.


@dataclass(frozen=True)
class ImageDone:
    """Result's value for one image: exported (result set), or skipped (skipped says why; result None).

    For a skip because an earlier run exported it, with BatchOptions.load_skipped the original and the
    exported pixels come along, so a window can show it. note: something the artist should know about
    an exported file (e.g. it could not be recorded in the journal).
    """

    index: int
    source: Path
    target: Path | None
    result: ProtectResult | None = None
    skipped: str | None = None
    original: np.ndarray | None = None
    protected: np.ndarray | None = None
    icc_profile: bytes | None = None
    metrics: dict | None = None  # of the skipped-as-done pixels (with load_skipped)
    note: str | None = None


@dataclass(frozen=True)
class BatchDone:
    """The last event's value: what the batch did."""

    done: int
    skipped: int
    failed: int
    stopped: bool
    seconds: float


# ----------------------------------------------------------------------------------------------- running


@dataclass(frozen=True)
class BatchOptions:
    """out_dir: created if missing. model_source: the model as the user named it (part of the journal's
    fingerprint). on_existing: see the module docstring. redo: protect again even what the journal says is
    exported (the CLI's --overwrite). load_skipped: read the pixels of skipped-as-done images (the window)."""

    out_dir: Path
    fmt: str = "png"
    model_source: str = ""
    on_existing: str = "error"
    redo: bool = False
    load_skipped: bool = False
    journal: bool = True
    plan: tuple[PlannedImage, ...] | None = None  # a plan_batch result to follow (the window's); None: plan now


def one_line(text: str, limit: int = 400) -> str:
    """Library messages can span lines; every failed file gets one line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failure_message(source: Path, exc: BaseException) -> str:
    if isinstance(exc, ArtveilError):
        message = exc.message
    else:
        # A bug, not a bad file: still one line, and the batch goes on.
        message = f"unexpected {type(exc).__name__}: {exc} (please report this)"
    if not message.startswith(source.name):
        message = f"{source.name}: {message}"
    return one_line(message)


def prepare_output_folder(out_dir: Path) -> Path:
    """The output folder, created if missing; ArtveilError when it cannot be made or written."""
    from engine.images import validate_user_path

    folder = validate_user_path(out_dir, must_exist=False, kind="folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtveilError("output", f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise ArtveilError("output", f"output folder {folder} is not writable.")
    return folder


def fingerprint_for(settings: ProtectSettings, options: BatchOptions) -> str:
    from engine.journal import settings_fingerprint

    return settings_fingerprint(settings, options.model_source, options.fmt)


def protect_batch(protector, inputs: list[Path], settings: ProtectSettings, options: BatchOptions,
                  job: Job | None = None, *, save=None) -> Iterator[Event]:
    """Protect and export `inputs` in order; yields engine.events (see above), the last one Result(BatchDone).

    protector: an engine.protect_set.Protector, or a model (then the engine's own, ModelProtector). The
    settings pass engine.protect.validate_settings whoever the protector is.
    A file that fails is reported (Failed) and the batch goes on; Stop (job.cancel()) ends the current image
    within one optimizer step (Stopped, nothing written for it) and the batch. Raises ArtveilError before
    the first event when the batch cannot start (settings, output folder, the folder's journal held by
    another run). save: the writer, engine.images.save_image unless a test slows it down.
    """
    from engine.images import load_image
    from engine.journal import BatchJournal, input_identity
    from engine.protect_set import ModelProtector, SetRun

    started = time.perf_counter()
    if options.on_existing not in ON_EXISTING:
        raise ArtveilError("config", f"on_existing must be one of {', '.join(ON_EXISTING)}, got {options.on_existing!r}.")
    if not hasattr(protector, "protect"):
        protector = ModelProtector(protector)
    run = SetRun(protector, settings, job)
    job = run.job
    if save is None:
        from engine.images import save_image as save
    out_dir = prepare_output_folder(Path(options.out_dir))
    inputs = [Path(p) for p in inputs]
    fingerprint = fingerprint_for(settings, options)
    plan = list(options.plan) if options.plan is not None else plan_batch(inputs, out_dir, options.fmt, fingerprint,
                                                                         options.redo)
    journal = BatchJournal.open(out_dir) if options.journal else None
    done = skipped = failed = 0
    stopped = False
    try:
        if journal is not None:
            stale = journal.remove_stale_temps([p.target for p in plan if p.target is not None])
            if stale:
                yield Message(f"removed {len(stale)} unfinished temporary file(s) left by an interrupted run.")
        run.begin(lambda: _readable(plan, load_image))
        taken = {p.target.name.lower() for p in plan if p.target is not None}
        total = len(plan)
        for planned in plan:
            if _stop_asked(job):
                stopped = True
                break
            source, target, i = planned.source, planned.target, planned.index
            yield Started("image", i, total, source, target)
            try:
                if planned.problem is not None:
                    raise ArtveilError("output", planned.problem)
                identity = _identity(source, input_identity)
                if not planned.done_before and journal is not None and not options.redo and identity is not None:
                    done_at = finished_export(journal.entries, identity, fingerprint, target)
                    if done_at is not None:
                        planned = replace(planned, target=done_at, exists=True, done_before=True)
                if planned.done_before:
                    skipped += 1
                    yield Result(_skipped_done(planned, options, load_image), i)
                    continue
                overwrite = False
                if target.exists() or target.is_symlink():
                    policy = "overwrite" if options.redo else options.on_existing
                    if policy == "skip":
                        skipped += 1
                        yield Result(ImageDone(i, source, target, skipped="a file with that name exists"), i)
                        continue
                    if policy == "keep_both":
                        target = free_name(target, taken)
                        taken.add(target.name.lower())
                    elif policy == "overwrite":
                        overwrite = True
                    else:
                        why = (" by a run with other settings or from an edited original"
                               if journal is not None and journal.claims(target) else "")
                        raise ArtveilError("output", f"{target.name}: already exists in {out_dir}{why} "
                                                     "(use --overwrite to replace it).")
                image = load_image(source)
                yield Progress("read", index=i, detail=ImageRead(image.pixels, image.icc_profile, tuple(image.notes)))
                result = None
                for event in run.image(i, image.pixels):
                    if isinstance(event, Result):
                        result = event.value
                    else:
                        yield event
                note = None
                if target.suffix.lower() != ".png":
                    result, note = _as_written(result, target, settings)
                yield Progress("save", index=i)

                def record_committing(tmp: Path, target=target) -> None:
                    # An export the journal does not know would be refused by a re-run as someone else's file
                    # ("already exists"): without its line it is not written at all, and a re-run protects it.
                    if journal is not None and identity is not None:
                        problem = journal.record("committing", identity, fingerprint, target, tmp)
                        if problem:
                            raise ArtveilError("output", f"{target.name}: not written: {problem}; a re-run protects it.")

                save(result.protected, target, icc_profile=image.icc_profile, overwrite=overwrite,
                     before_replace=record_committing)
                if journal is not None and identity is not None:
                    # Without this line the "committing" one (same file, same hash) still resumes it.
                    journal.record("done", identity, fingerprint, target, target)
                run.finished(i, result.protected)
                done += 1
                yield Result(ImageDone(i, source, target, result=result, note=note), i)
            except Cancelled:
                stopped = True
                yield Stopped(i, source)
                break
            except Exception as exc:  # one file's failure is a line of the report, not the batch's end
                failed += 1
                yield Failed(failure_message(source, exc), i, source,
                             exc.kind if isinstance(exc, ArtveilError) else "internal")
    finally:
        if journal is not None:
            journal.close()
    yield Result(BatchDone(done, skipped, failed, stopped or _stop_asked(job), time.perf_counter() - started))


def _stop_asked(job: Job) -> bool:
    """Whether Stop was asked for, read through job.check() as everywhere."""
    try:
        job.check()
    except Cancelled:
        return True
    return False


def _readable(plan: list[PlannedImage], load_image) -> dict[int, np.ndarray]:
    """Every input's pixels for a set that is shared; an unreadable one is left out here and reported at
    its turn."""
    clean = {}
    for planned in plan:
        if planned.problem is None:
            try:
                clean[planned.index] = load_image(planned.source).pixels
            except (ArtveilError, OSError):
                continue
    return clean


def _as_written(result: ProtectResult, target: Path, settings: ProtectSettings) -> tuple[ProtectResult, str | None]:
    """The result as the file at target's format holds it, measured there (JPEG moves pixels again), and a
    note for what the format loses. ArtveilError("output") when the file would exceed the strength: nothing is
    written then, rather than a file whose noise is larger than the artist allowed."""
    from dataclasses import replace

    metrics, note = measure_as_written(result.original, result.protected, target, settings.strength_levels)
    return replace(result, metrics=metrics), note


def measure_as_written(original: np.ndarray, protected: np.ndarray, target: Path,
                       strength_levels: float) -> tuple[dict[str, float], str | None]:
    """(metrics of the file target's format would hold, against the original; a note for what the format
    loses). ArtveilError("output") when that file would differ from the original by more than strength_levels
    (pixel levels): the batch's export and the window's Export both call this before writing."""
    from engine.images import pixels_as_written
    from engine.metrics import image_metrics

    written = pixels_as_written(protected, target.suffix)
    metrics = image_metrics(original[..., : written.shape[2]], written)
    linf = metrics["linf_levels"]
    if linf > strength_levels:
        raise ArtveilError("output", f"{target.name}: as {target.suffix.lstrip('.').upper()} it would differ from the "
                                     f"original by up to {linf:.0f} levels (PSNR {metrics['psnr']:.1f} dB), beyond the "
                                     f"{strength_levels:g}-level strength; not written (PNG and WebP keep the protection exactly).")
    note = None
    if written.shape[2] < protected.shape[2]:
        note = f"{target.suffix.lstrip('.').upper()} has no transparency: the alpha channel was dropped."
    return metrics, note


def _identity(source: Path, input_identity) -> dict | None:
    try:
        return input_identity(source)
    except OSError:
        return None  # load_image says what is wrong with it


def _skipped_done(planned: PlannedImage, options: BatchOptions, load_image) -> ImageDone:
    reason = "already exported by an earlier run"
    if not options.load_skipped:
        return ImageDone(planned.index, planned.source, planned.target, skipped=reason)
    original = load_image(planned.source)
    exported = load_image(planned.target)
    metrics = None
    if original.pixels.shape == exported.pixels.shape:
        # what the window shows of it, in numpy: no model work for an image that is already done
        diff = exported.pixels.astype(np.float64) - original.pixels.astype(np.float64)
        mse = float(np.mean(diff[..., :3] ** 2))
        metrics = {"psnr": float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse),
                   "linf_levels": float(np.abs(diff).max())}
    return ImageDone(planned.index, planned.source, planned.target, skipped=reason, original=original.pixels,
                     protected=exported.pixels, icc_profile=original.icc_profile, metrics=metrics)
