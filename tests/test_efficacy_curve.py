"""The efficacy curves (issue 27): their measures on hand-made inputs, the Random control, the plan and its
validation, and the outputs (CSV schema, plot, contact sheets) of a toy curve.

Each measure must move in its stated direction when the mimic's samples are damaged. `responds` is that
specification written once; the tests apply it to the real measures and to deliberately broken ones (one that
ignores its input, one with its direction flipped), which it must reject.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from engine.cli import build_parser, main as cli_main
from engine.errors import ArtveilError
from engine.evaluation import curve as CV
from engine.evaluation import measures as M
from engine.evaluation.judges import load_style_judge
from engine.proxy.data import render_set
from engine.proxy.styles import HELD_OUT_STYLE

pytestmark = pytest.mark.xdist_group("proxy_toy_model")


@pytest.fixture(scope="module")
def artist_renders():
    """Clean renders of the artist's style: 48 'samples' of a perfect mimic and a reference set."""
    ref = render_set([HELD_OUT_STYLE], 160, 64, use="artist", offset=CV.REFERENCE_OFFSET).images
    return ref[:48], ref[48:]


def _noisy(images, sigma: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(img.astype(np.float64) + rng.normal(0, sigma * 255, img.shape), 0, 255).round().astype(np.uint8)
            for img in images]


def responds(score, direction: str, clean, damaged_levels) -> bool:
    """The specification of a damage measure: score(clean) is on the mimic's side of score(damaged) and the
    scores move monotonically toward the artist's side as the damage grows. score: images -> float."""
    values = [score(clean)] + [score(d) for d in damaged_levels]
    steps = zip(values, values[1:])
    return all(M.better(direction, b, a) for a, b in steps)


def _measures(judge, space, reference, clean):
    return {
        "accuracy": lambda imgs: judge.style_accuracy(np.stack(imgs), HELD_OUT_STYLE),
        "frechet": lambda imgs: M.frechet(judge, space, imgs, reference),
        "paired_ssim": lambda imgs: M.paired_ssim(imgs, clean),
        "hf_ratio": lambda imgs: M.hf_ratio(imgs, clean),
    }


def test_every_measure_moves_in_its_stated_direction_as_the_samples_are_damaged(artist_renders):
    clean, reference = artist_renders
    judge = load_style_judge()
    space = M.FeatureSpace.fit(judge.features(np.stack(reference)))
    damaged = [_noisy(clean, s) for s in (0.05, 0.15, 0.3)]
    for name, score in _measures(judge, space, reference, clean).items():
        if name == "accuracy":  # the judge was trained on degraded renders: it shrugs off light noise
            levels = [_noisy(clean, 0.3), [np.full_like(i, 128) for i in clean]]
        elif name == "frechet":  # the same judge's features: light noise (σ 0.05) is inside their noise
            levels = damaged[1:]
        else:
            levels = damaged
        assert responds(score, M.DIRECTIONS[name], clean, levels), name


def test_a_measure_that_ignores_its_input_or_has_its_direction_flipped_fails_the_specification(artist_renders):
    clean, reference = artist_renders
    damaged = [_noisy(clean, s) for s in (0.05, 0.15, 0.3)]
    assert responds(lambda imgs: M.paired_ssim(imgs, clean), "lower", clean, damaged)
    assert not responds(lambda imgs: 0.5, "lower", clean, damaged)  # ignores its input
    assert not responds(lambda imgs: M.paired_ssim(imgs, clean), "higher", clean, damaged)  # flipped
    assert not responds(lambda imgs: -M.hf_ratio(imgs, clean), "higher", clean, damaged)  # sign flipped


def test_the_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_noise(artist_renders):
    clean, reference = artist_renders
    judge = load_style_judge()
    space = M.FeatureSpace.fit(judge.features(np.stack(reference)))
    assert M.frechet(judge, space, reference, reference) == pytest.approx(0.0, abs=1e-6)
    d = [M.frechet(judge, space, _noisy(reference, s), reference) for s in (0.0, 0.1, 0.3)]
    assert d[0] == pytest.approx(0.0, abs=1e-6) and d[0] < d[1] < d[2]
    # A perfect mimic (other renders of the style) is far closer than noise-damaged renders.
    assert M.frechet(judge, space, clean, reference) < d[2] / 4


def test_paired_measures_are_exactly_neutral_for_the_clean_mimic_itself(artist_renders):
    clean, _ = artist_renders
    assert M.paired_ssim(clean, clean) == pytest.approx(1.0)
    assert M.hf_ratio(clean, clean) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pairs"):
        M.paired_ssim(clean[:3], clean[:4])
    flat = [np.full((64, 64, 3), 90, np.uint8)]
    white = _noisy(flat, 0.3)
    assert M.hf_share(flat) == 0.0 and 0.6 < M.hf_share(white) < 0.9  # white noise: about 3/4 outside


def test_the_random_control_is_plus_or_minus_epsilon_on_the_exported_file(tiny_model, tmp_path):
    from engine import batch as B
    from engine.events import Failed
    from engine.images import load_image, save_image
    from engine.jobs import ProtectSettings

    src = tmp_path / "in.png"
    save_image(render_set([HELD_OUT_STYLE], 1, 64, use="artist").images[0], src)
    for eps in (4, 32):
        settings = ProtectSettings(method="random", strength_levels=eps, steps=100, working_size=64,
                                   preview_every=0, measure_objective=False)
        out = tmp_path / f"e{eps}"
        events = list(B.protect_batch(tiny_model, [src], settings, B.BatchOptions(out, fmt="png", journal=False)))
        assert not [e for e in events if isinstance(e, Failed)]
        a = load_image(src).pixels[..., :3].astype(int)
        b = load_image(next(out.glob("*.png"))).pixels[..., :3].astype(int)
        d = b - a
        inside = (a >= eps) & (a <= 255 - eps)  # pixels the clip to [0, 255] cannot touch
        assert set(np.unique(d[inside])) == {-eps, eps}
        assert 0.45 < (d[inside] > 0).mean() < 0.55 and np.abs(d).max() == eps


def test_the_grid_control_follows_antipures_grid_and_its_protect_key_says_which_grid(monkeypatch):
    """Grid ±ε draws AntiPure's default grid, and its protect key holds that grid: were AntiPure's default grid
    another (here the colour one), the same settings get another key, so a finished run folder makes the
    control again instead of reusing a control made with the old grid."""
    from dataclasses import dataclass

    from engine.evaluation.run import protect_key
    from engine.jobs import ProtectSettings
    from engine.methods import get_method
    from engine.methods.antipure import AntiPureParams
    from engine.methods.base import setting
    from engine.methods.random_sign import GridSign, GridSignParams

    defaults, control = AntiPureParams(), get_method("grid_sign").params
    assert (control.grid_period, control.grid_color) == (defaults.grid_period, defaults.grid_color)
    settings = ProtectSettings(method="grid_sign")
    key = protect_key("up", settings)

    @dataclass
    class ColourDefault(GridSignParams):
        grid_color: str = setting("color", "the grid's channels", str, choices=("color", "luma"))

    monkeypatch.setattr(GridSign, "Params", ColourDefault)
    assert get_method("grid_sign").params.grid_color == "color"
    assert protect_key("up", settings) != key


def test_the_random_and_grid_controls_put_one_pattern_on_every_image_of_the_set(tiny_model, tmp_path):
    """Random ±ε: one random pattern, the same signs on two different images of a batch (the job's seed);
    Grid ±ε: the signs of AntiPure's grid on both. Both at exactly ±ε on the exported files where the clip
    cannot touch."""
    from engine import batch as B
    from engine.events import Failed
    from engine.images import load_image, save_image
    from engine.jobs import ProtectSettings
    from engine.methods.antipure import AntiPureParams, grid_pattern

    srcs = []
    for i, img in enumerate(render_set([HELD_OUT_STYLE], 2, 64, use="artist").images[:2]):
        srcs.append(tmp_path / f"in{i}.png")
        save_image(img, srcs[-1])
    eps = 16
    signs = {}
    for method in ("random", "grid_sign"):
        settings = ProtectSettings(method=method, strength_levels=eps, steps=40, working_size=64,
                                   preview_every=0, measure_objective=False)
        out = tmp_path / method
        events = list(B.protect_batch(tiny_model, srcs, settings, B.BatchOptions(out, fmt="png", journal=False)))
        assert not [e for e in events if isinstance(e, Failed)]
        per_image = []
        for src in srcs:
            a = load_image(src).pixels[..., :3].astype(int)
            b = load_image(out / (src.stem + ".protected.png")).pixels[..., :3].astype(int)
            inside = (a >= eps) & (a <= 255 - eps)
            assert set(np.unique((b - a)[inside])) == {-eps, eps}
            per_image.append((np.sign(b - a), inside))
        (s0, in0), (s1, in1) = per_image
        both = in0 & in1
        signs[method] = (s0, in0, (s0[both] == s1[both]).mean())
    assert signs["random"][2] == 1.0
    assert 0.4 < (signs["random"][0][signs["random"][1]] > 0).mean() < 0.6  # and random: half of them +
    defaults = AntiPureParams()
    grid = grid_pattern(64, 64, defaults.grid_period, defaults.grid_color).transpose(1, 2, 0)
    s0, in0, agree = signs["grid_sign"]
    assert agree == 1.0 and (s0[in0] == np.where(grid >= 0.5, 1, -1)[in0]).all()


def test_the_random_control_is_not_offered_to_the_artist():
    from engine.methods import CONTROLS, METHODS, get_method

    assert "random" in CONTROLS and "random" not in METHODS
    assert get_method("random").label.startswith("Random")
    assert "grid_sign" in CONTROLS and "grid_sign" not in METHODS


def test_the_plan_keeps_the_cells_the_issue_names():
    runs = CV.CurvePlan().runs()
    cells = {(r.label, r.strength, p) for r in runs for p in r.purifiers}
    purifiers = [p for p, _ in CV.PURIFIERS]
    rows = [label for label, _, _ in CV.CurvePlan().rows if label != "none"]
    assert len(rows) == 10 and "Random ±ε" in rows
    for label in rows:
        for s in (8.0, 16.0):
            assert all((label, s, p) in cells for p in purifiers)
        for s in (4.0, 32.0):
            measured = (label, s, "none") in cells and (label, s, "SDEdit 0.2") in cells
            assert measured == (label not in CV.ABLATIONS)
            assert (label, s, "JPEG 75") not in cells
    assert all(("none", None, p) in cells for p in purifiers)
    # the Random control wherever a method is measured
    for (label, s, p) in cells:
        if label != "none":
            assert ("Random ±ε", s, p) in cells
    assert runs[0].method == "none" and len({r.folder for r in runs}) == len(runs)
    assert all(r.folder.isascii() for r in runs)


def test_a_plan_with_no_full_strength_measures_only_the_edge_purifiers_and_clean_mimic_under_them():
    """--full-strengths none: every row (not the ablations) unpurified and after SDEdit 0.2 at every strength,
    and the clean mimic under those two purifiers only: no JPEG or GrIDPure mimic that no row is compared with."""
    plan = CV.CurvePlan(strengths=(8.0, 32.0), full_strengths=())
    runs = plan.runs()
    assert runs[0].method == "none" and runs[0].purifiers == ("none", "SDEdit 0.2")
    assert all(r.purifiers == ("none", "SDEdit 0.2") for r in runs)
    assert not [r for r in runs if r.label in CV.ABLATIONS]
    assert len(runs) == 1 + 8 * 2


def test_ablations_everywhere_measures_the_ablations_at_the_edge_strengths_too():
    """Issue 28 compares AntiPure with its ablations at 32 levels, an edge strength of the curve."""
    plan = CV.CurvePlan(strengths=(32.0,), full_strengths=(), skip_at_edges=())
    ablations = [r for r in plan.runs() if r.label in CV.ABLATIONS]
    assert sorted(r.label for r in ablations) == sorted(CV.ABLATIONS)
    assert all(r.strength == 32.0 and r.purifiers == ("none", "SDEdit 0.2") for r in ablations)
    args = build_parser().parse_args(["efficacy", "--model", "m", "--out", "o", "--strengths", "32",
                                      "--ablations-everywhere"])
    assert args.ablations_everywhere


def test_edge_purifiers_choose_the_columns_measured_at_the_strengths_that_are_not_full(tmp_path, capsys, toy_proxy_model):
    """Issue 28 needs JPEG 75 at 32 levels for every row without GrIDPure's mimics (GrIDPure erases the style
    from the clean images on the proxy): --edge-purifiers none,jpeg,sdedit."""
    labels = CV.parse_purifier_labels("SDEdit,none, jpeg", CV.PURIFIERS)
    assert labels == ("none", "JPEG 75", "SDEdit 0.2")  # the curve's order, whatever the order given
    plan = CV.CurvePlan(strengths=(32.0,), full_strengths=(), skip_at_edges=(), edge_purifiers=labels)
    runs = plan.runs()
    assert runs and all(r.purifiers == ("none", "JPEG 75", "SDEdit 0.2") for r in runs)
    assert runs[0].method == "none"  # the clean mimic under the same three
    assert CV.parse_purifier_labels("GrIDPure", CV.PURIFIERS) == ("GrIDPure",)
    out = tmp_path / "run"
    code = cli_main(["efficacy", "--model", str(toy_proxy_model), "--out", str(out), "--allow-unchecked",
                     "--strengths", "32", "--full-strengths", "none", "--edge-purifiers", "none,webp"])
    err = capsys.readouterr().err
    assert code == 2 and "'webp' is not a purifier" in err and "gridpure" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_full_strengths_outside_the_strengths_are_refused_in_one_line(tmp_path, capsys, toy_proxy_model):
    out = tmp_path / "run"
    code = cli_main(["efficacy", "--model", str(toy_proxy_model), "--out", str(out), "--allow-unchecked",
                     "--strengths", "8,32", "--full-strengths", "16"])
    err = capsys.readouterr().err
    assert code == 2 and "16 not among --strengths" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_strength_the_engine_refuses_is_refused_before_anything_runs(tmp_path, capsys, toy_proxy_model):
    with pytest.raises(ArtveilError, match="strength 64"):
        CV.validate_plan(CV.CurvePlan(strengths=(8.0, 64.0)), steps=100)
    with pytest.raises(ArtveilError, match="strengths"):
        CV.parse_strengths("8,x")
    out = tmp_path / "run"
    code = cli_main(["efficacy", "--model", str(toy_proxy_model), "--out", str(out), "--allow-unchecked",
                     "--strengths", "4,8,64"])
    err = capsys.readouterr().err
    assert code == 2 and "64" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before any folder, render or model


def test_intervals_pool_the_seed_spread_and_onsets_need_both_the_clean_mimic_and_random(tmp_path):
    def cell(method, kind, strength, values):
        return {"method": method, "kind": kind, "strength": strength, "purifier": "none", "psnr": 30.0, "ssim": 0.9,
                "seeds": [0, 1], "values": {m: list(values) for m in M.MEASURES}}

    cells = [cell("none", "none", None, [0.9, 0.92]), cell("Random ±ε", "random", 8.0, [0.88, 0.9]),
             cell("A", "advdm", 8.0, [0.3, 0.32]), cell("B", "mist", 8.0, [0.87, 0.89])]
    spread = CV.pooled_intervals(cells)
    assert spread["accuracy"]["df"] == 4 and spread["accuracy"]["sd"] == pytest.approx(np.sqrt(4 * 0.0002 / 4))
    ons = {(o["method"], o["measure"]): o["onset"] for o in CV.onsets({"cells": cells})}
    assert ons[("A", "accuracy")] == 8.0  # far below both
    assert ons[("B", "accuracy")] is None  # inside Random's noise
    # a direction flipped for the measure would call B's higher accuracy damage: it must not
    assert ons[("A", "frechet")] is None  # 'higher is better' there, and A is lower


def _toy_curve(toy_proxy_model, tmp_path, plan):
    from engine.evaluation import efficacy as E
    from engine.models import load_model

    model_dir = tmp_path / "proxy"
    shutil.copytree(toy_proxy_model, model_dir, ignore=shutil.ignore_patterns("work", "sanity.json"))
    out, docs = tmp_path / "run", tmp_path / "docs"
    settings = E.EfficacySettings(steps=2, lora_steps=2, k=1, gen_steps=2, purify_steps=2)
    model = load_model(str(model_dir), device="cpu")
    curve = CV.run_curve(model, model_dir, out, settings, plan, allow_unchecked=True, log=lambda m: None)
    CV.write_outputs(curve, out, plan, docs, command="artveil efficacy --strengths 4,8")
    with open(docs / "curve.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CV.CSV_COLUMNS
    body = [dict(zip(rows[0], r)) for r in rows[1:]]
    for r in body:
        assert r["direction"] == M.DIRECTIONS[r["measure"]] and r["seeds"] == "2"
        if r["method"] != "none":
            assert 0 < float(r["psnr"]) < 60 and float(r["lo"]) <= float(r["mean"]) <= float(r["hi"])
    assert {r["measure"] for r in body} == set(M.MEASURES)
    assert Image.open(docs / "curves.png").size[0] > 400
    assert Image.open(docs / "samples-random.png").size[1] > 3 * 32  # the clean mimic plus two strengths
    text = (docs / "curve.md").read_text()
    assert "UNCHECKED MODEL" in text and "Reproduce:" in text and "Wall time" in text
    assert json.loads((out / "curve.json").read_text())["missing"] == []
    return {(r["method"], r["strength"], r["purifier"]) for r in body}, body


def test_a_toy_curve_writes_the_csv_schema_the_plot_and_the_sheets(toy_proxy_model, tmp_path):
    from engine.evaluation import efficacy as E

    plan = CV.CurvePlan(rows=[E.ROWS[0], CV.RANDOM_ROW], strengths=(4.0, 8.0), full_strengths=(8.0,),
                        purifiers=[("none", None), ("JPEG 75", "jpeg:75")], edge_purifiers=("none",))
    keys, body = _toy_curve(toy_proxy_model, tmp_path, plan)
    assert keys == {("none", "0", "none"), ("none", "0", "JPEG 75"), ("Random ±ε", "8", "none"),
                    ("Random ±ε", "8", "JPEG 75"), ("Random ±ε", "4", "none")}
    assert len(body) == len(M.MEASURES) * 5

    # --assemble-only measures the finished runs again, and refuses runs made with other settings
    from dataclasses import replace

    from engine.models import load_model

    model_dir, out = tmp_path / "proxy", tmp_path / "run"
    model = load_model(str(model_dir), device="cpu")
    same = E.EfficacySettings(steps=2, lora_steps=2, k=1, gen_steps=2, purify_steps=2)
    again = CV.run_curve(model, model_dir, out, same, plan, allow_unchecked=True, log=lambda m: None, assemble_only=True)
    assert again["missing"] == []
    with pytest.raises(ArtveilError, match="runs/none was measured with lora_steps 2, not 3"):
        CV.run_curve(model, model_dir, out, replace(same, lora_steps=3), plan, allow_unchecked=True, log=lambda m: None,
                     assemble_only=True)


@pytest.mark.slow
def test_a_toy_curve_with_every_purifier_keeps_the_plans_cells(toy_proxy_model, tmp_path):
    from engine.evaluation import efficacy as E

    # The plan's shape at toy cost: GrIDPure with 2 iterations instead of 40, the other columns as they are.
    purifiers = [(label, "gridpure:2" if label == "GrIDPure" else spec) for label, spec in CV.PURIFIERS]
    plan = CV.CurvePlan(rows=[E.ROWS[0], CV.RANDOM_ROW, ("AdvDM", "advdm", {})], strengths=(4.0, 8.0),
                        full_strengths=(8.0,), purifiers=purifiers)
    keys, body = _toy_curve(toy_proxy_model, tmp_path, plan)
    assert ("none", "0", "GrIDPure") in keys and ("AdvDM", "8", "GrIDPure") in keys
    assert ("AdvDM", "4", "SDEdit 0.2") in keys and ("AdvDM", "4", "JPEG 75") not in keys
    assert len(body) == len(M.MEASURES) * (4 + 2 * 2 + 2 * 4)
    assert (tmp_path / "docs" / "samples-advdm.png").is_file()


def _start_table_in_workers(model_dir, out):
    """`artveil efficacy --jobs 2` as a user starts it, long enough to be stopped while its workers run; returns
    (process, the worker processes) once both workers have said they started a row."""
    import subprocess
    import sys
    import time

    import psutil

    cmd = [sys.executable, "-m", "engine.cli", "efficacy", "--model", str(model_dir), "--out", str(out),
           "--allow-unchecked", "--jobs", "2", "--only", "none", "--only", "AdvDM", "--column", "none",
           "--mimic-seeds", "1", "--steps", "2", "--lora-steps", "100000", "--k", "1", "--gen-steps", "2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    started, deadline = 0, time.monotonic() + 240
    while started < 2 and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        started += "in a worker of" in line
    assert started == 2, "the workers never started their rows"
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2
    return proc, workers


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_to_the_table_stops_its_workers_and_says_so(toy_proxy_model, tmp_path, signal_name):
    import signal

    import psutil

    proc, workers = _start_table_in_workers(toy_proxy_model, tmp_path / "run")
    sig = getattr(signal, signal_name)
    try:
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
        err = proc.stderr.read()
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, "a row worker outlived the command"
        assert code == 128 + sig
        assert f"stopped by {signal_name}" in err and "Traceback" not in err
    finally:
        _kill_all([proc, *workers])


def test_workers_stop_by_themselves_when_their_parent_is_killed(toy_proxy_model, tmp_path):
    import psutil

    proc, workers = _start_table_in_workers(toy_proxy_model, tmp_path / "run")
    try:
        proc.kill()  # SIGKILL: no handler runs in the parent
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, "a row worker went on alone after its parent was killed"
    finally:
        _kill_all([proc, *workers])


def _kill_all(procs) -> None:
    """Leave no process behind, whatever the test found (a failing run must not keep the CPU busy)."""
    import psutil

    for p in procs:
        try:
            p.kill()
        except (psutil.NoSuchProcess, ProcessLookupError, OSError):
            pass


def test_a_table_row_with_a_strength_the_engine_refuses_is_refused_up_front():
    from engine.evaluation import efficacy as E

    for params, words in (({"strength": 64}, "more than 0 and at most 32"), ({"steps": 0}, "at least 1"),
                          ({"strength": float("nan")}, "not a strength")):
        with pytest.raises(ArtveilError, match=words):
            E.validate_rows([("none", "none", {}), ("AdvDM x", "advdm", params)])
    E.validate_rows([("AdvDM 32", "advdm", {"strength": 32, "steps": 10})])


def test_a_row_can_optimize_through_a_purifier_with_eot_and_a_bad_transform_is_refused_up_front(tmp_path):
    """eot=jpeg (or blur+jpeg) is a row's own setting: it reaches the protection's settings, not the method's
    parameters, and changes the protection's key, while a row without it keeps the key it always had (so
    finished run folders are not made again). A transform the engine does not know is refused before any row runs."""
    from dataclasses import replace

    from engine.evaluation import efficacy as E
    from engine.evaluation.run import protect_key
    from engine.jobs import ProtectSettings

    for value in ("jpg", "jpeg+", 3, "+"):
        with pytest.raises(ArtveilError, match="eot="):
            E.validate_rows([("AntiPure x", "antipure", {"eot": value})])
    E.validate_rows([("AntiPure j", "antipure", {"eot": "jpeg"}), ("AntiPure bj", "antipure", {"eot": "blur+jpeg"})])

    settings = E.EfficacySettings()
    plain = E.row_config(settings, tmp_path, 64, "swirl", "antipure", {"lambda_pfg": 2.0})
    through = E.row_config(settings, tmp_path, 64, "swirl", "antipure", {"lambda_pfg": 2.0, "eot": "blur+jpeg", "strength": 32})
    assert through.eot == ["blur", "jpeg"] and through.method_params == {"lambda_pfg": 2.0}
    assert through.protect_settings().eot == ("blur", "jpeg") and through.strength_levels == 32
    assert plain.eot == [] and plain.protect_settings().eot == ()
    before = ProtectSettings(method="antipure", strength_levels=plain.strength_levels, steps=plain.steps, seed=plain.seed,
                             working_size=64, preview_every=0, measure_objective=False, method_params={"lambda_pfg": 2.0})
    assert protect_key("u", plain.protect_settings()) == protect_key("u", before)
    assert protect_key("u", replace(through, strength_levels=plain.strength_levels).protect_settings()) != protect_key("u", before)

    # The curves check their rows the same way: eot= and steps= are the protection's, not the method's.
    from engine.evaluation import curve as CV

    rows = [E.ROWS[0], CV.RANDOM_ROW, ("AntiPure EOT jpeg", "antipure", {"eot": "jpeg", "steps": 10})]
    CV.validate_plan(CV.CurvePlan(rows=rows, strengths=(32.0,), full_strengths=()), steps=100)
    with pytest.raises(ArtveilError, match="eot="):
        CV.validate_plan(CV.CurvePlan(rows=rows[:2] + [("AntiPure EOT x", "antipure", {"eot": "x"})],
                                      strengths=(32.0,), full_strengths=()), steps=100)
    # A row's own strength is refused: the curve's strengths are the axis, and run_config would override it
    # (a "Grid ±ε 24" row was once measured at 32 under that name).
    with pytest.raises(ArtveilError, match="strength=24.*--strengths"):
        CV.validate_plan(CV.CurvePlan(rows=rows[:2] + [("Grid ±ε 24", "grid_sign", {"strength": 24})],
                                      strengths=(32.0,), full_strengths=()), steps=100)
