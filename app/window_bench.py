"""The window's timings as an artist meets them, measured on the real engine: prints numbers, asserts nothing.

    python -m app.window_bench [--model proxy] [--parts demo,batch,stop] [--stop-after 0.5]

Runs the real window (offscreen unless a display is set) with the real engine and the chosen model, default
settings (the method, budget and speed/detail the window starts with), and scikit-image's sample photos:

1. **The demo**: one 512×512 photo (the astronaut), from Protect all to done; the estimate shown before it.
2. **A batch of three different images** (coffee 400×600, chelsea 300×451, rocket 427×640) after that first
   image: the batch estimate the window showed before the start against the real time, and each image's.
3. **Stop during set-up**: a 512×512 photo at each speed/detail choice; Stop is pressed before the first
   optimizer step, and the time from Stop to the window being idle is printed, with whether the set-up
   was still running when Stop was pressed.

Settings go to a temporary folder (ARTVEIL_CONFIG_DIR), never the user's; outputs to a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path


def _photos(folder: Path) -> dict[str, Path]:
    import numpy as np
    from PIL import Image

    try:
        import skimage.data as data
    except ImportError:  # a test dependency: pip install -e .[test]
        sys.exit("window_bench needs scikit-image's sample photos: pip install scikit-image")
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, pixels in (("astronaut", np.asarray(Image.fromarray(data.astronaut()).resize((512, 512), Image.LANCZOS))),
                         ("coffee", data.coffee()), ("chelsea", data.chelsea()), ("rocket", data.rocket())):
        path = folder / f"{name}.png"
        Image.fromarray(pixels).save(path)
        made[name] = path
    return made


async def _until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the window did not get there in time")
        await asyncio.sleep(0.02)


async def _protect(ws, paths: list[Path], timeout: float = 3600) -> tuple[float, float | None, dict[str, float]]:
    """(wall seconds from Protect to idle, the estimate shown before it, seconds at which each image was done)."""
    from app.viewmodel import ItemState

    ws.add_paths(paths)
    items = [i for i in ws.queue.items if i.path in paths and i.state is ItemState.WAITING]
    estimate = ws.estimate_seconds(items)
    done: dict[str, float] = {}
    start = time.perf_counter()

    def seen(item):
        if item in items and item.state is ItemState.DONE and item.name not in done:
            done[item.name] = time.perf_counter() - start

    ws.item_updated.connect(seen)
    ws.protect(items)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(ws.idle(), timeout)
    ws.item_updated.disconnect(seen)
    failed = [i.status_text for i in items if i.state is not ItemState.DONE]
    if failed:
        raise RuntimeError(f"not protected: {failed}")
    return time.perf_counter() - start, estimate, done


async def _stop_during_set_up(ws, path: Path, wait_s: float) -> tuple[float, bool]:
    """Start one image, press Stop wait_s after the engine began it; (seconds from Stop to idle, whether no
    optimizer step had been reported when Stop was pressed)."""
    from engine.events import Progress

    steps = []

    def on_event(request_id, event):
        if isinstance(event, Progress) and event.phase == "protect" and event.step >= 1:
            steps.append(event.step)

    ws.engine.events.connect(on_event)
    ws.add_paths([path])
    item = ws.queue.items[-1]
    ws.protect([item])
    await _until(lambda: ws.busy, 30)
    await asyncio.sleep(wait_s)
    in_set_up = not steps
    t0 = time.perf_counter()
    ws.stop()
    await asyncio.wait_for(ws.idle(), 600)
    ws.engine.events.disconnect(on_event)
    return time.perf_counter() - t0, in_set_up


def _times(ws) -> str:
    t = ws.estimates.times
    return "nothing" if t is None else f"set-up {t.setup_s:.2f} s, step {t.step_s * 1000:.0f} ms, finish {t.finish_s:.2f} s"


async def _run(args, ws, photos: dict[str, Path]) -> None:
    from engine.machine import describe

    from .viewmodel import format_duration

    await ws.start()
    await ws.idle()
    if ws.model is None:
        sys.exit(f"the model did not load: {ws.model_status}")
    s = ws.job_settings()
    print(f"machine: {describe('cpu')}; model {ws.model.name}; "
          f"{s.method}, {s.steps} steps, strength {s.strength_levels:g}, working size {s.working_size} px")

    if "demo" in args.parts or "batch" in args.parts:  # the batch comes after the first image
        wall, estimate, _ = await _protect(ws, [photos["astronaut"]])
        print(f"demo: 512x512 astronaut protected in {wall:.1f} s (estimate shown before: "
              f"{format_duration(estimate) if estimate else 'none'})")
        print(f"  learned from it: {_times(ws)}")
    if "batch" in args.parts:
        await _batch(ws, photos)
    if "stop" in args.parts:
        await _stops(args, ws, photos)


async def _batch(ws, photos: dict[str, Path]) -> None:
    batch = [photos["coffee"], photos["chelsea"], photos["rocket"]]
    wall, estimate, done = await _protect(ws, batch)
    previous = 0.0
    for name, at in sorted(done.items(), key=lambda kv: kv[1]):
        print(f"  {name}: done at {at:.1f} s ({at - previous:.1f} s)")
        previous = at
    ratio = estimate / wall if estimate else float("nan")
    print(f"batch of 3: {wall:.1f} s real, {estimate:.1f} s estimated before the start: estimate/real {ratio:.2f}")
    print(f"  learned after it: {_times(ws)}")



async def _stops(args, ws, photos: dict[str, Path]) -> None:
    original = ws.settings.detail
    for level in ws.detail_levels:
        ws.settings.detail = level.key
        await asyncio.sleep(0.1)
        latency, in_set_up = await _stop_during_set_up(ws, photos["astronaut"], args.stop_after)
        print(f"stop at {level.label} ({level.working_size} px), {args.stop_after:g} s in: idle {latency:.2f} s after Stop "
              f"({'during set-up' if in_set_up else 'after the first step'})")
    ws.settings.detail = original


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="proxy", help="the model source the window loads (default: the demo)")
    p.add_argument("--parts", default="demo,batch,stop", type=lambda v: set(v.split(",")),
                   help="what to measure: demo, batch (after the demo's image), stop")
    p.add_argument("--stop-after", type=float, default=0.5, help="seconds after the start to press Stop")
    args = p.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = Path(tempfile.mkdtemp(prefix="artveil-window-bench-"))
    os.environ["ARTVEIL_CONFIG_DIR"] = str(work / "config")
    photos = _photos(work / "photos")

    from .main import create_window, start_application
    from .settings import Settings
    from .viewmodel.prompts import FixedAnswers

    app, collector, loop = start_application([sys.argv[0]])
    settings = Settings()
    settings.model_source = args.model
    window, ws = create_window(settings, None, FixedAnswers(work / "out"))
    window.resize(1366, 800)
    window.show()
    with loop:
        loop.run_until_complete(_run(args, ws, photos))
        window.close()
        loop.run_until_complete(asyncio.wait_for(ws.idle(), 60))
    collector.stop()
    print(f"(files in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
