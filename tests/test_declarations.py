"""A plug-in is one declaration, and so are the strength and budget limits: every face reads the one place.

A dummy method and a dummy purifier enter the registries by one line each (monkeypatch undoes them); the
command line's help, `artveil purify`, `engine.purify.purify` and the window's lists then all know them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.backend import method_choices, purifier_choices
from conftest_app import *  # noqa: F401,F403 - fixtures
from conftest_app import FakeBackend, write_image
from engine.errors import ArtveilError
from engine.images import load_image
from engine.jobs import BUDGET_RANGE, BUDGET_STEP, STRENGTH_RANGE, ProtectSettings
from engine.methods import METHODS, ProtectionMethod
from engine.purify import PURIFIERS, Param, Purifier, parse_purifier, purify

pytestmark = pytest.mark.timeout(120)


def _invert(model, rgb: np.ndarray, seed: int, job=None, *, amount: float) -> np.ndarray:
    """Move each value `amount` of the way to its negative."""
    x = rgb.astype(np.float64)
    return np.round(x + amount * (255.0 - 2.0 * x)).astype(np.uint8)


INVERT = Purifier(
    "invert", "Invert (test only)", "Turns the picture into its negative.", _invert,
    (Param("amount", 1.0, "share of the way to the negative", float, 0.0, 1.0),),
    knob="amount", levels=(0.25, 0.5, 1.0), needs_model=False,
)


class Still(ProtectionMethod):
    name = "still"
    label = "Still (test only)"
    summary = "Leaves the picture as it is."

    def loss(self, ctx, x, generator):
        return (x * 0).sum(), {}


@pytest.fixture
def plugins(monkeypatch):
    """The dummy method and purifier, each added by its one declaration."""
    monkeypatch.setitem(METHODS, Still.name, Still)
    monkeypatch.setitem(PURIFIERS, INVERT.name, INVERT)


def _help(capsys, *argv) -> str:
    from engine.cli import main

    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_a_declared_method_and_purifier_appear_in_the_command_lines_help(plugins, capsys):
    protect_help = _help(capsys, "protect")
    assert "still" in protect_help and "Leaves the picture as it is." in protect_help
    purify_help = " ".join(_help(capsys, "purify").split())  # as read, without the wrapping
    assert "invert" in purify_help and "Turns the picture into its negative." in purify_help
    # Its knob with the range, unit and default of its declaration.
    assert "invert:AMOUNT sets amount 0–1 (share of the way to the negative; default 1)" in purify_help


def test_a_declared_purifier_runs_through_purify_and_the_command_line(plugins, tmp_path):
    from engine.cli import main

    img = np.array([[[0, 100, 255]]], np.uint8).repeat(32, 0).repeat(32, 1)
    assert purify(None, img, "invert")[0, 0].tolist() == [255, 155, 0]  # the declared default, amount 1
    assert parse_purifier("invert:0.5") == ("invert", {"amount": 0.5})
    with pytest.raises(ArtveilError, match=r"purifier invert: amount=2 is not a number in 0–1; its settings: amount 0–1"):
        purify(None, img, "invert", amount=2)

    source = write_image(tmp_path / "in" / "a.png", size=(32, 32))
    assert main(["purify", str(source), "--purifier", "invert:1", "--out", str(tmp_path / "out")]) == 0
    written = load_image(tmp_path / "out" / "a.purified-invert.png").pixels
    assert np.array_equal(written, 255 - load_image(source).pixels)


def test_purifier_parameters_outside_their_declaration_are_refused_in_one_line():
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ArtveilError) as unknown:
        purify(None, img, "jpeg", steps=5)
    assert unknown.value.message == ("purifier jpeg: unknown parameter 'steps'; its settings: "
                                     "quality 1–100 (JPEG quality; default 75).")
    with pytest.raises(ArtveilError, match=r"purifier jpeg: quality=0 is not a whole number in 1–100"):
        purify(None, img, "jpeg", quality=0)
    with pytest.raises(ArtveilError, match=r"purifier sdedit: strength=1.5 is not a number in \(0, 1\]") as wide:
        parse_purifier("sdedit:1.5")
    assert "\n" not in wide.value.message and "steps 1–1000" in wide.value.message


class RegistryBackend(FakeBackend):
    """The fake engine, but with the engine's own method and purifier lists (read on the engine thread)."""

    def engine_info(self):
        return replace(super().engine_info(), methods=method_choices(), purifiers=purifier_choices())


def test_a_declared_method_and_purifier_appear_in_the_windows_lists(plugins, make_window, fake_engine, qtbot):
    window, ws = make_window(backend_factory=lambda: RegistryBackend(fake_engine))
    c = window.controls
    methods = [c.method_combo.itemData(i) for i in range(c.method_combo.count())]
    purifiers = [c.purifier_combo.itemData(i) for i in range(c.purifier_combo.count())]
    assert methods == list(METHODS) and "still" in methods
    assert purifiers == list(PURIFIERS) and "invert" in purifiers

    c.method_combo.setCurrentIndex(methods.index("still"))
    assert c.method_combo.currentText() == "Still"
    assert c.method_summary.text() == "Test only. Leaves the picture as it is."
    assert ws.job_settings().method == "still"

    c.purifier_combo.setCurrentIndex(purifiers.index("invert"))
    c.purifier_level.setFocus()
    qtbot.keyClick(c.purifier_level, Qt.Key.Key_End)  # heavy: the declaration's third level
    assert c.purifier_level_value.text() == "Heavy (amount 1.0)"
    assert [(r.name, r.params) for r in ws.purifier_requests()] == [("invert", {"amount": 1.0})]


def test_a_stored_strength_above_the_old_slider_end_shows_on_the_slider_and_its_label(make_window, qtbot):
    from app.settings import Settings

    stored = Settings()
    stored.strength_levels, stored.steps = 24, 1000
    stored.sync()

    window, ws = make_window()
    c = window.controls
    assert c.strength_slider.value() == 24 and c.strength_value.text() == "24 levels"
    assert c.budget_slider.value() * 10 == 1000 and c.budget_value.text() == "1000 steps"
    assert ws.job_settings().strength_levels == 24.0

    # The slider's end is the engine's limit: the strongest the window offers is a job validation accepts.
    c.strength_slider.setFocus()
    qtbot.keyClick(c.strength_slider, Qt.Key.Key_End)
    assert c.strength_slider.value() == STRENGTH_RANGE[1]
    assert c.strength_value.text() == f"{STRENGTH_RANGE[1]} levels · maximum"
    assert ws.settings.strength_levels == STRENGTH_RANGE[1]
    assert c.budget_slider.maximum() * 10 == BUDGET_RANGE[1]

    from engine.protect import validate_settings

    validate_settings(ProtectSettings(strength_levels=STRENGTH_RANGE[1]))
    with pytest.raises(ArtveilError, match="strength must be more than 0 and at most 32 pixel levels"):
        validate_settings(ProtectSettings(strength_levels=STRENGTH_RANGE[1] + 1))


def test_the_max_presets_say_and_reach_the_end_of_their_sliders(make_window, qtbot):
    """The strongest preset the window names is where its slider ends: "Max 32" and "Max 1000", not a
    smaller number under a slider that goes further."""
    window, ws = make_window()
    c = window.controls
    top_strength, top_budget = c.strength_presets[-1], c.budget_presets[-1]
    assert top_strength.text() == f"Max {c.strength_slider.maximum()}" == f"Max {STRENGTH_RANGE[1]}"
    assert top_budget.text() == f"Max {c.budget_slider.maximum() * BUDGET_STEP}" == f"Max {BUDGET_RANGE[1]}"

    qtbot.mouseClick(top_strength, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(top_budget, Qt.MouseButton.LeftButton)
    assert c.strength_slider.value() == c.strength_slider.maximum()
    assert c.budget_slider.value() == c.budget_slider.maximum()
    assert c.strength_value.text() == f"{STRENGTH_RANGE[1]} levels · maximum"
    assert c.budget_value.text() == f"{BUDGET_RANGE[1]} steps"
    job = ws.job_settings()
    assert (job.strength_levels, job.steps) == (STRENGTH_RANGE[1], BUDGET_RANGE[1])
