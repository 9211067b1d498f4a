"""Reading artists' files faithfully and writing protected ones safely.

Read: EXIF orientation applied, ICC profile kept, alpha split off and returned untouched, 16-bit,
palette, CMYK and grayscale files converted to 8-bit RGB(A); animated files use their first frame
(and say so). Write: a temporary file in the output folder, flushed and fsynced, then renamed, so a
crash or a full disk never leaves a partial output and an existing file is never clobbered silently.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import ArtveilError
from engine.faults import maybe_fail

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MAX_PIXELS = 80_000_000  # ~ 9000×9000: more is a decompression bomb or beyond any GPU's tiles budget
MIN_SIDE = 8  # the VAE's stride; a smaller image has nothing to protect


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
        peak = 65535.0 if arr.max() > 255 else 255.0
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
        raise ArtveilError("input", f"{name}: file not found.")
    if path.is_dir():
        raise ArtveilError("input", f"{name}: is a folder, not an image.")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ArtveilError("input", f"{name}: cannot be read ({exc.strerror}).") from None
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


def safe_stem(stem: str) -> str:
    """A file-name stem that is safe on every platform and cannot climb out of a folder."""
    stem = unicodedata.normalize("NFC", stem)
    stem = _UNSAFE.sub("_", stem).strip(" .")
    return stem[:180] or "image"


def output_path_for(input_path: str | os.PathLike, out_dir: str | os.PathLike, fmt: str = "png") -> Path:
    """Where the protected copy of input_path goes: `{stem}.protected.{fmt}` inside out_dir."""
    fmt = fmt.lower().lstrip(".")
    if fmt == "jpeg":
        fmt = "jpg"
    out = Path(out_dir) / f"{safe_stem(Path(input_path).stem)}.protected.{fmt}"
    if out.resolve() == Path(input_path).resolve():
        raise ArtveilError("output", f"{Path(input_path).name}: output would overwrite the original.")
    return out


def save_image(
    pixels: np.ndarray,
    path: str | os.PathLike,
    *,
    icc_profile: bytes | None = None,
    overwrite: bool = False,
    jpeg_quality: int = 95,
) -> Path:
    """Write atomically: temp file in the same folder, fsync, rename. PNG is lossless; JPEG is lossy.

    Raises ArtveilError("output") if the file exists and overwrite is False, or on any write error;
    in every failure the temporary file is removed and nothing at `path` changes.
    """
    path = Path(path)
    folder = path.parent
    if path.exists() and not overwrite:
        raise ArtveilError("output", f"{path.name}: already exists in the output folder (not overwritten).")
    if not folder.is_dir():
        raise ArtveilError("output", f"{folder}: output folder does not exist.")
    suffix = path.suffix.lower()
    mode = "RGBA" if pixels.shape[2] == 4 else "RGB"
    img = Image.fromarray(np.ascontiguousarray(pixels), mode)
    kwargs: dict = {}
    if icc_profile:
        kwargs["icc_profile"] = icc_profile
    if suffix in (".jpg", ".jpeg"):
        fmt = "JPEG"
        if mode == "RGBA":
            img = img.convert("RGB")
        kwargs.update(quality=jpeg_quality, subsampling=0)
    elif suffix == ".webp":
        fmt = "WEBP"
        kwargs.update(lossless=True)
    else:
        fmt = "PNG"
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
        os.replace(tmp_name, path)
        tmp_name = None
    except ArtveilError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ArtveilError("output", f"{path.name}: could not be written ({reason}).") from None
    finally:
        if tmp_name and os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def collect_inputs(items: list[str | os.PathLike]) -> list[Path]:
    """Expand folders (non-recursive into hidden files) into image files, keeping the given order."""
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found.extend(
                sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in q.relative_to(p).parts)
                       and ".protected." not in q.name)
            )
        else:
            found.append(p)
    return found
