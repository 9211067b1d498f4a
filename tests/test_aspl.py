"""ASPL with a LoRA surrogate, and the surrogate machinery it shares with Anti-Diffusion and AntiPure."""

from __future__ import annotations

import numpy as np
import torch

from engine import diffusion as D
from engine.jobs import ProtectSettings
from engine.methods import MethodContext, get_method
from engine.surrogate import Surrogate, SurrogateParams, protect_set
from tests.test_antidiffusion import _unet_snapshot, assert_surrogate_method_protects, assert_unet_restored

FAST = {"pgd_per_round": 5, "clean_tune_steps": 1, "protected_tune_steps": 1}


def test_surrogate_changes_output_only_inside_applied(tiny_model, textured_image):
    snap = _unet_snapshot(tiny_model)
    x = torch.from_numpy(textured_image[:32, :32]).permute(2, 0, 1)[None].float() / 255
    z = D.encode(tiny_model, x)
    t = torch.tensor([400])
    cond = tiny_model.encode_prompt("")
    base = D.unet(tiny_model, z, t, cond)
    s = Surrogate(tiny_model, SurrogateParams(lr=1e-2))
    with s.applied():
        assert torch.equal(D.unet(tiny_model, z, t, cond), base), "an untuned LoRA (B = 0) is the base model"
    losses = s.tune([x], cond, torch.Generator().manual_seed(0), 5)
    assert len(losses) == 5
    with s.applied():
        tuned = D.unet(tiny_model, z, t, cond)
    assert float((tuned - base).abs().max()) > 1e-3
    assert torch.equal(D.unet(tiny_model, z, t, cond), base)
    assert_unet_restored(tiny_model, snap)


def test_aspl_tunes_clean_copy_each_round_and_protected_surrogate_between(tiny_model, textured_image):
    x = torch.from_numpy(textured_image[:32, :32]).permute(2, 0, 1)[None].float() / 255
    ctx = MethodContext(model=tiny_model, x_clean=x, cond=tiny_model.encode_prompt(""), generator=torch.Generator().manual_seed(0),
                        budget=8 / 255, steps=15)
    method = get_method("aspl", FAST)
    method.setup(ctx)
    for step in range(15):
        method.between_steps(ctx, x, step)
    assert ctx.cache["aspl_log"] == [("clean", 0, 1), ("protected", 5, 1), ("clean", 5, 1), ("protected", 10, 1), ("clean", 10, 1)]
    # The throw-away copy f' has seen the clean image on top of the kept surrogate's training.
    assert ctx.cache["aspl_attack"].tuned_steps == ctx.cache["surrogate"].tuned_steps + 1


def test_aspl_raises_its_objective_above_random_noise_and_budget_holds_on_png(tiny_model, tmp_path):
    assert_surrogate_method_protects(tiny_model, tmp_path, "aspl",
                                     {"pgd_per_round": 10, "clean_tune_steps": 1, "protected_tune_steps": 1})


def test_protect_set_shares_one_surrogate_and_restores_unet(tiny_model, textured_image):
    snap = _unet_snapshot(tiny_model)
    images = [textured_image[:32, :32].copy(), textured_image[32:, 32:].copy()]
    settings = ProtectSettings(method="aspl", strength_levels=6.4, steps=5, preview_every=0, measure_objective=False, method_params=FAST)
    results = protect_set(tiny_model, images, settings)
    assert len(results) == 2
    assert all(np.abs(r.protected.astype(int) - im.astype(int)).max() <= 6 for r, im in zip(results, images))
    assert not np.array_equal(results[0].protected, images[0])
    assert_unet_restored(tiny_model, snap)


def test_antipure_aspl_mode_tunes_a_surrogate_and_attacks_it(tiny_model, textured_image):
    snap = _unet_snapshot(tiny_model)
    x = torch.from_numpy(textured_image[:32, :32]).permute(2, 0, 1)[None].float() / 255
    ctx = MethodContext(model=tiny_model, x_clean=x, cond=tiny_model.encode_prompt(""), generator=torch.Generator().manual_seed(0),
                        budget=8 / 255, steps=4)
    method = get_method("antipure", {"aspl_rounds": 1, "aspl_tune_steps": 2, "use_pfg": False, "use_etg": False})
    method.setup(ctx)
    base, _ = method.loss(ctx, x, torch.Generator().manual_seed(5))
    for step in range(4):
        method.between_steps(ctx, x, step)
    assert ctx.cache["surrogate"].tuned_steps == 2
    # Same noise and timesteps: a different loss means the tuned surrogate, not the base UNet, was attacked.
    attacked, _ = method.loss(ctx, x, torch.Generator().manual_seed(5))
    assert float(attacked) != float(base)
    assert_unet_restored(tiny_model, snap)
