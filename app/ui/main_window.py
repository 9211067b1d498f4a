"""The main window: queue | compare | controls, menus, shortcuts and the status bar."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence, QMouseEvent
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QSplitter, QWidget

from ..backend import EngineInfo, ModelSummary
from ..viewmodel import IMAGE_SUFFIXES, Workspace
from ..viewmodel.help import EFFICACY_NOTE, HelpDocument, efficacy, model_card, readme
from .common import icon, restyle
from .compare_view import CompareArea
from .controls_panel import ControlsPanel
from .model_dialog import ModelDialog, start_folder
from .queue_panel import QueuePanel
from ..signals import emit


class DialogPrompts:
    """The view-model's questions, asked with ordinary dialogs (outside any coroutine)."""

    def __init__(self, parent: QWidget):
        self.parent = parent

    def choose_output_dir(self, current: str) -> str | None:
        # Open on a folder that exists (the nearest existing parent of the last choice, else Pictures),
        # so that the dialog's Choose button works at once.
        path = QFileDialog.getExistingDirectory(
            self.parent, "Where should protected images be saved?", start_folder(current)
        )
        return path or None

    def confirm_quit(self, doing: str) -> bool:
        box = QMessageBox(self.parent)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Quit Artveil?")
        box.setText(f"Artveil is {doing}.")
        box.setInformativeText("Quitting stops it after the current step; images already saved are kept.")
        stop = box.addButton("Stop and quit", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("Keep working", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(keep)
        box.exec()
        return box.clickedButton() is stop

    def resolve_conflicts(self, paths: list[Path]) -> str | None:
        names = "\n".join(p.name for p in paths[:6]) + ("\n…" if len(paths) > 6 else "")
        box = QMessageBox(self.parent)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Files already exist")
        box.setText(f"{len(paths)} protected file(s) already exist in the output folder:")
        box.setInformativeText(names)
        overwrite = box.addButton("Replace them", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("Keep both", QMessageBox.ButtonRole.AcceptRole)
        skip = box.addButton("Don't save those", QMessageBox.ButtonRole.RejectRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(keep)
        box.exec()
        clicked = box.clickedButton()
        return {overwrite: "overwrite", keep: "keep_both", skip: "skip"}.get(clicked) if clicked is not cancel else None


class ClickableLabel(QLabel):
    """A status-bar label that opens something when clicked (the model chooser)."""

    clicked = Signal()

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(text, parent)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.rect().contains(event.position().toPoint()):
            emit(self.clicked)
        super().mouseReleaseEvent(event)


class MainWindow(QMainWindow):
    def __init__(self, workspace: Workspace, parent: QWidget | None = None):
        super().__init__(parent)
        self.workspace = workspace
        if workspace.prompts is None:
            workspace.prompts = DialogPrompts(self)
        self.setWindowTitle("Artveil")
        self.setWindowIcon(icon("artveil"))
        self.setMinimumSize(960, 600)

        self.queue_panel = QueuePanel(workspace)
        self.compare = CompareArea(workspace)
        self.controls = ControlsPanel(workspace)
        self.controls.setMinimumWidth(300)
        self.queue_panel.setMinimumWidth(200)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.queue_panel)
        self.splitter.addWidget(self.compare)
        self.splitter.addWidget(self.controls)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setSizes([260, 756, 350])
        self.splitter.setChildrenCollapsible(False)
        self.setCentralWidget(self.splitter)

        self.device_label = QLabel("Starting the engine…")
        self.model_label = ClickableLabel(workspace.model_status)
        self.batch_label = QLabel("")
        bar = self.statusBar()
        bar.addPermanentWidget(self.batch_label)
        bar.addPermanentWidget(self.model_label)
        bar.addPermanentWidget(self.device_label)

        self._build_actions()
        self._model_dialog: ModelDialog | None = None
        self._closing = False
        self.model_label.clicked.connect(self._model_label_clicked)

        c = self.controls
        c.protect_button.clicked.connect(self.protect_selected)
        c.protect_all_button.clicked.connect(workspace.protect_all)
        c.stop_button.clicked.connect(workspace.stop)
        c.preview_button.clicked.connect(self.preview_purification)
        c.output_button.clicked.connect(self.choose_output_dir)
        self.queue_panel.add_images_button.clicked.connect(self.add_images)
        self.queue_panel.add_folder_button.clicked.connect(self.add_folder)

        workspace.engine_info_changed.connect(self._show_device)
        workspace.model_status_changed.connect(self._show_model_status)
        workspace.model_changed.connect(self._show_model)
        workspace.batch_text_changed.connect(self.batch_label.setText)
        workspace.summary_changed.connect(lambda text: text and bar.showMessage(text, 15000))
        workspace.problem.connect(lambda text: bar.showMessage(text, 10000))
        workspace.model_needed.connect(self.show_model_dialog)
        workspace.busy_changed.connect(self._sync_actions)
        workspace.stopping_changed.connect(lambda _: self._sync_actions(workspace.busy))
        self._restore_geometry()

    # ---- actions -----------------------------------------------------------------------------

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)  # shortcuts work while the menu bar is hidden or unfocused
        return action

    def _build_actions(self) -> None:
        ws = self.workspace
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self.add_images_action = self._action(file_menu, "Add images…", self.add_images, QKeySequence.StandardKey.Open)
        self.add_folder_action = self._action(file_menu, "Add folder…", self.add_folder, "Ctrl+Shift+O")
        file_menu.addSeparator()
        self.export_action = self._action(
            file_menu, "Export protected images", self.export, "Ctrl+E", "Save protected images to the output folder"
        )
        self.output_action = self._action(file_menu, "Output folder…", self.choose_output_dir)
        self.model_action = self._action(file_menu, "Model…", self.show_model_dialog)
        file_menu.addSeparator()
        self._action(file_menu, "Quit", self.close, QKeySequence.StandardKey.Quit)

        edit_menu = menu.addMenu("&Edit")
        self.remove_action = self._action(edit_menu, "Remove from queue", self.queue_panel.remove_selected, "Delete")
        # The queue view handles Delete itself when focused; the action covers the rest of the window.
        self.remove_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)

        run_menu = menu.addMenu("&Protect")
        self.protect_action = self._action(run_menu, "Protect selected", self.protect_selected, "Ctrl+Return")
        self.protect_all_action = self._action(run_menu, "Protect all", ws.protect_all, "Ctrl+Shift+Return")
        self.stop_action = self._action(run_menu, "Stop", ws.stop, "Esc")
        run_menu.addSeparator()
        self.preview_action = self._action(run_menu, "Preview purification", self.preview_purification, "Ctrl+P")

        view_menu = menu.addMenu("&View")
        canvas = self.compare.canvas
        self.toggle_action = self._action(view_menu, "Before / after", self._toggle_before_after, "Space")
        self._action(view_menu, "Split view", lambda: (self.compare.show_compare(), canvas.set_mode("split")), "S")
        view = ws.view
        self._action(view_menu, "Fit", lambda: self._zoom(None), "Ctrl+0")
        self._action(view_menu, "100 %", lambda: self._zoom(1), "Ctrl+1")
        self.zoom_in_action = self._action(view_menu, "Zoom in", lambda: self._zoom("in"), "Ctrl+=",
                                           "Up to 800 %, pixel for pixel")
        # Ctrl++ and the keypad: the same action, as the platform names zoom in.
        self.zoom_in_action.setShortcuts([QKeySequence("Ctrl+="), QKeySequence("Ctrl++"),
                                          QKeySequence(QKeySequence.StandardKey.ZoomIn)])
        self.zoom_out_action = self._action(view_menu, "Zoom out", lambda: self._zoom("out"), "Ctrl+-")
        self.difference_action = self._action(view_menu, "Difference ×10", view.set_difference, "D",
                                              "Show where the protection changed the image, amplified")
        self.difference_action.setCheckable(True)
        view.difference_changed.connect(self.difference_action.setChecked)
        self._action(view_menu, "Compare", self.compare.show_compare, "Ctrl+2")
        self._action(view_menu, "Purification preview", self.compare.show_purification, "Ctrl+3")

        help_menu = menu.addMenu("&Help")
        self.readme_action = self._action(help_menu, "Read me", lambda: self.open_help(readme()), "F1",
                                          "How to use Artveil and what protection can and cannot do")
        self.efficacy_action = self._action(
            help_menu, "What the measurements show (on the project's proxy model)", lambda: self.open_help(efficacy()),
            tip=f"docs/efficacy.md: {EFFICACY_NOTE}",
        )
        self.model_card_action = self._action(help_menu, "The current model's card",
                                              lambda: self.open_help(model_card(ws.model)),
                                              tip="What the loaded model is, how it was made, what it is for")
        self._sync_actions(ws.busy)

    def open_help(self, document: HelpDocument) -> bool:
        """Open the document in the system's viewer (the browser for Markdown, as a rule); where there is no
        file, or nothing opens it, the status bar says where it is (or why there is none)."""
        path = document.path
        if path is not None and path.is_file() and QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            if document.note:
                self.statusBar().showMessage(document.note, 15000)
            return True
        self.workspace.report_problem(document.where() + (f" {document.note}" if document.note else ""))
        return False

    def _sync_actions(self, busy: bool) -> None:
        self.stop_action.setEnabled(busy and not self.workspace.stopping)
        for action in (self.export_action, self.model_action, self.output_action):
            action.setEnabled(not busy)

    def _toggle_before_after(self) -> None:
        self.compare.show_compare()
        self.compare.canvas.toggle_before_after()

    def _zoom(self, how) -> None:
        """None: fit; a number: that zoom; "in" / "out": one step. The compare view comes to the front."""
        self.compare.show_compare()
        view = self.workspace.view
        if how == "in":
            view.zoom_in(self.compare.canvas.fit_scale())
        elif how == "out":
            view.zoom_out()
        else:
            view.set_zoom(how)

    def protect_selected(self) -> None:
        self.workspace.protect_selected(self.queue_panel.selected_items() or None)

    def preview_purification(self) -> None:
        if self.workspace.preview_purification() is not None:
            self.compare.show_purification()

    def export(self) -> None:
        if self.workspace.export() is None and not any(i.protected is not None for i in self.workspace.queue.items):
            self.statusBar().showMessage("Nothing to export yet: protect an image first.", 8000)

    def _image_start_folder(self) -> str:
        """The folder images were last added from, else the user's Pictures folder."""
        return start_folder(self.workspace.settings.last_image_dir)

    def add_images(self) -> None:
        patterns = " ".join(f"*{s}" for s in sorted(IMAGE_SUFFIXES))
        paths, _ = QFileDialog.getOpenFileNames(self, "Add images", self._image_start_folder(), f"Images ({patterns})")
        if paths:
            self.workspace.settings.last_image_dir = str(Path(paths[0]).parent)
            self.workspace.add_paths(paths)

    def add_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add every image in a folder", self._image_start_folder())
        if path:
            self.workspace.settings.last_image_dir = str(Path(path).parent)
            self.workspace.add_paths([path])

    def choose_output_dir(self) -> None:
        chosen = DialogPrompts(self).choose_output_dir(self.workspace.settings.output_dir)
        if chosen:
            self.workspace.settings.output_dir = chosen

    def _model_label_clicked(self) -> None:
        if self.workspace.busy:
            self.statusBar().showMessage("The model can be changed when the current work has finished or been stopped.", 8000)
            return
        self.show_model_dialog()

    def show_model_dialog(self) -> ModelDialog:
        if self._model_dialog is not None and self._model_dialog.isVisible():
            return self._model_dialog
        dialog = ModelDialog(self.workspace, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.model_chosen.connect(self.workspace.load_model)
        dialog.finished.connect(lambda _: setattr(self, "_model_dialog", None))
        self._model_dialog = dialog
        dialog.open()
        dialog.refresh_local_models()
        return dialog

    # ---- status ------------------------------------------------------------------------------

    def _show_device(self, info: EngineInfo) -> None:
        if info.device_kind == "cpu":
            self.device_label.setText("CPU — slow")
            restyle(self.device_label, "StatusWarning")  # the object name picks the colour
        else:
            vram = f" · {info.vram_gb:.0f} GB" if info.vram_gb else ""
            self.device_label.setText(f"{info.device_name}{vram}")
            restyle(self.device_label, "")
        self.device_label.setToolTip(info.device_warning or "")
        if info.device_warning:
            self.statusBar().showMessage(info.device_warning, 15000)

    def _show_model_status(self, text: str) -> None:
        self.model_label.setText(f"Model: {text}")
        self.model_label.setToolTip(self.model_label.toolTip() or "Click to choose the model")

    def _show_model(self, model: ModelSummary | None) -> None:
        if model is not None and model.is_demo:
            restyle(self.model_label, "StatusWarning")
            self.model_label.setToolTip("The demo model gives no real protection. Click to choose a real model.")
        else:
            restyle(self.model_label, "")
            self.model_label.setToolTip((model.description + "\n" if model else "") + "Click to choose the model")

    # ---- geometry ----------------------------------------------------------------------------

    def _restore_geometry(self) -> None:
        settings = self.workspace.settings
        geometry = settings.window_state("geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1366, 768)
        splitter = settings.window_state("splitter")
        if splitter is not None:
            self.splitter.restoreState(splitter)

    def save_geometry(self) -> None:
        settings = self.workspace.settings
        settings.set_window_state("geometry", QByteArray(self.saveGeometry()))
        settings.set_window_state("splitter", QByteArray(self.splitter.saveState()))
        settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        ws = self.workspace
        if ws.busy and not self._closing:
            # Quit during work: ask, then stop at the end of the current step and close once idle,
            # with the window answering all the while.
            doing = "previewing a purification" if ws.previewing else "protecting images"
            if not ws.prompts.confirm_quit(doing):
                event.ignore()
                return
            self._closing = True
            event.ignore()
            ws.stop()
            ws.when_idle(self.close)
            return
        self.save_geometry()
        ws.shutdown()
        super().closeEvent(event)
