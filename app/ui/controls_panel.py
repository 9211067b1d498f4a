"""Method, strength, budget, export and purifier choices, and the Protect / Stop buttons."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QSizePolicy,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QPushButton,
    QScrollArea,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from engine.jobs import BUDGET_PRESETS, BUDGET_RANGE, BUDGET_STEP, STRENGTH_PRESETS, STRENGTH_RANGE

from ..backend import EngineInfo
from ..viewmodel import LEVEL_NAMES, PREVIEW_NOTE, ItemState, Workspace, format_duration
from .bind import bind, refresh_on
from .common import caption, restyle, section_title
from .model_dialog import tilde

STRENGTH_TIP = (
    "How far each pixel may change, in levels of 255. Higher resists mimicry better but the "
    "grain becomes visible: 4 is invisible, 8 is the default, 16 shows on flat colour, 32 plainly."
)
BUDGET_TIP = (
    "How many optimizer steps to spend on each image. More steps find a stronger protection "
    "at the same strength; the time grows with it."
)
SHORT_NAMES = {"maximum": "Max", "thorough": "Long", "default": "Default"}  # fit four to a row at 1366 px
DETAIL_TIP = (
    "The size the protection is computed at before it is scaled to your image. Larger gives a finer grain "
    "on big images and takes longer; each choice shows its time on this machine."
)
JPEG_WARNING = "JPEG re-compresses the image and weakens the protection. Prefer PNG or WebP."
FORMATS = (("png", "PNG (lossless)"), ("webp", "WebP (lossless, smaller)"), ("jpeg", "JPEG (smaller, weaker)"))


def short_label(label: str) -> str:
    """A method's or purifier's name without its parenthesis, which the summary line below says in full."""
    return label.split(" (")[0].strip() or label


class PresetRow(QWidget):
    """Preset buttons in one row when their whole texts fit, otherwise two to a row: a button never
    draws its text cut ("Default 100" at a narrow panel, or any preset with 200 % fonts)."""

    SPACING = 4

    def __init__(self, buttons: list[QPushButton], parent: QWidget | None = None):
        super().__init__(parent)
        self.buttons = buttons
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(self.SPACING)
        self.columns = 0
        self._arrange(len(buttons))
        for b in buttons:
            b.installEventFilter(self)

    def _text_width(self, button: QPushButton) -> int:
        # The text, the style's frame and the sheet's 2 px padding each side, and a little air.
        return button.fontMetrics().horizontalAdvance(button.text()) + 16

    def _needed(self, columns: int) -> int:
        widest = max(self._text_width(b) for b in self.buttons)
        return columns * widest + (columns - 1) * self.SPACING

    def _arrange(self, columns: int) -> None:
        if columns == self.columns:
            return
        self.columns = columns
        for b in self.buttons:
            self.grid.removeWidget(b)
        for i, b in enumerate(self.buttons):
            self.grid.addWidget(b, i // columns, i % columns)
        for c in range(len(self.buttons)):
            self.grid.setColumnStretch(c, 1 if c < columns else 0)
        self.updateGeometry()

    def minimumSizeHint(self):  # noqa: N802 - Qt's name
        hint = super().minimumSizeHint()
        hint.setWidth(self._needed(min(2, len(self.buttons))))
        return hint

    def _fit(self, width: int) -> None:
        self._arrange(len(self.buttons) if width >= self._needed(len(self.buttons)) else min(2, len(self.buttons)))

    def resizeEvent(self, event):  # noqa: N802 - Qt's name
        self._fit(event.size().width())
        super().resizeEvent(event)

    def eventFilter(self, watched, event):  # noqa: N802 - Qt's name: a button's new font changes what fits
        if event.type() == event.Type.FontChange:
            self.updateGeometry()
            self._fit(self.width())
        return False


class ControlsPanel(QWidget):
    def __init__(self, workspace: Workspace, parent: QWidget | None = None):
        super().__init__(parent)
        self.workspace = workspace
        settings = workspace.settings

        # Protection method
        self.method_combo = QComboBox()
        self.method_combo.setToolTip("What the protection is optimized against")
        self.method_summary = caption("")

        # Strength, in pixel levels
        self.strength_slider = QSlider(Qt.Orientation.Horizontal)
        self.strength_slider.setRange(*STRENGTH_RANGE)
        self.strength_slider.setPageStep(4)
        self.strength_slider.setTickInterval(4)
        self.strength_slider.setTickPosition(QSlider.TickPosition.NoTicks)
        self.strength_slider.setValue(int(round(settings.strength_levels)))
        self.strength_slider.setToolTip(STRENGTH_TIP)
        self.strength_value = caption("")
        self.strength_value.setToolTip(STRENGTH_TIP)
        self.strength_presets = self._presets(STRENGTH_PRESETS, self.strength_slider, STRENGTH_TIP)

        # Budget, in optimizer steps
        self.budget_slider = QSlider(Qt.Orientation.Horizontal)
        self.budget_slider.setRange(BUDGET_RANGE[0] // BUDGET_STEP, BUDGET_RANGE[1] // BUDGET_STEP)
        self.budget_slider.setPageStep(5)
        self.budget_slider.setValue(max(1, settings.steps // BUDGET_STEP))
        self.budget_slider.setToolTip(BUDGET_TIP)
        self.budget_value = caption("")
        self.budget_estimate = caption("")
        # How the engine will fit the job in memory (engine.plan), shown before the start, as the CLI prints it.
        self.memory_line = caption("")
        self.memory_line.setToolTip(
            "Before a job starts, the engine estimates its peak memory on this device and picks the cheapest way "
            "to fit it: one pass, two-pass, gradient checkpointing, tiles. A job that cannot fit is refused "
            "before it loads anything."
        )
        self.budget_presets = self._presets(
            {k: v // BUDGET_STEP for k, v in BUDGET_PRESETS.items()}, self.budget_slider, BUDGET_TIP,
            labels={k: f"{v}" for k, v in BUDGET_PRESETS.items()},
        )

        # Speed and detail: the working size, per model (app.viewmodel.detail)
        self.detail_combo = QComboBox()
        self.detail_combo.setToolTip(DETAIL_TIP)
        self.detail_note = caption("")
        self.detail_note.setWordWrap(True)

        # Export
        self.output_label = caption("")
        self.output_button = QPushButton("Change…")
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.setToolTip("Show the output folder in the file manager")
        self.format_combo = QComboBox()
        for fmt, text in FORMATS:
            self.format_combo.addItem(text, fmt)
        self.format_combo.setCurrentIndex(max(0, self.format_combo.findData(settings.export_format)))
        self.format_warning = caption(JPEG_WARNING, "Warning")

        # Run
        self.protect_button = QPushButton("Protect selected")
        self.protect_button.setObjectName("Primary")
        self.protect_button.setToolTip("Protect the selected images (Ctrl+Return)")
        self.protect_all_button = QPushButton("Protect all")
        self.protect_all_button.setObjectName("Primary")
        self.protect_all_button.setToolTip("Protect every image not done yet (Ctrl+Shift+Return)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("Stop")
        self.stop_button.setToolTip("Stop after the current optimizer step (Esc)")
        # What each Protect button would take: only the images it would actually protect.
        self.run_estimate = caption("")
        self.run_estimate.setWordWrap(True)
        # Why Protect is greyed out, in words, where the artist is looking.
        self.protect_reason = caption("")
        self.protect_reason.setVisible(False)

        # Purification preview
        self.purifier_combo = QComboBox()
        self.purifier_combo.setToolTip("A clean-up a mimic might run before training on your image")
        self.purifier_summary = caption("")
        self.purifier_level = QSlider(Qt.Orientation.Horizontal)
        self.purifier_level.setRange(0, 2)
        self.purifier_level.setPageStep(1)
        self.purifier_level.setValue(max(0, min(2, settings.purifier_level)))
        self.purifier_level_value = caption("")
        self.preview_button = QPushButton("Preview purification")
        self.preview_note = caption(PREVIEW_NOTE)
        for combo in (self.method_combo, self.format_combo, self.purifier_combo, self.detail_combo):
            # Long labels must not widen the panel past a 1366-px screen; the popup shows them whole.
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        self.output_label.setWordWrap(True)
        self.output_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.output_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        self._lay_out()
        self._wire(workspace)

    def _lay_out(self) -> None:
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(10, 4, 12, 10)
        layout.setSpacing(4)
        layout.addWidget(section_title("Protection"))
        layout.addWidget(self.method_combo)
        layout.addWidget(self.method_summary)
        layout.addSpacing(6)
        layout.addLayout(self._row(section_title("Strength"), self.strength_value))
        layout.addWidget(self.strength_slider)
        layout.addWidget(self._preset_row(self.strength_presets))
        layout.addSpacing(6)
        layout.addLayout(self._row(section_title("Budget"), self.budget_value))
        layout.addWidget(self.budget_slider)
        layout.addWidget(self._preset_row(self.budget_presets))
        layout.addWidget(self.budget_estimate)
        layout.addWidget(self.memory_line)
        layout.addSpacing(6)
        layout.addWidget(section_title("Speed and detail"))
        layout.addWidget(self.detail_combo)
        layout.addWidget(self.detail_note)
        layout.addSpacing(6)
        layout.addWidget(section_title("Save to"))
        layout.addWidget(self.output_label)
        out_row = QHBoxLayout()
        out_row.addWidget(self.output_button)
        out_row.addWidget(self.open_folder_button)
        out_row.addStretch(1)
        layout.addLayout(out_row)
        layout.addWidget(self.format_combo)
        layout.addWidget(self.format_warning)
        layout.addSpacing(8)
        run_row = QGridLayout()
        run_row.setSpacing(6)
        run_row.addWidget(self.protect_button, 0, 0)
        run_row.addWidget(self.protect_all_button, 0, 1)
        run_row.addWidget(self.stop_button, 1, 0, 1, 2)
        layout.addLayout(run_row)
        layout.addWidget(self.run_estimate)
        layout.addWidget(self.protect_reason)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setStyleSheet("color: #33363b;")
        layout.addSpacing(6)
        layout.addWidget(line)
        layout.addWidget(section_title("Purification preview"))
        layout.addWidget(self.purifier_combo)
        layout.addWidget(self.purifier_summary)
        layout.addWidget(caption("Purifier strength"))
        layout.addWidget(self.purifier_level)
        layout.addWidget(self.purifier_level_value)
        layout.addWidget(self.preview_button)
        layout.addWidget(self.preview_note)
        layout.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

    def _wire(self, workspace: Workspace) -> None:
        """Widgets ↔ settings (app.ui.bind), and the workspace's signals to what they change here."""
        settings = workspace.settings
        bind(settings, "strength_levels", self.strength_slider.valueChanged, self._show_strength, float)
        bind(settings, "steps", self.budget_slider.valueChanged, self._show_budget, lambda v: int(v) * BUDGET_STEP)
        bind(settings, "purifier_level", self.purifier_level.valueChanged, self._show_purifier_level, int)
        bind(settings, "export_format", self.format_combo.currentIndexChanged, self._show_format,
             lambda _: self.format_combo.currentData())
        self.method_combo.currentIndexChanged.connect(self._method_picked)
        self.detail_combo.activated.connect(self._detail_picked)
        self.purifier_combo.currentIndexChanged.connect(self._purifier_picked)
        settings.output_dir_changed.connect(self._show_output)
        workspace.estimate_changed.connect(self._show_estimate)
        workspace.engine_info_changed.connect(self._fill_choices)
        workspace.busy_changed.connect(self._show_busy)
        refresh_on((workspace.selection_changed, workspace.item_updated, workspace.queue.rowsInserted,
                    workspace.queue.rowsRemoved, workspace.model_changed, workspace.stopping_changed,
                    workspace.model_status_changed), lambda: self._show_busy(workspace.busy))
        self.open_folder_button.clicked.connect(self.open_output_folder)

        self._show_output(settings.output_dir)
        if workspace.engine_info is not None:
            self._fill_choices(workspace.engine_info)
        else:
            self.method_combo.addItem("Starting the engine…")
            self.purifier_combo.addItem("Starting the engine…")
        self._busy_shown = False
        self._show_busy(workspace.busy)

    # ---- layout helpers ----------------------------------------------------------------------

    def _presets(self, presets: dict, slider: QSlider, tip: str, labels: dict | None = None) -> list[QPushButton]:
        buttons = []
        for name, value in presets.items():
            shown = SHORT_NAMES.get(name, name.capitalize())
            text = shown + (f" {labels[name]}" if labels else f" {int(value)}")
            button = QPushButton(text)
            button.setObjectName("Preset")
            # Equal shares of the row, however narrow the panel: the text is short enough.
            button.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
            button.setMinimumWidth(40)
            button.setToolTip(f"{name.capitalize()}: {labels[name] if labels else int(value)}. {tip}")
            button.clicked.connect(lambda _=False, v=int(value): slider.setValue(v))
            button.setProperty("preset_value", int(value))
            buttons.append(button)
        return buttons

    @staticmethod
    def _preset_row(buttons: list[QPushButton]) -> "PresetRow":
        return PresetRow(buttons)

    @staticmethod
    def _row(left: QWidget, right: QWidget) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(left)
        row.addStretch(1)
        row.addWidget(right)
        return row

    # ---- binding -----------------------------------------------------------------------------

    def _fill_choices(self, info: EngineInfo) -> None:
        settings = self.workspace.settings
        for combo, choices, current in (
            (self.method_combo, info.methods, settings.method),
            (self.purifier_combo, info.purifiers, settings.purifier),
        ):
            combo.blockSignals(True)
            combo.clear()
            for choice in choices:
                combo.addItem(short_label(choice.label), choice.name)
                combo.setItemData(combo.count() - 1, f"{choice.label}: {choice.summary}", Qt.ItemDataRole.ToolTipRole)
            index = combo.findData(current)
            combo.setCurrentIndex(index if index >= 0 else 0)
            combo.blockSignals(False)
        self._method_picked()
        self._purifier_picked()

    def _choice(self, choices, name):
        return next((c for c in choices if c.name == name), None)

    def _method_picked(self, *_args) -> None:
        info = self.workspace.engine_info
        name = self.method_combo.currentData()
        if info is None or name is None:
            return
        self.workspace.settings.method = name
        choice = self._choice(info.methods, name)
        self.method_summary.setText(_full_summary(choice))

    def _purifier_picked(self, *_args) -> None:
        info = self.workspace.engine_info
        name = self.purifier_combo.currentData()
        if info is None or name is None:
            return
        self.workspace.settings.purifier = name
        choice = self._choice(info.purifiers, name)
        self.purifier_summary.setText(_full_summary(choice))
        self._show_purifier_level(self.workspace.settings.purifier_level)

    def _show_strength(self, value) -> None:
        value = int(round(value))
        if self.strength_slider.value() != value:
            self.strength_slider.setValue(value)
        named = next((k for k, v in STRENGTH_PRESETS.items() if int(v) == value), None)
        self.strength_value.setText(f"{value} levels" + (f" · {named}" if named else ""))
        for b in self.strength_presets:
            b.setDown(b.property("preset_value") == value)

    def _show_budget(self, steps) -> None:
        steps = int(steps)
        if self.budget_slider.value() * BUDGET_STEP != steps:
            self.budget_slider.setValue(max(1, steps // BUDGET_STEP))
        self.budget_value.setText(f"{steps} steps")
        for b in self.budget_presets:
            b.setDown(b.property("preset_value") * BUDGET_STEP == steps)
        self._show_estimate()

    def _show_run_estimate(self) -> None:
        ws = self.workspace
        parts = []
        for label, items in (("Selected", ws.selected_for_protect()), ("All", ws.protectable())):
            items = [i for i in items if i.state is not ItemState.DONE]
            seconds = ws.estimate_seconds(items) if items else None
            if seconds is not None:
                n = len(items)
                parts.append(f"{label} ({n} image{'s' if n != 1 else ''}): ≈ {format_duration(seconds)}")
        self.run_estimate.setText(" · ".join(parts))
        self.run_estimate.setVisible(bool(parts) and not ws.busy)

    def _show_estimate(self) -> None:
        ws = self.workspace
        self._show_detail()
        self._show_run_estimate()
        self._show_memory_plan()
        per_image = ws.estimate_seconds()
        if per_image is None:
            self.budget_estimate.setText(
                "Time estimate: measuring this machine…" if ws.model is not None else "Time estimate: load a model first"
            )
            return
        # One clear figure for what the artist will wait for: the queue's own images when there are any
        # (their sizes, not the working size), else one image at the working size.
        pending = [i for i in ws.queue.items if i.protected is None and not i.unreadable]
        if not pending:
            size = ws.job_settings().working_size
            text = f"≈ {format_duration(per_image)} per image (up to {size} px) on this machine"
        elif len(pending) == 1:
            text = f"≈ {format_duration(ws.estimate_seconds(pending))} for the waiting image on this machine"
        else:
            total = ws.estimate_seconds(pending)
            text = (f"≈ {format_duration(total)} for the {len(pending)} waiting images "
                    f"(≈ {format_duration(total / len(pending))} each) on this machine")
        self.budget_estimate.setText(text)

    def _show_memory_plan(self) -> None:
        ws = self.workspace
        plan = ws.memory_plan()
        warn = plan is not None and not plan.fits
        if ws.model is None:
            text = ""
        elif plan is None:
            text = "Memory: checking what this job needs…"
        elif plan.fits:
            text = "Memory " + plan.line  # "Memory plan: one pass, whole image, … (estimated peak … allowed)"
        else:
            text = f"Will not fit in memory: {plan.line}"
        self.memory_line.setText(text)
        self.memory_line.setVisible(bool(text))
        restyle(self.memory_line, "Warning" if warn else "Caption")

    def _detail_picked(self, index: int) -> None:
        key = self.detail_combo.itemData(index)
        if key:
            self.workspace.settings.detail = key

    def _show_detail(self) -> None:
        """Each speed/detail choice with its time on this machine, and what the chosen one does."""
        ws = self.workspace
        pending = [i for i in ws.queue.items if i.protected is None and not i.unreadable]
        current = ws.detail_level
        self.detail_combo.blockSignals(True)
        self.detail_combo.clear()
        for level in ws.detail_levels:
            seconds, measured = ws.estimate_for_level(level, pending[:1] or None)
            when = "" if seconds is None else f" · ≈ {format_duration(seconds)}" + ("" if measured else " (rough)")
            self.detail_combo.addItem(f"{level.label} · {level.working_size} px{when}", level.key)
            self.detail_combo.setItemData(self.detail_combo.count() - 1, level.summary.capitalize() + ".",
                                          Qt.ItemDataRole.ToolTipRole)
        self.detail_combo.setCurrentIndex(max(0, self.detail_combo.findData(current.key)))
        self.detail_combo.blockSignals(False)
        per = "the waiting image" if pending else "one image"
        note = f"{current.summary.capitalize()}; the times are for {per}."
        if ws.model is not None and ws.model.is_demo:
            note = (f"The demo model was trained at {ws.native_size} px: the protection is {current.summary} "
                    f"(at 512 px it would take about {max(1, round((512 / current.working_size) ** 2))}× the work "
                    f"and teach the demo nothing it can see). It shows how the app works; it does not protect "
                    f"against real models.")
        self.detail_note.setText(note)

    def _show_output(self, path: str) -> None:
        if path:
            self.output_label.setText(tilde(str(Path(path))))  # the full path (~ for home): wraps, never cut
            self.output_label.setToolTip(path)
        else:
            self.output_label.setText("No folder chosen yet: you will be asked on the first Protect.")
            self.output_label.setToolTip("")
        self.open_folder_button.setEnabled(bool(path) and Path(path).is_dir())

    def open_output_folder(self) -> bool:
        """Show the folder in the file manager; where none opens it, say where the folder is (and put
        its path on the clipboard) instead of doing nothing."""
        path = self.workspace.settings.output_dir
        if not path or not Path(path).is_dir():
            return False
        if QDesktopServices.openUrl(QUrl.fromLocalFile(path)):
            return True
        QGuiApplication.clipboard().setText(path)
        self.workspace.report_problem(f"No file manager could open the folder. It is {path} (path copied to the clipboard).")
        self.output_label.setToolTip(path)
        return False

    def _show_format(self, fmt: str) -> None:
        index = max(0, self.format_combo.findData(fmt))
        if self.format_combo.currentIndex() != index:
            self.format_combo.setCurrentIndex(index)
        self.format_warning.setVisible(fmt == "jpeg")

    def _show_purifier_level(self, level: int) -> None:
        level = max(0, min(2, int(level)))
        if self.purifier_level.value() != level:
            self.purifier_level.setValue(level)
        text = LEVEL_NAMES[level].capitalize()
        request = next((r for r in self.workspace.purifier_requests() if r.name == self.workspace.settings.purifier), None)
        if request and request.params:
            text += " (" + ", ".join(f"{k} {v}" for k, v in request.params.items()) + ")"
        else:
            text += " (this purifier has one setting)"
        self.purifier_level_value.setText(text)

    def protect_blocker(self) -> str:
        """Why Protect cannot start now, in words (empty when it can)."""
        ws = self.workspace
        if ws.busy:
            return ""  # Stop is the button that matters then
        if ws.model is None:
            if ws.model_status.startswith("Loading"):
                return "The model is loading…"
            return "Choose a model first: click the model name in the status bar (or File → Model…)."
        if not ws.queue.items:
            return "Add images first: drop them on the queue, or File → Add images (Ctrl+O)."
        if not ws.protectable():
            return "Every image in the queue is done or cannot be read."
        return ""

    def _show_busy(self, busy: bool) -> None:
        ws = self.workspace
        ready = ws.model is not None and not busy
        has_items = bool(ws.queue.items)
        self.protect_button.setEnabled(ready and ws.selected is not None)
        self.protect_all_button.setEnabled(ready and has_items)
        reason = self.protect_blocker()
        if not reason and ready and ws.selected is None:
            reason = "Select an image in the queue to protect it alone, or use Protect all."
        self.protect_reason.setText(reason)
        self.protect_reason.setVisible(bool(reason))
        for button, tip in ((self.protect_button, "Protect the selected images (Ctrl+Return)"),
                            (self.protect_all_button, "Protect every image not done yet (Ctrl+Shift+Return)")):
            button.setToolTip(tip if button.isEnabled() or not reason else reason)
        out = ws.settings.output_dir
        self.open_folder_button.setEnabled(bool(out) and Path(out).is_dir())  # it may exist only after a save
        self.stop_button.setEnabled(busy and not ws.stopping)
        self.stop_button.setText("Stopping…" if ws.stopping else "Stop")
        selected = ws.selected
        self.preview_button.setEnabled(ready and selected is not None and selected.protected is not None)
        for widget in (self.method_combo, self.strength_slider, self.budget_slider, self.format_combo, self.output_button,
                       self.detail_combo):
            widget.setEnabled(not busy)
        for b in self.strength_presets + self.budget_presets:
            b.setEnabled(not busy)
        # Every item update calls this, 20 times a second while a job runs: the estimates (which read the
        # settings file) are redrawn only when idle, or when busy begins, never in the engine's way.
        if not busy or not self._busy_shown:
            self._show_estimate()
        self._busy_shown = busy


def _full_summary(choice) -> str:
    """The summary, led by what the short combo label left out (the label's parenthesis)."""
    if choice is None:
        return ""
    extra = choice.label[len(short_label(choice.label)):].strip()
    return f"{extra[1:-1].capitalize()}. {choice.summary}" if extra.startswith("(") and extra.endswith(")") else choice.summary
