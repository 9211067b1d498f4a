"""The proxy model through the ordinary engine paths, and the efficacy table (`artveil efficacy`) at toy scale.

The toy proxy model has every file of the real one but learned nothing, so these tests check the plumbing
and the bookkeeping (which numbers land in which cell, what is refused), never efficacy itself.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from engine.cli import main as cli_main
from engine.evaluation import efficacy as E
from engine.images import save_image
from engine.jobs import ProtectSettings
from engine.models import load_model
from engine.protect import protect_image
from engine.proxy.data import render_set
from engine.proxy.styles import HELD_OUT_STYLE
from engine.purify import purify

# Shares the session's toy proxy model with test_proxy_train (trained once per worker).
pytestmark = pytest.mark.xdist_group("proxy_toy_model")

TOY_ARGS = ["--steps", "2", "--lora-steps", "2", "--k", "1", "--gen-steps", "2", "--purify-steps", "2"]


@pytest.fixture
def proxy_copy(toy_proxy_model, tmp_path):
    out = tmp_path / "proxy"
    shutil.copytree(toy_proxy_model, out, ignore=shutil.ignore_patterns("work", "sanity.json"))
    return out


def _swirl(resolution: int) -> np.ndarray:
    return render_set([HELD_OUT_STYLE], 1, resolution, use="artist").images[0]


def test_proxy_model_loads_through_the_ordinary_loader_and_protects_and_purifies(toy_proxy_model, tmp_path):
    model = load_model(str(toy_proxy_model), device="cpu")
    assert model.is_demo is False and model.name == toy_proxy_model.name
    resolution = json.loads((toy_proxy_model / "proxy_world.json").read_text())["resolution"]
    art = _swirl(resolution)
    result = protect_image(model, art, ProtectSettings(method="antipure", strength_levels=6, steps=3,
                                                       preview_every=0, measure_objective=False))
    exported = np.asarray(Image.open(save_image(result.protected, tmp_path / "swirl.png"))).astype(int)
    diff = np.abs(exported - art.astype(int))
    assert exported.shape == art.shape and 0 < diff.max() <= 6
    washed = purify(model, result.protected, "sdedit", seed=0, strength=0.3, steps=4)
    assert washed.shape == art.shape and washed.dtype == np.uint8
    assert np.abs(washed.astype(int) - result.protected.astype(int)).max() > 0


def test_efficacy_refuses_a_model_that_has_not_passed_the_sanity_bar(proxy_copy, tmp_path, capsys):
    args = ["efficacy", "--model", str(proxy_copy), "--out", str(tmp_path / "run"), *TOY_ARGS]
    assert cli_main(args) == 2
    assert "no sanity.json" in capsys.readouterr().err
    (proxy_copy / "sanity.json").write_text(json.dumps({"bar": {"passed": False}}))
    assert cli_main(args) == 2
    assert "did not pass the sanity bar" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_efficacy_refuses_a_model_that_is_not_a_proxy_world(tiny_model, tmp_path, capsys, monkeypatch):
    from engine import models

    folder = models.save_tiny_model(tmp_path / "tiny")
    assert cli_main(["efficacy", "--model", str(folder), "--out", str(tmp_path / "run"), "--allow-unchecked"]) == 2
    assert "not a proxy-world model" in capsys.readouterr().err
    monkeypatch.setattr(models, "proxy_model_dir", lambda: tmp_path / "absent")
    assert cli_main(["efficacy", "--model", "proxy", "--out", str(tmp_path / "run")]) == 2
    assert "the built-in proxy model is not in this build" in capsys.readouterr().err


def test_efficacy_refuses_unknown_rows_and_purifiers_with_one_line(proxy_copy, tmp_path, capsys):
    base = ["efficacy", "--model", str(proxy_copy), "--out", str(tmp_path / "run"), "--allow-unchecked"]
    assert cli_main(base + ["--only", "Glaze"]) == 2
    assert "not a row" in capsys.readouterr().err
    assert cli_main(base + ["--column", "bleach:3"]) == 2
    assert "unknown purifier" in capsys.readouterr().err
    assert cli_main(base + ["--row", "mine", "antipure", "lambda_t=0.5"]) == 2
    assert "row 'mine': antipure: unknown parameter(s) ['lambda_t']" in capsys.readouterr().err
    assert cli_main(base + ["--row", "mine", "glaze"]) == 2
    assert "row 'mine'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_efficacy_table_cells_are_the_eval_runs_numbers(proxy_copy, tmp_path, capsys):
    out, doc = tmp_path / "run", tmp_path / "docs" / "efficacy.md"
    args = ["efficacy", "--model", str(proxy_copy), "--out", str(out), "--allow-unchecked", "--write", str(doc),
            "--only", "none", "--only", "AntiPure w/o ETG", "--row", "AntiPure λt 0.5", "antipure", "lambda_etg=0.5",
            "--column", "none", "--column", "jpeg:75", *TOY_ARGS]
    assert cli_main(args) == 0
    capsys.readouterr()
    table = json.loads((out / "efficacy.json").read_text())
    assert [r["label"] for r in table["rows"]] == ["none", "AntiPure w/o ETG", "AntiPure λt 0.5"]
    assert table["columns"] == ["none", "jpeg 75"] and table["sanity_passed"] is False
    for row in table["rows"]:
        results = json.loads((out / row["run"] / "results.json").read_text())
        scores = results["customization"]["scores"]
        assert results["config"]["style"] == HELD_OUT_STYLE and results["config"]["captions"] == "files"
        assert row["cells"]["none"]["style_accuracy"] == scores["protected"]["style_accuracy"]
        assert row["cells"]["jpeg 75"]["style_accuracy"] == scores["purified-jpeg-75"]["style_accuracy"]
        if row["method"] == "none":  # the one clean mimic of the table: every row's control
            assert row["clean_control"]["style_accuracy"] == scores["clean"]["style_accuracy"]
        else:  # a protected row does not train it again
            assert row["clean_control"] is None and "clean" not in scores
        assert all(0.0 <= v["style_accuracy"] <= 1.0 for v in row["cells"].values())
        # two mimic seeds per cell by default: each its own fine-tune and samples, the cell their mean
        seeds = results["customization"]["scores_by_seed"]["purified-jpeg-75"]
        assert [m["seed"] for m in seeds] == [0, 1]
        assert row["cells"]["jpeg 75"]["by_seed"] == [m["style_accuracy"] for m in seeds]
        assert row["cells"]["jpeg 75"]["n"] == sum(m["samples"] for m in seeds) == 2 * 6
        lo, hi = row["cells"]["jpeg 75"]["ci"]
        assert lo <= row["cells"]["jpeg 75"]["style_accuracy"] <= hi
    antipure = json.loads((out / table["rows"][2]["run"] / "results.json").read_text())
    assert antipure["config"]["method_params"] == {"lambda_etg": 0.5}
    assert table["rows"][1]["params"] == {"use_etg": False}
    # every protected image within the budget; the "none" row has no PSNR (it is not protected)
    assert table["rows"][0]["psnr"] is None and 0 < table["rows"][1]["linf_levels"] <= 8
    text = doc.read_text()
    assert text == (out / "efficacy.md").read_text()
    assert "UNCHECKED MODEL" in text and "| AntiPure λt 0.5 |" in text and "Reproduce:" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| AntiPure w/o ETG |"))
    assert line.split("|")[2].strip() == f"{table['rows'][1]['psnr']:.1f}"
    # The artist set: the held-out style's renders with their captions beside them.
    captions = sorted((out / "artist").glob("*.txt"))
    assert len(captions) == 9 and all(HELD_OUT_STYLE in c.read_text() for c in captions)

    # Run again: everything resumes from the run folders, nothing is recomputed.
    assert cli_main(args) == 0
    err = capsys.readouterr().err
    assert "done in" not in err and "skipped" in err


def test_a_row_can_set_its_own_budget_and_a_cell_its_number_of_mimics(proxy_copy, tmp_path, capsys):
    """A dose-response row (`strength=`, `steps=`) is protected at its own budget, checked on the saved
    8-bit files, and --mimic-seeds N trains N mimics per cell."""
    out = tmp_path / "run"
    args = ["efficacy", "--model", str(proxy_copy), "--out", str(out), "--allow-unchecked", "--only", "none",
            "--row", "AdvDM ε 3", "advdm", "strength=3", "steps=3", "--column", "none", "--mimic-seeds", "3",
            *TOY_ARGS]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    table = json.loads((out / "efficacy.json").read_text())
    row = table["rows"][1]
    results = json.loads((out / row["run"] / "results.json").read_text())
    assert results["config"]["strength_levels"] == 3 and results["config"]["steps"] == 3
    assert results["config"]["method_params"] == {}  # the budget is the table's, not a method parameter
    run = out / row["run"]
    clean = sorted((run / "clean").glob("*.png"))  # the prepared clean images the protection started from
    protected = sorted((run / "protected").glob("*.png"))
    assert len(protected) == len(clean)
    worst = max(int(np.abs(np.asarray(Image.open(p), dtype=np.int16) - np.asarray(Image.open(c), dtype=np.int16)).max())
                for p, c in zip(protected, clean))
    assert 0 < worst <= 3
    assert row["linf_levels"] <= 3
    for r in table["rows"]:
        assert len(r["cells"]["none"]["by_seed"]) == 3 and r["cells"]["none"]["n"] == 3 * 6
    assert "except where a row names its own: AdvDM ε 3 strength 3, steps 3" in text

    for bad in (["strength=0"], ["strength=300"], ["steps=1.5"], ["strength=big"]):
        code = cli_main(["efficacy", "--model", str(proxy_copy), "--out", str(tmp_path / "bad"), "--allow-unchecked",
                         "--row", "AdvDM bad", "advdm", *bad, *TOY_ARGS])
        err = capsys.readouterr().err
        assert code == 2 and "row 'AdvDM bad'" in err and len(err.strip().splitlines()) == 1, (bad, err)
    assert cli_main(["efficacy", "--model", str(proxy_copy), "--out", str(tmp_path / "bad"), "--allow-unchecked",
                     "--mimic-seeds", "0", *TOY_ARGS]) == 2
    assert "--mimic-seeds 0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_none_row_trains_the_mimic_once_on_the_clean_images(proxy_copy, tmp_path):
    model = load_model(str(proxy_copy), device="cpu")
    settings = E.EfficacySettings(steps=2, lora_steps=2, k=1, gen_steps=2, rows=[("none", "none", {})],
                                  columns=[("none", None), ("JPEG 75", "jpeg:75")])
    table = E.run_efficacy(model, proxy_copy, tmp_path / "run", settings, allow_unchecked=True, log=lambda m: None)
    run = tmp_path / "run" / table["rows"][0]["run"]
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert "protect" not in stages and not any(s.startswith("customize:protected") for s in stages)
    for seed in (0, 1):  # one mimic per seed, each trained once for the clean and the "protected" condition
        assert f"customize:clean-seed{seed}" in stages and f"customize:purified-jpeg-75-seed{seed}" in stages
    results = json.loads((run / "results.json").read_text())
    assert results["files"]["protected"] == results["files"]["clean"]
    assert table["rows"][0]["cells"]["none"] == table["rows"][0]["clean_control"]


def test_the_tuning_split_sees_none_of_the_final_tables_images_or_seeds(proxy_copy, tmp_path, capsys):
    model = load_model(str(proxy_copy), device="cpu")
    settings = E.EfficacySettings(steps=2, lora_steps=2, k=1, gen_steps=2, rows=[("none", "none", {})],
                                  columns=[("none", None)], split="tuning")
    table = E.run_efficacy(model, proxy_copy, tmp_path / "tune", settings, allow_unchecked=True, log=lambda m: None)
    results = json.loads((tmp_path / "tune" / table["rows"][0]["run"] / "results.json").read_text())
    assert results["config"]["seed"] == 100 and results["config"]["mimic_seeds"] == [100, 101]
    tuning = {f.read_bytes() for f in (tmp_path / "tune" / "artist").glob("*.png")}
    final = E.write_artist_set(tmp_path / "final-artist", HELD_OUT_STYLE, 9, table["resolution"])
    assert len(tuning) == 9 and not tuning & {f.read_bytes() for f in final}
    assert "**Tuning split**" in E.render_markdown(table)
    assert "Tuning split" not in E.render_markdown({**table, "settings": {**table["settings"], "split": "final"}})
    # One folder holds one split's table: the final split is refused there, with one line.
    args = ["efficacy", "--model", str(proxy_copy), "--out", str(tmp_path / "tune"), "--allow-unchecked",
            "--only", "none", "--column", "none", *TOY_ARGS]
    assert cli_main(args) == 2
    assert "holds the tuning split's table" in capsys.readouterr().err


def test_the_tuning_render_sets_share_no_image_or_seed_with_each_other_or_the_final_split(tmp_path):
    """tuning, tuning-b and tuning-c: three render sets of the style to tune on, each with its own seeds; none of
    their images is one of the final split's (or another set's), and an unknown split is refused with the list."""
    from engine.errors import ArtveilError

    images, seeds = {}, set()
    for split in E.SPLITS:
        renders, seed_offset = E.split_offsets(split)
        files = E.write_artist_set(tmp_path / split, HELD_OUT_STYLE, 9, 64, renders)
        images[split] = {f.read_bytes() for f in files}
        assert len(images[split]) == 9
        seeds.add(seed_offset)
    assert len(seeds) == len(E.SPLITS)
    for a in E.SPLITS:
        for b in E.SPLITS:
            assert a == b or not images[a] & images[b], (a, b)
    with pytest.raises(ArtveilError, match="tuning-b"):
        E.split_offsets("tuning-d")


def test_eval_reads_per_image_captions_and_says_which_file_lacks_one(tiny_model, tmp_path):
    from engine.errors import ArtveilError
    from engine.evaluation import EvalConfig, run_evaluation

    art = tmp_path / "art"
    art.mkdir()
    for i, style in enumerate(["stripes", "rings", "mosaic"]):
        Image.fromarray(render_set([style], 1, 32, use="artist").images[0]).save(art / f"p{i}.png")
        (art / f"p{i}.txt").write_text(f"a painting in {style} style\n")
    config = EvalConfig(images=[str(art)], method="none", purifiers=[], size=32, heldout=1, k=1, lora_steps=2,
                        gen_steps=2, captions="files", judges=["image_stats"])
    results = run_evaluation(tiny_model, config, tmp_path / "run", log=lambda m: None)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["prepare"]["info"]["captions"]["000_p0.png"] == "a painting in stripes style"
    assert results["customization"]["scores"]["clean"]["image_stats"] is not None
    (art / "p1.txt").unlink()
    with pytest.raises(ArtveilError, match="p1.png: no caption file p1.txt"):
        run_evaluation(tiny_model, config, tmp_path / "run2", log=lambda m: None)


def test_the_proxy_model_becomes_the_built_in_demo_when_the_build_ships_it(proxy_copy, tmp_path, monkeypatch):
    from engine import models
    from engine.errors import ArtveilError

    monkeypatch.setattr(models, "proxy_model_dir", lambda: tmp_path / "absent")
    assert models.demo_source() == "tiny"
    with pytest.raises(ArtveilError, match="proxy model is not in this build"):
        models.load_model("proxy", device="cpu")
    monkeypatch.setattr(models, "proxy_model_dir", lambda: proxy_copy)
    assert models.demo_source() == "proxy"
    bundle = models.load_model("proxy", device="cpu")
    assert bundle.is_demo and bundle.name == "proxy" and "not Stable Diffusion" in bundle.description
    assert bundle.unet.config.cross_attention_dim == bundle.text_encoder.config.hidden_size


def test_wilson_interval_matches_a_hand_computed_value():
    lo, hi = E.wilson(18, 36)  # centre 0.5; half-width 1.96·sqrt(0.25/36 + 1.96²/(4·36²)) / (1 + 1.96²/36) = 0.1553
    assert lo == pytest.approx(0.3447, abs=1e-4) and hi == pytest.approx(0.6553, abs=1e-4)
    assert E.wilson(0, 36)[0] == 0.0 and E.wilson(36, 36)[1] == 1.0 and E.wilson(0, 0) is None


def test_kept_damage_is_measured_against_the_clean_mimic_under_the_same_purifier():
    def row(method, accs):
        return {"method": method, "cells": {c: {"style_accuracy": a} for c, a in accs.items()}}

    rows = [row("none", {"none": 0.8, "sdedit": 0.6}), row("antipure", {"none": 0.2, "sdedit": 0.45})]
    E.kept_damage(rows, ["none", "sdedit"])
    assert rows[0]["damage"] == {"none": 0.0, "sdedit": 0.0}
    assert rows[1]["damage"]["none"] == pytest.approx(0.75) and rows[1]["damage"]["sdedit"] == pytest.approx(0.25)
    assert rows[1]["kept"]["sdedit"] == pytest.approx(1 / 3)


def test_a_cell_is_inside_the_noise_only_when_its_interval_overlaps_the_none_rows():
    base = {"ci": (0.45, 0.68)}
    assert E.inside_noise({"ci": (0.28, 0.50)}, base) and E.inside_noise({"ci": (0.60, 0.80)}, base)
    assert not E.inside_noise({"ci": (0.16, 0.36)}, base) and not E.inside_noise({"ci": (0.70, 0.90)}, base)


def _table(rows):
    from dataclasses import asdict

    settings = {k: v for k, v in asdict(E.EfficacySettings()).items() if k not in ("rows", "columns")}
    E.kept_damage(rows, ["none", "SDEdit 0.2"])
    return {"model_dir_name": "model", "device": "cpu", "date": "2026-12-03", "style": "swirl", "resolution": 64,
            "sanity_passed": True, "sanity": None, "settings": settings, "columns": ["none", "SDEdit 0.2"],
            "rows": rows, "rows_planned": [r["label"] for r in rows], "seconds": 1.0}


def _row(label, method, cells, psnr=None):
    n = 72
    return {"label": label, "method": method, "psnr": psnr, "ssim": None, "seconds": 1.0,
            "cells": {c: {"style_accuracy": a, "ci": E.wilson(round(a * n), n), "style": a} for c, a in cells.items()}}


def test_kept_damage_is_not_reported_for_a_row_whose_damage_is_inside_the_noise():
    # AntiPure's unpurified accuracy (0.62) is inside the clean mimic's noise (0.66); its "kept" ratio would be
    # (1 - 0.30/0.66) / (1 - 0.62/0.66) ≈ 9: noise over noise, which must not read as a protection that survives,
    # nor meet the goal, even at 33 dB and ahead of the baseline.
    table = _table([_row("none", "none", {"none": 0.66, "SDEdit 0.2": 0.66}),
                    _row("AntiPure", "antipure", {"none": 0.62, "SDEdit 0.2": 0.30}, psnr=33.0),
                    _row("ASPL", "aspl", {"none": 0.20, "SDEdit 0.2": 0.50}, psnr=31.0)])
    assert table["rows"][1]["kept"]["SDEdit 0.2"] > 0.7  # the raw ratio stays in the json
    text = E.render_markdown(table)
    kept_lines = {line.split(" | ")[0]: line for line in text.split("## Kept damage")[1].split("## Second figure")[0].splitlines() if line.startswith("| ")}
    assert "n/a" in kept_lines["| AntiPure"] and "≈" in kept_lines["| AntiPure"]
    assert "n/a" not in kept_lines["| ASPL"]  # 0.20 is outside the noise: its kept damage is a number
    assert kept_lines["| ASPL"] == "| ASPL | 0.70 | 0.35 |"  # (1 - 0.50/0.66) / (1 - 0.20/0.66) = 0.35
    assert "Goal" in text and "not met" in text and "kept damage n/a" in text


def test_t_quantile_matches_students_t():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 9, 30, 31, 45, 63, 200, 7.5):
        assert E.t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-3), df


def _seeded(accs_by_seed, samples=36):
    per_seed = [{"seed": i, "style_accuracy": a, "style": a, "denoise_loss": None, "samples": samples}
                for i, a in enumerate(accs_by_seed)]
    return E.cell_from_seeds(per_seed)


def test_a_cell_interval_counts_mimic_seeds_not_samples():
    # Hand-computed: seeds 0.5/0.6 and 0.5/0.5: pooled sum of squares 0.005 over 2 degrees of freedom,
    # sd 0.05; the first cell's mean 0.55 ± t(2) 4.3027 · 0.05 / √2 = ± 0.1521.
    rows = [{"cells": {"none": _seeded([0.5, 0.6])}}, {"cells": {"none": _seeded([0.5, 0.5])}}]
    spread = E.seed_intervals(rows, ["none"])
    assert spread["df"] == 2 and spread["sd"] == pytest.approx(0.05)
    lo, hi = rows[0]["cells"]["none"]["ci"]
    assert lo == pytest.approx(0.55 - 0.1521, abs=1e-4) and hi == pytest.approx(0.55 + 0.1521, abs=1e-4)
    assert rows[0]["cells"]["none"]["ci_wilson"] == E.wilson(40, 72)  # kept beside it, for the record
    # Seeds that agree exactly: the interval is still no narrower than the samples' own (Wilson).
    same = [{"cells": {"none": _seeded([0.5, 0.5])}}]
    assert E.seed_intervals(same, ["none"])["sd"] == 0.0 and same[0]["cells"]["none"]["ci"] == E.wilson(36, 72)
    # One seed per cell: nothing to pool; the Wilson interval of the samples stays, and the table says so.
    single = [{"cells": {"none": _seeded([0.5])}}]
    assert E.seed_intervals(single, ["none"]) is None and single[0]["cells"]["none"]["ci"] == E.wilson(18, 36)


def test_two_mimics_that_disagree_do_not_make_a_difference_outside_the_noise():
    # The clean mimic's seeds drew the style 0.90 and 0.30 of the time, a protected row's 0.40 and 0.20: with
    # 72 samples each counted as independent (Wilson) the rows look apart (0.60 vs 0.30), but one seed alone
    # moved the clean mimic by 0.6, so the difference is inside the noise and the table must say ≈.
    none, protected = _seeded([0.9, 0.3]), _seeded([0.4, 0.2])
    assert not E.inside_noise(protected, none)  # what the Wilson intervals alone said
    rows = [_seeded_row("none", "none", none), _seeded_row("AntiPure", "antipure", protected)]
    table = _table(rows)
    table["seed_spread"] = E.seed_intervals(rows, ["none", "SDEdit 0.2"])
    assert E.inside_noise(rows[1]["cells"]["none"], rows[0]["cells"]["none"])
    text = E.render_markdown(table)
    line = next(ln for ln in text.splitlines() if ln.startswith("| AntiPure |"))
    assert line.split(" | ")[3].endswith("≈")
    assert "counts seeds" in text and f"sd {table['seed_spread']['sd']:.3f}" in text
    # Seeds that agree as closely as their samples allow: then 0.60 against 0.30 is a difference.
    rows = [_seeded_row("none", "none", _seeded([0.62, 0.58])), _seeded_row("AntiPure", "antipure", _seeded([0.28, 0.32]))]
    E.seed_intervals(rows, ["none", "SDEdit 0.2"])
    assert not E.inside_noise(rows[1]["cells"]["none"], rows[0]["cells"]["none"])


def _seeded_row(label, method, cell):
    return {"label": label, "method": method, "psnr": None, "ssim": None, "seconds": 1.0,
            "cells": {"none": cell, "SDEdit 0.2": dict(cell)}}


def test_rows_run_side_by_side_in_worker_processes_and_resume_in_one(proxy_copy, tmp_path, capfd):
    out = tmp_path / "run"
    base = ["efficacy", "--model", str(proxy_copy), "--out", str(out), "--allow-unchecked", "--only", "none",
            "--only", "AdvDM", "--column", "none", "--mimic-seeds", "1", *TOY_ARGS]
    assert cli_main(base + ["--jobs", "2"]) == 0
    err = capfd.readouterr().err  # the workers' own stderr too, not only this process's
    assert "[none]" in err and "[AdvDM]" in err and "in a worker of" in err  # each row ran in a worker
    assert "Warning" not in err  # the libraries' notes stay quiet in the workers as in the CLI itself
    table = json.loads((out / "efficacy.json").read_text())
    assert table["jobs"] == 2 and [r["label"] for r in table["rows"]] == ["none", "AdvDM"]
    assert all((out / r["run"] / "results.json").is_file() for r in table["rows"])
    assert "side by side in 2 processes" in (out / "efficacy.md").read_text()
    first = json.loads((out / "invocations.json").read_text())
    assert len(first) == 1 and first[0]["jobs"] == 2 and first[0]["seconds"] > 0
    assert f"{os.cpu_count()} cores" in first[0]["machine"]
    # The same table again in one process: every stage is found done, nothing is recomputed, and the wall
    # time is both invocations' (the first's as it recorded it).
    assert cli_main(base) == 0
    assert "done in" not in capfd.readouterr().err
    table = json.loads((out / "efficacy.json").read_text())
    runs = json.loads((out / "invocations.json").read_text())
    assert runs[0] == first[0] and len(runs) == 2 and runs[1]["jobs"] == 1
    assert table["invocations"] == runs
    assert table["wall_seconds"] == pytest.approx(first[0]["seconds"] + runs[1]["seconds"], abs=0.11)
    text = (out / "efficacy.md").read_text()
    assert f"**Wall time {table['wall_seconds'] / 60:.1f} min** in 2 invocation(s)" in text
    assert first[0]["machine"] in text
    assert cli_main(base + ["--jobs", "99"]) == 2 and "--jobs 99" in capfd.readouterr().err


def test_a_worker_that_cannot_start_stops_the_table_with_a_message(proxy_copy, tmp_path):
    from engine.errors import ArtveilError

    model = load_model(str(proxy_copy), device="cpu")
    settings = E.EfficacySettings(steps=2, lora_steps=2, k=1, gen_steps=2, mimic_seeds=(0,),
                                  rows=[("none", "none", {}), ("AdvDM", "advdm", {})], columns=[("none", None)])
    with pytest.raises(ArtveilError, match="could not load the model"):
        E.run_efficacy(model, proxy_copy, tmp_path / "run", settings, allow_unchecked=True, log=lambda m: None,
                       jobs=2, source=str(tmp_path / "no-such-model"))


def test_the_mimic_benchmark_times_fine_tune_steps_in_side_by_side_processes(toy_proxy_model, capsys):
    from engine.evaluation import mimic_bench

    assert mimic_bench.main(["--model", str(toy_proxy_model), "--steps", "2", "--procs", "2", "--threads", "1",
                             "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["procs"] == 2 and result["threads"] == 1 and len(result["s_per_step"]) == 2
    assert all(s > 0 for s in result["s_per_step"]) and result["throughput_steps_per_s"] > 0
