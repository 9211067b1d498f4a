"""``artveil-gui``: the desktop window, and ``--self-test`` for installed bundles."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Callable

NO_DISPLAY_MESSAGE = (
    "artveil-gui: no display found. Run it from a desktop session, set QT_QPA_PLATFORM=offscreen "
    "for a headless run, or use the `artveil` command line instead."
)


# The libraries Qt's X11 plugin needs beyond a basic X session, by their Debian/Ubuntu package
# (the README's Requirements list the same).
XCB_PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-util.so.1": "libxcb-util1",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
}
XCB_USUAL = "libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0"


def has_display() -> bool:
    if not sys.platform.startswith("linux"):
        return True  # Windows and macOS always have their native platform plugin
    return any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def _uses_xcb() -> bool:
    """Whether Qt will pick its X11 (xcb) platform plugin in this session."""
    if not sys.platform.startswith("linux"):
        return False
    chosen = os.environ.get("QT_QPA_PLATFORM", "")
    if chosen:
        return chosen.split(":")[0].split(";")[0] == "xcb"
    wayland = os.environ.get("WAYLAND_DISPLAY") and os.environ.get("XDG_SESSION_TYPE") == "wayland"
    return bool(os.environ.get("DISPLAY")) and not wayland


def xcb_problem() -> str | None:
    """One line on what stops Qt's X11 plugin from loading (a missing system library), or None.

    Qt itself would print five lines and abort; loading the plugin first names the missing library.
    """
    if not _uses_xcb():
        return None
    import ctypes
    from pathlib import Path

    try:
        import PySide6
    except ImportError:
        return None
    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.is_file():
        return None
    try:
        ctypes.CDLL(str(plugin))
    except OSError as exc:
        text = str(exc)
        missing = next((name for name in XCB_PACKAGES if name in text), None)
        what = f"{missing} is missing" if missing else f"a system library is missing ({text.split(':')[0]})"
        first = XCB_PACKAGES.get(missing, "")
        packages = XCB_USUAL if first in XCB_USUAL.split() or not first else f"{first} {XCB_USUAL}"
        return (f"artveil-gui: Qt cannot open the X11 display because {what}. "
                f"On Debian/Ubuntu: sudo apt install {packages}")
    return None


def self_test(steps: int = 3, size: int = 32) -> tuple[bool, str]:
    """Protect one small generated image with the built-in tiny model and check the strength.

    The strength check is on the 8-bit result, as exported: |protected − original| ≤ strength levels.
    """
    import time

    import numpy as np

    from engine.jobs import STRENGTH_PRESETS, ProtectSettings
    from engine.models import load_model
    from engine.protect import protect_image

    started = time.perf_counter()
    try:
        model = load_model("tiny")
        yy, xx = np.mgrid[0:size, 0:size]
        image = np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size], axis=2).astype(np.uint8)
        settings = ProtectSettings(strength_levels=STRENGTH_PRESETS["default"], steps=steps, preview_every=0)
        result = protect_image(model, image, settings)
        diff = int(np.abs(result.protected.astype(np.int16) - image.astype(np.int16)).max())
    except Exception as exc:  # the bundle is broken: say how, in one line
        return False, f"artveil self-test FAILED: {type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    if result.protected.shape != image.shape or result.protected.dtype != np.uint8:
        return False, f"artveil self-test FAILED: result is {result.protected.dtype} {result.protected.shape}"
    if diff > settings.strength_levels:
        return False, f"artveil self-test FAILED: largest change {diff} levels exceeds the strength of 8"
    return True, (
        f"artveil self-test OK: protected a {size}x{size} image in {steps} steps on {model.device} "
        f"(largest change {diff} of 8 levels, {seconds:.1f} s)"
    )


def create_window(settings=None, backend_factory: Callable | None = None, prompts=None):
    """Build settings → bridge → workspace → window (a QApplication must exist)."""
    from .backend import RealBackend
    from .bridge import EngineBridge
    from .settings import Settings
    from .ui.main_window import MainWindow
    from .viewmodel import Workspace

    settings = settings if settings is not None else Settings()
    bridge = EngineBridge(backend_factory or RealBackend)
    workspace = Workspace(settings, bridge, prompts)
    window = MainWindow(workspace)
    workspace.restore_queue()  # the last session's files, once the window shows them
    return window, workspace


def start_application(argv: list[str]):
    """The Qt application, themed, with GC on the GUI thread and a qasync loop: (app, collector, loop)."""
    import qasync
    from PySide6.QtWidgets import QApplication

    from .gc_guard import MainThreadCollector
    from .ui.common import apply_theme, icon

    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("Artveil")
    app.setOrganizationName("Artveil")
    app.setWindowIcon(icon("artveil"))
    apply_theme(app)
    collector = MainThreadCollector(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    return app, collector, loop


def run_window(argv: list[str]) -> int:
    app, collector, loop = start_application(argv)
    window, workspace = create_window()
    window.show()
    workspace.start()
    closed = asyncio.Event()
    app.aboutToQuit.connect(closed.set)
    with loop:
        loop.run_until_complete(closed.wait())
    collector.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    from engine.chatter import quiet_library_chatter

    quiet_library_chatter()  # the terminal that started the window keeps Artveil's own lines, as the CLI's does
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="artveil-gui", description="Protect artwork from diffusion-model mimicry.")
    parser.add_argument("--self-test", action="store_true", help="protect a tiny generated image and exit")
    args, qt_args = parser.parse_known_args(argv)
    if args.self_test:
        ok, line = self_test()
        print(line)
        return 0 if ok else 1
    if not has_display():
        print(NO_DISPLAY_MESSAGE, file=sys.stderr)
        return 2
    problem = xcb_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from .signals import binding_problem

    problem = binding_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    return run_window([sys.argv[0], *qt_args])


if __name__ == "__main__":
    sys.exit(main())
