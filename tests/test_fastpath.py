"""The speed and memory options give the same protection as the plain fp32 path (tiny model, CPU)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.jobs import ProtectSettings
from engine.methods import MethodContext, get_method
from engine.metrics import to_tensor
from engine.models import speed_mode
from engine.protect import plan_regions, protect_image, step_gradient, two_pass_allowed

TWO_PASS_METHODS = ("antipure", "advdm", "mist")


def _context(model, image: np.ndarray, method, seed: int = 0) -> MethodContext:
    g = torch.Generator().manual_seed(seed)
    ctx = MethodContext(model=model, x_clean=to_tensor(image), cond=model.encode_prompt(""), generator=g,
                        eps=8 / 255, steps=10, timesteps_per_step=2)
    method.setup(ctx)
    return ctx


def _gradient(model, image, method_name, settings, two_pass, delta_seed=3, params=None):
    """∇_δ at a fixed non-zero δ, with a fixed noise draw: comparable across paths."""
    method = get_method(method_name, params)
    ctx = _context(model, image, method)
    delta = (torch.rand(ctx.x_clean.shape, generator=torch.Generator().manual_seed(delta_seed)) - 0.5) * (8 / 255)
    delta.requires_grad_(True)
    grad, loss, _ = step_gradient(method, ctx, ctx.x_clean + delta, delta, ctx.fresh_generator(11), two_pass, settings)
    return grad, float(loss)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("method_name", TWO_PASS_METHODS)
def test_two_pass_backward_gives_the_single_graph_gradient(tiny_model, textured_image, method_name):
    settings = ProtectSettings(method=method_name)
    plain, loss_plain = _gradient(tiny_model, textured_image, method_name, settings, two_pass=False)
    split, loss_split = _gradient(tiny_model, textured_image, method_name, settings, two_pass=True)
    assert plain.abs().sum() > 0
    assert _rel(split, plain) < 1e-5
    assert loss_split == pytest.approx(loss_plain, rel=1e-6)


def test_two_pass_keeps_antipure_contrast_variant_and_direct_image_terms(tiny_model, textured_image):
    # PFG "match" reads x directly as well as through z: both gradient paths must be summed.
    for params in ({"pfg_variant": "contrast"}, {"use_etg": False}):
        settings = ProtectSettings(method="antipure", method_params=params)
        plain, _ = _gradient(tiny_model, textured_image, "antipure", settings, False, params=params)
        split, _ = _gradient(tiny_model, textured_image, "antipure", settings, True, params=params)
        assert _rel(split, plain) < 1e-5


def test_channels_last_gives_the_same_gradient(tiny_model, textured_image):
    settings = ProtectSettings(method="antipure")
    plain, _ = _gradient(tiny_model, textured_image, "antipure", settings, two_pass=False)
    with speed_mode(tiny_model, channels_last=True):
        nhwc, _ = _gradient(tiny_model, textured_image, "antipure", settings, two_pass=False)
    assert _rel(nhwc, plain) < 1e-4


def test_gradient_checkpointing_gives_the_same_gradient(tiny_model, textured_image):
    settings = ProtectSettings(method="antipure")
    plain, _ = _gradient(tiny_model, textured_image, "antipure", settings, two_pass=False)
    with speed_mode(tiny_model, checkpointing=True, vae_tiling=True):
        lean, _ = _gradient(tiny_model, textured_image, "antipure", settings, two_pass=True)
    assert _rel(lean, plain) < 1e-5


# Methods whose loss runs a tuned surrogate (and Anti-Diffusion's capturing attention processors) inside the
# forward, with tunings small enough for a test.
TUNED = {
    "aspl": {"clean_tune_steps": 1, "protected_tune_steps": 1},
    "antidiffusion": {"pt_steps": 1, "rounds": 1, "surrogate_steps": 1},
    "antipure": {"aspl_rounds": 1, "aspl_tune_steps": 1},
}


def _tuned_gradient(model, image, method_name, two_pass):
    """∇_δ after the method's first surrogate tuning (between_steps run until one has happened)."""
    params = TUNED[method_name]
    method = get_method(method_name, params)
    ctx = _context(model, image, method)
    delta = (torch.rand(ctx.x_clean.shape, generator=torch.Generator().manual_seed(3)) - 0.5) * (8 / 255)
    tuned = lambda: any(getattr(ctx.cache.get(k), "tuned_steps", 0) > 0 for k in ("surrogate", "aspl_attack"))  # noqa: E731
    for step in range(ctx.steps):
        method.between_steps(ctx, (ctx.x_clean + delta).detach(), step)
        if tuned():
            break
    assert tuned(), f"{method_name}: no surrogate was tuned"
    delta.requires_grad_(True)
    settings = ProtectSettings(method=method_name, method_params=params)
    grad, _, _ = step_gradient(method, ctx, ctx.x_clean + delta, delta, ctx.fresh_generator(11), two_pass, settings)
    return grad


@pytest.mark.parametrize("method_name", sorted(TUNED))
def test_gradient_checkpointing_meets_the_tuned_surrogate_in_the_backward(tiny_model, textured_image, method_name):
    # Checkpointing recomputes each block's forward during the backward: the surrogate the loss ran (and
    # Anti-Diffusion's attention capture) must still be in place then, or the step fails (CheckpointError:
    # a different number of tensors saved) or, worse, takes the base model's gradient.
    plain = _tuned_gradient(tiny_model, textured_image, method_name, two_pass=False)
    with speed_mode(tiny_model, checkpointing=True):
        lean = _tuned_gradient(tiny_model, textured_image, method_name, two_pass=True)
    assert plain.abs().sum() > 0
    assert _rel(lean, plain) < 1e-5


def test_low_vram_mode_protects_the_same_way(tiny_model, textured_image):
    base = ProtectSettings(method="antipure", steps=4, preview_every=0, measure_objective=False, timesteps_per_step=2)
    plain = protect_image(tiny_model, textured_image, base).protected.astype(int)
    lean = protect_image(tiny_model, textured_image, replace(base, low_vram=True)).protected.astype(int)
    changed = np.abs(plain - textured_image.astype(int)).sum()
    assert changed > 0
    # A sign step can flip only where a gradient entry is ~0: allow a handful of pixels.
    assert np.mean(plain == lean) > 0.999
    assert np.abs(plain - lean).max() <= 2


def test_bf16_autocast_follows_the_fp32_gradient(tiny_model, textured_image):
    fp32 = ProtectSettings(method="antipure")
    g32, l32 = _gradient(tiny_model, textured_image, "antipure", fp32, two_pass=False)
    g16, l16 = _gradient(tiny_model, textured_image, "antipure", replace(fp32, precision="bf16"), two_pass=False)
    agreement = float((g16.sign() == g32.sign()).float().mean())
    assert agreement > 0.90
    assert l16 == pytest.approx(l32, rel=0.02)


def test_speed_mode_hands_the_model_back_unchanged(tiny_model, textured_image):
    # Purification and the preview share the model: nothing of a job's speed state may leak into them.
    before = torch.backends.cudnn.benchmark
    settings = ProtectSettings(method="advdm", steps=2, preview_every=0, measure_objective=False,
                               channels_last=True, low_vram=True)
    protect_image(tiny_model, textured_image, settings)
    conv = tiny_model.unet.conv_in.weight
    assert conv.is_contiguous()
    assert not tiny_model.unet.is_gradient_checkpointing
    assert not tiny_model.vae.use_tiling and not tiny_model.vae.use_slicing
    assert tiny_model.unet_runner is tiny_model.unet
    assert torch.backends.cudnn.benchmark == before


def test_methods_without_a_unet_graph_skip_the_extra_encoder_pass():
    from engine.plan import candidate_plans

    settings = ProtectSettings()
    # The memory plan decides (engine.plan): any plan for a method with a latent loss, never two-pass without one.
    assert all(two_pass_allowed(get_method(m), settings) is None for m in TWO_PASS_METHODS)
    for name in ("photoguard", "sds"):
        assert two_pass_allowed(get_method(name), settings) is False
        assert not any(p.two_pass for p in candidate_plans(512, two_pass_allowed(get_method(name), settings), 512, 512))
    assert two_pass_allowed(get_method("antipure"), replace(settings, two_pass=False)) is False


def test_a_subclass_that_redefines_loss_is_never_run_through_its_parents_latent_loss():
    from engine.methods.advdm import AdvDM

    class Sharper(AdvDM):  # a new loss on AdvDM's set-up: the two-pass step must not call AdvDM's latent loss
        def loss(self, ctx, x, generator):
            return x.square().sum(), {}

    class Retimed(AdvDM):  # a new latent loss: the two-pass step may run it
        def loss_from_latent(self, ctx, z, x, generator):
            return z.square().sum(), {}

    asked = ProtectSettings(two_pass=True)
    assert two_pass_allowed(Sharper(), asked) is False
    assert two_pass_allowed(Retimed(), asked) is True
    assert two_pass_allowed(AdvDM(), asked) is True


def test_low_vram_mode_optimizes_a_large_image_in_256_px_tiles_of_the_working_copy():
    settings = ProtectSettings(working_size=512, low_vram=True)
    (wh, ww), regions = plan_regions(1024, 768, settings, None)
    assert (wh, ww) == (512, 384)
    assert all(r.y1 - r.y0 <= 256 and r.x1 - r.x0 <= 256 for r in regions)
    covered = np.zeros((wh, ww), bool)
    for r in regions:
        covered[r.y0 : r.y1, r.x0 : r.x1] = True
    assert covered.all()
    (_, _), whole = plan_regions(1024, 768, replace(settings, low_vram=False), None)
    assert len(whole) == 1


def test_a_plans_tiles_cut_the_working_copy_not_the_full_image():
    # The plan line says "working size 256 px": its 128-px tiles must cut the 256-px working copy (9 tiles), not
    # the 512-px image (25 tiles, 2.8x the work, and a finer δ than the plan says).
    settings = ProtectSettings(working_size=256)
    (wh, ww), regions = plan_regions(512, 512, settings, 128)
    assert (wh, ww) == (256, 256)
    assert len(regions) == 9
    assert all(r.y1 - r.y0 <= 128 and r.x1 - r.x0 <= 128 for r in regions)
    # "tiles" keeps the full resolution by design: working-size tiles of the image itself.
    (wh, ww), full = plan_regions(512, 512, replace(settings, large_image="tiles"), 128)
    assert (wh, ww) == (512, 512) and len(full) == 25


def test_a_job_under_a_tiled_plan_optimizes_the_tiles_of_its_working_copy(tiny_model, textured_image):
    # End to end: a 256² image, working size 128, a forced plan of 64-px tiles -> the 128-px working copy in 9
    # tiles (one step each), not the 256-px image in 25.
    from engine.jobs import ProtectResult
    from engine.plan import Plan
    from engine.protect import protect_iter

    big = np.kron(textured_image, np.ones((4, 4, 1), np.uint8))
    settings = ProtectSettings(method="photoguard", steps=1, working_size=128, preview_every=0,
                               measure_objective=False)
    plan = Plan(two_pass=False, checkpointing=False, tile=64, working_size=128)
    result = [r for r in protect_iter(tiny_model, big, settings, plan=plan) if isinstance(r, ProtectResult)][0]
    assert result.steps_done == 9
    assert result.protected.shape == big.shape


@pytest.mark.slow  # torch.compile of the tiny UNet takes about 3 minutes on one CPU thread
def test_compiled_unet_gives_the_same_gradient(tiny_model, textured_image):
    from engine.models import compile_available

    if compile_available(tiny_model.device) is not None:
        pytest.skip(compile_available(tiny_model.device))
    settings = ProtectSettings(method="antipure")
    plain, _ = _gradient(tiny_model, textured_image, "antipure", settings, two_pass=False)
    with speed_mode(tiny_model, compile_unet=True):
        assert tiny_model.unet_runner is not tiny_model.unet
        compiled, _ = _gradient(tiny_model, textured_image, "antipure", settings, two_pass=False)
    assert tiny_model.unet_runner is tiny_model.unet
    assert _rel(compiled, plain) < 1e-4
