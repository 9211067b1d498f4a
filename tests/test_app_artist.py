"""The window as an artist meets it (issue 14), driven with pytest-qt on real widgets and a fake engine:
a model in one click, one honest bar per image, a preview of only the chosen purifier, Stop that stops."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics

from app.viewmodel import ItemState
from conftest_app import *  # noqa: F401,F403 - fixtures
from conftest_app import FakePrompts, write_image

pytestmark = pytest.mark.timeout(60)

LEFT = Qt.MouseButton.LeftButton


def write_safetensors_checkpoint(path: Path) -> Path:
    """A file with the key layout of an SD 1.x single-file checkpoint (tiny tensors: only the header counts)."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({
        "cond_stage_model.transformer.text_model.embeddings.position_ids": np.zeros((1, 4), np.int64),
        "model.diffusion_model.input_blocks.0.0.weight": np.zeros((2, 2), np.float32),
    }, str(path))
    return path


def model_dialog(window, qtbot):
    dialog = window._model_dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.choices is not None, timeout=5000)
    return dialog


# ---- the model chooser -------------------------------------------------------------------------

def test_model_dialog_rejects_an_image_folder_inline_and_accepts_a_safetensors_file(make_window, tmp_path, qtbot, fake_engine):
    window, ws = make_window(model_source=None)
    dialog = model_dialog(window, qtbot)
    paintings = tmp_path / "paintings"
    for i in range(3):
        write_image(paintings / f"study-{i}.png", seed=i)

    dialog.folder_edit.setFocus()
    qtbot.keyClicks(dialog.folder_edit, str(paintings))
    qtbot.waitUntil(lambda: "not a model" in dialog.folder_status.text(), timeout=5000)
    assert dialog.folder_option.isChecked()
    assert "3 images" in dialog.folder_status.text() and dialog.folder_status.isVisible()
    assert not dialog.ok_button.isEnabled()
    qtbot.mouseClick(dialog.ok_button, LEFT)  # a disabled button: nothing happens, the dialog stays
    assert dialog.isVisible() and "load_model" not in fake_engine.calls
    assert "not a model" not in window.statusBar().currentMessage()  # said in the dialog, not the status bar

    checkpoint = write_safetensors_checkpoint(tmp_path / "models" / "my-sd15.safetensors")
    dialog.folder_edit.clear()
    qtbot.keyClicks(dialog.folder_edit, str(checkpoint))
    qtbot.waitUntil(lambda: dialog.folder_status.text().startswith("✓"), timeout=5000)
    assert dialog.ok_button.isEnabled()
    with qtbot.waitSignal(ws.model_changed, timeout=5000):
        qtbot.mouseClick(dialog.ok_button, LEFT)
    assert window._model_dialog is None  # accepted and closed
    assert ws.model is not None and ws.model.name == "my-sd15.safetensors"
    assert ws.settings.model_source == str(checkpoint)


def test_status_bar_model_label_opens_the_chooser_with_download_facts_and_the_demo(make_window, qtbot):
    window, ws = make_window()
    assert window._model_dialog is None
    qtbot.mouseClick(window.model_label, LEFT)
    dialog = model_dialog(window, qtbot)
    facts = dialog.download_facts.text()
    assert "Stable Diffusion 1.5" in dialog.download_option.text()
    assert "2.1 GB" in facts and "CreativeML OpenRAIL-M" in facts and "huggingface" in facts  # size, licence, where
    assert dialog.demo_option.text() == "Try it now, no download"
    assert "NO real protection" in dialog.demo_note.text()
    assert dialog.demo_option.isChecked()  # the demo is the current model


def test_recommended_download_is_one_click_with_progress_then_the_model_loads(make_window, qtbot, fake_engine):
    fake_engine.download_delay_s = 1.0
    window, ws = make_window(model_source=None)
    dialog = model_dialog(window, qtbot)
    seen = []
    dialog.download_progress.valueChanged.connect(lambda _: seen.append(dialog.download_progress.text()))
    with qtbot.waitSignal(ws.model_changed, timeout=10000):
        qtbot.mouseClick(dialog.download_button, LEFT)
    assert any("of 2.1 GB" in text for text in seen)
    assert ws.model is not None and ws.settings.model_source == "/downloads/sd15"


def test_a_stopped_download_says_it_resumes(make_window, qtbot, fake_engine):
    fake_engine.download_delay_s = 20.0
    window, ws = make_window(model_source=None)
    dialog = model_dialog(window, qtbot)
    qtbot.mouseClick(dialog.download_button, LEFT)
    qtbot.waitUntil(lambda: dialog.download_stop.isVisible(), timeout=5000)
    qtbot.mouseClick(dialog.download_stop, LEFT)
    qtbot.waitUntil(lambda: dialog.download_note.text().startswith("Download stopped"), timeout=5000)
    assert "resume" in dialog.download_note.text()
    assert dialog.isVisible() and ws.model is None and dialog.download_button.isVisible()
    dialog.reject()


# ---- one bar per image, for the whole job --------------------------------------------------------

def test_job_progress_moves_before_optimization_and_reaches_100_only_when_written(make_window, tmp_path, qtbot, fake_engine):
    fake_engine.setup_delay_s = 1.5  # a method's set-up: the engine reports nothing meanwhile
    fake_engine.step_delay_s = 0.01
    fake_engine.save_delay_s = 0.8
    out = tmp_path / "out"
    window, ws = make_window(prompts=FakePrompts(out))
    ws.add_paths([write_image(tmp_path / "in" / "fox.png")])
    ws.settings.steps = 20
    item = ws.queue.items[0]
    written = out / "fox.protected.png"
    samples = []  # (progress, optimizer started, file written)
    ws.item_updated.connect(lambda i: samples.append((i.progress, fake_engine.step_started.is_set(), written.exists())))

    qtbot.mouseClick(window.controls.protect_all_button, LEFT)
    qtbot.waitUntil(lambda: item.state is ItemState.DONE, timeout=10000)

    before_steps = sorted({p for p, started, _ in samples if not started})
    assert len(before_steps) >= 3 and before_steps[-1] > 0  # the bar moved during the set-up
    assert all(b - a >= 0 for a, b in zip([p for p, *_ in samples], [p for p, *_ in samples][1:]))  # never back
    assert all(done for p, _, done in samples if p >= 1.0)  # 100 % only with the file on disk
    saving = [p for p, started, done in samples if started and not done and p > 0.5]
    assert saving and max(saving) < 1.0  # while the file was being written the bar was short of 100 %
    assert item.progress == 1.0 and written.is_file()


def test_estimate_after_the_first_image_is_within_1_5x_of_the_real_time(make_window, tmp_path, qtbot, fake_engine):
    fake_engine.setup_delay_s = 1.5
    fake_engine.step_delay_s = 0.04
    fake_engine.save_delay_s = 0.7
    window, ws = make_window()
    # 0.8 s of steps in a 3 s job: the fixed costs dominate, as on a CPU (and the window's own overhead
    # on a loaded test machine stays small beside them)
    ws.settings.steps = 20
    paths = [write_image(tmp_path / "in" / f"{n}.png", seed=i) for i, n in enumerate(["a", "b", "c"])]
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ws.add_paths([*paths, bad])
    broken = next(i for i in ws.queue.items if i.name == "broken.png")
    assert broken.status_text.startswith("can't be read: ")  # said when added, not "waiting" until its turn
    good = [i for i in ws.queue.items if i is not broken]
    assert ws.estimate_seconds(ws.queue.items) == pytest.approx(ws.estimate_seconds(good))  # not counted
    started, estimated, ended = {}, {}, {}

    def record(item):
        now = time.monotonic()
        if item.state is ItemState.PROTECTING and item not in started:
            started[item], estimated[item] = now, ws.estimate_seconds([item])
        elif item.state is ItemState.DONE and item not in ended:
            ended[item] = now

    ws.item_updated.connect(record)
    ws.protect(good)
    qtbot.waitUntil(lambda: not ws.busy and len(ended) == 3, timeout=40000)
    for item in good[1:]:
        real = ended[item] - started[item]
        assert 1 / 1.5 <= estimated[item] / real <= 1.5, (estimated[item], real)


def test_stop_shows_stopping_at_once_and_ends_within_a_step(make_window, tmp_path, qtbot, fake_engine):
    fake_engine.step_delay_s = 0.05
    window, ws = make_window()
    ws.add_paths([write_image(tmp_path / "a.png"), write_image(tmp_path / "b.png", seed=1)])
    ws.settings.steps = 400
    c = window.controls
    qtbot.mouseClick(c.protect_all_button, LEFT)
    item = ws.queue.items[0]
    qtbot.waitUntil(lambda: item.phase == "steps" and item.progress > 0.02, timeout=5000)
    stopped_at = time.monotonic()
    qtbot.mouseClick(c.stop_button, LEFT)
    # At once, before the engine has answered:
    assert c.stop_button.text() == "Stopping…" and not c.stop_button.isEnabled()
    assert window.batch_label.text() == "Stopping…"
    assert item.status_text == "stopping…"
    qtbot.waitUntil(lambda: not ws.busy, timeout=5000)
    assert time.monotonic() - stopped_at < 1.5  # one 50 ms step, and a loaded machine's scheduling
    assert item.state is ItemState.STOPPED and ws.queue.items[1].state is ItemState.WAITING
    assert c.stop_button.text() == "Stop"


def test_quit_during_work_asks_then_stops_cleanly(make_window, tmp_path, qtbot, fake_engine):
    fake_engine.step_delay_s = 0.05
    prompts = FakePrompts(tmp_path / "out")
    window, ws = make_window(prompts=prompts)
    ws.add_paths([write_image(tmp_path / "a.png")])
    ws.settings.steps = 400
    qtbot.mouseClick(window.controls.protect_all_button, LEFT)
    qtbot.waitUntil(lambda: ws.queue.items[0].progress > 0.02, timeout=5000)

    prompts.quit_answer = False
    window.close()
    assert ("quit", "protecting images") in prompts.asked
    assert window.isVisible() and ws.busy  # "Keep working"

    prompts.quit_answer = True
    window.close()
    assert window.isVisible() and ws.stopping  # it answers at once, then stops
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    assert ws.queue.items[0].state is ItemState.STOPPED
    assert not ws.bridge.thread.isRunning()


# ---- the purification preview ----------------------------------------------------------------------

def _protected_window(make_window, tmp_path, qtbot):
    window, ws = make_window()
    ws.add_paths([write_image(tmp_path / "a.png", size=(96, 128))])
    qtbot.mouseClick(window.controls.protect_all_button, LEFT)
    qtbot.waitUntil(lambda: ws.queue.items[0].protected is not None and not ws.busy, timeout=5000)
    return window, ws, window.controls


def test_preview_runs_only_the_chosen_purifier_with_its_own_progress_and_can_be_stopped(make_window, tmp_path, qtbot, fake_engine):
    window, ws, c = _protected_window(make_window, tmp_path, qtbot)
    preview = window.compare.purify
    c.purifier_combo.setCurrentIndex(c.purifier_combo.findData("jpeg"))
    fake_engine.preview_delay_s = 0.6
    texts = []
    ws.preview_progress.connect(lambda status: status is not None and texts.append(status.line()))
    with qtbot.waitSignal(ws.report_changed, timeout=5000):
        qtbot.mouseClick(c.preview_button, LEFT)
    assert fake_engine.purified == [("jpeg", {"quality": 75})]  # only the chosen one, at medium
    assert any(t.startswith("Purifying the original") for t in texts)
    assert any(t.startswith("Purifying the protected image") and "left" in t for t in texts)  # an estimate
    assert not preview.progress_row.isVisible()
    assert "384 px" in c.preview_note.text() and "20" in c.preview_note.text()  # says what it shortens

    # A second, long one: its own bar and Stop, which says so at once and ends within a step.
    fake_engine.preview_delay_s = 30.0
    c.purifier_combo.setCurrentIndex(c.purifier_combo.findData("sdedit"))
    qtbot.mouseClick(c.preview_button, LEFT)
    qtbot.waitUntil(lambda: preview.progress_row.isVisible() and "Purifying" in preview.progress_text.text(), timeout=5000)
    assert window.compare.stack.currentWidget() is preview
    # The window shows its bar at once; Stop is meant for a preview the engine is running (one still queued
    # on a loaded machine is dropped before it starts, and never reaches the engine at all).
    qtbot.waitUntil(lambda: len(fake_engine.purified) == 2, timeout=5000)
    stopped_at = time.monotonic()
    qtbot.mouseClick(preview.stop_button, LEFT)
    assert preview.stop_button.text() == "Stopping…" and preview.progress_text.text() == "Stopping…"
    qtbot.waitUntil(lambda: not ws.busy, timeout=5000)
    assert time.monotonic() - stopped_at < 1.5  # 10 ms "denoising steps", and a loaded machine's scheduling
    assert [name for name, _ in fake_engine.purified] == ["jpeg", "sdedit"]
    assert ws.queue.items[0].report_purifier == "jpeg"  # the stopped run left no half report
    assert ws.summary == "Purification preview stopped." and not preview.progress_row.isVisible()


# ---- the small print ---------------------------------------------------------------------------------

def test_a_greyed_out_protect_says_why(make_window, tmp_path, qtbot):
    window, ws = make_window(model_source=None)
    window._model_dialog.reject()
    c = window.controls
    assert not c.protect_all_button.isEnabled()
    assert c.protect_reason.isVisible() and "Choose a model first" in c.protect_reason.text()
    assert "status bar" in c.protect_all_button.toolTip()
    with qtbot.waitSignal(ws.model_changed, timeout=5000):
        ws.load_model("tiny")
    qtbot.waitUntil(lambda: not ws.busy, timeout=5000)
    assert "Add images first" in c.protect_reason.text()
    ws.add_paths([write_image(tmp_path / "a.png")])
    assert c.protect_all_button.isEnabled() and not c.protect_reason.isVisible()


def test_labels_are_not_cut(make_window):
    window, ws = make_window()
    c = window.controls
    window.resize(1366, 768)
    for combo in (c.method_combo, c.purifier_combo, c.format_combo):
        room = combo.width() - 30  # less the arrow
        for i in range(combo.count()):
            assert QFontMetrics(combo.font()).horizontalAdvance(combo.itemText(i)) <= room, combo.itemText(i)
    label = c.output_label
    assert label.text().startswith("No folder chosen yet") and label.text().endswith("first Protect.")
    assert label.heightForWidth(label.width()) <= label.height() + 1  # wrapped, all of it shown


def test_save_to_shows_the_full_path_and_opens_the_folder(make_window, tmp_path, qtbot, monkeypatch):
    window, ws = make_window()
    out = tmp_path / "Pictures" / "protected"
    out.mkdir(parents=True)
    ws.settings.output_dir = str(out)
    c = window.controls
    assert c.output_label.text() == str(out)
    opened = []
    monkeypatch.setattr("app.ui.controls_panel.QDesktopServices.openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    qtbot.mouseClick(c.open_folder_button, LEFT)
    assert opened == [str(out)]


def test_folder_dialogs_start_in_a_folder_that_exists(tmp_path):
    from PySide6.QtCore import QStandardPaths

    from app.ui.model_dialog import start_folder

    existing = tmp_path / "art"
    existing.mkdir()
    assert start_folder(str(existing / "not" / "yet")) == str(existing)  # the nearest existing parent
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    expected = pictures if Path(pictures).is_dir() else str(Path.home())
    assert start_folder("") == expected


def test_ctrl_e_asks_before_rewriting_an_existing_export(make_window, tmp_path, qtbot):
    out = tmp_path / "out"
    prompts = FakePrompts(out, conflict_answer="skip")
    window, ws = make_window(prompts=prompts)
    ws.add_paths([write_image(tmp_path / "in" / "a.png")])
    qtbot.mouseClick(window.controls.protect_all_button, LEFT)
    qtbot.waitUntil(lambda: ws.queue.items[0].state is ItemState.DONE and not ws.busy, timeout=5000)
    saved = out / "a.protected.png"
    saved.write_bytes(b"edited by hand afterwards")
    qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not ws.busy, timeout=5000)
    assert ("conflicts", ["a.protected.png"]) in prompts.asked
    assert saved.read_bytes() == b"edited by hand afterwards"
    # The artist is told that nothing was written, on the image and in the summary.
    assert "not exported: a.protected.png exists" in ws.queue.items[0].note
    assert ws.summary == "Exported 0 images, 1 skipped (a file of that name exists)."


def test_webp_is_offered_and_written_lossless(make_window, tmp_path, qtbot):
    out = tmp_path / "out"
    window, ws = make_window(prompts=FakePrompts(out))
    ws.add_paths([write_image(tmp_path / "in" / "a.png")])
    c = window.controls
    c.format_combo.setCurrentIndex(c.format_combo.findData("webp"))
    assert not c.format_warning.isVisibleTo(window)  # no JPEG-style warning: WebP here is lossless
    qtbot.mouseClick(c.protect_all_button, LEFT)
    qtbot.waitUntil(lambda: ws.queue.items[0].state is ItemState.DONE and not ws.busy, timeout=60_000)  # the first WebP export imports torch (engine.batch measures it as written)
    saved = out / "a.protected.webp"
    assert Image.open(saved).format == "WEBP"
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")), ws.queue.items[0].protected[..., :3])


def test_a_missing_x11_library_is_named_in_one_line(monkeypatch, capsys):
    import ctypes

    from app.main import main

    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)

    def missing(path, *args, **kwargs):
        raise OSError("libxcb-cursor.so.0: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert main([]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "libxcb-cursor.so.0 is missing" in err and "libxcb-cursor0" in err


def test_the_window_imports_no_torch():
    code = "import app.ui.main_window, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1], timeout=120)


def test_a_busy_window_does_not_drain_pythons_true(make_window):
    """PySide6 6.12's emit() forgets a reference on True; app.signals.emit gives it back (else Python
    aborts with "deallocating True or False" after some minutes of progress reports)."""
    window, ws = make_window()
    before = sys.getrefcount(True)
    for i in range(2000):
        ws.set_batch_text(f"{i} of 2000")
    assert before - sys.getrefcount(True) < 100
