"""Reading artists' files faithfully and writing protected ones safely.

Read: EXIF orientation applied, ICC profile kept, alpha split off and returned untouched, 16-bit,
palette, CMYK and grayscale files converted to 8-bit RGB(A); animated files use their first frame
(and say so). Write: a temporary file in the output folder, flushed and fsynced, then renamed, so a
crash or a full disk never leaves a partial output and an existing file is never clobbered silently.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import ArtveilError
from engine.faults import maybe_fail

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MAX_PIXELS = 80_000_000  # ~ 9000×9000: more is a decompression bomb or beyond any GPU's tiles budget
# Below 32 px the UNet's feature maps shrink to one pixel and its group norms fail (seen on the tiny
# model at 16×16); such an image holds nothing a style model could learn from anyway.
MIN_SIDE = 32


@dataclass
class LoadedImage:
    """pixels: HxWx3 or HxWx4 uint8 (alpha last, untouched); notes: things the user should know."""

    path: Path
    pixels: np.ndarray
    icc_profile: bytes | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] == 4


def _to_8bit(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        # An I;16 file is 16-bit by declaration, however dark; only the 32-bit "I" mode has no
        # declared range, so there the values decide.
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(np.round(arr / peak * 255), 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(arr * 255), 0, 255).astype(np.uint8), "L")
    return img


def load_image(path: str | os.PathLike) -> LoadedImage:
    """Decode one image file fully; any problem is an ArtveilError("input") naming the file."""
    path = Path(path)
    name = path.name
    if not path.exists():
        if path.is_symlink():
            if _link_loops(path):
                raise ArtveilError("input", f"{name}: a link that loops back on itself ({os.readlink(path)} leads back here).")
            raise ArtveilError("input", f"{name}: a link to a file that does not exist ({os.readlink(path)}).")
        raise ArtveilError("input", f"{name}: file not found.")
    if path.is_dir():
        raise ArtveilError("input", f"{name}: is a folder, not an image.")
    try:
        st = path.stat()
    except OSError as exc:
        raise ArtveilError("input", f"{name}: cannot be read ({exc.strerror}).") from None
    if not stat.S_ISREG(st.st_mode):
        # A device or a pipe reports size 0 or never ends: refuse before opening it.
        raise ArtveilError("input", f"{name}: not a regular file (a device, pipe or socket).")
    size = st.st_size
    if size == 0:
        raise ArtveilError("input", f"{name}: empty file (0 bytes).")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            try:
                with Image.open(path) as img:
                    if img.width * img.height > MAX_PIXELS:
                        raise Image.DecompressionBombError("too many pixels")
                    if getattr(img, "n_frames", 1) > 1:
                        notes.append(f"animated file: only the first of {img.n_frames} frames is protected")
                        img.seek(0)
                    img.load()
                    icc = img.info.get("icc_profile")
                    img = ImageOps.exif_transpose(img)
                    img = _to_8bit(img)
                    if img.mode == "P":
                        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                    if img.mode == "CMYK":
                        # The CMYK profile no longer describes RGB pixels; do not attach it.
                        img, icc = img.convert("RGB"), None
                        notes.append("CMYK converted to RGB")
                    if img.mode in ("LA", "PA", "RGBa", "La"):
                        img = img.convert("RGBA")
                    elif img.mode not in ("RGB", "RGBA"):
                        img = img.convert("RGB")
                    pixels = np.array(img, dtype=np.uint8)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ArtveilError(
            "input", f"{name}: refused: larger than {MAX_PIXELS // 1_000_000} megapixels (possible decompression bomb)."
        ) from None
    except UnidentifiedImageError:
        raise ArtveilError("input", f"{name}: not an image Artveil can read (unknown or damaged format).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ArtveilError("input", f"{name}: damaged or truncated image ({exc}).") from None
    if min(pixels.shape[:2]) < MIN_SIDE:
        h, w = pixels.shape[:2]
        raise ArtveilError("input", f"{name}: too small ({w}×{h}); at least {MIN_SIDE}×{MIN_SIDE} pixels are needed.")
    return LoadedImage(path=path, pixels=pixels, icc_profile=icc, notes=notes)


_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>:\"/\\|?*]")


# Windows opens these as devices whatever the extension ("CON.protected.png" is the console).
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def safe_stem(stem: str) -> str:
    """A file-name stem that is safe on every platform and cannot climb out of a folder."""
    stem = unicodedata.normalize("NFC", stem)
    stem = _UNSAFE.sub("_", stem).strip(" .")
    # 180 bytes, not characters: file systems cap names at 255 bytes and accents take two or three.
    stem = stem.encode("utf-8")[:180].decode("utf-8", "ignore").rstrip(" .") or "image"
    if stem.split(".")[0].upper() in _WINDOWS_DEVICES:
        stem = "_" + stem
    return stem


def validate_user_path(path: str | os.PathLike | None, must_exist: bool = True, kind: str = "file") -> Path:
    """Check a path typed by the user or read from settings before anything opens it.

    kind: "file", "folder" or "any" (a model is either). With must_exist False the path may be
    missing (an output folder to create), but what exists of it must fit. Returns the path with
    `~` expanded; raises ArtveilError("config") with a one-line reason otherwise.
    """
    if kind not in ("file", "folder", "any"):
        raise ValueError(f"kind must be 'file', 'folder' or 'any', not {kind!r}")
    text = "" if path is None else os.fspath(path)
    if not str(text).strip():
        raise ArtveilError("config", "no path given.")
    if "\x00" in str(text):
        raise ArtveilError("config", f"{text!r}: a path cannot contain a NUL character.")
    p = Path(os.path.expanduser(text))
    what = {"file": "file", "folder": "folder", "any": "file or folder"}[kind]
    try:
        st = p.stat()
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as exc:  # too long, a symlink loop, no permission on a parent
        raise ArtveilError("config", f"{p}: cannot be accessed ({exc.strerror or exc}).") from None
    if st is None:
        if must_exist:
            raise ArtveilError("config", f"{p}: {what} not found.")
        for parent in p.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    raise ArtveilError("config", f"{p}: cannot be created: {parent} is a file, not a folder.")
                break
        return p
    if stat.S_ISDIR(st.st_mode):
        if kind == "file":
            raise ArtveilError("config", f"{p}: is a folder, not a file.")
    elif stat.S_ISREG(st.st_mode):
        if kind == "folder":
            raise ArtveilError("config", f"{p}: is a file, not a folder.")
    else:
        raise ArtveilError("config", f"{p}: is a device, pipe or socket, not a {what}.")
    if not os.access(p, os.R_OK):
        raise ArtveilError("config", f"{p}: cannot be read (permission denied).")
    return p


def output_path_for(input_path: str | os.PathLike, out_dir: str | os.PathLike, fmt: str = "png") -> Path:
    """Where the protected copy of input_path goes: `{stem}.protected.{fmt}` inside out_dir."""
    fmt = fmt.lower().lstrip(".")
    if fmt == "jpeg":
        fmt = "jpg"
    out = Path(out_dir) / f"{safe_stem(Path(input_path).stem)}.protected.{fmt}"
    # samefile also catches case-insensitive disks and hard links, where resolve() differs. A name
    # with a NUL byte cannot be on disk, so it cannot be the original either (and resolve() rejects it).
    if "\x00" not in os.fspath(input_path) and (
        _resolved(out) == _resolved(input_path) or (out.exists() and _same_file(out, input_path))
    ):
        raise ArtveilError("output", f"{Path(input_path).name}: output would overwrite the original.")
    return out


def _link_loops(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def save_image(
    pixels: np.ndarray,
    path: str | os.PathLike,
    *,
    icc_profile: bytes | None = None,
    overwrite: bool = False,
    jpeg_quality: int = 95,
    before_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Write atomically: temp file in the same folder, fsync, rename. PNG is lossless; JPEG is lossy.

    before_replace(temp_path) runs on the complete, fsynced temporary file just before the rename
    (the batch journal records the file's hash there, so a kill right after the rename still resumes).
    Raises ArtveilError("output") if the file exists and overwrite is False, or on any write error;
    in every failure the temporary file is removed and nothing at `path` changes.
    """
    path = Path(path)
    folder = path.parent
    if path.exists() and not overwrite:
        raise ArtveilError("output", f"{path.name}: already exists in the output folder (not overwritten).")
    if not folder.is_dir():
        raise ArtveilError("output", f"{folder}: output folder does not exist.")
    img, fmt, kwargs = _encoder(pixels, path.suffix, icc_profile, jpeg_quality)
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem[:40]}.", suffix=".part", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            img.save(fh, format=fmt, **kwargs)
            maybe_fail("write")
            fh.flush()
            os.fsync(fh.fileno())
        if not overwrite and path.exists():
            raise ArtveilError("output", f"{path.name}: already exists in the output folder (not overwritten).")
        if before_replace is not None:
            before_replace(Path(tmp_name))
        # mkstemp creates the file 0600; an export gets what a normal save would (0666 less the umask), so
        # others can read protected images in a shared or served folder
        os.chmod(tmp_name, 0o666 & ~_UMASK)
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_folder(folder)
    except ArtveilError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ArtveilError("output", f"{path.name}: could not be written ({reason}).") from None
    finally:
        if tmp_name and os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def _encoder(pixels: np.ndarray, suffix: str, icc_profile: bytes | None, jpeg_quality: int) -> tuple[Image.Image, str, dict]:
    """(image, Pillow format, save options) that save_image writes for a file name's suffix."""
    mode = "RGBA" if pixels.shape[2] == 4 else "RGB"
    img = Image.fromarray(np.ascontiguousarray(pixels), mode)
    kwargs: dict = {}
    if icc_profile:
        kwargs["icc_profile"] = icc_profile
    suffix = suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        if mode == "RGBA":
            img = img.convert("RGB")
        kwargs.update(quality=jpeg_quality, subsampling=0)
        return img, "JPEG", kwargs
    if suffix == ".webp":
        # exact: lossless WebP otherwise rewrites the colour under fully transparent pixels
        kwargs.update(lossless=True, exact=True)
        return img, "WEBP", kwargs
    return img, "PNG", kwargs


def pixels_as_written(pixels: np.ndarray, suffix: str, jpeg_quality: int = 95) -> np.ndarray:
    """The pixels (HxWxC uint8) a file that save_image writes with this suffix holds when read back: the
    same for PNG and WebP (lossless), JPEG's own for .jpg (lossy; no alpha, so HxWx3)."""
    import io

    img, fmt, kwargs = _encoder(pixels, suffix, None, jpeg_quality)
    if fmt == "PNG":
        return pixels
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.array(decoded.convert(img.mode), dtype=np.uint8)


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


# Read once at import, before the engine thread starts: setting it later would race with other threads.
_UMASK = _read_umask()


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself survive a power cut; folders cannot be opened this way on Windows.
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# What Artveil writes: `{stem}.protected.{fmt}`, `{stem}.protected-2.{fmt}` (engine.batch), and
# `{stem}.purified-{purifier}.png` (-2, ...) from `artveil purify`. A folder scan never takes them for originals.
_OUTPUT_NAME = re.compile(r"\.(protected|purified-[a-z0-9_]+)(-\d+)?\.[A-Za-z0-9]+$")


def is_artveil_output_name(name: str) -> bool:
    """True for a name Artveil gives its exports (a.protected.png, a.protected-2.jpg, a.purified-jpeg.png)."""
    return bool(_OUTPUT_NAME.search(name))


def collect_inputs(items: list[str | os.PathLike], output_folder: str | os.PathLike | None = None) -> list[Path]:
    """Expand folders (non-recursive into hidden files) into image files, keeping the given order.

    A folder scan leaves out Artveil's own exports (by name) and, when output_folder lies inside a scanned
    folder, everything in it: a re-run must not take the last run's exports for new originals. A file given
    by name is always an input.
    """
    skip = _resolved(output_folder) if output_folder is not None else None
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            root = _resolved(p)
            inner = skip if skip is not None and skip != root and skip.is_relative_to(root) else None
            found.extend(
                # a dangling or looping link is listed too, so that it is named with its reason rather than skipped
                sorted(q for q in p.rglob("*") if (q.is_file() or (q.is_symlink() and not q.exists()))
                       and q.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in q.relative_to(p).parts)
                       and ".protected." not in q.name and not is_artveil_output_name(q.name)
                       and not (inner is not None and _resolved(q.parent).is_relative_to(inner)))
            )
        else:
            found.append(p)
    return found


def _resolved(path: str | os.PathLike) -> Path:
    """The absolute path with links followed as far as they go (a link loop stays as written)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))
