"""The speed/detail choice: the working size a protection is optimized at, chosen per model.

The engine optimizes δ at a working size (ProtectSettings.working_size, pixels on the longer side) and
scales it back to the image. The sensible sizes depend on the model: the built-in demo model was trained
at 64 px, so optimizing at 512 px costs about 60× the time of 64 px and teaches it nothing it can see;
Stable Diffusion 1.5 was trained at 512 px. So the choices are multiples of the model's own size
(``native``), and the default is always that size.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DETAIL = "standard"


@dataclass(frozen=True)
class DetailLevel:
    key: str  # stored in the settings: "fast", "standard", "fine"
    label: str
    working_size: int  # pixels on the longer side
    summary: str


def detail_levels(native: int) -> tuple[DetailLevel, ...]:
    """The three choices for a model trained at ``native`` px, fastest first.

    A small model (under 256 px) gets its own size and two finer ones (δ then has finer grain on a large
    image, at 4× and 16× the cost per step); a large one half its size, its size and 1.5×.
    """
    native = max(64, int(native))
    if native < 256:
        sizes = (native, 2 * native, 4 * native)
        words = ("the model's own size", "finer grain", "finest grain")
        keys = ("standard", "fine", "finest")
        labels = ("Fast", "Finer", "Finest")
    else:
        sizes = (max(64, native // 2 // 8 * 8), native, native * 3 // 2 // 8 * 8)
        words = ("half the model's size", "the model's own size", "finer grain")
        keys = ("fast", "standard", "fine")
        labels = ("Fast", "Standard", "Fine")
    return tuple(
        DetailLevel(key, label, size, f"optimized at {size} px ({word}), then scaled to your image")
        for key, label, size, word in zip(keys, labels, sizes, words)
    )


def level_for(native: int, key: str | None) -> DetailLevel:
    """The stored choice for this model, else the model's own size."""
    levels = detail_levels(native)
    return next((lv for lv in levels if lv.key == key), next(lv for lv in levels if lv.key == DEFAULT_DETAIL))


__all__ = ["DEFAULT_DETAIL", "DetailLevel", "detail_levels", "level_for"]
