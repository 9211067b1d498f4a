"""Issue 29: the window tells the truth (time, preview verdict, small defects) and the demo answers quickly.

A fake engine stands in for the real one (tests/conftest_app.py); its demo model reports the built-in
proxy's own size, 64 px, as the real backend does (app.backend.native_size).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.backend import ModelSummary
from app.viewmodel import ItemState
from conftest_app import *  # noqa: F401,F403 - fixtures
from conftest_app import FakeBackend, write_image

pytestmark = pytest.mark.timeout(60)


class DemoBackend(FakeBackend):
    """The fake engine with the built-in demo model as the real backend describes it: trained at 64 px."""

    def load_model(self, source):
        summary = super().load_model(source)
        return replace(summary, native_size=64, is_demo=True) if source in ("proxy", "tiny") else summary


def demo_window(make_window, fake_engine, **kwargs):
    return make_window(backend_factory=lambda: DemoBackend(fake_engine), model_source="proxy", **kwargs)


# ---- 1. the demo answers in a minute -----------------------------------------------------------------

def test_the_demo_model_protects_at_its_own_64_px_size_and_says_so(make_window, fake_engine, tmp_path, drive):
    window, ws = demo_window(make_window, fake_engine)
    ws.add_paths([write_image(tmp_path / "a.png", size=(512, 512))])
    c = window.controls

    async def scenario():
        c.protect_all_button.click()
        await ws.idle()

    drive(scenario())
    assert fake_engine.jobs[0].working_size == 64  # not 512: 60x less work on a model trained at 64 px
    assert ws.queue.items[0].state is ItemState.DONE
    note = c.detail_note.text()
    assert "trained at 64 px" in note and "does not protect against real models" in note
    assert c.detail_combo.currentText().startswith("Fast · 64 px")


def test_a_real_model_keeps_its_own_512_px_size(make_window, fake_engine, tmp_path, drive):
    window, ws = make_window(model_source="/models/sd15")
    assert ws.job_settings().working_size == 512
    texts = [window.controls.detail_combo.itemText(i) for i in range(window.controls.detail_combo.count())]
    assert [t.split(" · ")[:2] for t in texts] == [["Fast", "256 px"], ["Standard", "512 px"], ["Fine", "768 px"]]


# ---- 4. an honest preview verdict --------------------------------------------------------------------

def _protect_first(window, ws, tmp_path, drive, size=(64, 64)):
    ws.add_paths([write_image(tmp_path / "a.png", size=size)])

    async def scenario():
        window.controls.protect_all_button.click()
        await ws.idle()
        ws.select(ws.queue.items[0])

    drive(scenario())
    return ws.queue.items[0]


def test_the_preview_on_the_demo_names_its_purifier_and_does_not_claim_protection(make_window, fake_engine, tmp_path, drive):
    window, ws = demo_window(make_window, fake_engine)
    _protect_first(window, ws, tmp_path, drive)
    c = window.controls

    async def scenario():
        c.purifier_combo.setCurrentIndex(c.purifier_combo.findData("sdedit"))
        c.preview_button.click()
        await ws.idle()

    drive(scenario())
    text = window.compare.purify.summary.text()
    assert "sdedit" in text  # the purifier it ran, by the label the engine gave it
    assert "80 %" in text and "of the change" in text
    assert "strongest" not in text and "holds up well" in text  # one clean-up ran: no "strongest tried"
    assert "not how well the image is protected" in text
    assert "no protection yet keeps a mimic from learning the style" in text  # docs/efficacy.md, for the demo


def test_on_an_unmeasured_model_the_preview_says_efficacy_is_not_measured(make_window, fake_engine, tmp_path, drive):
    window, ws = make_window(model_source="/models/sd15")
    _protect_first(window, ws, tmp_path, drive)

    async def scenario():
        window.controls.preview_button.click()
        await ws.idle()

    drive(scenario())
    text = window.compare.purify.summary.text()
    assert "has not been measured" in text and "not how well the image is protected" in text
    assert "strongest" not in text
