"""The protection loop's promises, checked for every method on the tiny model (CPU)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from engine.errors import ArtveilError, Cancelled
from engine.images import load_image, save_image
from engine.events import Progress
from engine.jobs import Job, ProtectProgress, ProtectResult, ProtectSettings
from engine.protect import protect_image, protect_iter
from tests.conftest import make_image

METHODS = ["antipure", "advdm", "photoguard", "mist", "sds"]


def quick(method: str, **kw) -> ProtectSettings:
    base = dict(method=method, strength_levels=8.0, steps=4, seed=3, working_size=64, preview_every=2, measure_objective=False)
    base.update(kw)
    return ProtectSettings(**base)


@pytest.mark.parametrize("method", METHODS)
def test_budget_holds_after_8bit_export(tiny_model, tmp_path, method):
    img = make_image(64, 64)
    # 3.2 levels a step (2ε/steps): 4 steps reach the border (the default α is 1 level at ε = 6.4).
    result = protect_image(tiny_model, img, quick(method, strength_levels=6.4, step_levels=3.2))
    path = save_image(result.protected, tmp_path / "out.protected.png")
    exported = np.asarray(Image.open(path)).astype(int)
    diff = np.abs(exported - img.astype(int))
    assert diff.max() <= 6  # floor(6.4): rounding may not push any pixel over the budget
    assert diff.max() >= 5  # and the budget is actually used, not a no-op
    assert result.metrics["linf_levels"] == diff.max()


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_gives_same_bytes(tiny_model, tmp_path, method):
    img = make_image(48, 56, seed=2)
    a = protect_image(tiny_model, img, quick(method, steps=3))
    b = protect_image(tiny_model, img, quick(method, steps=3))
    c = protect_image(tiny_model, img, quick(method, steps=3, seed=4))
    pa = save_image(a.protected, tmp_path / "a.png").read_bytes()
    pb = save_image(b.protected, tmp_path / "b.png").read_bytes()
    assert pa == pb
    if method != "photoguard":  # PhotoGuard draws no noise: its result does not depend on the seed
        assert not np.array_equal(a.protected, c.protected)


# Whether each method raises what it is meant to raise is checked against measures written in the
# tests themselves, not with the methods' own losses: tests/test_methods_reference.py.


@pytest.mark.parametrize("method", METHODS)
def test_cancel_stops_within_one_step(tiny_model, method):
    job = Job()
    seen = []
    with pytest.raises(Cancelled):
        for item in protect_iter(tiny_model, make_image(64, 64), quick(method, steps=50), job):
            seen.append(item.step)
            if item.step == 3:
                job.cancel()
    assert seen == [1, 2, 3]


def test_cancel_from_another_thread_lands_at_the_next_step(tiny_model):
    job = Job()
    steps_after_cancel = []
    cancelled_at = []

    def cancel_soon():
        job.cancel()

    with pytest.raises(Cancelled):
        for item in protect_iter(tiny_model, make_image(64, 64), quick("advdm", steps=100), job):
            if cancelled_at:
                steps_after_cancel.append(item.step)
            if item.step == 2:
                t = threading.Thread(target=cancel_soon)
                t.start()
                t.join()
                cancelled_at.append(item.step)
    assert steps_after_cancel == []


def test_stop_on_a_job_reaches_its_copy_with_another_event_sink(tiny_model):
    """The window's bridge hands the engine job.with_events(sink): Stop pressed on the window's Job stops
    the copy within one step, and the copy's events go to the new sink only."""
    window_side, engine_side = [], []
    job = Job(window_side.append)

    def on_event(event: Progress) -> None:
        assert event.phase == "protect" and isinstance(event.detail, ProtectProgress)
        engine_side.append(event.step)
        if event.step == 3:
            job.cancel()  # Stop, pressed on the window's Job

    with pytest.raises(Cancelled):
        protect_image(tiny_model, make_image(64, 64), quick("advdm", steps=50), job.with_events(on_event))
    assert engine_side == [1, 2, 3] and window_side == []


def test_stop_during_antipure_set_up_lands_within_one_normalisation_draw(tiny_model, monkeypatch):
    """AntiPure's λ normalisation runs 8 draws before the first step (tens of seconds on a CPU at 512 px):
    Stop pressed during them must not wait for all of them."""
    from engine.methods.antipure import AntiPure

    job = Job()
    draws = []
    original_terms = AntiPure._terms

    def counting_terms(self, ctx, x, generator, *args, **kwargs):
        draws.append(1)
        if len(draws) == 2:
            job.cancel()  # Stop arrives during the second draw
        return original_terms(self, ctx, x, generator, *args, **kwargs)

    monkeypatch.setattr(AntiPure, "_terms", counting_terms)
    with pytest.raises(Cancelled):
        for _ in protect_iter(tiny_model, make_image(64, 64), quick("antipure", steps=5), job):
            pass
    assert len(draws) == 2  # the draw in flight finished; none of the other six ran, nor any step


def test_stop_lands_inside_a_step_at_the_next_block_forward_or_backward(tiny_model):
    """On a CPU a real-size model's step (and AntiPure's set-up draw) takes minutes: Stop is read at each
    block of the UNet, in the forward and again in the backward, so it lands within one block, not one step."""
    ran = []
    unet = tiny_model.unet
    first, last = unet.down_blocks[0], unet.up_blocks[-1]
    for phase in ("forward", "backward"):
        job, ran = Job(), []

        def watch_forward(module, args, output, job=job, ran=ran):
            ran.append(("forward", module))
            if phase == "forward" and module is first:
                job.cancel()  # Stop pressed while the first block runs
            if phase == "backward" and module is last and output.requires_grad:
                output.register_hook(lambda g: job.cancel())  # pressed when the backward starts

        handles = [m.register_forward_hook(watch_forward) for m in (first, last)]
        try:
            with pytest.raises(Cancelled):
                for item in protect_iter(tiny_model, make_image(64, 64), quick("advdm", steps=3), job):
                    assert not isinstance(item, ProtectProgress), "a whole step ran after Stop"
        finally:
            for h in handles:
                h.remove()
        if phase == "forward":
            assert ran == [("forward", first)]  # nothing after the block in flight: not the up blocks
        else:
            assert ran[-1] == ("forward", last)  # the forward had finished; the backward stopped
    # Nothing is left installed on the model once the job has ended.
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in unet.modules())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in tiny_model.vae.modules())


def test_closing_a_job_early_ends_its_work_at_once(tiny_model):
    """A consumer that stops reading protect_iter (and closes it) ends the job's contexts then, not at garbage
    collection: the low-memory plan's checkpointing is off again and the block hooks are gone."""
    import gc

    gc.disable()
    try:
        items = protect_iter(tiny_model, make_image(64, 64), quick("advdm", steps=6, low_vram=True), Job())
        next(i for i in items if isinstance(i, ProtectProgress) and i.step >= 2)
        assert tiny_model.unet.is_gradient_checkpointing  # the job's plan, while it runs
        items.close()
        assert not tiny_model.unet.is_gradient_checkpointing
        assert not any(m._forward_pre_hooks or m._forward_hooks for m in tiny_model.unet.modules())
    finally:
        gc.enable()


@pytest.mark.parametrize("method", ["aspl", "antidiffusion"])
def test_stop_during_a_surrogate_tuning_lands_within_one_block(tiny_model, monkeypatch, method):
    """ASPL's and Anti-Diffusion's surrogate fine-tunes (their set-up, and between steps) run many UNet
    passes between two optimizer steps; Stop pressed inside one ends it at the next block."""
    from engine import surrogate as S

    job, state = Job(), {"tuning": False, "stopped": False, "blocks_after_stop": 0, "tunings": 0}
    original = S.Surrogate.tune

    def tune(self, *args, **kwargs):
        state["tuning"], state["tunings"] = True, state["tunings"] + 1
        try:
            return original(self, *args, **kwargs)
        finally:
            state["tuning"] = False

    def watch(module, args, output):
        if state["tuning"]:
            state["blocks_after_stop"] += state["stopped"]
            state["stopped"] = True
            job.cancel()  # Stop pressed while the surrogate tunes

    monkeypatch.setattr(S.Surrogate, "tune", tune)
    handles = [b.register_forward_hook(watch) for b in tiny_model.unet.down_blocks]
    try:
        with pytest.raises(Cancelled):
            for _ in protect_iter(tiny_model, make_image(64, 64), quick(method, steps=20), job):
                pass
    finally:
        for h in handles:
            h.remove()
    assert state["tunings"] == 1 and state["blocks_after_stop"] == 0


@pytest.mark.parametrize("method", METHODS)
def test_large_rgba_keeps_size_mode_and_alpha(tiny_model, tmp_path, method):
    img = make_image(900, 1500, channels=4, seed=5)
    result = protect_image(tiny_model, img, quick(method, steps=2, working_size=96))
    assert result.protected.shape == (900, 1500, 4)
    assert np.array_equal(result.protected[..., 3], img[..., 3])
    out = save_image(result.protected, tmp_path / "big.protected.png")
    with Image.open(out) as saved:
        assert saved.size == (1500, 900) and saved.mode == "RGBA"
    assert np.abs(np.asarray(Image.open(out)).astype(int) - img.astype(int)).max() <= 8


def test_tiles_mode_covers_the_whole_image_within_budget(tiny_model):
    img = make_image(150, 200, seed=9)
    result = protect_image(tiny_model, img, quick("advdm", steps=2, working_size=64, large_image="tiles"))
    diff = np.abs(result.protected.astype(int) - img.astype(int))
    assert diff.max() <= 8
    # every tile got perturbed: no 32×32 block is left untouched
    blocks = diff[: 150 // 32 * 32, : 200 // 32 * 32].reshape(150 // 32, 32, 200 // 32, 32, 3).max(axis=(1, 3, 4))
    assert (blocks > 0).all()
    assert result.steps_done == 2 * 12  # 150×200 at 64-px tiles with overlap: 3 rows × 4 columns


def test_progress_reports_losses_eta_and_previews(tiny_model):
    items = list(protect_iter(tiny_model, make_image(64, 64), quick("antipure", steps=6, preview_every=3)))
    progress = [i for i in items if isinstance(i, ProtectProgress)]
    assert isinstance(items[-1], ProtectResult)
    assert [p.step for p in progress] == [1, 2, 3, 4, 5, 6]
    assert {"semantic", "pfg", "etg", "loss"} <= set(progress[0].losses)
    assert progress[0].eta_s is None and progress[-2].eta_s is not None  # ETA only after warm-up
    previews = [p for p in progress if p.preview is not None]
    assert [p.step for p in previews] == [3, 6] and previews[0].preview.shape == (64, 64, 3)


def test_settings_are_validated_with_clear_messages(tiny_model):
    img = make_image(64, 64)
    for bad, words in [
        (dict(strength_levels=0), "strength"),
        (dict(strength_levels=100), "strength"),
        (dict(steps=0), "steps"),
        (dict(method="nope"), "unknown method"),
        (dict(eot=("sparkle",)), "EOT"),
    ]:
        with pytest.raises(ArtveilError, match=words):
            list(protect_iter(tiny_model, img, quick(bad.pop("method", "advdm"), **bad)))


def test_eot_transforms_run_and_respect_budget(tiny_model):
    img = make_image(64, 64)
    result = protect_image(tiny_model, img, quick("advdm", steps=4, eot=("blur", "resize", "jpeg", "flip", "identity"), eot_samples=2))
    assert 0 < result.metrics["linf_levels"] <= 8


def test_identity_beside_jpeg_leaves_some_steps_on_the_plain_image():
    """eot=jpeg+identity: about half the draws are JPEG (the image changes), the others leave it exactly as it is."""
    import torch

    from engine.eot import draw_transform

    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    plain = [torch.equal(draw_transform(("jpeg", "identity"), gen)(x), x) for _ in range(200)]
    assert 60 <= sum(plain) <= 140
    assert not any(torch.equal(draw_transform(("jpeg",), gen)(x), x) for _ in range(20))


def test_exif_rotation_and_icc_profile_reach_the_output(tiny_model, tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = Image.fromarray(make_image(40, 64))
    exif = src.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rotated.jpg"
    src.save(path, exif=exif, icc_profile=icc, quality=95)
    loaded = load_image(path)
    assert loaded.pixels.shape[:2] == (64, 40)  # displayed orientation
    result = protect_image(tiny_model, loaded.pixels, quick("photoguard", steps=2))
    out = save_image(result.protected, tmp_path / "rotated.protected.png", icc_profile=loaded.icc_profile)
    with Image.open(out) as saved:
        assert saved.size == (40, 64)
        assert saved.info.get("icc_profile") == icc


def test_result_reports_the_warm_step_time_without_the_fixed_costs():
    from engine.protect import _steady_step_seconds

    # set-up 10 s, two slow warm-up steps, then 1 s per step
    times = [0.0, 10.0 + 5.0, 15.0 + 3.0, 19.0, 20.0, 21.0]
    assert _steady_step_seconds(times) == pytest.approx(1.0)
    assert _steady_step_seconds([0.0, 12.0, 13.0]) == pytest.approx(1.0)  # two steps: the set-up is still left out
    assert _steady_step_seconds([0.0, 12.0]) is None  # one step cannot be told from the set-up


def test_protect_result_step_time_is_below_the_whole_job_time_per_step(tiny_model):
    result = protect_image(tiny_model, make_image(64, 64), quick("antipure", steps=5))
    assert result.step_seconds is not None and 0 < result.step_seconds
    assert result.step_seconds * result.steps_done < result.seconds


@pytest.mark.parametrize("strength, steps, expected", [(8, 100, 1.0), (8, 400, 1.0), (16, 200, 1.0), (8, 50, 1.0), (16, 50, 1.6), (12, 10, 1.2), (8, 4, 1.0)])
def test_default_step_is_one_level_or_a_tenth_of_the_budget_for_short_budgets(strength, steps, expected):
    """methods.md §2 and ProtectSettings: α = 1 level per step, or ε/10 for short budgets (under 100
    steps) when that is larger."""
    from engine.protect import default_step_levels

    assert default_step_levels(strength, steps) == pytest.approx(expected)


def test_objective_start_and_end_are_measured_on_the_same_state_of_the_method(tiny_model, monkeypatch):
    """A method whose model changes during the job (a tuned surrogate or prompt) must report the start and
    end objectives of one model: otherwise the difference mixes the tuning with the protection."""
    from engine import methods as registry
    from engine.methods.advdm import AdvDM

    class Drifting(AdvDM):
        name = "drifting"

        def setup(self, ctx):
            ctx.cache["tunings"] = 0

        def between_steps(self, ctx, x_protected, step):
            ctx.cache["tunings"] += 1

        def objective(self, ctx, x, seeds=None, batch=None):
            return float(ctx.cache["tunings"])  # which state of the "model" measured it

    monkeypatch.setitem(registry.METHODS, "drifting", Drifting)
    result = protect_image(tiny_model, make_image(32, 32), quick("drifting", steps=3, measure_objective=True))
    assert result.objective_start == result.objective_end == 3.0
