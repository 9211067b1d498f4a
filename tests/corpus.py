"""A corpus of awkward and broken inputs, generated on the fly so no binary is committed.

`write_image_corpus(folder)` writes image files an artist might really drop on Artveil and returns
one `Case` per file saying what must happen: an export of a given size (maybe with a note), or a
one-line error containing a given reason. `write_model_corpus(folder)` does the same for models.
PNG files whose content Pillow would refuse to write (16-bit RGB, a lying header) are assembled
chunk by chunk.
"""

from __future__ import annotations

import csv
import io
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image


@dataclass(frozen=True)
class Case:
    """file: name in the corpus folder; ok: an export must appear; reason: a fragment the error
    (or, for ok cases, a note) must contain; size: (width, height) of the export."""

    file: str
    ok: bool
    reason: str = ""
    size: tuple[int, int] | None = None


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A PNG from unfiltered scanlines (raw_rows excludes the per-row filter byte)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row_len = len(raw_rows) // height if height else 0
    scan = b"".join(b"\x00" + raw_rows[i * row_len:(i + 1) * row_len] for i in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(scan)) + chunk(b"IEND", b"")


def bomb_png() -> bytes:
    """A PNG whose header claims 20000×20000 RGB (1.2 GB decoded) over a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 60001))
            + chunk(b"IEND", b""))


def _encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def gray16_rows(h: int, w: int) -> np.ndarray:
    """A 16-bit ramp that also covers the dark end, where an 8-bit misreading would show."""
    return (np.linspace(0, 65535, h * w).reshape(h, w)).astype(">u2")


ANIMATION_COLORS = [(220, 40, 40), (40, 220, 40), (40, 40, 220)]


def write_image_corpus(folder: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = make_image(32, 40, seed=3)  # 40 wide, 32 high
    cases: list[Case] = []

    def put(name: str, data: bytes, case: Case) -> None:
        (folder / name).write_bytes(data)
        cases.append(case)

    put("empty.png", b"", Case("empty.png", False, "empty file"))
    png = _encoded(Image.fromarray(rgb), "PNG")
    put("truncated.png", png[: len(png) // 2], Case("truncated.png", False, "damaged or truncated"))
    jpg = _encoded(Image.fromarray(rgb), "JPEG", quality=90)
    put("truncated.jpg", jpg[: len(jpg) // 2], Case("truncated.jpg", False, "damaged or truncated"))
    put("notes.png", b"shopping list: brushes, canvas\n", Case("notes.png", False, "not an image"))
    g16 = gray16_rows(32, 40)
    put("gray16.png", png_bytes(40, 32, 16, 0, g16.tobytes()), Case("gray16.png", True, size=(40, 32)))
    rgb16 = (rgb.astype(">u2") * 257)
    put("rgb16.png", png_bytes(40, 32, 16, 2, rgb16.tobytes()), Case("rgb16.png", True, size=(40, 32)))
    cmyk = Image.fromarray(np.dstack([rgb, rgb[..., :1] // 2]), "CMYK")
    put("cmyk.jpg", _encoded(cmyk, "JPEG", quality=95), Case("cmyk.jpg", True, "CMYK converted to RGB", (40, 32)))
    pal = Image.fromarray(rgb).quantize(16)
    pal.info["transparency"] = 0
    put("palette_alpha.png", _encoded(pal, "PNG", transparency=0), Case("palette_alpha.png", True, size=(40, 32)))
    put("gray.png", _encoded(Image.fromarray(rgb[..., 0], "L"), "PNG"), Case("gray.png", True, size=(40, 32)))
    la = np.dstack([rgb[..., 0], np.where(np.arange(40) < 16, 255, 60).astype(np.uint8)[None, :].repeat(32, 0)])
    put("gray_alpha.png", _encoded(Image.fromarray(la, "LA"), "PNG"), Case("gray_alpha.png", True, size=(40, 32)))
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the stored 40×32 shows as 32×40
    put("exif_rotated.jpg", _encoded(rotated, "JPEG", quality=95, exif=exif),
        Case("exif_rotated.jpg", True, size=(32, 40)))
    frames = [Image.new("RGB", (40, 32), c) for c in ANIMATION_COLORS]
    put("animated.gif", _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        Case("animated.gif", True, "only the first of 3 frames", (40, 32)))
    # Not "animated.webp": it would share the GIF's output name (a separate test covers that clash).
    put("loop.webp", _encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100,
                                  loop=0, lossless=True),
        Case("loop.webp", True, "only the first of 3 frames", (40, 32)))
    put("one_pixel.png", _encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), Case("one_pixel.png", False, "too small (1×1)"))
    put("seven.png", _encoded(Image.fromarray(rgb[:7, :7]), "PNG"), Case("seven.png", False, "too small (7×7)"))
    put("sixteen.png", _encoded(Image.fromarray(rgb[:16, :16]), "PNG"), Case("sixteen.png", False, "too small (16×16)"))
    put("smallest.png", _encoded(Image.fromarray(rgb[:32, :32]), "PNG"), Case("smallest.png", True, size=(32, 32)))
    put("bomb.png", bomb_png(), Case("bomb.png", False, "decompression bomb"))
    put("café naïve – étude 1.png", _encoded(Image.fromarray(rgb), "PNG"),
        Case("café naïve – étude 1.png", True, size=(40, 32)))
    return cases


def write_model_corpus(folder: Path, tiny_folder: Path) -> dict[str, tuple[Path, str]]:
    """Broken model sources -> (path, fragment of the refusal). tiny_folder: a saved tiny model."""
    import torch
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing folder"] = (folder / "no-such-model", "no such model folder")

    no_unet = folder / "no-unet"
    shutil.copytree(tiny_folder, no_unet)
    shutil.rmtree(no_unet / "unet")
    cases["folder without unet"] = (no_unet, "missing unet")

    evil = folder / "evil.ckpt"
    marker = folder / "pwned"
    torch.save({"state_dict": _RunsCode(str(marker))}, evil)
    cases["pickle that runs code"] = (evil, "refused")

    benign = folder / "weights-only.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2, 2)}}, benign)
    cases["weights-only pickle"] = (benign, "use .safetensors")

    wrong = folder / "wrong-shapes"
    shutil.copytree(tiny_folder, wrong)
    weights = wrong / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    tensors["conv_in.weight"] = torch.zeros(3, 3)
    save_file(tensors, str(weights))
    cases["safetensors with wrong shapes"] = (wrong, "conv_in.weight")

    garbage = folder / "damaged.safetensors"
    garbage.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    cases["damaged safetensors"] = (garbage, "not a readable .safetensors")
    return cases


class _RunsCode:
    """Unpickling this calls open(marker, "w"): harmless, but proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


REPO_ROOT = Path(__file__).resolve().parents[1]


def cli_command(*args: str) -> list[str]:
    """The real command line, as a user runs it (`python -m engine.cli ...`)."""
    import sys

    return [sys.executable, "-m", "engine.cli", *args]


def cli_environment(fault: str | None = None) -> dict[str, str]:
    """One CPU thread (the suite shares two cores) and no network; fault arms ARTVEIL_FAULT."""
    import os

    env = dict(os.environ)
    env.pop("ARTVEIL_FAULT", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONIOENCODING="utf-8")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    if fault:
        env["ARTVEIL_FAULT"] = fault
    return env


def run_cli(*args: str, fault: str | None = None, timeout: float = 300):
    import subprocess

    return subprocess.run(cli_command(*args), cwd=REPO_ROOT, env=cli_environment(fault), capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout)


def folder_listing(folder: Path) -> set[str]:
    """Every entry of a folder, hidden ones included: what a user would find there."""
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def cli(monkeypatch, capsys, tiny_model):
    """The protect command in-process (the session's tiny model, no rebuild): (status, stdout, stderr)."""
    import engine.models
    from engine.cli import main

    real_load = engine.models.load_model
    monkeypatch.setattr(engine.models, "load_model",
                        lambda source, device="auto", seed=0: tiny_model if source == "tiny" else real_load(source, device, seed))

    def run(*argv: str):
        capsys.readouterr()
        try:
            status = main(list(argv))
        except SystemExit as exc:
            status = exc.code
        out, err = capsys.readouterr()
        return status, out, err

    return run


CURVE_HEADER = ["method", "strength", "purifier", "measure", "direction", "mean", "lo", "hi", "seeds", "psnr", "ssim"]


def write_curve_csv(path: Path, rows) -> Path:
    """A curve.csv as `artveil efficacy --strengths` writes it, with these rows (CURVE_HEADER's columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CURVE_HEADER)
        w.writerows(rows)
    return path
