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
