"""Where protected images go: the output folder, engine.batch's plan of their file names (asking once
about files that exist), and saving protected images again (e.g. in another format)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from engine import batch
from engine.batch import BatchOptions, PlannedImage
from engine.errors import ArtveilError
from engine.jobs import ProtectSettings

from ..settings import Settings
from .prompts import Prompts
from .queue import QueueItem
from .words import one_line

EXPORT_SUFFIXES = {"png": "png", "webp": "webp", "jpeg": "jpg"}  # the export format setting → file suffix


def output_dir(settings: Settings, prompts: Prompts) -> Path | None:
    """The output folder: the stored one while it exists, else one the artist chooses (None: cancelled)."""
    current = settings.output_dir
    if current and Path(current).is_dir():
        return Path(current)
    chosen = prompts.choose_output_dir(current)
    if not chosen:
        return None
    Path(chosen).mkdir(parents=True, exist_ok=True)
    settings.output_dir = str(chosen)
    return Path(chosen)


def batch_options(settings: Settings, out_dir: Path, **kwargs) -> BatchOptions:
    fmt = EXPORT_SUFFIXES.get(settings.export_format, "png")
    return BatchOptions(out_dir, fmt=fmt, model_source=settings.model_source or "", **kwargs)


def plan_outputs(settings: Settings, prompts: Prompts, items: list[QueueItem], job: ProtectSettings | None
                 ) -> tuple[Path, list[PlannedImage], str] | None:
    """engine.batch's plan of each item's output file, asking once about existing files.

    job: the job's settings, so that an image this folder's journal says is exported with them is
    resumed (shown, not redone) without a question; None for a re-export. Returns (folder, plan,
    on_existing), or None when the artist cancelled.
    """
    out_dir = output_dir(settings, prompts)
    if out_dir is None:
        return None
    options = batch_options(settings, out_dir)
    fingerprint = batch.fingerprint_for(job, options) if job is not None else None
    plan = batch.plan_batch([item.path for item in items], out_dir, options.fmt, fingerprint)
    conflicts = [p.target for p in plan if p.conflict]
    choice = "overwrite"
    if conflicts:
        choice = prompts.resolve_conflicts(conflicts)
        if choice is None:
            return None
    return out_dir, plan, choice


async def export_items(engine, items: list[QueueItem], plan: list[PlannedImage], choice: str,
                       touch: Callable[[QueueItem], None]) -> str:
    """Save the items' protected pixels on the engine thread, named as a batch names them; each item's
    note says where it went (touch shows it). Returns the summary line."""
    saved, failed, skipped = 0, 0, 0
    taken = {p.target.name.lower() for p in plan if p.target is not None}
    for item, planned in zip(items, plan):
        target = planned.target
        if planned.conflict and choice == "skip":
            item.note = f"not exported: {target.name} exists (kept as it was)"
            skipped += 1
            touch(item)
            continue
        if planned.conflict and choice == "keep_both":
            target = batch.free_name(target, taken)
            taken.add(target.name.lower())
        overwrite = planned.conflict and choice == "overwrite"
        try:
            if planned.problem is not None:
                raise ArtveilError("output", planned.problem)
            path = await engine.save_image(item.protected, str(target), item.icc_profile, overwrite,
                                           item.original, item.metrics.get("strength_levels"))
        except ArtveilError as exc:
            item.error = one_line(exc.message)
            item.note = f"export failed: {item.error}"
            failed += 1
        else:
            item.mark_written(Path(path))
            item.note = f"saved as {item.output_path.name}"
            saved += 1
        touch(item)
    text = f"Exported {saved} image{'s' if saved != 1 else ''}"
    if skipped:
        text += f", {skipped} skipped (a file of that name exists)"
    return text + (f", {failed} could not be saved." if failed else ".")
