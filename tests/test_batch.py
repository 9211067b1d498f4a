"""engine.batch: the batch rules every face (window, CLI, evaluation) gets, checked with a stand-in optimizer.

The stand-in protector adds a fixed pattern within the strength, so these tests need no model and no torch; the real
optimizer through the same pipeline is checked in test_app_real_engine.py (window and CLI give the same bytes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import batch as B
from engine.errors import ArtveilError
from engine.events import Failed, Progress, Result
from engine.jobs import Job, ProtectProgress, ProtectResult, ProtectSettings
from engine.journal import JOURNAL_NAME

SETTINGS = ProtectSettings(method="advdm", strength_levels=4, steps=3, preview_every=0, measure_objective=False)


def write(path: Path, seed: int = 0, size=(40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
    return path


class StandIn:
    """A protector (engine.protect_set.Protector) with no model: +/-strength checkerboard; with
    stop_at=(n, job) it presses Stop at its n-th image."""

    def __init__(self, calls: list, stop_at: tuple[int, Job] | None = None):
        self.calls, self.stop_at = calls, stop_at

    def begin(self, settings, clean):
        pass

    def protect(self, index, pixels, settings, job):
        self.calls.append(pixels.shape)
        for step in range(1, settings.steps + 1):
            if self.stop_at is not None and len(self.calls) == self.stop_at[0] and step == 2:
                self.stop_at[1].cancel()
            job.check()
            yield ProtectProgress(step, settings.steps, {}, 0.0, None)
        yy, xx = np.indices(pixels.shape[:2])
        sign = np.where((yy + xx) % 2 == 0, 1, -1)[..., None]
        out = np.clip(pixels.astype(int) + sign * int(settings.strength_levels), 0, 255).astype(np.uint8)
        yield ProtectResult(pixels, out, settings, {"psnr": 40.0, "ssim": 0.99, "linf_levels": 4.0}, 0.0, settings.steps)

    def finished(self, index, protected):
        pass


def run(inputs, out, job=None, calls=None, **options):
    calls = [] if calls is None else calls
    job = job or Job()
    return list(B.protect_batch(StandIn(calls), inputs, SETTINGS, B.BatchOptions(out, model_source="stand-in", **options),
                                job))


def of(events, kind):
    """The events of one type, or (for ImageDone and BatchDone) the values of the Results that carry one."""
    if kind in (B.ImageDone, B.BatchDone):
        return [e.value for e in events if isinstance(e, Result) and isinstance(e.value, kind)]
    return [e for e in events if isinstance(e, kind)]


def test_names_depend_on_the_batch_alone_so_a_rerun_resumes(tmp_path):
    a_jpg = tmp_path / "in" / "a.jpg"
    write(tmp_path / "in" / "tmp.png").rename(a_jpg)
    inputs = [a_jpg, write(tmp_path / "in" / "a.png", 1), write(tmp_path / "in" / "b.png", 2)]
    out = tmp_path / "out"
    first = run(inputs, out)
    assert [e.target.name for e in of(first, B.ImageDone)] == ["a.protected.png", "a.protected-2.png", "b.protected.png"]
    written = {p.name: p.read_bytes() for p in out.iterdir() if p.name != JOURNAL_NAME}
    calls: list = []
    second = run(inputs, out, calls=calls)
    assert calls == []  # nothing protected again
    assert [e.skipped for e in of(second, B.ImageDone)] == ["already exported by an earlier run"] * 3
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != JOURNAL_NAME} == written
    assert of(second, B.BatchDone)[0].skipped == 3


def test_the_budget_holds_on_the_exported_file(tmp_path):
    source = write(tmp_path / "in" / "fox.png", 3)
    run([source], tmp_path / "out")
    exported = np.asarray(Image.open(tmp_path / "out" / "fox.protected.png")).astype(int)
    change = np.abs(exported - np.asarray(Image.open(source)).astype(int))
    assert 0 < change.max() <= SETTINGS.strength_levels


@pytest.mark.parametrize("policy, outcome", [("error", "failed"), ("skip", "skipped"), ("keep_both", "kept"),
                                             ("overwrite", "replaced")])
def test_an_existing_file_is_handled_as_asked_and_never_lost_unasked(tmp_path, policy, outcome):
    source = write(tmp_path / "in" / "fox.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "fox.protected.png").write_bytes(b"earlier work")
    events = run([source], out, on_existing=policy)
    left = (out / "fox.protected.png").read_bytes()
    if outcome == "failed":
        (failure,) = of(events, Failed)
        assert "fox.protected.png: already exists" in failure.message and left == b"earlier work"
    elif outcome == "skipped":
        assert of(events, B.ImageDone)[0].skipped and left == b"earlier work"
        assert not (out / "fox.protected-2.png").exists()
    elif outcome == "kept":
        assert of(events, B.ImageDone)[0].target.name == "fox.protected-2.png" and left == b"earlier work"
    else:
        assert left != b"earlier work" and Image.open(out / "fox.protected.png").size == (48, 40)


def test_a_kept_copy_is_found_again_so_protecting_again_neither_asks_nor_makes_a_third(tmp_path):
    """"Keep both" wrote fox.protected-2.png beside someone else's fox.protected.png: the next run with the same
    settings finds that copy as this input's finished export (no question about fox.protected.png, no -3), and
    once the copy is edited it is no longer taken for done."""
    source = write(tmp_path / "in" / "fox.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "fox.protected.png").write_bytes(b"earlier work")
    run([source], out, on_existing="keep_both")
    copy = out / "fox.protected-2.png"
    kept = copy.read_bytes()
    fingerprint = B.fingerprint_for(SETTINGS, B.BatchOptions(out, model_source="stand-in"))
    (planned,) = B.plan_batch([source], out, "png", fingerprint)
    assert planned.target == copy and planned.done_before and not planned.conflict
    calls: list = []
    again = run([source], out, calls=calls, on_existing="keep_both")
    assert calls == [] and of(again, B.ImageDone)[0].target == copy
    assert of(again, B.ImageDone)[0].skipped == "already exported by an earlier run"
    assert not (out / "fox.protected-3.png").exists() and copy.read_bytes() == kept
    # Given a plan that did not read the journal, the batch finds the copy itself.
    blind = tuple(B.plan_batch([source], out, "png"))
    assert of(run([source], out, calls=calls, plan=blind), B.ImageDone)[0].target == copy and calls == []
    copy.write_bytes(kept + b"signed by hand")
    (planned,) = B.plan_batch([source], out, "png", fingerprint)
    assert planned.target == out / "fox.protected.png" and planned.conflict
    again = run([source], out, calls=calls, on_existing="keep_both")
    assert len(calls) == 1 and of(again, B.ImageDone)[0].target == out / "fox.protected-3.png"
    assert (out / "fox.protected.png").read_bytes() == b"earlier work" and copy.read_bytes().endswith(b"signed by hand")


def test_a_later_input_is_never_planned_onto_a_kept_copy(tmp_path):
    """fox.png's export is the kept copy fox.protected-2.png; fox.jpg, added later, would get that name in the
    batch's own numbering: it gets the next one, and fox.png's copy is not in question."""
    source = write(tmp_path / "in" / "fox.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "fox.protected.png").write_bytes(b"earlier work")
    run([source], out, on_existing="keep_both")
    kept = (out / "fox.protected-2.png").read_bytes()
    fox_jpg = tmp_path / "in" / "fox.jpg"
    write(tmp_path / "in" / "tmp.png", 4).rename(fox_jpg)
    fingerprint = B.fingerprint_for(SETTINGS, B.BatchOptions(out, model_source="stand-in"))
    plan = B.plan_batch([source, fox_jpg], out, "png", fingerprint)
    assert [(p.target.name, p.done_before, p.conflict) for p in plan] == [
        ("fox.protected-2.png", True, False), ("fox.protected-3.png", False, False)]
    run([source, fox_jpg], out, on_existing="overwrite")
    assert (out / "fox.protected-2.png").read_bytes() == kept and (out / "fox.protected-3.png").is_file()
    assert (out / "fox.protected.png").read_bytes() == b"earlier work"


def test_another_inputs_numbered_export_is_never_taken_for_this_ones(tmp_path):
    """a.jpg's export is a.protected-2.png (a.png has the plain name): deleting a.png's export must make the
    next run protect a.png again, not report a.jpg's copy as a.png's."""
    a_jpg = tmp_path / "in" / "a.jpg"
    write(tmp_path / "in" / "tmp.png").rename(a_jpg)
    a_png = write(tmp_path / "in" / "a.png", 1)
    out = tmp_path / "out"
    run([a_png, a_jpg], out)
    (out / "a.protected.png").unlink()
    calls: list = []
    again = run([a_png, a_jpg], out, calls=calls)
    assert len(calls) == 1 and [d.target.name for d in of(again, B.ImageDone)] == ["a.protected.png", "a.protected-2.png"]
    assert [bool(d.skipped) for d in of(again, B.ImageDone)] == [False, True]


def test_an_input_named_like_an_output_is_an_original_and_never_written(tmp_path):
    folder = tmp_path / "art"
    fox = write(folder / "fox.png")
    lookalike = write(folder / "fox.protected.png", 5)
    before = lookalike.read_bytes()
    plan = B.plan_batch([lookalike, fox], folder, "png")
    assert [p.target.name for p in plan] == ["fox.protected.protected.png", "fox.protected-2.png"]
    run([lookalike, fox], folder, on_existing="overwrite", redo=True)
    assert lookalike.read_bytes() == before


def test_stop_ends_the_current_image_unwritten_and_starts_no_other(tmp_path):
    inputs = [write(tmp_path / "in" / f"{n}.png", k) for k, n in enumerate("abc")]
    out, job, calls = tmp_path / "out", Job(), []
    events = list(B.protect_batch(StandIn(calls, (2, job)), inputs, SETTINGS, B.BatchOptions(out), job))
    assert [(type(e).__name__, e.index) for e in events if not isinstance(e, Progress)] == [
        ("Started", 0), ("Result", 0), ("Started", 1), ("Stopped", 1), ("Result", None)]
    steps_of_b = [e.step for e in events if isinstance(e, Progress) and e.phase == "protect" and e.index == 1]
    assert steps_of_b == [1]  # stopped within the step Stop was pressed in
    assert sorted(p.name for p in out.iterdir()) == [JOURNAL_NAME, "a.protected.png"]
    assert of(events, B.BatchDone)[0].stopped and len(calls) == 2


def test_a_broken_file_is_one_line_and_the_batch_goes_on(tmp_path):
    bad = tmp_path / "in" / "broken.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    good = write(tmp_path / "in" / "good.png")
    events = run([bad, good], tmp_path / "out")
    (failure,) = of(events, Failed)
    assert failure.message.startswith("broken.png") and "\n" not in failure.message
    assert of(events, B.ImageDone)[0].source == good
    done = of(events, B.BatchDone)[0]
    assert (done.done, done.failed, done.stopped) == (1, 1, False)


def test_a_second_batch_into_the_same_folder_is_refused_while_one_runs(tmp_path):
    source = write(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    first = B.protect_batch(StandIn([]), [source], SETTINGS, B.BatchOptions(out), Job())
    next(first)  # holds the folder's journal now
    with pytest.raises(ArtveilError, match="another"):
        run([source], out)
    list(first)


def test_the_consumer_example_of_the_engine_api_runs_as_written(tmp_path, capsys):
    """docs/engine-api.md's example of a consumer of the event stream, run on a stand-in protector: what
    the document shows is what the engine does."""
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "engine-api.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    inputs = [write(tmp_path / "in" / "fox.png"), tmp_path / "in" / "missing.png"]
    exec(code, {"model": StandIn([]), "inputs": inputs, "settings": SETTINGS, "out_dir": tmp_path / "out"})
    printed = capsys.readouterr().out
    assert "1: fox.png" in printed and "saved fox.protected.png" in printed
    assert "error: missing.png" in printed and "1 protected, 1 failed" in printed
