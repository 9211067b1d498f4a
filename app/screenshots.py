"""Render the window's main states to docs/screenshots/*.png at 1366×768.

    python -m app.screenshots [--out docs/screenshots]

Runs offscreen on the real engine with the built-in demo model, on generated artwork, with its
settings in a temporary folder (the user's own settings are not touched). The "working" state is
staged in the view-model, because a real batch at 40 % would take minutes on a CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

SIZE = (1366, 768)


def painting(kind: str, size: int = 256, seed: int = 0) -> np.ndarray:
    """Procedural stand-ins for artwork: flat colour, gradients and edges, where noise would show."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == "landscape":
        sky = np.stack([0.55 + 0.4 * yy, 0.65 + 0.25 * yy, 0.95 - 0.2 * yy], axis=2)
        sun = ((xx - 0.7) ** 2 + (yy - 0.3) ** 2) < 0.012
        sky[sun] = (1.0, 0.85, 0.5)
        hills = yy > 0.62 + 0.08 * np.sin(xx * 7 + 1) + 0.03 * np.sin(xx * 23)
        sky[hills] = np.stack([0.2 + 0.1 * xx, 0.45 - 0.15 * yy, 0.25 + 0 * xx], axis=2)[hills]
        near = yy > 0.8 + 0.05 * np.sin(xx * 11 + 3)
        sky[near] = (0.12, 0.28, 0.16)
        image = sky
    elif kind == "portrait":
        image = np.stack([0.25 + 0.2 * xx, 0.2 + 0.1 * yy, 0.35 + 0 * xx], axis=2)
        face = ((xx - 0.5) / 0.24) ** 2 + ((yy - 0.45) / 0.32) ** 2 < 1
        image[face] = np.stack([0.93 - 0.2 * yy, 0.76 - 0.2 * yy, 0.62 - 0.1 * xx], axis=2)[face]
        for ex in (0.41, 0.59):
            image[((xx - ex) ** 2 + (yy - 0.4) ** 2) < 0.0012] = (0.15, 0.1, 0.1)
        image[(np.abs(yy - 0.6 - 0.04 * np.cos((xx - 0.5) * 9)) < 0.008) & (np.abs(xx - 0.5) < 0.08)] = (0.6, 0.2, 0.2)
        hair = (((xx - 0.5) / 0.3) ** 2 + ((yy - 0.32) / 0.3) ** 2 < 1) & ~face & (yy < 0.55)
        image[hair] = (0.25, 0.15, 0.08)
    else:  # pattern
        image = np.stack([
            0.5 + 0.5 * np.sin(xx * 18 + np.sin(yy * 9) * 2),
            0.4 + 0.3 * np.cos(yy * 14),
            0.6 + 0.3 * np.sin((xx + yy) * 10),
        ], axis=2)
    image = image + rng.normal(0, 0.015, image.shape)  # a little paper grain
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def save_png(pixels: np.ndarray, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(pixels).save(path)
    return path


class StaticPrompts:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def choose_output_dir(self, current):
        return str(self.out_dir)

    def resolve_conflicts(self, paths):
        return "overwrite"


def render(out: Path) -> list[Path]:
    from app.backend import RealBackend
    from app.main import create_window, start_application
    from app.settings import Settings
    from app.viewmodel import ItemState

    app, collector, loop = start_application([sys.argv[0]])
    work = Path(tempfile.mkdtemp(prefix="artveil-shots-"))
    inputs = work / "in"
    inputs.mkdir()
    names = {"landscape": "evening-hills.png", "portrait": "portrait-study.png", "pattern": "textile-02.png"}
    paths = [save_png(painting(kind, seed=i), inputs / name) for i, (kind, name) in enumerate(names.items())]
    paths.append(save_png(painting("landscape", seed=7)[:, ::-1].copy(), inputs / "evening-hills-mirror.png"))

    settings = Settings(work / "config" / "settings.ini")
    settings.model_source = "tiny"
    settings.output_dir = str(work / "protected")
    window, ws = create_window(settings, RealBackend, StaticPrompts(work / "protected"))
    window.resize(*SIZE)
    window.show()
    written: list[Path] = []

    def shot(name: str, widget=None) -> None:
        app.processEvents()
        target = out / f"{name}.png"
        (widget or window).grab().save(str(target))
        written.append(target)
        print(f"wrote {target}")

    async def scenario():
        ws.start()
        await ws.idle()
        shot("empty")

        ws.add_paths(paths)
        ws.settings.strength_levels = 12
        ws.settings.steps = 12  # enough for a visible result on the demo model, seconds on a CPU
        ws.protect([ws.queue.items[0]])
        await ws.idle()
        first = ws.queue.items[0]

        # Staged "working" state: the second image 42 % through a 100-step batch of three.
        ws.settings.steps = 100
        second = ws.queue.items[1]
        second.state, second.progress = ItemState.PROTECTING, 0.42
        second.original = painting("portrait", seed=1)
        delta = np.random.default_rng(3).integers(-12, 13, second.original.shape)
        second.preview = np.clip(second.original.astype(int) + delta, 0, 255).astype(np.uint8)
        ws._active_item = second
        ws._batch, ws._batch_remaining = (1, 3), ws.queue.items[2:]
        ws._set_busy(True)
        ws.select(second)
        ws._touch(second)
        ws._update_batch_text(None)
        shot("working")
        second.state, second.progress, second.preview, second.original = ItemState.WAITING, 0.0, None, None
        ws._active_item, ws._batch_remaining = None, []
        ws._set_busy(False)
        ws._set_batch_text("")
        ws._touch(second)

        ws.select(first)
        window.compare.show_compare()
        window.compare.canvas.split = 0.5
        shot("compare")

        window.controls.purifier_combo.setCurrentIndex(window.controls.purifier_combo.findData("sdedit"))
        ws.settings.purifier_level = 2
        window.preview_purification()
        await ws.idle()
        shot("purification-preview")

        dialog = window.show_model_dialog()
        await dialog.refresh_local_models()
        dialog.demo_option.setChecked(True)
        dialog.adjustSize()
        shot("model-dialog", dialog)
        dialog.reject()

    loop.run_until_complete(scenario())
    window.close()
    loop.run_until_complete(ws.idle())
    collector.stop()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.screenshots")
    parser.add_argument("--out", type=Path, default=Path("docs") / "screenshots")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    render(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
