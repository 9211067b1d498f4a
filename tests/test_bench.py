"""`artveil bench`: the report a GPU session reads (fields and arithmetic, never the speed itself)."""

from __future__ import annotations

import json

import pytest

from engine.bench import selected_methods
from engine.cli import main
from engine.methods import METHODS


# The loop's own methods; the surrogate-tuning ones (ASPL, Anti-Diffusion) spend their time in setup
# and between steps, which this test is not about. By default the bench runs every registered method.
CORE_METHODS = ("antipure", "advdm", "photoguard", "mist", "sds")


def test_bench_runs_every_registered_method_by_default():
    assert selected_methods("") == list(METHODS)
    assert selected_methods("sds, mist") == ["sds", "mist"]


def test_bench_json_reports_every_method_and_its_naive_reference(capsys):
    code = main(["bench", "--model", "tiny", "--size", "64", "--steps", "2", "--warmup", "1", "--json",
                 "--methods", ",".join(CORE_METHODS)])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert report["size"] == 64 and report["timed_steps"] == 2 and report["extrapolated_to_steps"] == 100
    assert report["device_kind"] == "cpu" and report["dtype"] == "float32"
    rows = {(r["method"], r["variant"]): r for r in report["results"]}
    assert set(rows) == {(m, v) for m in CORE_METHODS for v in ("fast", "naive")}
    for (method, variant), r in rows.items():
        assert "error" not in r, r
        assert r["seconds_per_step"] > 0
        assert r["seconds_per_image_100_steps_extrapolated"] == pytest.approx(100 * r["seconds_per_step"])
        assert r["memory_kind"] == "cpu_peak_rss"
        assert r["peak_memory_mb"] > 0 and r["baseline_memory_mb"] > 0
        if variant == "fast":
            naive = rows[(method, "naive")]
            assert r["speedup_vs_naive"] == pytest.approx(naive["seconds_per_step"] / r["seconds_per_step"])
        else:
            assert "speedup_vs_naive" not in r and r["two_pass"] is False


def test_bench_table_says_seconds_per_image_are_extrapolated(capsys):
    code = main(["bench", "--model", "tiny", "--size", "64", "--steps", "1", "--warmup", "1", "--methods", "photoguard"])
    out = capsys.readouterr().out
    assert code == 0
    assert "extrapolated to 100 steps" in out
    lines = [line for line in out.splitlines() if line.startswith("photoguard")]
    assert [line.split()[1] for line in lines] == ["fast", "naive"]


def test_bench_refuses_unknown_methods_before_loading_a_model(capsys):
    assert main(["bench", "--model", "tiny", "--methods", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_default_bench_model_has_the_shape_of_stable_diffusion_15():
    # Built on the meta device: the shapes of the real thing without allocating 4 GB.
    from engine.bench import build_random_model

    model = build_random_model("sd15", device="meta")
    unet_params = sum(p.numel() for p in model.unet.parameters())
    assert 855e6 < unet_params < 865e6
    assert model.vae_scale_factor == 8 and model.unet.config.cross_attention_dim == 768
