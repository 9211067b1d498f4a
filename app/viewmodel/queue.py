"""The queue: the images the artist added, each with its state, and the list model the queue panel shows."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QSize, Qt
from PySide6.QtGui import QImage, QImageReader

from engine.errors import ArtveilError
from engine.images import IMAGE_SUFFIXES as ENGINE_SUFFIXES
from engine.images import MAX_PIXELS, MIN_SIDE, load_image

from ..signals import emit
from .words import one_line

# Exactly what the engine reads (GIF included: its first frame, with a note), so a drop is never ignored.
IMAGE_SUFFIXES = set(ENGINE_SUFFIXES)
# Files an artist may well drop that the engine does not read: added to the queue with the reason.
NOT_READ = {
    ".psd": "a Photoshop file: Artveil reads flattened images only; export it as PNG (File → Export) and add that",
    ".psb": "a Photoshop file: Artveil reads flattened images only; export it as PNG and add that",
    ".kra": "a Krita file: export it as PNG (File → Export) and add that",
    ".xcf": "a GIMP file: export it as PNG (File → Export As) and add that",
    ".clip": "a Clip Studio file: export it as PNG and add that",
    ".procreate": "a Procreate file: export it as PNG and add that",
    ".heic": "HEIC is not read: save it as PNG or JPEG and add that",
    ".avif": "AVIF is not read: save it as PNG or WebP and add that",
    ".svg": "a vector drawing: export it as PNG at the size you publish and add that",
}
THUMBNAIL_PX = 160  # decoded once; big enough to stay sharp at 2x on a ~80 px tile
UNKNOWN_SIZE = (512, 512)  # (height, width) assumed for an estimate until the header or the pixels say
PHASE_WORDS = {"setup": "setting up", "steps": "protecting", "saving": "saving", "stopping": "stopping…"}


class ItemState(enum.Enum):
    WAITING = "waiting"
    PROTECTING = "protecting"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(eq=False)
class QueueItem:
    """One image in the queue. Pixel arrays are HxWxC uint8, as the engine returns them."""

    path: Path
    thumbnail: QImage
    state: ItemState = ItemState.WAITING
    progress: float = 0.0  # 0..1 of the whole job: set-up, optimizer steps, saving
    phase: str = ""  # "setup", "steps", "saving" or "stopping" while protecting
    error: str = ""
    note: str = ""
    original: np.ndarray | None = None
    protected: np.ndarray | None = None
    preview: np.ndarray | None = None
    icc_profile: bytes | None = None
    output_path: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    report: Any = None
    report_purifier: str = ""
    size: tuple[int, int] | None = None  # (height, width) read from the file header
    unreadable: bool = False  # found broken when added: never counted in estimates
    written_stamp: tuple[int, int] | None = None  # (size, mtime_ns) of output_path as this window wrote it
    late: str = ""  # while protecting: why the bar is slower than planned ("set-up is taking longer …")

    def mark_written(self, path: Path) -> None:
        """output_path is a file this window has just written (so Export need not write it again)."""
        self.output_path = Path(path)
        try:
            stat = self.output_path.stat()
        except OSError:
            self.written_stamp = None
        else:
            self.written_stamp = (stat.st_size, stat.st_mtime_ns)

    def still_as_written(self) -> bool:
        """output_path exists exactly as this window wrote it (not edited, replaced or removed since)."""
        if self.output_path is None or self.written_stamp is None:
            return False
        try:
            stat = self.output_path.stat()
        except OSError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == self.written_stamp

    @property
    def counts_for_estimate(self) -> bool:
        return not self.unreadable and self.protected is None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(height, width) in pixels: of the loaded image, else from the file header, else UNKNOWN_SIZE."""
        if self.original is not None:
            return self.original.shape[0], self.original.shape[1]
        return self.size or UNKNOWN_SIZE

    @property
    def status_text(self) -> str:
        if self.state is ItemState.PROTECTING:
            if self.phase == "stopping":
                return "stopping…"
            text = f"{PHASE_WORDS.get(self.phase, 'protecting')} {int(self.progress * 100)} %"
            return text + (f" · {self.late}" if self.late else "")
        if self.state is ItemState.FAILED:
            return f"can't be read: {self.error}" if self.unreadable else f"not protected: {self.error}"
        if self.state is ItemState.DONE:
            return "done" + (f" · {self.note}" if self.note else "")
        if self.state is ItemState.STOPPED:
            return "stopped"
        return "waiting"


def load_thumbnail(path: Path, side: int = THUMBNAIL_PX) -> QImage:
    """A small preview decoded at reduced size; a null image when Qt cannot read the file."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    size = reader.size()
    if size.isValid() and (size.width() > side or size.height() > side):
        reader.setScaledSize(size.scaled(QSize(side, side), Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    return image if not image.isNull() else QImage()


def new_items(paths: Iterable[str | Path], known: set[Path]) -> list[QueueItem]:
    """Queue items for image files, and for the images inside folders (not recursively), skipping `known`
    paths (resolved). Each is inspected at once, so a broken file says why before its turn."""
    known = set(known)
    items = []
    for raw in paths:
        path = Path(raw)
        candidates = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for candidate in candidates:
            suffix = candidate.suffix.lower()
            if suffix not in IMAGE_SUFFIXES and suffix not in NOT_READ or not candidate.is_file():
                continue
            resolved = candidate.resolve()
            if resolved in known:
                continue
            known.add(resolved)
            if suffix in NOT_READ:  # named with its reason, never silently dropped
                item = QueueItem(resolved, QImage())
                item.state, item.error, item.unreadable = ItemState.FAILED, f"{item.name}: {NOT_READ[suffix]}.", True
            else:
                item = QueueItem(resolved, load_thumbnail(resolved))
                inspect(item)
            items.append(item)
    return items


def gone_item(path: Path) -> QueueItem:
    """A row for a file the last session had queued that is no longer there: named, with why."""
    item = QueueItem(Path(path), QImage())
    item.state, item.unreadable = ItemState.FAILED, True
    item.error = (f"{item.name}: not restored: the file is no longer at {path} "
                  f"(moved, renamed or deleted since Artveil last ran).")
    return item


def inspect(item: QueueItem) -> None:
    """Read the header now, so a broken file says why at once instead of "waiting" for its turn."""
    header = QImageReader(str(item.path)).size()
    if header.isValid():
        item.size = (header.height(), header.width())
        h, w = item.size
        problem = None
        if h * w > MAX_PIXELS:
            problem = f"{item.name}: refused: larger than {MAX_PIXELS // 1_000_000} megapixels."
        elif min(h, w) < MIN_SIDE:
            problem = f"{item.name}: too small ({w}×{h}); at least {MIN_SIDE}×{MIN_SIDE} pixels are needed."
    else:
        # Qt cannot read it: ask the engine's own reader (torch-free), which names the problem.
        try:
            pixels = load_image(item.path).pixels
        except ArtveilError as exc:
            problem = exc.message
        else:
            item.size, problem = pixels.shape[:2], None
    if problem:
        item.state, item.error, item.unreadable = ItemState.FAILED, one_line(problem, limit=2000), True


class QueueModel(QAbstractListModel):
    """The queue as a list model; the item itself is under ItemRole."""

    ItemRole = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.items: list[QueueItem] = []

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self.items)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.items):
            return None
        item = self.items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.name
        if role == Qt.ItemDataRole.DecorationRole:
            return item.thumbnail
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{item.path}\n{item.status_text}"
        if role == self.ItemRole:
            return item
        return None

    def append(self, items: list[QueueItem]) -> None:
        if not items:
            return
        start = len(self.items)
        self.beginInsertRows(QModelIndex(), start, start + len(items) - 1)
        self.items.extend(items)
        self.endInsertRows()

    def remove(self, item: QueueItem) -> None:
        row = self.items.index(item)
        self.beginRemoveRows(QModelIndex(), row, row)
        del self.items[row]
        self.endRemoveRows()

    def refresh(self, item: QueueItem) -> None:
        if item in self.items:
            index = self.index(self.items.index(item))
            emit(self.dataChanged, index, index)

    def index_of(self, item: QueueItem) -> QModelIndex:
        return self.index(self.items.index(item)) if item in self.items else QModelIndex()
