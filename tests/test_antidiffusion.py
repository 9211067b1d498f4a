"""Anti-Diffusion on the tiny model: schedule, attention capture, gradient path, UNet restored, budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import diffusion as D
from engine.errors import ArtveilError
from engine.images import load_image, save_image
from engine.jobs import ProtectSettings
from engine.methods import MethodContext, get_method
from engine.methods.antidiffusion import capture_cross_attention, schedule, semantic_disturbance_loss
from engine.protect import protect_image
from engine.protect_set import protect_images
from tests.conftest import make_image

FAST = {"pt_steps": 3, "rounds": 2, "surrogate_steps": 2}


def _unet_snapshot(model):
    return (
        {k: v.detach().clone() for k, v in model.unet.state_dict().items()},
        [type(m).__name__ for m in model.unet.modules()],
        {k: type(v).__name__ for k, v in model.unet.attn_processors.items()},
    )


def assert_unet_restored(model, snapshot):
    state, types, procs = snapshot
    now = model.unet.state_dict()
    assert set(now) == set(state)
    assert all(torch.equal(now[k], state[k]) for k in state)
    assert [type(m).__name__ for m in model.unet.modules()] == types
    assert {k: type(v).__name__ for k, v in model.unet.attn_processors.items()} == procs
    assert not any(p.requires_grad for p in model.unet.parameters())


def _ctx(model, x, steps=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return MethodContext(model=model, x_clean=x, cond=model.encode_prompt(""), generator=g, eps=8 / 255, steps=steps)


def test_schedule_maps_published_rounds_onto_steps():
    # 60 steps = the published 10 PGD steps per phase: surrogate tuning opens phase 1, then PT re-tune + tuning.
    plan = schedule(60, 5)
    assert plan == {10: ("surrogate",), 20: ("pt", "surrogate"), 30: ("pt", "surrogate"), 40: ("pt", "surrogate"), 50: ("pt", "surrogate")}
    assert schedule(12, 2) == {4: ("surrogate",), 8: ("pt", "surrogate")}


def test_prompt_tuning_and_surrogate_run_on_schedule(tiny_model, textured_image):
    method = get_method("antidiffusion", {**FAST, "pt_steps": 2})
    x = torch.from_numpy(textured_image[:32, :32]).permute(2, 0, 1)[None].float() / 255
    ctx = _ctx(tiny_model, x)
    method.setup(ctx)
    empty = tiny_model.encode_prompt("")
    assert ctx.cache["ad_log"] == [("pt", 2)]
    assert not torch.equal(ctx.cache["ad_embedding"], empty), "prompt tuning must move the embedding"
    for step in range(12):
        method.between_steps(ctx, x, step)
    assert ctx.cache["ad_log"] == [("pt", 2), ("surrogate", 2), ("pt", 2), ("surrogate", 2)]
    assert ctx.cache["surrogate"].tuned_steps == 4


def test_sdl_captures_only_small_down_and_up_maps(tiny_model, textured_image):
    # 64 px -> 8x8 latent; the tiny UNet's cross-attention runs at 4x4 in down_blocks.1, mid and up_blocks.0.
    z = torch.zeros(1, 4, 8, 8)
    t = torch.tensor([500])
    with capture_cross_attention(tiny_model.unet, max_tokens=16) as maps:
        D.unet(tiny_model, z, t, tiny_model.encode_prompt(""))
    names = [n for n, _ in maps]
    assert names and all(n.startswith(("down_blocks.", "up_blocks.")) and ".attn2." in n for n in names)
    assert not any(n.startswith("mid_block") for n in names)
    assert all(p.shape[2] == 16 and p.shape[3] == 77 for _, p in maps)
    with capture_cross_attention(tiny_model.unet, max_tokens=15) as maps:
        D.unet(tiny_model, z, t, tiny_model.encode_prompt(""))
    assert maps == []
    # The default threshold keeps these maps on the tiny model; a smaller fraction keeps none and says so.
    x = torch.from_numpy(textured_image).permute(2, 0, 1)[None].float() / 255
    get_method("antidiffusion", FAST).setup(_ctx(tiny_model, x))
    with pytest.raises(ArtveilError, match="sdl_max_fraction"):
        get_method("antidiffusion", {**FAST, "sdl_max_fraction": 0.25}).setup(_ctx(tiny_model, x))


def test_sdl_gradient_reaches_delta(tiny_model, textured_image):
    x = torch.from_numpy(textured_image).permute(2, 0, 1)[None].float() / 255
    delta = torch.zeros_like(x, requires_grad=True)
    z = D.encode(tiny_model, x + delta)
    t = torch.tensor([500])
    with capture_cross_attention(tiny_model.unet, max_tokens=16) as maps:
        D.unet(tiny_model, z, t, tiny_model.encode_prompt(""))
    # scale 1: the tiny model's near-uniform attention (1/77) would saturate the clamp at scale 100.
    sdl = semantic_disturbance_loss(maps, (8, 8), scale=1.0)
    grad = torch.autograd.grad(sdl, delta)[0]
    assert float(grad.abs().max()) > 0


def test_unet_restored_bit_exactly_after_protection(tiny_model, textured_image):
    snap = _unet_snapshot(tiny_model)
    t = torch.tensor([300])
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    before = D.unet(tiny_model, z, t, tiny_model.encode_prompt(""))
    params = {**FAST, "pt_steps": 1, "rounds": 1}
    lora = ProtectSettings(method="antidiffusion", strength_levels=8, steps=4, preview_every=0, measure_objective=False, method_params=params)
    protect_images(tiny_model, [textured_image[:32, :32], textured_image[32:, 32:]], lora)
    assert_unet_restored(tiny_model, snap)
    full = ProtectSettings(method="antidiffusion", strength_levels=8, steps=4, preview_every=0, measure_objective=False,
                           method_params={**params, "surrogate": "full", "surrogate_lr": 1e-3})
    protect_image(tiny_model, textured_image[:32, :32].copy(), full)
    assert_unet_restored(tiny_model, snap)
    assert torch.equal(D.unet(tiny_model, z, t, tiny_model.encode_prompt("")), before)


def assert_surrogate_method_keeps_budget_and_unet(tiny_model, tmp_path, method: str, params: dict) -> None:
    """A method with a surrogate keeps its budget on the exported PNG, changes the image, and leaves the
    shared UNet unchanged. Whether it protects is scored in tests/test_methods_reference.py."""
    snap = _unet_snapshot(tiny_model)
    img = make_image(32, 32, seed=7)
    settings = ProtectSettings(method=method, strength_levels=8, steps=8, seed=3, timesteps_per_step=4,
                               preview_every=0, measure_objective=False, method_params=params)
    result = protect_image(tiny_model, img, settings)
    assert_unet_restored(tiny_model, snap)
    reloaded = load_image(save_image(result.protected, tmp_path / "a.protected.png")).pixels
    diff = np.abs(reloaded.astype(int) - img.astype(int))
    assert 0 < diff.max() <= 8


def test_budget_holds_on_png_and_unet_is_restored(tiny_model, tmp_path):
    assert_surrogate_method_keeps_budget_and_unet(tiny_model, tmp_path, "antidiffusion", {"pt_steps": 3, "rounds": 1, "surrogate_steps": 2})
