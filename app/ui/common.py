"""Small pieces every widget uses: array→QImage, the theme, labelled sections."""

from __future__ import annotations

from importlib import resources

import numpy as np
from PySide6.QtGui import QIcon, QImage
from PySide6.QtWidgets import QApplication, QLabel, QStyleFactory


def image_from_array(pixels: np.ndarray | None) -> QImage:
    """An owned QImage copy of an HxWxC uint8 array (C = 3 or 4); null for None."""
    if pixels is None:
        return QImage()
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    height, width, channels = pixels.shape
    fmt = QImage.Format.Format_RGBA8888 if channels == 4 else QImage.Format.Format_RGB888
    # .copy(): the QImage must own its pixels, the array may be freed on the engine's side.
    return QImage(pixels.data, width, height, width * channels, fmt).copy()


def resource_text(*parts: str) -> str:
    return resources.files("resources").joinpath(*parts).read_text(encoding="utf-8")


def icon(name: str) -> QIcon:
    with resources.as_file(resources.files("resources").joinpath("icons", f"{name}.svg")) as path:
        return QIcon(str(path))


def apply_theme(app: QApplication) -> None:
    # Fusion draws the same on every platform, so the stylesheet looks as designed everywhere.
    app.setStyle(QStyleFactory.create("Fusion"))
    app.setStyleSheet(resource_text("theme", "artveil.qss"))


def section_title(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("SectionTitle")
    return label


def caption(text: str = "", name: str = "Caption") -> QLabel:
    label = QLabel(text)
    label.setObjectName(name)
    label.setWordWrap(True)
    return label
