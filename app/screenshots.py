"""Render the window's main states to docs/screenshots/*.png at 1366×768.

    python -m app.screenshots [--out docs/screenshots]

Runs offscreen on the real engine with the built-in demo model, on generated artwork, with its
settings in a temporary folder (the user's own settings are not touched). The "working" state is
a real batch caught at about 40 %, and the purification preview is shot while it runs and when it ends.
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


def render(out: Path) -> list[Path]:
    from app.backend import RealBackend
    from app.main import create_window, start_application
    from app.viewmodel.prompts import FixedAnswers
    from app.settings import Settings
    from app.viewmodel import ItemState

    app, collector, loop = start_application([sys.argv[0]])
    work = Path.home() / "Pictures"
    inputs = work / "paintings"
    inputs.mkdir(parents=True)
    names = {"landscape": "evening-hills.png", "portrait": "portrait-study.png", "pattern": "textile-02.png"}
    paths = [save_png(painting(kind, seed=i), inputs / name) for i, (kind, name) in enumerate(names.items())]
    paths.append(save_png(painting("landscape", seed=7)[:, ::-1].copy(), inputs / "evening-hills-mirror.png"))

    settings = Settings(Path.home() / ".config" / "artveil" / "settings.ini")
    from engine.models import demo_source

    settings.model_source = demo_source()
    settings.output_dir = str(work / "protected")
    (work / "protected").mkdir(exist_ok=True)
    window, ws = create_window(settings, RealBackend, FixedAnswers(work / "protected", conflicts="overwrite"))
    window.resize(*SIZE)
    window.show()
    written: list[Path] = []

    def shot(name: str, widget=None) -> None:
        app.processEvents()
        target = out / f"{name}.png"
        (widget or window).grab().save(str(target))
        written.append(target)
        print(f"wrote {target}")

    async def wait_for(condition, timeout=600.0):
        import asyncio
        import time

        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError("screenshot state not reached")
            await asyncio.sleep(0.05)

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

        # A real job in progress (the second image of a batch of three), caught at about 40 %.
        ws.settings.steps = 30
        batch = ws.queue.items[1:]
        ws.protect(batch)
        second = batch[0]
        ws.select(second)
        await wait_for(lambda: second.phase == "steps" and second.progress >= 0.4 and second.preview is not None)
        shot("working")
        ws.stop()
        await ws.idle()
        for item in batch:
            item.state, item.progress, item.preview, item.original = ItemState.WAITING, 0.0, None, None
            ws.touch(item)
        ws.set_summary("")
        window.statusBar().clearMessage()

        ws.select(first)
        window.compare.show_compare()
        window.compare.canvas.split = 0.5
        shot("compare")

        # Where the change is: the difference ten times amplified, then the noise itself at 400 %.
        window.compare.difference_button.click()
        shot("compare-difference")
        window.compare.difference_button.click()
        window.compare.actual_button.click()
        for _ in range(3):
            window.compare.zoom_in_button.click()
        shot("compare-zoomed")
        window.compare.fit_button.click()

        window.controls.purifier_combo.setCurrentIndex(window.controls.purifier_combo.findData("sdedit"))
        ws.settings.purifier_level = 2
        window.preview_purification()  # once, so that the shot below has a time estimate
        await ws.idle()
        window.preview_purification()
        await wait_for(lambda: ws.previewing and window.compare.purify.progress.value() >= 150, timeout=120)
        shot("purification-preview-running")
        await ws.idle()
        shot("purification-preview")

        dialog = window.show_model_dialog()
        await dialog.refresh_local_models()
        dialog.download_option.setChecked(True)
        dialog.adjustSize()
        shot("model-dialog", dialog)
        await dialog.set_path("~/" + str(inputs.relative_to(Path.home())))
        dialog.adjustSize()
        shot("model-dialog-rejects-images", dialog)
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
    # Paths in the shots read as an artist's (~/Pictures/…), not as this machine's temporary folders.
    home = Path(tempfile.mkdtemp(prefix="artveil-home-"))
    os.environ["HOME"] = str(home)
    os.environ.setdefault("HF_HOME", str(home / ".cache" / "huggingface"))
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    render(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
