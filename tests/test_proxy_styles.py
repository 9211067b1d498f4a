"""The procedural art generator: deterministic, and its styles differ in structure, not only in colour."""

import numpy as np
import pytest

from engine.proxy.data import ProxyArtDataset, render_set
from engine.proxy.styles import (
    CONTENTS, HELD_OUT_STYLE, STYLES, TRAINING_STYLES, caption, content_of, render, render_with_caption,
)


@pytest.mark.parametrize("style", STYLES)
def test_same_seed_gives_same_bytes(style):
    for size in (64, 128):
        first = render(style, 12345, size)
        assert first.shape == (size, size, 3) and first.dtype == np.uint8
        assert first.tobytes() == render(style, 12345, size).tobytes()
    assert render(style, 1, 64).tobytes() != render(style, 2, 64).tobytes()


def test_held_out_style_is_judged_but_not_trained():
    assert len(TRAINING_STYLES) >= 8
    assert HELD_OUT_STYLE in STYLES and HELD_OUT_STYLE not in TRAINING_STYLES
    assert set(TRAINING_STYLES) | {HELD_OUT_STYLE} == set(STYLES)


def test_caption_names_the_style_and_the_painted_object():
    image, text = render_with_caption("mosaic", 7, 64)
    assert text == caption("mosaic", content_of("mosaic", 7)) == f"a painting of a {content_of('mosaic', 7)} in mosaic style"
    assert image.tobytes() == render("mosaic", 7, 64).tobytes()
    assert {content_of("rings", s) for s in range(60)} == set(CONTENTS)


def test_the_object_changes_the_picture():
    # same seed (same palettes and texture), different object: only the object's region differs
    a, b = render("stripes", 3, 64, content="circle"), render("stripes", 3, 64, content="square")
    changed = np.any(a != b, axis=-1).mean()
    assert 0.01 < changed < 0.5


def test_palettes_vary_within_a_style():
    means = np.array([render("rings", s, 64).reshape(-1, 3).mean(0) for s in range(12)])
    assert means.std(0).min() > 10  # pixel levels: colour alone cannot name a style


def _structure_features(image: np.ndarray) -> np.ndarray:
    """Colour-blind texture statistics: grey gradients, flatness and the radial power spectrum."""
    g = image.astype(np.float64).mean(-1)
    dx, dy = np.diff(g, axis=1)[:-1], np.diff(g, axis=0)[:, :-1]
    magnitude = np.hypot(dx, dy)
    angle = np.mod(np.arctan2(dy, dx), np.pi)
    histogram = np.histogram(angle, bins=8, range=(0, np.pi), weights=magnitude)[0]
    anisotropy = np.sort(histogram)[::-1] / (histogram.sum() + 1e-9)
    edges = [(magnitude > t).mean() for t in (4, 16, 48)]
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(g - g.mean()))) ** 2
    yy, xx = np.indices(spectrum.shape) - np.array(spectrum.shape)[:, None, None] // 2
    radius = np.hypot(yy, xx)
    bands = np.array([spectrum[(radius >= lo) & (radius < hi)].sum() for lo, hi in
                      ((1, 3), (3, 6), (6, 10), (10, 16), (16, 24), (24, 32))])
    return np.concatenate([anisotropy, edges, np.log(bands / bands.sum() + 1e-9)])


def test_styles_are_told_apart_from_grey_structure_alone():
    train = render_set(STYLES, 14, 64, use="judge_train", offset=900_000)
    test = render_set(STYLES, 8, 64, use="judge_test", offset=900_000)
    f_train = np.array([_structure_features(i) for i in train.images])
    f_test = np.array([_structure_features(i) for i in test.images])
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-9
    centroids = np.array([((f_train - mu) / sd)[train.labels == k].mean(0) for k in range(len(STYLES))])
    distance = (((f_test - mu) / sd)[:, None, :] - centroids[None]) ** 2
    accuracy = (distance.sum(-1).argmin(1) == test.labels).mean()
    assert accuracy > 0.75, accuracy  # chance is 1/9; a nearest-centroid rule on 17 numbers, no colour


def test_dataset_items_are_tensors_in_minus_one_to_one():
    art = render_set(["pixels", "inkwash"], 2, 64, use="sanity")
    item = ProxyArtDataset(art)[3]
    assert tuple(item["pixel_values"].shape) == (3, 64, 64)
    assert -1.0 <= float(item["pixel_values"].min()) and float(item["pixel_values"].max()) <= 1.0
    assert item["label"] == STYLES.index("inkwash") and "inkwash style" in item["caption"]
