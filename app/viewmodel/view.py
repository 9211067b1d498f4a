"""How the before/after view looks: its zoom, and whether it shows the amplified difference.

Plain state with ``*_changed`` signals; the compare view binds to it. The difference image itself is
computed here (numpy), so the widget only draws what it is given.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal

from ..signals import emit

# Whole multiples only: each image pixel covers the same number of screen pixels (nearest neighbour),
# so the artist sees single pixels as equal squares.
ZOOM_STEPS = (1, 2, 3, 4, 6, 8)
MAX_ZOOM = ZOOM_STEPS[-1]
DIFFERENCE_GAIN = 10  # the difference view shows 128 + 10·δ, δ in pixel levels
DIFFERENCE_MID = 128


def difference_image(original: np.ndarray, protected: np.ndarray, gain: int = DIFFERENCE_GAIN) -> np.ndarray:
    """clip(128 + gain·(protected − original)) per RGB channel, HxWx3 uint8 (δ in 0–255 pixel levels).

    Mid-grey where nothing changed; brighter where the protection added, darker where it took away.
    While a job runs its previews are at the working size (64 px on the demo model): the original is then
    first scaled to the preview's size, antialiased as the engine scales it (engine.protect.working_tensor),
    and the difference is at that size.
    """
    if protected.shape[:2] != original.shape[:2]:
        from PIL import Image

        h, w = protected.shape[:2]
        original = np.asarray(Image.fromarray(np.ascontiguousarray(original[..., :3])).resize((w, h), Image.Resampling.BILINEAR))
    delta = protected[..., :3].astype(np.int32) - original[..., :3].astype(np.int32)
    return np.clip(DIFFERENCE_MID + gain * delta, 0, 255).astype(np.uint8)


class CompareViewState(QObject):
    """The compare view's zoom (None: fit the image in the view; else 1–8 screen pixels per image pixel,
    before the screen's device-pixel ratio) and the difference toggle."""

    zoom_changed = Signal(object)
    difference_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.zoom: int | None = None
        self.difference = False

    @property
    def fit(self) -> bool:
        return self.zoom is None

    def set_zoom(self, zoom: int | None) -> None:
        if zoom is not None:
            zoom = min(max(int(zoom), ZOOM_STEPS[0]), MAX_ZOOM)
        if zoom != self.zoom:
            self.zoom = zoom
            emit(self.zoom_changed, zoom)

    def zoom_in(self, fit_scale: float = 1.0) -> None:
        """One step closer; from Fit, the first whole step above the fitted scale."""
        current = self.zoom if self.zoom is not None else fit_scale
        self.set_zoom(next((z for z in ZOOM_STEPS if z > current + 1e-6), MAX_ZOOM))

    def zoom_out(self) -> None:
        """One step back; out of 100 % the view fits the image again."""
        if self.zoom is None:
            return
        lower = [z for z in ZOOM_STEPS if z < self.zoom]
        self.set_zoom(lower[-1] if lower else None)

    def zoom_text(self, fit_scale: float | None = None) -> str:
        """What the zoom is: "400 %"; at fit, the fitted scale ("246 %"), or "Fit" while there is no image."""
        if self.zoom is None:
            return "Fit" if fit_scale is None else f"{round(fit_scale * 100)} %"
        return f"{self.zoom * 100} %"

    def set_difference(self, on: bool) -> None:
        on = bool(on)
        if on != self.difference:
            self.difference = on
            emit(self.difference_changed, on)
