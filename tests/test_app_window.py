"""The window with a fake engine: queue, controls → job, stop, failures, export, preview, settings."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.viewmodel import ItemState
from conftest_app import *  # noqa: F401,F403 - fixtures
from conftest_app import FakePrompts, select_only, until, write_image

pytestmark = pytest.mark.timeout(60)


def drop_urls(widget, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(widget.rect().center())
    # QDragEnterEvent takes a QPoint (PySide6 6.11) or a QPointF (6.12): give it the one its binding reads.
    try:
        enter = QDragEnterEvent(pos.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier)
    except TypeError:
        enter = None
    enter = enter or QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    drop = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return enter.isAccepted(), drop.isAccepted()


def test_dropping_files_and_a_folder_fills_the_queue(make_window, tmp_path):
    window, ws = make_window()
    a = write_image(tmp_path / "in" / "a.png")
    folder = tmp_path / "in" / "set"
    b = write_image(folder / "b.png", seed=1)
    c = write_image(folder / "c.jpg", seed=2)
    (folder / "notes.txt").write_text("not an image")
    view = window.queue_panel.view

    entered, dropped = drop_urls(view.viewport(), [a, folder])

    assert entered and dropped
    assert [i.name for i in ws.queue.items] == ["a.png", "b.png", "c.jpg"]
    assert all(i.state is ItemState.WAITING for i in ws.queue.items)
    assert all(not i.thumbnail.isNull() for i in ws.queue.items)
    assert ws.queue.rowCount() == 3
    # Dropping the same files again adds nothing.
    drop_urls(view.viewport(), [a, b, c])
    assert ws.queue.rowCount() == 3


def test_empty_queue_shows_a_drop_hint_that_goes_when_images_arrive(make_window, tmp_path):
    window, ws = make_window()
    view = window.queue_panel.view

    def ink(image: QImage) -> int:
        """How many pixels differ from the background: the hint is drawn text and an icon."""
        image = image.convertToFormat(QImage.Format.Format_RGB888)
        array = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
        array = array[:, : image.width() * 3].reshape(image.height(), image.width(), 3)
        background = array[2, 2]
        return int((np.abs(array.astype(int) - background).sum(axis=2) > 40).sum())

    empty = view.viewport().grab().toImage()
    assert ink(empty) > 200
    ws.add_paths([write_image(tmp_path / "a.png")])
    one_item = view.viewport().grab().toImage()
    # The hint sat in the middle of the list; with an item, the middle is plain background.
    h = one_item.height()
    middle = one_item.copy(0, h // 3, one_item.width(), h // 3)
    assert ink(middle) == 0


def test_delete_removes_the_selected_image(make_window, tmp_path):
    window, ws = make_window()
    ws.add_paths([write_image(tmp_path / n, seed=i) for i, n in enumerate(["a.png", "b.png", "c.png"])])
    view = window.queue_panel.view
    select_only(view, 1)
    assert ws.selected.name == "b.png"
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_Delete)
    assert [i.name for i in ws.queue.items] == ["a.png", "c.png"]


def test_one_delete_removes_one_image_whether_the_queue_or_the_window_has_the_key(make_window, tmp_path, qtbot):
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QKeyEvent

    window, ws = make_window()
    ws.add_paths([write_image(tmp_path / f"{n}.png", seed=i) for i, n in enumerate("abcd")])
    view = window.queue_panel.view
    select_only(view, 1)
    # Focused queue: it takes Delete itself and tells Qt so, which keeps the window's shortcut out of it.
    override = QKeyEvent(QEvent.Type.ShortcutOverride, Qt.Key.Key_Delete, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view, override)
    assert override.isAccepted()
    QTest.keyClick(view, Qt.Key.Key_Delete)
    assert [i.name for i in ws.queue.items] == ["a.png", "c.png", "d.png"]
    # Elsewhere in the window the Edit menu's action removes the selected image, once.
    window.remove_action.trigger()
    assert len(ws.queue.items) == 2 and "b.png" not in [i.name for i in ws.queue.items]


def test_sliders_and_method_change_the_job_that_reaches_the_engine(make_window, fake_engine, tmp_path, drive):
    window, ws = make_window()
    ws.add_paths([write_image(tmp_path / "a.png")])
    c = window.controls

    async def scenario():
        c.strength_slider.setValue(12)
        next(b for b in c.budget_presets if b.text() == "Long 200").click()
        c.method_combo.setCurrentIndex(c.method_combo.findData("photoguard"))
        c.protect_all_button.click()
        await ws.idle()

    drive(scenario())
    assert len(fake_engine.jobs) == 1
    job = fake_engine.jobs[0]
    assert (job.strength_levels, job.steps, job.method) == (12.0, 200, "photoguard")
    assert c.strength_value.text() == "12 levels · strong"
    assert ws.queue.items[0].state is ItemState.DONE
    # The engine ran on its own thread, never on the window's.
    assert threading.main_thread().ident not in fake_engine.threads


def test_budget_estimate_uses_the_measured_step_time(make_window, tmp_path):
    window, ws = make_window()
    c = window.controls
    assert ws.step_seconds == 0.5  # the fake's measurement, taken on the engine thread
    c.budget_slider.setValue(10)  # 100 steps
    first = c.budget_estimate.text()
    c.budget_slider.setValue(40)  # 400 steps: four times as long
    assert first != c.budget_estimate.text()
    # Steps add linearly on top of the job's fixed costs (set-up and saving), which are never zero.
    per_100 = ws.estimate_seconds(steps=200) - ws.estimate_seconds(steps=100)
    assert ws.estimate_seconds(steps=400) - ws.estimate_seconds(steps=100) == pytest.approx(3 * per_100)
    assert ws.estimate_seconds(steps=100) > per_100
    assert "per image (up to 512 px) on this machine" in c.budget_estimate.text()


def test_budget_estimate_for_a_queue_adds_up_its_own_images(make_window, tmp_path):
    from PIL import Image

    from tests.conftest import make_image

    window, ws = make_window()
    c = window.controls
    paths = []
    for i, (h, w) in enumerate([(256, 256), (512, 512)]):
        Image.fromarray(make_image(h, w, seed=i)).save(tmp_path / f"p{i}.png")
        paths.append(str(tmp_path / f"p{i}.png"))
    ws.add_paths(paths[:1])
    c._show_estimate()
    one = ws.estimate_seconds([ws.queue.items[0]])
    assert c.budget_estimate.text().startswith("≈ ") and "for the waiting image" in c.budget_estimate.text()
    ws.add_paths(paths[1:])
    c._show_estimate()
    total = ws.estimate_seconds(ws.queue.items)
    assert total > one  # the bigger image costs more
    text = c.budget_estimate.text()
    assert "for the 2 waiting images" in text and "each" in text


def test_protect_saves_a_png_and_the_compare_view_shows_the_result(make_window, tmp_path, drive):
    out = tmp_path / "out"
    window, ws = make_window(prompts=FakePrompts(out))
    source = write_image(tmp_path / "in" / "cat.png")
    ws.add_paths([source])
    before_bytes = source.read_bytes()

    async def scenario():
        window.controls.protect_button.click()
        await ws.idle()

    drive(scenario())
    item = ws.queue.items[0]
    assert item.state is ItemState.DONE, item.status_text
    saved = out / "cat.protected.png"
    assert saved.is_file() and item.output_path == saved
    assert source.read_bytes() == before_bytes  # the original is untouched
    assert ws.settings.output_dir == str(out)  # chosen once, remembered
    canvas = window.compare.canvas
    assert not canvas.before.isNull() and not canvas.after.isNull()
    assert canvas.before.toImage() != canvas.after.toImage()
    assert "1 of 1 protected" in ws.summary


def test_a_double_click_on_protect_starts_one_batch(make_window, fake_engine, tmp_path, drive):
    """Both clicks of a quick double click can reach the window before the batch's task first runs; the
    window is busy from the first, so the second starts nothing (no second batch on the same files)."""
    window, ws = make_window(prompts=FakePrompts(tmp_path / "out"))
    ws.add_paths([write_image(tmp_path / "in" / "a.png")])
    jobs_before = len(fake_engine.jobs)

    async def scenario():
        window.controls.protect_all_button.click()
        assert ws.protect_all() is None  # asked again before the batch's task has run: nothing starts
        window.controls.protect_all_button.click()
        await ws.idle()

    drive(scenario())
    assert len(fake_engine.jobs) == jobs_before + 1
    assert ws.summary == "1 of 1 protected."
    assert ws.queue.items[0].state is ItemState.DONE


def test_stop_cancels_the_running_job_within_a_step(make_window, fake_engine, tmp_path, drive):
    fake_engine.step_delay_s = 0.02
    window, ws = make_window()
    ws.add_paths([write_image(tmp_path / "a.png"), write_image(tmp_path / "b.png", seed=1)])
    ws.settings.steps = 400  # 8 s at this pace: far longer than the test waits

    async def scenario():
        window.controls.protect_all_button.click()
        await until(lambda: ws.queue.items[0].progress > 0.02, message="progress")
        assert window.controls.stop_button.isEnabled()
        assert "1 of 2" in window.batch_label.text()
        stopped_at = time.monotonic()
        window.controls.stop_button.click()
        await ws.idle()
        return time.monotonic() - stopped_at

    took = drive(scenario())
    assert took < 1.0
    assert ws.queue.items[0].state is ItemState.STOPPED
    assert ws.queue.items[1].state is ItemState.WAITING  # the rest of the batch does not start
    assert len(fake_engine.steps_run) == 1 and fake_engine.steps_run[0] < 400
    assert not window.controls.stop_button.isEnabled()
    assert "stopped" in ws.summary


def test_a_corrupt_file_fails_inline_while_the_batch_completes(make_window, tmp_path, drive):
    out = tmp_path / "out"
    window, ws = make_window(prompts=FakePrompts(out))
    good1 = write_image(tmp_path / "in" / "one.png")
    bad = tmp_path / "in" / "two.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    good2 = write_image(tmp_path / "in" / "three.png", seed=3)
    ws.add_paths([good1, bad, good2])

    async def scenario():
        window.controls.protect_all_button.click()
        await ws.idle()

    drive(scenario())
    states = {i.name: i.state for i in ws.queue.items}
    assert states == {"one.png": ItemState.DONE, "two.png": ItemState.FAILED, "three.png": ItemState.DONE}
    failed = next(i for i in ws.queue.items if i.name == "two.png")
    assert failed.error and "\n" not in failed.error
    assert failed.status_text.startswith("can't be read: ")
    # the window keeps the CLI's journal of finished exports (engine.batch), beside them
    assert sorted(p.name for p in out.iterdir()) == [".artveil-journal.jsonl", "one.protected.png", "three.protected.png"]
    # found broken when added, it is never started: the batch is the two readable images
    assert "2 of 2 protected" in ws.summary and "1 left out: can't be read (two.png)" in ws.summary
    assert window.queue_panel.summary.isVisible()


def test_existing_outputs_are_never_overwritten_without_asking(make_window, tmp_path, drive):
    out = tmp_path / "out"
    prompts = FakePrompts(out, conflict_answer="keep_both")
    window, ws = make_window(prompts=prompts)
    ws.add_paths([write_image(tmp_path / "in" / "a.png")])
    out.mkdir()
    existing = out / "a.protected.png"
    existing.write_bytes(b"earlier work")

    async def scenario():
        window.controls.protect_all_button.click()
        await ws.idle()

    drive(scenario())
    assert ("conflicts", ["a.protected.png"]) in prompts.asked
    assert existing.read_bytes() == b"earlier work"
    assert ws.queue.items[0].output_path.name == "a.protected-2.png"
    kept = (out / "a.protected-2.png").read_bytes()

    # Protecting it again with the same settings finds the kept copy: no question about the other file, no third.
    asked = len(prompts.asked)
    ws.queue.items[0].state = ItemState.WAITING
    drive(scenario())
    assert not [q for q in prompts.asked[asked:] if q[0] == "conflicts"]
    assert ws.queue.items[0].state == ItemState.DONE and ws.queue.items[0].output_path.name == "a.protected-2.png"
    assert sorted(p.name for p in out.glob("*.png")) == ["a.protected-2.png", "a.protected.png"]
    assert (out / "a.protected-2.png").read_bytes() == kept and existing.read_bytes() == b"earlier work"

    # Once the copy is edited by hand it is not taken for done: the question comes again, and cancelling it starts nothing.
    (out / "a.protected-2.png").write_bytes(kept + b"signed")
    prompts.conflict_answer = None
    ws.queue.items[0].state = ItemState.WAITING
    assert ws.protect_all() is None
    assert ("conflicts", ["a.protected.png"]) in prompts.asked[asked:]


def test_the_output_folder_of_inputs_never_replaces_an_original(make_window, tmp_path, drive):
    folder = tmp_path / "art"
    window, ws = make_window(prompts=FakePrompts(folder))
    original = write_image(folder / "x.protected.png")  # an input named like an output
    ws.add_paths([write_image(folder / "x.png"), original])
    before = original.read_bytes()

    async def scenario():
        ws.protect_all()
        await ws.idle()

    drive(scenario())
    assert original.read_bytes() == before
    assert all(i.state is ItemState.DONE for i in ws.queue.items)


def test_choosing_jpeg_warns_that_it_weakens_protection(make_window):
    window, ws = make_window()
    c = window.controls
    assert not c.format_warning.isVisibleTo(window)
    c.format_combo.setCurrentIndex(c.format_combo.findData("jpeg"))
    assert ws.settings.export_format == "jpeg"
    assert c.format_warning.isVisibleTo(window) and "weakens" in c.format_warning.text()


def test_export_saves_again_in_the_chosen_format(make_window, tmp_path, drive):
    out = tmp_path / "out"
    window, ws = make_window(prompts=FakePrompts(out))
    ws.add_paths([write_image(tmp_path / "in" / "a.png")])

    async def scenario():
        ws.protect_all()
        await ws.idle()
        window.controls.format_combo.setCurrentIndex(window.controls.format_combo.findData("jpeg"))
        ws.prompts.conflict_answer = "overwrite"
        window.export_action.trigger()
        await ws.idle()

    drive(scenario())
    # The fake protection is random ±8-level noise, which JPEG cannot hold within 8 levels: the export is
    # refused with the reason on the row, and nothing past the budget is written (issue 31).
    assert sorted(p.name for p in out.iterdir()) == [".artveil-journal.jsonl", "a.protected.png"]
    item = ws.queue.items[0]
    assert "beyond the 8-level strength; not written" in item.note

    async def again_as_webp():
        window.controls.format_combo.setCurrentIndex(window.controls.format_combo.findData("webp"))
        window.export_action.trigger()
        await ws.idle()

    drive(again_as_webp())
    assert Image.open(out / "a.protected.webp").format == "WEBP"
    assert np.array_equal(np.asarray(Image.open(out / "a.protected.webp")), item.protected)


def _one_protected_image(make_window, tmp_path, drive):
    """A window whose queue holds one image, protected through the Protect all button."""
    window, ws = make_window()
    ws.add_paths([write_image(tmp_path / "a.png")])

    async def protect():
        window.controls.protect_all_button.click()
        await ws.idle()

    drive(protect())
    assert ws.queue.items[0].protected is not None
    return window, ws, window.controls


def test_purification_preview_shows_two_images_and_a_summary(make_window, fake_engine, tmp_path, drive):
    window, ws, c = _one_protected_image(make_window, tmp_path, drive)

    async def scenario():
        c.purifier_combo.setCurrentIndex(c.purifier_combo.findData("jpeg"))
        c.purifier_level.setValue(2)
        assert c.preview_button.isEnabled()
        c.preview_button.click()
        await ws.idle()

    drive(scenario())
    preview = window.compare.purify
    assert window.compare.stack.currentWidget() is preview
    assert not preview.original_pane.pixmap.isNull() and not preview.protected_pane.pixmap.isNull()
    assert "jpeg" in preview.original_pane.title
    text = preview.summary.text()
    assert "80 %" in text and "survives" in text
    # Only the chosen purifier ran, at the chosen level (heavy JPEG = quality 50).
    assert fake_engine.purified == [("jpeg", {"quality": 50})]


def test_stop_ends_a_long_purification_preview(make_window, fake_engine, tmp_path, drive):
    window, ws, c = _one_protected_image(make_window, tmp_path, drive)

    async def scenario():
        fake_engine.preview_delay_s = 30.0  # far longer than the test waits
        c.preview_button.click()
        await until(lambda: "preview_purifier" in fake_engine.calls, message="preview started")
        assert c.stop_button.isEnabled()
        stopped_at = time.monotonic()
        c.stop_button.click()
        await ws.idle()
        return time.monotonic() - stopped_at

    took = drive(scenario())
    assert took < 1.0
    assert ws.queue.items[0].report is None  # no half report shown
    assert ws.summary == "Purification preview stopped."
    assert not c.stop_button.isEnabled() and c.preview_button.isEnabled()


def test_compare_view_split_handle_zoom_and_space(make_window, tmp_path, drive):
    window, ws = make_window()
    ws.add_paths([write_image(tmp_path / "a.png", size=(120, 160))])

    async def scenario():
        ws.protect_all()
        await ws.idle()

    drive(scenario())
    canvas = window.compare.canvas
    rect = canvas.image_rect()
    start = QPoint(int(canvas.split_x()), int(rect.center().y()))
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(canvas, QPoint(int(rect.left() + rect.width() * 0.2), start.y()))
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                       QPoint(int(rect.left() + rect.width() * 0.2), start.y()))
    assert canvas.split == pytest.approx(0.2, abs=0.03)

    fit_scale = canvas.scale()
    window.compare.actual_button.click()
    assert canvas.scale() == pytest.approx(1 / canvas.devicePixelRatioF())
    assert fit_scale > canvas.scale()  # a 160 px image is magnified to fit the view
    before_pan = canvas.image_rect().topLeft()
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(50, 50))
    QTest.mouseMove(canvas, QPoint(90, 70))
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(90, 70))
    assert canvas.image_rect().topLeft() - before_pan == QPointF(40, 20)

    window.queue_panel.view.setFocus()
    QTest.keyClick(window.queue_panel.view, Qt.Key.Key_Space)
    assert canvas.mode == "before"
    QTest.keyClick(window.queue_panel.view, Qt.Key.Key_Space)
    assert canvas.mode == "after"
    assert window.compare.after_button.isChecked()


def test_status_bar_names_the_device_the_model_and_the_batch(make_window, fake_engine, tmp_path, drive):
    fake_engine.step_delay_s = 0.01
    window, ws = make_window()
    assert "CPU" in window.device_label.text() and "slow" in window.device_label.toolTip() + window.device_label.text()
    assert "demo" in window.model_label.text() and "no real protection" in window.model_label.text()
    ws.add_paths([write_image(tmp_path / n, seed=i) for i, n in enumerate(["a.png", "b.png"])])
    seen = []
    ws.batch_text_changed.connect(seen.append)

    async def scenario():
        ws.settings.steps = 60
        ws.protect_all()
        await ws.idle()

    drive(scenario())
    assert any(t.startswith("1 of 2 · time left") for t in seen) and any(t.startswith("2 of 2 · time left") for t in seen)
    assert window.batch_label.text() == ""


def test_settings_and_geometry_persist_between_sessions(make_window, app_config_dir):
    window, ws = make_window()
    window.controls.strength_slider.setValue(4)
    window.controls.budget_slider.setValue(5)
    window.resize(1000, 650)
    window.close()

    window2, ws2 = make_window()
    assert ws2.settings.strength_levels == 4.0 and ws2.settings.steps == 50
    assert window2.controls.strength_value.text() == "4 levels · subtle"
    # The offscreen screen is smaller than the window, so Qt may clamp the width; the height is kept.
    assert window2.height() == 650 and 960 <= window2.width() <= 1000
    assert (app_config_dir / "settings.ini").is_file()


def test_without_a_model_the_model_dialog_opens_and_offers_the_demo(make_window, fake_engine, drive):
    window, ws = make_window(model_source=None)
    dialog = window._model_dialog
    assert dialog is not None and dialog.isVisible()
    assert not window.controls.protect_all_button.isEnabled()

    async def scenario():
        await until(lambda: dialog.choices is not None, message="model choices listed")
        assert "NO real protection" in dialog.demo_note.text()
        assert dialog.cache_combo.itemText(1) == "Stable Diffusion 1.5 (sd15)"
        dialog.demo_option.setChecked(True)
        dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
        await ws.idle()

    drive(scenario())
    assert ws.model is not None and ws.model.is_demo
    assert ws.settings.model_source == "tiny"


def test_a_model_that_fails_to_load_is_reported_not_raised(make_window, drive):
    window, ws = make_window()

    async def scenario():
        ws.load_model("broken")
        await ws.idle()

    drive(scenario())
    assert ws.model is None
    assert "not a diffusers folder" in window.model_label.text()
    assert ws.settings.model_source == "tiny"  # the last good choice stays


def test_a_finished_job_teaches_set_up_step_and_saving_times():
    from app.progress import JobClock, learned_times

    now = [0.0]
    clock = JobClock([("setup", 1.0), ("steps", 10.0), ("saving", 1.0)], "steps", 10, clock=lambda: now[0])
    # Set-up 6 s (including step 1, 1 s), then 1 s a step, then 2 s to write the file.
    for step in range(1, 11):
        now[0] = 5.0 + step
        clock.step(step, 10)
    now[0] = 15.0
    clock.enter("saving")
    now[0] = 17.0
    clock.finish()
    times = learned_times(clock, 1.0, "setup", "steps", ("saving",))
    assert times.step_s == pytest.approx(1.0)
    assert times.setup_s == pytest.approx(5.0)
    assert times.finish_s == pytest.approx(2.0)
    assert times.total(10) == pytest.approx(17.0)  # the whole job, as it took
    # Too short a run to tell a step from the set-up teaches nothing.
    short = JobClock([("setup", 1.0), ("steps", 1.0), ("saving", 1.0)], "steps", 1, clock=lambda: now[0])
    short.step(1, 1)
    short.finish()
    assert learned_times(short, 1.0, "setup", "steps", ("saving",)) is None


def test_the_window_resumes_a_folder_through_the_batch_journal(make_window, fake_engine, tmp_path, drive):
    """Protecting again with the same settings shows the earlier export (no question, no work, the file
    untouched); other settings make it a conflict the artist is asked about."""
    out = tmp_path / "out"
    prompts = FakePrompts(out, conflict_answer="skip")
    window, ws = make_window(prompts=prompts)
    ws.add_paths([write_image(tmp_path / "in" / "a.png"), write_image(tmp_path / "in" / "b.png", seed=3)])

    async def protect_all():
        ws.protect_all()
        await ws.idle()

    drive(protect_all())
    exported = {p.name: p.read_bytes() for p in out.glob("*.protected.png")}
    assert sorted(exported) == ["a.protected.png", "b.protected.png"]
    jobs_before = len(fake_engine.jobs)
    for item in ws.queue.items:
        item.state, item.protected, item.original = ItemState.WAITING, None, None

    drive(protect_all())
    assert not any(kind == "conflicts" for kind, _ in prompts.asked)
    for item in ws.queue.items:
        assert item.state is ItemState.DONE and "already exported" in item.note, item.note
        assert item.protected is not None and item.original is not None  # shown from the files
    assert {p.name: p.read_bytes() for p in out.glob("*.protected.png")} == exported
    assert len(fake_engine.jobs) == jobs_before  # nothing was protected again
    assert "2 of 2 protected" in ws.summary

    ws.settings.strength_levels = 4  # other settings: the files are in the way, and the artist is asked
    for item in ws.queue.items:
        item.state = ItemState.WAITING
    drive(protect_all())
    assert ("conflicts", ["a.protected.png", "b.protected.png"]) in prompts.asked
    assert {p.name: p.read_bytes() for p in out.glob("*.protected.png")} == exported  # skipped: untouched
    assert all("skipped" in item.note for item in ws.queue.items)
