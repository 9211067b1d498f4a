"""The memory plan (engine.plan, issue 30): a job's peak estimated before it starts, the cheapest plan that fits
the device chosen, a refusal in one line when none does, and one retry with a smaller plan on out-of-memory.

The devices are stand-ins with a given budget: the planner only reads DeviceMemory, so a 6 GB card or a crowded
laptop is a number here, not hardware."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from engine import plan as P
from engine.errors import ArtveilError
from engine.faults import inject
from engine.jobs import ProtectProgress, ProtectResult, ProtectSettings
from engine.methods import get_method
from engine.protect import plan_job, protect_iter

from tests.conftest import make_image


@pytest.fixture(scope="module")
def sd15_bf16():
    """SD 1.5's shape from the shipped configs, in bf16 as on CUDA: no weights built."""
    return P._random_config_shape("sd15", 2)


@pytest.fixture(scope="module")
def sd15_fp32():
    return P._random_config_shape("sd15", 4)


def gpu(gb: float) -> P.DeviceMemory:
    return P.DeviceMemory("cuda", gb * 1024, 0.0)


ANTIPURE = get_method("antipure").memory_profile(1)


def plans_fitting(shape, profile, side, budget_mb):
    return [p for p in P.candidate_plans(512, None, side, side)
            if P.estimate(shape, profile, side, side, p, 0.0, False).peak_mb <= budget_mb]


def test_a_large_card_gets_the_plain_one_pass_plan(sd15_bf16):
    choice = P.choose_plan(sd15_bf16, ANTIPURE, 512, 512, 512, gpu(80), weights_loaded=False)
    assert choice.plan == P.Plan(two_pass=False, checkpointing=False, tile=None, working_size=512)
    assert choice.memory == "VRAM" and "one pass" in choice.line()


def test_a_6_gb_card_runs_antipure_at_512_within_6_gb_at_full_working_size(sd15_bf16):
    choice = P.choose_plan(sd15_bf16, ANTIPURE, 512, 512, 512, gpu(6 * (1 - P.CUDA_RESERVE)), weights_loaded=False)
    # (two-pass; with the default PFG and ETG on the latent, no decoder graph, checkpointing is not needed)
    assert choice.plan.working_size == 512 and choice.plan.two_pass and choice.plan.tile is None
    assert choice.estimate.peak_mb <= 6 * 1024
    # Every cheaper plan was estimated and did not fit: the choice is the cheapest that does.
    assert all(est.peak_mb > choice.budget_mb for plan, est in choice.tried[:-1])
    assert choice.tried[-1][0] == choice.plan


def test_each_smaller_budget_moves_down_the_ladder_in_order(sd15_bf16):
    ladder = P.candidate_plans(512, None, 512, 512)
    estimates = [P.estimate(sd15_bf16, ANTIPURE, 512, 512, p, 0.0, False).peak_mb for p in ladder]
    chosen = []
    for i, e in enumerate(estimates):
        if i and e >= min(estimates[:i]):
            continue  # a plan no smaller than an earlier one is never the first to fit
        chosen.append(P.choose_plan(sd15_bf16, ANTIPURE, 512, 512, 512, gpu(e / 1024), weights_loaded=False).plan)
    assert chosen[0] == ladder[0] and chosen == sorted(chosen, key=ladder.index)
    assert len(set(chosen)) == len(chosen) >= 4  # one pass, two-pass, checkpointing, tiles at least


def test_nothing_fits_is_refused_in_one_line_that_says_what_it_needs(sd15_bf16):
    with pytest.raises(ArtveilError) as info:
        P.choose_plan(sd15_bf16, ANTIPURE, 512, 512, 512, gpu(1.5), weights_loaded=False)
    assert info.value.kind == "memory"
    message = info.value.message
    assert "\n" not in message and "GB of VRAM" in message and "1.5 GB is allowed" in message
    assert "smallest plan" in message


def test_weights_not_loaded_yet_count_against_the_budget(sd15_fp32):
    before = P.estimate(sd15_fp32, ANTIPURE, 256, 256, P.Plan(working_size=256), 500.0, weights_loaded=False)
    after = P.estimate(sd15_fp32, ANTIPURE, 256, 256, P.Plan(working_size=256), 500.0, weights_loaded=True)
    assert before.peak_mb - after.peak_mb == pytest.approx(sd15_fp32.weights_mb)
    assert 3800 < sd15_fp32.weights_mb < 4400  # UNet, VAE and text encoder of SD 1.5 in fp32


def test_a_method_without_a_latent_loss_never_gets_two_pass(sd15_fp32):
    photoguard = get_method("photoguard")
    for plan in P.candidate_plans(512, False, 512, 512):
        assert not plan.two_pass
    choice = P.choose_plan(sd15_fp32, photoguard.memory_profile(1), 512, 512, 512, P.DeviceMemory("cpu", 6500, 400),
                           weights_loaded=False, two_pass=False)
    assert not choice.plan.two_pass and choice.plan.checkpointing


def test_a_real_size_model_on_the_cpu_works_at_256_px_by_default(sd15_fp32):
    assert P.default_working_size(sd15_fp32, torch.device("cpu")) == 256
    assert P.default_working_size(sd15_fp32, torch.device("cuda")) == 512


def test_the_tiny_model_keeps_its_working_size_on_the_cpu(tiny_model):
    assert P.default_working_size(P.shape_of(tiny_model), torch.device("cpu")) == 512


def test_plan_job_on_the_tiny_model_picks_one_pass_and_says_so(tiny_model):
    choice = plan_job(tiny_model, 64, 64, ProtectSettings(method="antipure", working_size=64),
                      memory=P.DeviceMemory("cpu", 64 * 1024, 500.0))
    assert choice.plan == P.Plan(working_size=64)
    items = list(protect_iter(tiny_model, make_image(64, 64), ProtectSettings(method="advdm", steps=2, working_size=64,
                                                                             measure_objective=False, preview_every=0)))
    first = next(i for i in items if isinstance(i, ProtectProgress))
    assert first.step == 1 and first.plan.startswith("plan: one pass")
    assert isinstance(items[-1], ProtectResult) and items[-1].plan == first.plan


def test_protect_refuses_before_the_first_step_when_no_plan_fits(tiny_model, monkeypatch):
    monkeypatch.setattr("engine.protect.device_memory", lambda device: P.DeviceMemory("cpu", 1.0, 0.0))
    steps = []
    with pytest.raises(ArtveilError) as info:
        for item in protect_iter(tiny_model, make_image(64, 64), ProtectSettings(method="advdm", steps=2, working_size=64)):
            steps.append(item)
    assert info.value.kind == "memory" and steps == []


# --- out of memory during a job: one retry with the next smaller plan --------------------------------------------

OOM_SETTINGS = ProtectSettings(method="mist", steps=2, working_size=128, strength_levels=8, measure_objective=False,
                               preview_every=0)


def cuda_oom() -> BaseException:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_cuda_out_of_memory_on_the_first_try_retries_once_with_the_next_smaller_plan(tiny_model):
    pixels = make_image(128, 144, seed=4)
    first = plan_job(tiny_model, 128, 144, OOM_SETTINGS)
    with inject("unet", times=1, error=cuda_oom):
        items = list(protect_iter(tiny_model, pixels, OOM_SETTINGS))
    messages = [i.message for i in items if isinstance(i, ProtectProgress) and i.message]
    assert len(messages) == 1 and messages[0].startswith("out of memory: retrying with a smaller plan (")
    result = items[-1]
    assert isinstance(result, ProtectResult)
    retried = P.next_smaller(first, P.shape_of(tiny_model), get_method("mist").memory_profile(1), 128, 144, 128)
    assert retried is not None and retried != first.plan
    assert result.plan.startswith(f"plan: {retried.describe()}") and retried.describe() in messages[0]
    change = np.abs(result.protected.astype(int) - pixels)
    assert result.protected.shape == pixels.shape and 0 < change.max() <= OOM_SETTINGS.strength_levels


def test_cuda_out_of_memory_twice_ends_in_one_line_not_a_traceback(tiny_model):
    seen = []
    with inject("unet", times=2, error=cuda_oom), pytest.raises(ArtveilError) as info:
        for item in protect_iter(tiny_model, make_image(128, 144, seed=4), OOM_SETTINGS):
            seen.append(item)
    assert info.value.kind == "memory" and "\n" not in info.value.message
    assert info.value.message.startswith("out of memory even with the plan ")
    assert len([i for i in seen if i.message]) == 1  # retried once, not more
    assert not any(isinstance(i, ProtectResult) for i in seen)


# --- the estimate against a measured peak ----------------------------------------------------------------------

MEASURE = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from engine.models import build_tiny_model
    from engine.jobs import ProtectSettings
    from engine.protect import plan_job, protect_image
    from engine.plan import process_rss_mb
    from tests.conftest import make_image
    model = build_tiny_model(device="cpu")
    method, side = sys.argv[1], int(sys.argv[2])
    settings = ProtectSettings(method=method, steps=2, working_size=side, measure_objective=False, preview_every=0)
    pixels = make_image(side, side, seed=1)
    choice = plan_job(model, side, side, settings)
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark from here on
    held = process_rss_mb()
    protect_image(model, pixels, settings)
    # VmHWM, the high-water mark clear_refs reset above (getrusage's ru_maxrss is the whole life's, start-up
    # and model building included, and no write resets it)
    hwm = [l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:")]
    peak = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"estimate": choice.estimate.peak_mb, "activations": choice.estimate.activations_mb,
                      "held": held, "peak": peak}))
""")


@pytest.mark.parametrize("method", ["antipure", "advdm"])
def test_the_estimate_covers_the_measured_peak_on_the_tiny_model(method, tmp_path):
    from tests.corpus import cli_environment

    run = subprocess.run([sys.executable, "-c", MEASURE, method, "256"], capture_output=True, text=True,
                         env=cli_environment(), timeout=600)
    assert run.returncode == 0, run.stderr
    m = json.loads(run.stdout.strip().splitlines()[-1])
    assert m["peak"] <= 1.25 * m["estimate"]
    # Not met by a blanket allowance: the activation estimate is within 4x of what the job grew by (on the tiny
    # model the libraries' first-touched pages are a large part of that growth).
    grew = m["peak"] - m["held"]
    assert 0 < m["activations"] <= 4 * max(grew, 1.0)


def test_a_model_the_estimate_cannot_trace_still_runs_and_says_there_is_no_estimate(tiny_model, monkeypatch):
    def untraceable(model):
        raise RuntimeError("no config")

    monkeypatch.setattr("engine.protect.shape_of", untraceable)
    items = list(protect_iter(tiny_model, make_image(64, 64), ProtectSettings(method="advdm", steps=2, working_size=64,
                                                                             measure_objective=False, preview_every=0)))
    assert isinstance(items[-1], ProtectResult)
    assert items[-1].plan == "plan: one pass, whole image, working size 64 px (memory not estimated for this model (RuntimeError))"


def test_bench_refuses_a_job_that_fits_no_plan_before_building_the_weights(monkeypatch, capsys):
    from engine.cli import main

    def never(*args, **kwargs):
        raise AssertionError("the weights were built")

    monkeypatch.setattr("engine.bench.build_random_model", never)
    monkeypatch.setattr("engine.plan.device_memory", lambda device: P.DeviceMemory("cpu", 3 * 1024, 400.0))
    code = main(["bench", "--model", "sd15", "--device", "cpu", "--size", "512", "--methods", "antipure", "--steps", "1",
                 "--warmup", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("artveil: antipure: this job needs about ") and "3.0 GB is allowed here" in err[0]


def test_protect_refuses_a_job_that_fits_no_plan_before_loading_the_model(monkeypatch, capsys, tmp_path):
    from PIL import Image

    from engine.cli import main

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    Image.fromarray(make_image(64, 64)).save(tmp_path / "a.png")
    monkeypatch.setattr("engine.cli_args.load_model", never, raising=False)
    monkeypatch.setattr("engine.models.load_model", never)
    monkeypatch.setattr("engine.plan.device_memory", lambda device: P.DeviceMemory("cpu", 3 * 1024, 400.0))
    code = main(["protect", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--model", "sd15", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "GB is allowed here" in err[0]


def test_the_trace_leaves_real_attention_alone_while_it_runs():
    """The trace swaps F.scaled_dot_product_attention for the length of a forward on meta tensors; real tensors
    (another thread's job meanwhile) still get the real attention."""
    import torch.nn.functional as F

    q, k, v = (torch.randn(1, 2, 16, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    assert torch.equal(P._fused_sdpa(q, k, v), F.scaled_dot_product_attention(q, k, v))
    meta = torch.zeros(1, 2, 16, 8, device="meta")
    assert P._fused_sdpa(meta, meta, meta).device.type == "meta"
