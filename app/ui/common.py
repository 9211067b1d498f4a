"""Small pieces every widget uses: array→QImage, the theme, labelled sections."""

from __future__ import annotations

from importlib import resources

import numpy as np
from PySide6.QtGui import QColor, QIcon, QImage, QPalette
from PySide6.QtWidgets import QApplication, QLabel, QStyleFactory, QWidget


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
    # Dialogs the stylesheet does not reach (Qt's own file dialog lists, message boxes) take their colours
    # from the palette: a dark one, or they show the theme's light text on a white list.
    app.setPalette(dark_palette())
    app.setStyleSheet(resource_text("theme", "artveil.qss"))


def dark_palette() -> QPalette:
    palette = QPalette()
    roles = QPalette.ColorRole
    for role, colour in (
        (roles.Window, "#1f2023"), (roles.WindowText, "#e6e6e6"), (roles.Base, "#18191b"),
        (roles.AlternateBase, "#222427"), (roles.Text, "#e6e6e6"), (roles.Button, "#2d3035"),
        (roles.ButtonText, "#e6e6e6"), (roles.ToolTipBase, "#2b2d31"), (roles.ToolTipText, "#e6e6e6"),
        (roles.Highlight, "#2f8a7f"), (roles.HighlightedText, "#ffffff"), (roles.PlaceholderText, "#8a8d93"),
        (roles.Link, "#5fd0c2"), (roles.BrightText, "#ffffff"),
    ):
        palette.setColor(role, QColor(colour))
    for role in (roles.Text, roles.WindowText, roles.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6d7077"))
    return palette


def section_title(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("SectionTitle")
    return label


def caption(text: str = "", name: str = "Caption") -> QLabel:
    label = QLabel(text)
    label.setObjectName(name)
    label.setWordWrap(True)
    return label


def restyle(widget: QWidget, name: str) -> None:
    """Give the widget another object name and re-polish it, so the style sheet's rule for that name (its
    colour) applies now; nothing happens when the name is already the widget's."""
    if widget.objectName() != name:
        widget.setObjectName(name)
        widget.style().unpolish(widget)
        widget.style().polish(widget)
