"""The queue: thumbnails with their state, file and folder drops, Delete to remove."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QFontMetrics, QImage, QKeySequence, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QListView,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from ..viewmodel import ItemState, QueueItem, QueueModel, Workspace
from .common import caption, icon, section_title
from ..signals import emit

TILE_PX = 64
ROW_PX = 80

STATE_COLOURS = {
    ItemState.WAITING: QColor("#a5a8ae"),
    ItemState.PROTECTING: QColor("#5fd0c2"),
    ItemState.DONE: QColor("#7fcf7a"),
    ItemState.FAILED: QColor("#f07a6a"),
    ItemState.STOPPED: QColor("#f0b357"),
}


def status_line(item: QueueItem, metrics: QFontMetrics, width: int) -> str:
    """The row's status as painted: the whole text when it fits, else cut at its end with "…" (the
    reason's start, which says what went wrong, stays; the tooltip has all of it)."""
    return metrics.elidedText(item.status_text, Qt.TextElideMode.ElideRight, width)


class QueueDelegate(QStyledItemDelegate):
    """Thumbnail, name, one status line and, while protecting, a thin progress bar."""

    def sizeHint(self, option, index) -> QSize:
        return QSize(option.rect.width(), ROW_PX)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        item: QueueItem = index.data(QueueModel.ItemRole)
        if item is None:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        rect = option.rect.adjusted(6, 4, -6, -4)
        if option.state & QStyle.StateFlag.State_Selected:
            painter.setBrush(QColor("#2b3a39"))
            painter.setPen(QPen(QColor("#2f8a7f"), 1))
            painter.drawRoundedRect(rect, 6, 6)
        elif option.state & QStyle.StateFlag.State_MouseOver:
            painter.fillRect(rect, QColor("#222427"))

        tile = QRect(rect.left() + 6, rect.top() + (rect.height() - TILE_PX) // 2, TILE_PX, TILE_PX)
        painter.fillRect(tile, QColor("#2a2c30"))
        thumb: QImage = item.thumbnail
        if not thumb.isNull():
            scaled = thumb.size().scaled(tile.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, scaled.width(), scaled.height())
            target.moveCenter(tile.center())
            painter.drawImage(target, thumb)
        else:
            painter.setPen(QColor("#6d7077"))
            painter.drawText(tile, Qt.AlignmentFlag.AlignCenter, "?")

        text_left = tile.right() + 10
        text_rect = QRect(text_left, rect.top() + 8, rect.right() - text_left - 6, rect.height() - 16)
        fm = QFontMetrics(option.font)
        painter.setPen(QColor("#e6e6e6"))
        name = fm.elidedText(item.name, Qt.TextElideMode.ElideMiddle, text_rect.width())
        painter.drawText(text_rect.left(), text_rect.top() + fm.ascent(), name)

        small = option.font
        small.setPointSizeF(max(7.0, small.pointSizeF() - 1))
        painter.setFont(small)
        sfm = QFontMetrics(small)
        painter.setPen(STATE_COLOURS[item.state])
        status = status_line(item, sfm, text_rect.width())
        painter.drawText(text_rect.left(), text_rect.top() + fm.height() + 4 + sfm.ascent(), status)

        if item.state is ItemState.PROTECTING:
            bar = QRect(text_rect.left(), text_rect.bottom() - 5, text_rect.width(), 5)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor("#2a2c30"))
            painter.drawRoundedRect(bar, 2, 2)
            bar.setWidth(max(4, int(bar.width() * item.progress)))
            painter.setBrush(QColor("#2f8a7f"))
            painter.drawRoundedRect(bar, 2, 2)
        painter.restore()


class QueueView(QListView):
    """Accepts dropped files and folders; paints a drop hint while empty."""

    paths_dropped = Signal(list)
    delete_pressed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Queue")
        self.setAcceptDrops(True)
        self.setDropIndicatorShown(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setMouseTracking(True)
        self.setItemDelegate(QueueDelegate(self))
        self.setUniformItemSizes(True)
        self._drop_icon = icon("drop")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            emit(self.paths_dropped, paths)
        else:
            event.ignore()

    def keyPressEvent(self, event) -> None:
        if event.matches(QKeySequence.StandardKey.Delete) or event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            emit(self.delete_pressed)
            event.accept()
            return
        super().keyPressEvent(event)

    def event(self, event) -> bool:
        # Space belongs to the compare view (before/after); the list must not eat it as "select".
        if event.type() == QEvent.Type.ShortcutOverride and event.key() == Qt.Key.Key_Space:
            event.ignore()
            return False
        # Delete is the view's own while it has focus: accepting the override keeps the window's "Remove from
        # queue" shortcut from firing as well, which removed a second image now and then (seen in a full run).
        if event.type() == QEvent.Type.ShortcutOverride and event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            event.accept()
            return True
        return super().event(event)

    def paintEvent(self, event) -> None:
        super().paintEvent(event)
        if self.model() is not None and self.model().rowCount() > 0:
            return
        painter = QPainter(self.viewport())
        area = self.viewport().rect()
        side = min(72, area.width() // 3)
        icon_rect = QRect(0, 0, side, side)
        icon_rect.moveCenter(area.center())
        icon_rect.moveTop(area.center().y() - side - 10)
        self._drop_icon.paint(painter, icon_rect)
        painter.setPen(QColor("#a5a8ae"))
        text_rect = area.adjusted(16, area.height() // 2, -16, -16)
        painter.drawText(
            text_rect,
            Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap,
            "Drop images or folders here\nor use File → Add images (Ctrl+O)",
        )
        painter.end()


class QueuePanel(QWidget):
    def __init__(self, workspace: Workspace, parent: QWidget | None = None):
        super().__init__(parent)
        self.workspace = workspace
        self.view = QueueView()
        self.view.setModel(workspace.queue)
        self.add_images_button = QPushButton("Add images…")
        self.add_folder_button = QPushButton("Add folder…")
        self.summary = caption("", "Summary")
        self.summary.setVisible(False)

        header = QHBoxLayout()
        header.addWidget(section_title("Queue"))
        header.addStretch(1)
        self.count_label = caption("")
        header.addWidget(self.count_label)

        buttons = QHBoxLayout()
        buttons.addWidget(self.add_images_button)
        buttons.addWidget(self.add_folder_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 8)
        layout.addLayout(header)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.summary)
        layout.addLayout(buttons)

        self.view.paths_dropped.connect(workspace.add_paths)
        self.view.delete_pressed.connect(self.remove_selected)
        self.view.selectionModel().currentChanged.connect(self._on_current_changed)
        self.view.selectionModel().selectionChanged.connect(lambda *_: workspace.set_chosen(self.selected_items()))
        workspace.selection_changed.connect(self._on_selection_changed)
        workspace.summary_changed.connect(self._on_summary)
        model = workspace.queue
        model.rowsInserted.connect(self._update_count)
        model.rowsRemoved.connect(self._update_count)
        model.dataChanged.connect(self._update_count)
        self._update_count()

    def selected_items(self) -> list[QueueItem]:
        rows = sorted(index.row() for index in self.view.selectionModel().selectedRows())
        return [self.workspace.queue.items[r] for r in rows if r < len(self.workspace.queue.items)]

    def remove_selected(self) -> None:
        items = self.selected_items() or ([self.workspace.selected] if self.workspace.selected else [])
        self.workspace.remove_items(items)

    def _on_current_changed(self, current: QModelIndex, _previous) -> None:
        self.workspace.select(current.data(QueueModel.ItemRole) if current.isValid() else None)

    def _on_selection_changed(self, item) -> None:
        index = self.workspace.queue.index_of(item) if item is not None else QModelIndex()
        if index != self.view.currentIndex():
            self.view.setCurrentIndex(index)

    def _on_summary(self, text: str) -> None:
        self.summary.setText(text)
        self.summary.setVisible(bool(text))

    def _update_count(self, *_args) -> None:
        items = self.workspace.queue.items
        done = sum(1 for i in items if i.state is ItemState.DONE)
        broken = sum(1 for i in items if i.unreadable)
        # A file that cannot be read is never protected: it is not one of the images to do.
        text = f"{done} of {len(items) - broken} done" if len(items) > broken else ""
        if broken:
            text += (" · " if text else "") + f"{broken} can't be read"
        self.count_label.setText(text)
        self.view.viewport().update()
