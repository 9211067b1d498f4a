"""Choose the diffusion model that protections are optimized against."""

from __future__ import annotations

import asyncio

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from engine.errors import ArtveilError
from engine.jobs import CancelToken
from engine.models import PROXY_NAME, TINY_NAME, demo_source

from ..viewmodel import Workspace, format_duration, one_line
from .common import caption, section_title

DEMO_SOURCE = demo_source()  # "proxy" when the build ships the trained proxy model, else "tiny"


class ModelDialog(QDialog):
    """Four ways to a model: a local folder, the HF cache, a download, or the demo model.

    Non-blocking (open(), not exec()) so the engine thread can list and download while it shows.
    """

    model_chosen = Signal(str)

    def __init__(self, workspace: Workspace, parent: QWidget | None = None):
        super().__init__(parent)
        self.workspace = workspace
        self.setWindowTitle("Choose a model")
        self.setMinimumWidth(560)
        info = workspace.engine_info
        self._download_cancel: CancelToken | None = None
        self._download_request: int | None = None

        intro = caption(
            "Artveil protects your images against a specific kind of diffusion model. Pick the model a "
            "mimic would most likely use (Stable Diffusion 1.5 or 2.1 for most fine-tuning)."
        )

        self.folder_option = QRadioButton("A diffusers model folder or .safetensors file on this computer")
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("Folder with model_index.json, or a .safetensors checkpoint")
        self.folder_browse = QPushButton("Browse…")

        self.cache_option = QRadioButton("A model already downloaded (Hugging Face cache)")
        self.cache_combo = QComboBox()
        self.cache_combo.addItem("Looking…")
        self.cache_combo.setEnabled(False)

        self.download_option = QRadioButton("Download a model")
        self.download_edit = QLineEdit()
        self.download_edit.setPlaceholderText("sd15, sd21-base, or a diffusers repository id")
        self.download_button = QPushButton("Download")
        self.download_progress = QProgressBar()
        self.download_progress.setVisible(False)
        hub_ok = bool(info and info.hub_available)
        self.download_note = caption(
            "Downloads several GB once; later runs work offline." if hub_ok
            else (info.hub_note if info and info.hub_note else "Downloading is not available in this build."),
            "Caption" if hub_ok else "Warning",
        )
        for widget in (self.download_option, self.download_edit, self.download_button):
            widget.setEnabled(hub_ok)

        self.demo_option = QRadioButton("Built-in demo model")
        self.demo_note = caption(
            ("A small model trained by the project on procedural art, for trying the app. It is not Stable "
             "Diffusion: images protected with it are NOT protected against real models.")
            if DEMO_SOURCE == PROXY_NAME else
            "A tiny random model for trying the app. It gives NO real protection: images protected "
            "with it are not protected against any real model.",
            "Warning",
        )

        self.options = QButtonGroup(self)
        for option in (self.folder_option, self.cache_option, self.download_option, self.demo_option):
            self.options.addButton(option)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Use this model")
        self.buttons.accepted.connect(self._accept)
        self.buttons.rejected.connect(self.reject)
        self.error = caption("", "Warning")
        self.error.setVisible(False)

        layout = QVBoxLayout(self)
        layout.setSpacing(6)
        layout.addWidget(section_title("Which model should the protection target?"))
        layout.addWidget(intro)
        layout.addSpacing(6)
        layout.addWidget(self.folder_option)
        row = QHBoxLayout()
        row.setContentsMargins(24, 0, 0, 0)
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.folder_browse)
        layout.addLayout(row)
        layout.addWidget(self.cache_option)
        layout.addLayout(self._indented(self.cache_combo))
        layout.addWidget(self.download_option)
        row = QHBoxLayout()
        row.setContentsMargins(24, 0, 0, 0)
        row.addWidget(self.download_edit, 1)
        row.addWidget(self.download_button)
        layout.addLayout(row)
        layout.addLayout(self._indented(self.download_progress))
        layout.addLayout(self._indented(self.download_note))
        layout.addWidget(self.demo_option)
        layout.addLayout(self._indented(self.demo_note))
        layout.addSpacing(8)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

        self.folder_browse.clicked.connect(self._browse)
        self.folder_edit.textEdited.connect(lambda _: self.folder_option.setChecked(True))
        self.download_edit.textEdited.connect(lambda _: self.download_option.setChecked(True))
        self.cache_combo.activated.connect(lambda _: self.cache_option.setChecked(True))
        self.download_button.clicked.connect(self._start_download)
        workspace.bridge.job_progress.connect(self._on_download_progress)
        self._preselect(workspace.settings.model_source)

    @staticmethod
    def _indented(widget: QWidget) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setContentsMargins(24, 0, 0, 0)
        row.addWidget(widget)
        return row

    def _preselect(self, source: str) -> None:
        if source in (DEMO_SOURCE, TINY_NAME, PROXY_NAME):
            self.demo_option.setChecked(True)
        elif source:
            self.folder_edit.setText(source)
            self.folder_option.setChecked(True)
        else:
            self.folder_option.setChecked(True)

    def refresh_local_models(self) -> asyncio.Future:
        """Fill the cache list from the engine thread (scanning the cache touches the disk)."""
        return asyncio.ensure_future(self._refresh_local_models())

    async def _refresh_local_models(self) -> None:
        try:
            models = await self.workspace.bridge.call("list_local_models")
        except ArtveilError:
            models = []
        self.set_local_models(models)

    def set_local_models(self, models) -> None:
        self.cache_combo.clear()
        for model in models:
            self.cache_combo.addItem(model.label, model.source)
        if not models:
            self.cache_combo.addItem("No models found in the Hugging Face cache")
        self.cache_combo.setEnabled(bool(models))
        self.cache_option.setEnabled(bool(models))
        current = self.workspace.settings.model_source
        index = self.cache_combo.findData(current) if current else -1
        if index >= 0:
            self.cache_combo.setCurrentIndex(index)
            self.cache_option.setChecked(True)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder", self.folder_edit.text())
        if path:
            self.folder_edit.setText(path)
            self.folder_option.setChecked(True)

    def chosen_source(self) -> str | None:
        if self.demo_option.isChecked():
            return DEMO_SOURCE
        if self.folder_option.isChecked():
            return self.folder_edit.text().strip() or None
        if self.cache_option.isChecked():
            return self.cache_combo.currentData()
        if self.download_option.isChecked():
            return self._downloaded or None
        return None

    _downloaded: str | None = None

    def _accept(self) -> None:
        source = self.chosen_source()
        if not source:
            self._show_error(
                "Download the model first." if self.download_option.isChecked() else "Choose a model or the demo."
            )
            return
        self.model_chosen.emit(source)
        self.accept()

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

    def _start_download(self) -> None:
        name = self.download_edit.text().strip()
        if not name:
            self._show_error("Type the name of the model to download.")
            return
        self.download_option.setChecked(True)
        asyncio.ensure_future(self._download(name))

    async def _download(self, name: str) -> None:
        self._download_cancel = CancelToken()
        self.download_button.setEnabled(False)
        self.download_progress.setVisible(True)
        self.download_progress.setRange(0, 0)
        self._show_error("")
        request_id, future = self.workspace.bridge.call_tracked(
            "download_model", name, progress=True, cancel=self._download_cancel
        )
        self._download_request = request_id
        try:
            self._downloaded = await future
        except ArtveilError as exc:
            self._show_error(f"Download failed: {one_line(exc.message)}")
        else:
            self.download_note.setText(f"Downloaded: {self._downloaded}")
        finally:
            self._download_request = None
            self.download_button.setEnabled(True)
            self.download_progress.setVisible(False)

    def _on_download_progress(self, request_id: int, values) -> None:
        if request_id != self._download_request or not isinstance(values, tuple):
            return
        report = values[0] if values else None  # engine.hub.DownloadProgress
        done, total = getattr(report, "bytes_done", 0), getattr(report, "bytes_total", 0)
        if total:
            self.download_progress.setRange(0, 1000)
            self.download_progress.setValue(int(1000 * done / total))
            eta = getattr(report, "eta_s", None)
            self.download_progress.setFormat(
                f"{done / 2**30:.1f} of {total / 2**30:.1f} GB" + (f" · {format_duration(eta)} left" if eta else "")
            )
            self.download_progress.setTextVisible(True)

    def reject(self) -> None:
        if self._download_cancel is not None:
            self._download_cancel.cancel()
        super().reject()

    def done(self, result: int) -> None:
        try:
            self.workspace.bridge.job_progress.disconnect(self._on_download_progress)
        except (RuntimeError, TypeError):
            pass
        super().done(result)
