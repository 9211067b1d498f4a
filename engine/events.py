"""One event stream: what every long engine operation says while it runs.

    Event = Started | Progress | Message | Result | Failed | Stopped

Protect, batch, purify, preview, download and evaluation all speak these six types: a batch yields them
(engine.batch.protect_batch), the others hand them to Job.report(event). A receiver dispatches on the type
(`match event: case Progress(): ...`), never on the shape of a tuple:

    def on_event(event: Event) -> None:
        match event:
            case Started(index=i, source=src):
                print(f"{i + 1}: {src.name}")
            case Progress(phase="protect", step=s, total=n):
                print(f"  step {s}/{n}")
            case Failed(message=why):
                print(f"  failed: {why}")

`index` names the item of a batch an event is about (None: the operation as a whole). `detail` carries what
one operation has beyond the common fields: a ProtectProgress (losses, the current picture, the ETA) for
the phase "protect", a DownloadProgress (bytes, speed, file) for "download", an ImageRead (the pixels as
read) for "read". Qt-free and plain data: events cross threads as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The phases of Progress, one word each. A batch image: read, protect (one optimizer step each), save; the
# preview: engine.jobs.PREVIEW_PHASES; a purifier's re-draw: purify (one denoising step each); a download:
# download (bytes); the evaluation: its stages' names (prepare, protect, purify, customize, generate, score).
STEP_PHASES = ("protect", "purify")  # one event per step: the window's bridge throttles these


@dataclass(frozen=True)
class Started:
    """An operation, or one item of a batch (index, of total items), begins."""

    operation: str  # "image", "batch", "download", "preview", "evaluation", ...
    index: int | None = None
    total: int | None = None
    source: Path | None = None
    target: Path | None = None


@dataclass(frozen=True)
class Progress:
    """Work advanced: `phase`, at `step` of `total` (0 of 0: a phase without steps has begun)."""

    phase: str
    step: int = 0
    total: int = 0
    index: int | None = None
    detail: Any = None


@dataclass(frozen=True)
class Message:
    """Something the user should read (one line), not tied to a step."""

    text: str
    index: int | None = None


@dataclass(frozen=True)
class Result:
    """What an item (index) or the operation (index None, the last event of a batch) produced."""

    value: Any
    index: int | None = None


@dataclass(frozen=True)
class Failed:
    """An item (or the operation) failed; `message` is one line that names the file when there is one."""

    message: str
    index: int | None = None
    source: Path | None = None
    kind: str = "internal"  # engine.errors.ArtveilError's kinds


@dataclass(frozen=True)
class Stopped:
    """Stop ended the item (or the operation); nothing was written for it."""

    index: int | None = None
    source: Path | None = None


Event = Started | Progress | Message | Result | Failed | Stopped


@dataclass(frozen=True)
class ImageRead:
    """Progress("read")'s detail: a batch input as read, HxWxC uint8 (C = 3 or 4), with its colour profile
    and what reading it noticed."""

    pixels: np.ndarray
    icc_profile: bytes | None
    notes: tuple[str, ...] = ()
