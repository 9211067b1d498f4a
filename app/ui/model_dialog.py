"""Choose the diffusion model that protections are computed against, the way an artist would.

Three ways, most useful first: download the recommended model in one click (size, licence and where it
goes shown before the click; progress, Stop and resume), use a file or folder already on this computer
(checked the moment it is chosen, with what is wrong said here, in the dialog), or try the built-in demo
with no download (labelled for what it is). Every question about models goes to the engine thread
through the bridge: this module imports no torch.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from PySide6.QtCore import QStandardPaths, Qt, QTimer, Signal
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

from ..backend import ModelChoices
from ..viewmodel import Workspace, one_line
from ..viewmodel.download import Download
from .common import caption, section_title
from ..signals import emit

CHECK_DELAY_MS = 300  # typing a path: check once the typing pauses
OK_MARK = "✓ "
GOOD_COLOUR, BAD_COLOUR = "#7fcf7a", "#f07a6a"  # the queue's "done" and "failed" colours
LINK_COLOUR = "#5fd0c2"  # the theme's accent: readable on the dark background
OPTION_STYLE = "QRadioButton { font-weight: 600; }"


def tilde(path: str) -> str:
    """A path under the home folder written with ~, as a person reads it."""
    home = str(Path.home())
    return "~" + path[len(home):] if path == home or path.startswith(home + "/") else path


def _gb(n: int | None) -> str:
    return "unknown size" if not n else f"about {n / 1e9:.1f} GB"


def start_folder(*candidates: str) -> str:
    """The first candidate folder that exists, else the user's Pictures folder, else home."""
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    for candidate in (*candidates, pictures, str(Path.home())):
        if not candidate:
            continue
        path = Path(candidate).expanduser()
        while not path.is_dir() and path != path.parent:
            path = path.parent  # the nearest folder that exists, so the dialog can open (and choose) it
        if path.is_dir() and path != path.parent:
            return str(path)
    return str(Path.home())


class ModelDialog(QDialog):
    """Non-blocking (open(), not exec()) so that the engine thread can check and download meanwhile."""

    model_chosen = Signal(str)

    def __init__(self, workspace: Workspace, parent: QWidget | None = None):
        super().__init__(parent)
        self.workspace = workspace
        self.setWindowTitle("Choose a model")
        self.setMinimumWidth(620)
        self.choices: ModelChoices | None = None
        self.download = Download(workspace.engine, self)  # the view-model of a download; this dialog draws it
        self._downloaded: str | None = None
        self._check_task: asyncio.Future | None = None
        self._checked: tuple[str, str | None] | None = None  # (path, problem) of the last check
        self._tasks: set[asyncio.Future] = set()

        intro = caption(
            "Protection is computed against one diffusion model, and works best against the model a mimic "
            "would use. Most style copying fine-tunes Stable Diffusion 1.5."
        )

        # 1. The recommended download
        self.download_option = QRadioButton("Recommended: Stable Diffusion 1.5")
        self.download_option.setStyleSheet(OPTION_STYLE)
        self.download_facts = caption("Looking up what is on this computer…")
        self.download_facts.setTextFormat(Qt.TextFormat.RichText)
        self.download_facts.setOpenExternalLinks(True)
        self.download_facts.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.download_button = QPushButton("Download and use")
        self.download_button.setObjectName("Primary")
        self.download_stop = QPushButton("Stop download")
        self.download_stop.setVisible(False)
        self.download_progress = QProgressBar()
        self.download_progress.setVisible(False)
        self.download_progress.setTextVisible(True)
        self.download_note = caption("Stopped downloads resume where they left off: finished files are kept.")

        # 2. A file or folder already here
        self.folder_option = QRadioButton("Use a file or folder I already have")
        self.folder_option.setStyleSheet(OPTION_STYLE)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("A .safetensors checkpoint, or a model folder")
        self.file_browse = QPushButton("File…")
        self.file_browse.setToolTip("Choose a Stable Diffusion 1.x/2.x checkpoint (.safetensors)")
        self.folder_browse = QPushButton("Folder…")
        self.folder_browse.setToolTip("Choose a model folder (one with model_index.json, unet/, vae/ …)")
        self.folder_status = caption("")
        self.folder_status.setVisible(False)
        self.cache_combo = QComboBox()
        self.cache_combo.setVisible(False)

        # 3. The built-in demo
        self.demo_option = QRadioButton("Try it now, no download")
        self.demo_option.setStyleSheet(OPTION_STYLE)
        self.demo_title = caption("The built-in demo model")
        self.demo_note = caption("", "Warning")

        self.options = QButtonGroup(self)
        for option in (self.download_option, self.folder_option, self.demo_option):
            self.options.addButton(option)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Use this model")
        self.buttons.accepted.connect(self._accept)
        self.buttons.rejected.connect(self.reject)
        self.error = caption("", "Warning")
        self.error.setVisible(False)

        layout = QVBoxLayout(self)
        layout.setSpacing(6)
        layout.addWidget(section_title("Which model should the protection target?"))
        layout.addWidget(intro)
        layout.addSpacing(8)
        layout.addWidget(self.download_option)
        layout.addLayout(self._indented(self.download_facts))
        row = QHBoxLayout()
        row.setContentsMargins(24, 0, 0, 0)
        row.addWidget(self.download_button)
        row.addWidget(self.download_stop)
        row.addWidget(self.download_progress, 1)
        layout.addLayout(row)
        layout.addLayout(self._indented(self.download_note))
        layout.addSpacing(8)
        layout.addWidget(self.folder_option)
        row = QHBoxLayout()
        row.setContentsMargins(24, 0, 0, 0)
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.file_browse)
        row.addWidget(self.folder_browse)
        layout.addLayout(row)
        layout.addLayout(self._indented(self.folder_status))
        layout.addLayout(self._indented(self.cache_combo))
        layout.addSpacing(8)
        layout.addWidget(self.demo_option)
        layout.addLayout(self._indented(self.demo_title))
        layout.addLayout(self._indented(self.demo_note))
        layout.addSpacing(8)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

        self._check_timer = QTimer(self)
        self._check_timer.setSingleShot(True)
        self._check_timer.setInterval(CHECK_DELAY_MS)
        self._check_timer.timeout.connect(lambda: self.check_path(self.folder_edit.text()))
        self.file_browse.clicked.connect(self._browse_file)
        self.folder_browse.clicked.connect(self._browse_folder)
        self.folder_edit.textEdited.connect(self._path_edited)
        self.cache_combo.activated.connect(self._cache_picked)
        self.download_button.clicked.connect(self._start_download)
        self.download_stop.clicked.connect(self._stop_download)
        self.options.buttonToggled.connect(lambda *_: self._sync())
        self.download.changed.connect(self._show_download)
        self._preselect(workspace.settings.model_source)
        self._sync()

    @staticmethod
    def _indented(widget: QWidget) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setContentsMargins(24, 0, 0, 0)
        row.addWidget(widget)
        return row

    def _spawn(self, coro) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def idle(self) -> None:
        """Wait for the dialog's own checks and downloads (tests, screenshots)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _preselect(self, source: str) -> None:
        if source in ("tiny", "proxy"):
            self.demo_option.setChecked(True)
        elif source:
            self.folder_edit.setText(source)
            self.folder_option.setChecked(True)
            self._check_timer.start()
        else:
            self.download_option.setChecked(True)

    # ---- what the engine offers ---------------------------------------------------------------

    def refresh_local_models(self) -> asyncio.Future:
        """Ask the engine thread what can be offered (the demo, the download, copies on disk)."""
        return self._spawn(self._refresh())

    async def _refresh(self) -> None:
        try:
            choices = await self.workspace.engine.model_choices()
        except ArtveilError as exc:
            self.download_facts.setText(f"Could not look for models: {one_line(exc.message)}")
            return
        self.set_choices(choices)

    def set_choices(self, choices: ModelChoices) -> None:
        self.choices = choices
        self.demo_title.setText(choices.demo_title)
        self.demo_note.setText(choices.demo_note)
        offer = choices.recommended
        self.download_option.setText(f"Recommended: {offer.title}")
        licence = (f'<a style="color: {LINK_COLOUR};" href="{offer.licence_url}">{offer.licence}</a>' if offer.licence_url
                   else (offer.licence or "see the model page"))
        if offer.present_path:
            self._downloaded = offer.present_path
            facts = f"Already on this computer, in {tilde(offer.present_path)}<br>Licence: {licence}"
            self.download_button.setText("Use it")
        else:
            facts = (f"{_gb(offer.size_bytes)}, downloaded once; later runs work offline<br>"
                     f"Licence: {licence} (by using it you accept its use restrictions)<br>"
                     f"Saved to: {tilde(offer.destination)}")
        self.download_facts.setText(facts)
        self.cache_combo.clear()
        others = [m for m in choices.local if not (offer.present_path and m.source == offer.present_path)]
        if others:
            self.cache_combo.addItem("Or pick a model found on this computer…", None)
            for model in others:
                self.cache_combo.addItem(model.label, model.source)
        self.cache_combo.setVisible(bool(others))
        self._sync()
        self.fit_to_content()

    # ---- a file or folder ---------------------------------------------------------------------

    def _path_edited(self, _text: str) -> None:
        self.folder_option.setChecked(True)
        self._checked = None
        self.folder_status.setVisible(False)
        self._check_timer.start()
        self._sync()

    def _cache_picked(self, index: int) -> None:
        source = self.cache_combo.itemData(index)
        if source:
            self.folder_edit.setText(source)
            self.folder_option.setChecked(True)
            self.check_path(source)

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a Stable Diffusion checkpoint", start_folder(self.folder_edit.text(), _downloads()),
            "Stable Diffusion checkpoints (*.safetensors);;All files (*)",
        )
        if path:
            self.set_path(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(
            self, "Choose a model folder", start_folder(self.folder_edit.text(), _downloads())
        )
        if path:
            self.set_path(path)

    def set_path(self, path: str) -> asyncio.Future:
        """Put ``path`` in the field, choose this option and check it at once."""
        self.folder_edit.setText(path)
        self.folder_option.setChecked(True)
        return self.check_path(path)

    def check_path(self, path: str) -> asyncio.Future:
        self._check_timer.stop()
        self._check_task = self._spawn(self._check(path.strip()))
        return self._check_task

    async def _check(self, path: str) -> str | None:
        if not path:
            self._show_folder_status(None, "")
            return "Choose a .safetensors file or a model folder."
        self._show_folder_status(None, "Checking…")
        try:
            problem = await self.workspace.engine.check_model_source(path)
        except ArtveilError as exc:
            problem = one_line(exc.message)
        if self.folder_edit.text().strip() == path:  # not typed over meanwhile
            self._checked = (path, problem)
            self._show_folder_status(problem is None, problem or "Looks like a Stable Diffusion model: "
                                                               "click Use this model to load it.")
            self._sync()
        return problem

    def fit_to_content(self) -> None:
        """Grow (never shrink) so that every wrapped line shows: the dialog's height follows its text at
        its width, at any font size or screen scaling, up to the screen's height."""
        layout = self.layout()
        layout.activate()
        width = max(self.width(), self.minimumWidth())
        needed = layout.totalHeightForWidth(width) if layout.hasHeightForWidth() else layout.totalSizeHint().height()
        screen = self.screen().availableGeometry().height() if self.screen() is not None else needed
        height = min(max(needed, layout.totalMinimumSize().height()), screen)
        self.setMinimumHeight(height)
        if self.height() < height:
            self.resize(width, height)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        QTimer.singleShot(0, self.fit_to_content)

    def _show_folder_status(self, ok: bool | None, text: str) -> None:
        colour = {True: GOOD_COLOUR, False: BAD_COLOUR}.get(ok, "#a5a8ae")
        self.folder_status.setStyleSheet(f"color: {colour};")
        self.folder_status.setText((OK_MARK if ok else "") + text)
        self.folder_status.setVisible(bool(text))
        self.fit_to_content()

    # ---- choosing -----------------------------------------------------------------------------

    def chosen_source(self) -> str | None:
        if self.demo_option.isChecked():
            return self.choices.demo_source if self.choices else None
        if self.folder_option.isChecked():
            return self.folder_edit.text().strip() or None
        if self.download_option.isChecked():
            return self._downloaded
        return None

    def _sync(self) -> None:
        downloading = self.download.running
        if self.folder_option.isChecked():
            path = self.folder_edit.text().strip()
            ok = bool(path) and not (self._checked and self._checked[0] == path and self._checked[1])
        elif self.download_option.isChecked():
            ok = self._downloaded is not None
        else:
            ok = self.choices is not None
        self.ok_button.setEnabled(ok and not downloading)
        if not self.folder_option.isChecked() and self.error.isVisible():
            self._show_error("")

    def _accept(self) -> None:
        if self.folder_option.isChecked():
            self._spawn(self._accept_path(self.folder_edit.text().strip()))
            return
        source = self.chosen_source()
        if not source:
            self._show_error("Download the model first." if self.download_option.isChecked()
                             else "Choose a model or the demo.")
            return
        self._choose(source)

    async def _accept_path(self, path: str) -> None:
        problem = self._checked[1] if self._checked and self._checked[0] == path else await self._check(path)
        if problem:
            return  # the reason is shown under the field
        self._choose(path)

    def _choose(self, source: str) -> None:
        emit(self.model_chosen, source)
        self.accept()

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))
        self.fit_to_content()

    # ---- downloading --------------------------------------------------------------------------

    def _start_download(self) -> None:
        if self.choices is None:  # still looking up what is on this computer
            return
        offer = self.choices.recommended
        self.download_option.setChecked(True)
        if offer.present_path:
            self._choose(offer.present_path)
            return
        self._spawn(self._download(offer.name))

    def _stop_download(self) -> None:
        self.download.stop()

    async def _download(self, name: str) -> None:
        self._show_error("")
        path = await self.download.run(name)
        if path is not None:
            self._downloaded = path
            self._choose(path)

    def _show_download(self) -> None:
        d = self.download
        self.download_button.setVisible(not d.running)
        self.download_stop.setVisible(d.running)
        self.download_stop.setEnabled(d.running and not d.stopping)
        self.download_stop.setText("Stopping…" if d.stopping else "Stop download")
        self.download_progress.setVisible(d.running)
        if d.fraction is None:
            self.download_progress.setRange(0, 0)
        else:
            self.download_progress.setRange(0, 1000)
            self.download_progress.setValue(int(1000 * d.fraction))
        self.download_progress.setFormat(d.text)
        if d.note:
            self.download_note.setText(d.note)
            if d.warning:
                self.download_note.setObjectName("Warning")
        self._sync()

    def reject(self) -> None:
        self.download.stop()
        super().reject()

    def done(self, result: int) -> None:
        self.download.close()
        super().done(result)


def _downloads() -> str:
    return QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DownloadLocation)
