"""Before/after with a draggable split, zoom from fit to 800 % (pixel-exact), pan, the amplified
difference; and the purification preview."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPainterPath, QPen, QPixmap, QWheelEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ..viewmodel import (
    DIFFERENCE_GAIN, CompareViewState, ItemState, QueueItem, Workspace, describe_robustness, difference_image,
)
from .common import caption, image_from_array
from ..signals import emit

HANDLE_GRAB_PX = 10
PAN_MARGIN_PX = 40  # how far past the view's edge a zoomed image's edge may be dragged
WHEEL_PAN_PX = 60  # one wheel notch pans this far when zoomed


class CompareCanvas(QWidget):
    """Paints the original left of the split and the protected image right of it."""

    mode_changed = Signal(str)
    fit_scale_changed = Signal()  # the fitted scale may have changed (new image, new size)

    def __init__(self, view: CompareViewState | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = view if view is not None else CompareViewState(self)
        self.setMinimumSize(240, 200)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.before = QPixmap()
        self.after = QPixmap()
        self.split = 0.5  # fraction of the image width shown as "before"
        self.mode = "split"  # "split", "before", "after"
        self.offset = QPointF(0, 0)  # pan in widget pixels
        self._zoom = self.view.zoom  # the zoom this canvas last drew (to keep a point still when it changes)
        self._anchor: QPointF | None = None  # the point a wheel zoom keeps under the cursor
        self.message = "Select an image in the queue"
        self.after_label = "Protected"
        self._drag: str | None = None
        self._drag_origin = QPointF()
        self._drag_offset = QPointF()
        self.view.zoom_changed.connect(self._on_zoom_changed)

    def set_images(self, before: QImage | None, after: QImage | None, after_label: str = "Protected") -> None:
        """None keeps the current image on that side (progress updates only change the after side)."""
        if before is None and after is None and after_label == self.after_label:
            return  # nothing to redraw: progress reports arrive many times a second
        if before is not None:
            self.before = QPixmap.fromImage(before) if not before.isNull() else QPixmap()
            emit(self.fit_scale_changed)
        if after is not None:
            self.after = QPixmap.fromImage(after) if not after.isNull() else QPixmap()
        self.after_label = after_label
        self.update()

    def set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            emit(self.mode_changed, mode)
            self.update()

    def toggle_before_after(self) -> None:
        self.set_mode("after" if self.mode == "before" else "before")

    @property
    def zoom_fit(self) -> bool:
        return self._zoom is None

    def set_fit(self, fit: bool) -> None:
        self.view.set_zoom(None if fit else 1)

    def _source(self) -> QPixmap:
        return self.before if not self.before.isNull() else self.after

    def fit_scale(self) -> float:
        """Widget pixels per image pixel when the image is fitted in the view."""
        source = self._source()
        if source.isNull():
            return 1.0
        margin = 16
        return min((self.width() - margin) / source.width(), (self.height() - margin) / source.height())

    def scale(self) -> float:
        if self._zoom is None:
            return self.fit_scale()
        # 100 % (and each whole step above it): image pixels on whole device pixels, also on high-DPI screens.
        return self._zoom / self.devicePixelRatioF()

    def image_rect(self) -> QRectF:
        source = self._source()
        if source.isNull():
            return QRectF()
        s = self.scale()
        w, h = source.width() * s, source.height() * s
        x = (self.width() - w) / 2 + self.offset.x()
        y = (self.height() - h) / 2 + self.offset.y()
        if not self.zoom_fit:  # on whole device pixels: every image pixel becomes the same square
            dpr = self.devicePixelRatioF()
            x, y = round(x * dpr) / dpr, round(y * dpr) / dpr
        return QRectF(x, y, w, h)

    def _on_zoom_changed(self, zoom: int | None) -> None:
        """Zoom about the wheel's cursor (else the view's centre): the image point under it stays put."""
        anchor = self._anchor if self._anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        self._anchor = None
        before = self.image_rect()
        self._zoom = zoom
        if zoom is None or before.isNull():
            self.offset = QPointF(0, 0)
        else:
            u = (anchor.x() - before.left()) / before.width()
            v = (anchor.y() - before.top()) / before.height()
            after = self.image_rect()
            self.offset = QPointF(anchor.x() - u * after.width() - (self.width() - after.width()) / 2,
                                  anchor.y() - v * after.height() - (self.height() - after.height()) / 2)
        self._clamp_offset()
        self.update()

    def _clamp_offset(self) -> None:
        """A zoomed image may be dragged until its edge is PAN_MARGIN_PX past the view's edge, never out of sight."""
        rect = self.image_rect()
        if rect.isNull():
            return
        room_x = abs(rect.width() - self.width()) / 2 + PAN_MARGIN_PX
        room_y = abs(rect.height() - self.height()) / 2 + PAN_MARGIN_PX
        self.offset = QPointF(min(room_x, max(-room_x, self.offset.x())), min(room_y, max(-room_y, self.offset.y())))

    def pan_by(self, dx: float, dy: float) -> None:
        if self.zoom_fit:
            return
        self.offset = self.offset + QPointF(dx, dy)
        self._clamp_offset()
        self.update()

    def wheelEvent(self, event: QWheelEvent) -> None:
        """Ctrl+wheel zooms about the cursor; the plain wheel pans a zoomed image (Shift: sideways)."""
        delta = event.angleDelta()
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            if delta.y() == 0:
                return
            self._anchor = event.position()
            if delta.y() > 0:
                self.view.zoom_in(self.fit_scale())
            else:
                self.view.zoom_out()
            self._anchor = None
            event.accept()
            return
        if self.zoom_fit:
            event.ignore()
            return
        dx, dy = delta.x() / 120 * WHEEL_PAN_PX, delta.y() / 120 * WHEEL_PAN_PX
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier and dx == 0:
            dx, dy = dy, 0.0
        self.pan_by(dx, dy)
        event.accept()

    def resizeEvent(self, event) -> None:
        self._clamp_offset()
        super().resizeEvent(event)
        emit(self.fit_scale_changed)

    def split_x(self) -> float:
        rect = self.image_rect()
        return rect.left() + rect.width() * self.split

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#141517"))
        rect = self.image_rect()
        if rect.isNull():
            painter.setPen(QColor("#a5a8ae"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.message)
            return
        # Crisp pixels when magnified, so the artist can inspect the noise; smooth when shrunk.
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.scale() < 1.0)
        has_after = not self.after.isNull()
        if self.mode == "before" or not has_after:
            painter.drawPixmap(rect, self.before, QRectF(self.before.rect()))
        elif self.mode == "after" or self.before.isNull():
            painter.drawPixmap(rect, self.after, QRectF(self.after.rect()))
        else:
            sx = self.split_x()
            painter.save()
            painter.setClipRect(QRectF(rect.left(), rect.top(), sx - rect.left(), rect.height()))
            painter.drawPixmap(rect, self.before, QRectF(self.before.rect()))
            painter.setClipRect(QRectF(sx, rect.top(), rect.right() - sx, rect.height()))
            painter.drawPixmap(rect, self.after, QRectF(self.after.rect()))
            painter.restore()
            self._paint_handle(painter, sx)
        self._paint_labels(painter, has_after)

    def _paint_handle(self, painter: QPainter, x: float) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(QColor(255, 255, 255, 220), 2))
        painter.drawLine(QPointF(x, 0), QPointF(x, self.height()))
        centre = QPointF(x, self.height() / 2)
        painter.setBrush(QColor("#2f8a7f"))
        painter.drawEllipse(centre, 13, 13)
        painter.setBrush(QColor("#ffffff"))
        painter.setPen(Qt.PenStyle.NoPen)
        for direction in (-1, 1):
            path = QPainterPath()
            tip = centre + QPointF(direction * 8, 0)
            path.moveTo(tip)
            path.lineTo(centre + QPointF(direction * 3, -5))
            path.lineTo(centre + QPointF(direction * 3, 5))
            path.closeSubpath()
            painter.drawPath(path)

    def _paint_labels(self, painter: QPainter, has_after: bool) -> None:
        if not has_after:
            labels = [("Original — not protected yet", Qt.AlignmentFlag.AlignLeft)]
        elif self.mode == "before":
            labels = [("Before (original)", Qt.AlignmentFlag.AlignLeft)]
        elif self.mode == "after":
            labels = [(f"After ({self.after_label.lower()})", Qt.AlignmentFlag.AlignRight)]
        else:
            labels = [("Before", Qt.AlignmentFlag.AlignLeft), (self.after_label, Qt.AlignmentFlag.AlignRight)]
        fm = painter.fontMetrics()
        for text, align in labels:
            w, h = fm.horizontalAdvance(text) + 16, fm.height() + 8
            x = 10 if align == Qt.AlignmentFlag.AlignLeft else self.width() - w - 10
            box = QRectF(x, 10, w, h)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(0, 0, 0, 150))
            painter.drawRoundedRect(box, 4, 4)
            painter.setPen(QColor("#ffffff"))
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)

    def _near_handle(self, pos: QPointF) -> bool:
        return (
            self.mode == "split"
            and not self.after.isNull()
            and abs(pos.x() - self.split_x()) <= HANDLE_GRAB_PX
        )

    def mousePressEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if self._near_handle(pos):
            self._drag = "split"
        elif not self.zoom_fit:
            self._drag = "pan"
            self._drag_origin = pos
            self._drag_offset = QPointF(self.offset)
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif self.mode == "split" and not self.after.isNull():
            # A click anywhere moves the split there: quicker than finding the handle.
            self._drag = "split"
            self._move_split(pos.x())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        if self._drag == "split":
            self._move_split(pos.x())
        elif self._drag == "pan":
            self.offset = self._drag_offset + (pos - self._drag_origin)
            self._clamp_offset()
            self.update()
        elif self._near_handle(pos):
            self.setCursor(Qt.CursorShape.SplitHCursor)
        elif not self.zoom_fit:
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        else:
            self.unsetCursor()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag = None
        self.unsetCursor()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self._anchor = event.position()
        self.view.set_zoom(1 if self.zoom_fit else None)
        self._anchor = None

    def _move_split(self, x: float) -> None:
        rect = self.image_rect()
        if rect.width() > 0:
            self.split = min(1.0, max(0.0, (x - rect.left()) / rect.width()))
            self.update()


class ImagePane(QWidget):
    """One titled image, fitted into the pane."""

    def __init__(self, title: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = title
        self.pixmap = QPixmap()
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_image(self, image: QImage, title: str | None = None) -> None:
        self.pixmap = QPixmap.fromImage(image) if not image.isNull() else QPixmap()
        if title is not None:
            self.title = title
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#141517"))
        fm = painter.fontMetrics()
        top = fm.height() + 12
        painter.setPen(QColor("#cfd3d8"))
        painter.drawText(QRectF(0, 4, self.width(), fm.height() + 4), Qt.AlignmentFlag.AlignCenter, self.title)
        area = QRectF(8, top, self.width() - 16, self.height() - top - 8)
        if self.pixmap.isNull():
            painter.setPen(QColor("#6d7077"))
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "—")
            return
        s = min(area.width() / self.pixmap.width(), area.height() / self.pixmap.height())
        w, h = self.pixmap.width() * s, self.pixmap.height() * s
        target = QRectF(area.center().x() - w / 2, area.center().y() - h / 2, w, h)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, s < 1.0)
        painter.drawPixmap(target, self.pixmap, QRectF(self.pixmap.rect()))


class PurifyPreview(QWidget):
    """What a mimic's purifier leaves: purified original beside purified protected, and a verdict."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.original_pane = ImagePane("Original, purified")
        self.protected_pane = ImagePane("Protected, purified")
        self.summary = caption(
            "Protect an image, choose a purifier on the right and press Preview purification to see "
            "how much of the protection a mimic's clean-up would leave.",
            "Summary",
        )
        # While a preview runs: its own bar, what it is doing, the time left, and a Stop of its own.
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress_text = caption("")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("Stop")
        self.stop_button.setToolTip("Stop the preview after the current denoising step (Esc)")
        self.progress_row = QWidget()
        row = QHBoxLayout(self.progress_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.progress, 1)
        row.addWidget(self.stop_button)
        self.progress_row.setVisible(False)
        self.progress_text.setVisible(False)
        panes = QHBoxLayout()
        panes.setSpacing(6)
        panes.addWidget(self.original_pane)
        panes.addWidget(self.protected_pane)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(panes, 1)
        layout.addWidget(self.progress_row)
        layout.addWidget(self.progress_text)
        layout.addWidget(self.summary)

    def show_progress(self, status) -> None:
        """A viewmodel.PreviewStatus while the preview runs; None hides the bar."""
        running = status is not None
        if running and not self.progress_row.isVisibleTo(self):
            self.clear()  # a new run: an earlier result must not pass for this one
        self.progress_row.setVisible(running)
        self.progress_text.setVisible(running)
        self.summary.setVisible(not running)
        if running:
            self.progress.setValue(int(1000 * status.fraction))
            self.progress_text.setText(status.line())
            stopping = status.doing == "Stopping…"
            self.stop_button.setEnabled(not stopping)
            self.stop_button.setText("Stopping…" if stopping else "Stop")

    def clear(self) -> None:
        self.original_pane.set_image(QImage(), "Original, purified")
        self.protected_pane.set_image(QImage(), "Protected, purified")
        self.summary.setText(
            "Choose a purifier on the right and press Preview purification to see how much of the "
            "protection a mimic's clean-up would leave."
        )

    def show_report(self, report, chosen: str, model_name: str | None = None) -> None:
        rows = list(getattr(report, "rows", []) or [])
        row = next((r for r in rows if getattr(r, "name", None) == chosen), rows[0] if rows else None)
        if row is None:
            self.clear()
            return
        label = getattr(row, "label", chosen)
        self.original_pane.set_image(image_from_array(row.purified_original), f"Original after {label}")
        self.protected_pane.set_image(image_from_array(row.purified_protected), f"Protected after {label}")
        self.summary.setText(describe_robustness(report, getattr(row, "name", chosen), model_name))


class CompareArea(QWidget):
    """The centre of the window: compare or purification preview, with view controls."""

    def __init__(self, workspace: Workspace, parent: QWidget | None = None):
        super().__init__(parent)
        self.workspace = workspace
        self.view = workspace.view
        self.canvas = CompareCanvas(self.view)
        self.purify = PurifyPreview()
        self.stack = QStackedWidget()
        self.stack.addWidget(self.canvas)
        self.stack.addWidget(self.purify)

        self.compare_tab = self._segment("Compare", checked=True)
        self.purify_tab = self._segment("Purification preview")
        tabs = QButtonGroup(self)
        tabs.addButton(self.compare_tab, 0)
        tabs.addButton(self.purify_tab, 1)
        tabs.idClicked.connect(self.stack.setCurrentIndex)
        self.stack.currentChanged.connect(self._sync_tabs)

        self.split_button = self._segment("Split", checked=True)
        self.before_button = self._segment("Before")
        self.after_button = self._segment("After")
        modes = QButtonGroup(self)
        for button, mode in ((self.split_button, "split"), (self.before_button, "before"), (self.after_button, "after")):
            modes.addButton(button)
            button.clicked.connect(lambda _=False, m=mode: self.canvas.set_mode(m))
        self.canvas.mode_changed.connect(self._sync_modes)
        self.fit_button = self._segment("Fit", checked=True)
        self.actual_button = self._segment("100 %")
        self.zoom_out_button = self._segment("−")
        self.zoom_in_button = self._segment("+")
        for button in (self.zoom_out_button, self.zoom_in_button):
            button.setCheckable(False)
        self.zoom_label = QLabel(self.view.zoom_text())
        self.zoom_label.setObjectName("ZoomLevel")
        self.zoom_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.zoom_label.setMinimumWidth(self.zoom_label.fontMetrics().horizontalAdvance("800 %") + 16)
        self.difference_button = self._segment(f"Difference ×{DIFFERENCE_GAIN}")
        # Checked follows the zoom, not the click (a second click on Fit leaves it checked).
        self.fit_button.clicked.connect(lambda: (self.view.set_zoom(None), self._sync_zoom(self.view.zoom)))
        self.actual_button.clicked.connect(lambda: (self.view.set_zoom(1), self._sync_zoom(self.view.zoom)))
        self.zoom_in_button.clicked.connect(lambda: self.view.zoom_in(self.canvas.fit_scale()))
        self.zoom_out_button.clicked.connect(self.view.zoom_out)
        self.difference_button.toggled.connect(self.view.set_difference)
        self.view.zoom_changed.connect(self._sync_zoom)
        self.canvas.fit_scale_changed.connect(lambda: self._sync_zoom(self.view.zoom))
        self.view.difference_changed.connect(self._on_difference_changed)
        self.split_button.setToolTip("Drag the handle to compare (Space flips between before and after)")
        self.actual_button.setToolTip("One image pixel per screen pixel; drag to pan (double-click toggles)")
        self.zoom_in_button.setToolTip("Zoom in, up to 800 %, pixel for pixel (Ctrl+=, or Ctrl+wheel)")
        self.zoom_out_button.setToolTip("Zoom out; out of 100 % the image fits the view (Ctrl+-)")
        self.difference_button.setToolTip(
            f"Show where the protection changed the image: mid-grey is unchanged, each level of change is "
            f"shown {DIFFERENCE_GAIN}× brighter or darker (128 + {DIFFERENCE_GAIN}·δ, clipped)"
        )

        bar = QHBoxLayout()
        bar.setSpacing(0)
        bar.addWidget(self.compare_tab)
        bar.addWidget(self.purify_tab)
        bar.addStretch(1)
        self.view_controls = QWidget()
        view_bar = QHBoxLayout(self.view_controls)
        view_bar.setContentsMargins(0, 0, 0, 0)
        view_bar.setSpacing(0)
        for b in (self.split_button, self.before_button, self.after_button):
            view_bar.addWidget(b)
        view_bar.addSpacing(12)
        view_bar.addWidget(self.fit_button)
        view_bar.addWidget(self.actual_button)
        view_bar.addWidget(self.zoom_out_button)
        view_bar.addWidget(self.zoom_label)
        view_bar.addWidget(self.zoom_in_button)
        view_bar.addSpacing(12)
        view_bar.addWidget(self.difference_button)
        bar.addWidget(self.view_controls)

        self.info = caption("")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 6, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.info)

        workspace.selection_changed.connect(self._show_item)
        workspace.item_updated.connect(self._on_item_updated)
        workspace.report_changed.connect(self._on_report)
        workspace.preview_progress.connect(self._on_preview_progress)
        self.purify.stop_button.clicked.connect(workspace.stop)
        self._show_item(workspace.selected)

    def _segment(self, text: str, checked: bool = False) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName("Segment")
        button.setCheckable(True)
        button.setChecked(checked)
        return button

    def _sync_tabs(self, index: int) -> None:
        (self.compare_tab if index == 0 else self.purify_tab).setChecked(True)
        self.view_controls.setVisible(index == 0)

    def _sync_zoom(self, zoom: int | None) -> None:
        self.fit_button.setChecked(zoom is None)
        self.actual_button.setChecked(zoom == 1)
        fitted = self.canvas.fit_scale() if not self.canvas.image_rect().isNull() else None
        self.zoom_label.setText(self.view.zoom_text(fitted))

    def _on_difference_changed(self, on: bool) -> None:
        self.difference_button.setChecked(on)
        self.show_compare()
        self._show_item(self.workspace.selected)

    def _sync_modes(self, mode: str) -> None:
        {"split": self.split_button, "before": self.before_button, "after": self.after_button}[mode].setChecked(True)

    def show_purification(self) -> None:
        self.stack.setCurrentIndex(1)

    def show_compare(self) -> None:
        self.stack.setCurrentIndex(0)

    def _on_item_updated(self, item: QueueItem) -> None:
        if item is self.workspace.selected:
            self._show_item(item)

    def _on_preview_progress(self, status) -> None:
        self.purify.show_progress(status)
        if status is None:  # ended (done, stopped or failed): show what the selected image has
            self._show_item(self.workspace.selected)

    def _on_report(self, item: QueueItem) -> None:
        if item is self.workspace.selected:
            self.purify.show_report(item.report, item.report_purifier,
                                        self.workspace.model.name if self.workspace.model else None)
            self.show_purification()

    def _show_item(self, item: QueueItem | None) -> None:
        if item is None:
            self.canvas.message = "Select an image in the queue" if self.workspace.queue.items else "Add images to start"
            self._before_key = self._after_key = None
            self.canvas.set_images(QImage(), QImage())
            self.purify.clear()
            self.info.setText("")
            return
        # Progress arrives ~20 times a second: convert an image only when its array changed.
        before_key = (item, item.original)
        before = None
        if not _same(before_key, getattr(self, "_before_key", None)):
            self._before_key = before_key
            before = image_from_array(item.original) if item.original is not None else QImage(str(item.path))
            if before.isNull():
                self.canvas.message = f"{item.name} cannot be shown" + (f": {item.error}" if item.error else "")
        if item.protected is not None:
            source, label = item.protected, "Protected"
        elif item.preview is not None:
            source, label = item.preview, f"Protecting… {int(item.progress * 100)} %"
        else:
            source, label = None, ""
        difference = self.view.difference and source is not None and item.original is not None
        if difference:
            label = f"Difference ×{DIFFERENCE_GAIN}" + ("" if item.protected is not None else f" · {label}")
        after_key = (item, source, difference)
        after = None
        if not _same(after_key, getattr(self, "_after_key", None)):
            self._after_key = after_key
            after = image_from_array(difference_image(item.original, source) if difference else source)
        self.canvas.set_images(before, after, label)
        if item.report is not None:
            self.purify.show_report(item.report, item.report_purifier,
                                        self.workspace.model.name if self.workspace.model else None)
        else:
            self.purify.clear()
        self.info.setText(_item_info(item))


def _same(a: tuple | None, b: tuple | None) -> bool:
    """Identity, not equality: the keys hold numpy arrays, and holding them keeps ids unique."""
    return a is not None and b is not None and all(x is y for x, y in zip(a, b))


def _item_info(item: QueueItem) -> str:
    parts = [item.name]
    if item.original is not None:
        parts.append(f"{item.original.shape[1]}×{item.original.shape[0]}")
    m = item.metrics
    if m:
        if "psnr" in m:
            parts.append(f"PSNR {m['psnr']:.1f} dB")
        if "ssim" in m:
            parts.append(f"SSIM {m['ssim']:.3f}")
        if "linf_levels" in m:
            parts.append(f"largest change {m['linf_levels']:.0f} levels")
    if item.state is ItemState.FAILED:
        parts.append(f"failed: {item.error}")
    elif item.output_path is not None:
        parts.append(f"saved as {item.output_path.name}")
    return "  ·  ".join(parts)
