"""Procedural art: nine styles that differ in structure, not only in colour.

The proxy world needs images whose style is known exactly, so that a separately trained judge can say whether a
generated image carries a style. Each style is a different *geometry* (straight bands, circles, dots, cells,
oriented strokes, square blocks, thin curved lines, soft washes, spiral arms); palettes are drawn at random for
every image, so colour alone never identifies a style. Every image also shows one object (a circle, a square, ...)
painted in the same style with a second palette, which gives captions a content word and the model a composition
to learn.

Everything is numpy only and deterministic: the same (style, seed, size) always gives the same bytes.
Coordinates inside are in [0, 1] image units so that 64 and 128 pixel renders show the same picture.
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np

# The judge's label order. The last one is held out of the base model: it plays the artist's own style, which
# customization (LoRA) must learn from a few images and protection must stop it from learning.
STYLES: tuple[str, ...] = (
    "stripes",
    "rings",
    "pointillism",
    "mosaic",
    "brushstrokes",
    "pixels",
    "flowlines",
    "inkwash",
    "swirl",
)
HELD_OUT_STYLE = "swirl"
TRAINING_STYLES: tuple[str, ...] = tuple(s for s in STYLES if s != HELD_OUT_STYLE)

CONTENTS: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "crescent")

SIZES = (64, 128)


def caption(style: str, content: str) -> str:
    """The training caption of one image; every word in it is a single token of the proxy tokenizer."""
    return f"a painting of a {content} in {style} style"


def prompt_for(style: str, content: str = "circle") -> str:
    """The prompt that asks the proxy model for a style (same words as the training captions)."""
    return caption(style, content)


def _rng(style: str, seed: int, stream: str = "") -> np.random.Generator:
    # crc32 rather than hash(): Python's string hash is salted per process, which would break determinism.
    return np.random.default_rng([int(seed), zlib.crc32(style.encode()), zlib.crc32(stream.encode())])


def content_of(style: str, seed: int) -> str:
    """The object that render(style, seed) paints; drawn from its own stream so captions are cheap to get."""
    return CONTENTS[int(_rng(style, seed, "content").integers(len(CONTENTS)))]


# ----------------------------------------------------------------------------------------------- colour


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    h = (h % 1.0) * 6.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 0
    )
    return table[i, np.arange(len(h))]


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """n colours in [0, 1], n x 3, with a spread of brightness so structure stays visible in grey."""
    base = rng.random()
    scheme = rng.integers(4)
    if scheme == 0:  # analogous
        hues = base + rng.uniform(-0.09, 0.09, n)
    elif scheme == 1:  # complementary
        hues = base + 0.5 * rng.integers(0, 2, n) + rng.uniform(-0.04, 0.04, n)
    elif scheme == 2:  # triadic
        hues = base + rng.integers(0, 3, n) / 3.0 + rng.uniform(-0.03, 0.03, n)
    else:
        hues = rng.random(n)
    sat = rng.uniform(0.3, 0.95, n)
    val = np.linspace(rng.uniform(0.15, 0.4), rng.uniform(0.8, 1.0), n)
    rng.shuffle(val)
    return _hsv_to_rgb(hues, sat, val)


# ----------------------------------------------------------------------------------------------- helpers


def _smooth_noise(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a random (cells+1)^2 grid, smoothstep-interpolated at the coordinates."""
    grid = rng.random((cells + 1, cells + 1))
    gx, gy = xx * cells, yy * cells
    x0 = np.clip(np.floor(gx).astype(int), 0, cells - 1)
    y0 = np.clip(np.floor(gy).astype(int), 0, cells - 1)
    fx, fy = gx - x0, gy - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _fractal_noise(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, base_cells: int, octaves: int):
    total, weight, norm = np.zeros_like(xx), 1.0, 0.0
    for octave in range(octaves):
        total += weight * _smooth_noise(rng, xx, yy, base_cells * 2**octave)
        norm += weight
        weight *= 0.5
    return total / norm


def _take(palette: np.ndarray, index: np.ndarray) -> np.ndarray:
    return palette[np.asarray(index, dtype=int) % len(palette)]


# ----------------------------------------------------------------------------------------------- styles
# Each style paints the whole canvas: (rng, xx, yy, pixel) -> HxWx3 float in [0, 1]. xx, yy are pixel-centre
# coordinates in [0, 1]; pixel is the size of one pixel in those units (for line widths that must stay visible).


def _stripes(rng, xx, yy, pixel):
    palette = _palette(rng, int(rng.integers(2, 5)))
    angle = rng.uniform(0, np.pi)
    per_unit = rng.uniform(3.5, 8.0)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    return _take(palette, np.floor(u * per_unit + rng.random()))


def _rings(rng, xx, yy, pixel):
    palette = _palette(rng, int(rng.integers(2, 5)))
    cx, cy = rng.uniform(0.15, 0.85, 2)
    per_unit = rng.uniform(5.0, 10.0)
    r = np.hypot(xx - cx, yy - cy)
    return _take(palette, np.floor(r * per_unit + rng.random()))


def _pointillism(rng, xx, yy, pixel):
    palette = _palette(rng, 5)
    ground = 0.25 * palette[0] + 0.75  # pale canvas between the dots
    out = np.broadcast_to(ground, xx.shape + (3,)).copy()
    cells = int(rng.integers(11, 17))
    radius = rng.uniform(0.28, 0.4) / cells
    for layer_offset in (0.0, 0.5):  # two offset layers of dots make the surface dense but still dotted
        gx, gy = xx * cells + layer_offset, yy * cells + layer_offset
        ix, iy = np.floor(gx).astype(int), np.floor(gy).astype(int)
        jitter = rng.uniform(-0.18, 0.18, (cells + 2, cells + 2, 2))
        colour_index = rng.integers(1, len(palette), (cells + 2, cells + 2))
        cx = (ix + 0.5 + jitter[iy, ix, 0]) / cells
        cy = (iy + 0.5 + jitter[iy, ix, 1]) / cells
        dot = np.hypot(xx + layer_offset / cells - cx, yy + layer_offset / cells - cy) < radius
        out[dot] = palette[colour_index[iy, ix]][dot]
    return out


def _mosaic(rng, xx, yy, pixel):
    palette = _palette(rng, int(rng.integers(4, 7)))
    count = int(rng.integers(25, 55))
    seeds = rng.random((count, 2))
    d = np.hypot(xx[..., None] - seeds[:, 0], yy[..., None] - seeds[:, 1])
    part = np.partition(d, 1, axis=-1)
    nearest = np.argmin(d, axis=-1)
    tile_colour = rng.integers(0, len(palette), count)
    out = palette[tile_colour[nearest]]
    grout_colour = np.full(3, 0.08) if rng.random() < 0.6 else np.full(3, 0.93)
    grout = (part[..., 1] - part[..., 0]) < max(0.012, 1.6 * pixel)
    out[grout] = grout_colour
    return out


def _brushstrokes(rng, xx, yy, pixel):
    palette = _palette(rng, int(rng.integers(3, 6)))
    size = xx.shape[0]
    out = np.broadcast_to(palette[0], xx.shape + (3,)).copy()
    main_angle = rng.uniform(0, np.pi)
    flow = _smooth_noise(rng, xx, yy, 2)  # slow drift of stroke direction across the canvas
    count = int(rng.integers(110, 150))
    for _ in range(count):
        cx, cy = rng.random(2)
        py, px = min(int(cy * size), size - 1), min(int(cx * size), size - 1)
        angle = main_angle + 1.6 * (flow[py, px] - 0.5) + rng.normal(0, 0.15)
        length, width = rng.uniform(0.12, 0.26), rng.uniform(0.035, 0.06)
        reach = int(np.ceil((length / 2 + width) * size)) + 1
        y0, y1 = max(py - reach, 0), min(py + reach + 1, size)
        x0, x1 = max(px - reach, 0), min(px + reach + 1, size)
        wx, wy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
        along = wx * np.cos(angle) + wy * np.sin(angle)
        across = -wx * np.sin(angle) + wy * np.cos(angle)
        # tapered ends, hard sides: a flat brush dragged along its length
        inside = (np.abs(along) < length / 2) & (np.abs(across) < width / 2 * (1 - (2 * along / length) ** 4))
        bristles = 0.82 + 0.18 * np.cos(across / width * rng.uniform(14, 22) + rng.uniform(0, 6.3))
        colour = np.clip(palette[rng.integers(len(palette))] * rng.uniform(0.85, 1.15), 0, 1)
        patch = out[y0:y1, x0:x1]
        patch[inside] = (colour * bristles[..., None])[inside]
    return out


def _pixels(rng, xx, yy, pixel):
    # Rendered on a coarse grid by render() (see _COARSE), so every block is a flat square.
    palette = _palette(rng, int(rng.integers(3, 6)))
    clumps = _smooth_noise(rng, xx, yy, 3) * 0.6 + 0.4 * rng.random(xx.shape)
    return _take(palette, np.floor(clumps * len(palette) * 1.2))


def _flowlines(rng, xx, yy, pixel):
    palette = _palette(rng, int(rng.integers(3, 5)))
    ground = 0.3 * palette[0] + 0.7 * (0.9 if rng.random() < 0.7 else 0.12)
    angle = rng.uniform(0, np.pi)
    stream = xx * np.cos(angle) + yy * np.sin(angle)  # a mean flow direction, bent by slow waves
    for _ in range(3):
        kx, ky = rng.normal(0, 1.3, 2)
        stream += 0.09 * np.sin(2 * np.pi * (kx * xx + ky * yy) + rng.uniform(0, 6.3))
    per_unit = rng.uniform(10, 15)
    phase = stream * per_unit
    half_width = max(0.12, 0.9 * pixel * per_unit)
    line = np.abs(phase - np.round(phase)) < half_width
    out = np.broadcast_to(ground, xx.shape + (3,)).copy()
    out[line] = _take(palette[1:], np.round(phase))[line]
    return out


def _inkwash(rng, xx, yy, pixel):
    colours = _palette(rng, 3)
    ink = colours[np.argmin(colours.sum(1))] * 0.5  # one dark ink
    paper = np.array([0.95, 0.92, 0.84]) + rng.uniform(-0.05, 0.04, 3)
    field = _fractal_noise(rng, xx, yy, int(rng.integers(2, 4)), 4)
    threshold = rng.uniform(0.42, 0.56)
    wash = 1 / (1 + np.exp(-(field - threshold) / 0.035))  # soft-edged pools of ink
    rim = np.exp(-(((field - threshold) / 0.02) ** 2)) * 0.35  # pigment gathers at the wet edge
    layers = np.clip(wash * (0.55 + 0.45 * _smooth_noise(rng, xx, yy, 5)) + rim, 0, 1)
    return paper * (1 - layers[..., None]) + ink * layers[..., None]


def _swirl(rng, xx, yy, pixel):
    colours = int(rng.integers(2, 5))
    palette = _palette(rng, colours)
    cx, cy = rng.uniform(0.2, 0.8, 2)
    arms = colours * int(rng.integers(1, 3))  # a multiple of the colours, so no seam where the angle wraps
    twist = rng.uniform(1.5, 3.5) * rng.choice([-1, 1])
    r, theta = np.hypot(xx - cx, yy - cy), np.arctan2(yy - cy, xx - cx)
    phase = theta / (2 * np.pi) * arms + twist * r * 2.0 * colours
    return _take(palette, np.floor(phase + rng.random() * colours))


_STYLE_PAINTERS: dict[str, Callable] = {
    "stripes": _stripes,
    "rings": _rings,
    "pointillism": _pointillism,
    "mosaic": _mosaic,
    "brushstrokes": _brushstrokes,
    "pixels": _pixels,
    "flowlines": _flowlines,
    "inkwash": _inkwash,
    "swirl": _swirl,
}
# Styles painted on a coarse grid and then enlarged without interpolation (blocks per side, inclusive range).
_COARSE = {"pixels": (8, 16)}


# ----------------------------------------------------------------------------------------------- content


def _content_mask(content: str, rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    cx, cy = rng.uniform(0.32, 0.68, 2)
    s = rng.uniform(0.2, 0.3)
    u, v = xx - cx, yy - cy
    if content == "circle":
        return np.hypot(u, v) < s
    if content == "square":
        return np.maximum(np.abs(u), np.abs(v)) < s * 0.88
    if content == "triangle":
        vv = v - s * 0.2  # centre the visual mass
        return (vv < s * 0.75) & (vv > -s * 1.05 + 1.85 * np.abs(u))
    if content == "diamond":
        return np.abs(u) / 0.8 + np.abs(v) < s * 1.2
    if content == "cross":
        arm = s * 0.36
        return ((np.abs(u) < arm) & (np.abs(v) < s)) | ((np.abs(v) < arm) & (np.abs(u) < s))
    if content == "crescent":
        side = rng.choice([-1, 1])
        return (np.hypot(u, v) < s) & (np.hypot(u - side * s * 0.45, v + s * 0.15) > s * 0.85)
    raise ValueError(f"unknown content {content!r}; expected one of {CONTENTS}")


# ----------------------------------------------------------------------------------------------- public


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(n) + 0.5) / n
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    return xx, yy


def render(style: str, seed: int, size: int = 128, content: str | None = None) -> np.ndarray:
    """One image of a style: HxWx3 uint8 (0-255), H = W = size pixels; same arguments, same bytes.

    content defaults to content_of(style, seed); give it to paint a chosen object instead.
    """
    if style not in _STYLE_PAINTERS:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    if size < 16:
        raise ValueError("size must be at least 16 pixels")
    content = content_of(style, seed) if content is None else content
    painter = _STYLE_PAINTERS[style]
    if style in _COARSE:
        low, high = _COARSE[style]
        grid_size = int(_rng(style, seed, "grid").integers(low, high + 1))
    else:
        grid_size = size
    xx, yy = _grid(grid_size)
    pixel = 1.0 / size
    background = painter(_rng(style, seed, "background"), xx, yy, pixel)
    figure = painter(_rng(style, seed, "figure"), xx, yy, pixel)
    mask = _content_mask(content, _rng(style, seed, "mask"), xx, yy)
    image = np.where(mask[..., None], figure, background)
    if grid_size != size:
        index = (np.arange(size) * grid_size) // size
        image = image[index][:, index]
    tone = _rng(style, seed, "grain")
    image = image * tone.uniform(0.92, 1.05) + tone.normal(0, 0.018, image.shape)  # light film grain
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def render_with_caption(style: str, seed: int, size: int = 128) -> tuple[np.ndarray, str]:
    """(image HxWx3 uint8, caption) for one (style, seed)."""
    content = content_of(style, seed)
    return render(style, seed, size, content), caption(style, content)
