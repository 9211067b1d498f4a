"""ASPL with a LoRA surrogate, and the surrogate machinery it shares with Anti-Diffusion and AntiPure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import diffusion as D
from engine.jobs import ProtectSettings
from engine.methods import MethodContext, get_method
from engine.protect_set import protect_images
from engine.surrogate import Surrogate, SurrogateParams
from tests.test_antidiffusion import _unet_snapshot, assert_surrogate_method_keeps_budget_and_unet, assert_unet_restored

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
                        eps=8 / 255, steps=15)
    method = get_method("aspl", FAST)
    method.setup(ctx)
    for step in range(15):
        method.between_steps(ctx, x, step)
    assert ctx.cache["aspl_log"] == [("clean", 0, 1), ("protected", 5, 1), ("clean", 5, 1), ("protected", 10, 1), ("clean", 10, 1)]
    # The throw-away copy f' has seen the clean image on top of the kept surrogate's training.
    assert ctx.cache["aspl_attack"].tuned_steps == ctx.cache["surrogate"].tuned_steps + 1


def test_aspl_budget_holds_on_png_and_unet_is_restored(tiny_model, tmp_path):
    assert_surrogate_method_keeps_budget_and_unet(tiny_model, tmp_path, "aspl",
                                                  {"pgd_per_round": 4, "clean_tune_steps": 1, "protected_tune_steps": 1})


def test_aspl_attacks_the_tuned_copy_not_the_base_model(tiny_model, textured_image):
    """Same draws: ASPL's loss is the denoising loss of f' (the copy tuned on the clean image), not of the base UNet."""
    from engine.methods.advdm import semantic_loss

    x = torch.from_numpy(textured_image[:32, :32]).permute(2, 0, 1)[None].float() / 255
    ctx = MethodContext(model=tiny_model, x_clean=x, cond=tiny_model.encode_prompt(""), generator=torch.Generator().manual_seed(0),
                        eps=8 / 255, steps=6, timesteps_per_step=4)
    method = get_method("aspl", {"pgd_per_round": 6, "clean_tune_steps": 2, "protected_tune_steps": 1,
                                 "surrogate_lr": 1e-2})
    method.setup(ctx)
    method.between_steps(ctx, x, 0)
    z = D.encode(tiny_model, x)
    loss, _ = method.loss(ctx, x, torch.Generator().manual_seed(5))
    base = semantic_loss(ctx, z, torch.Generator().manual_seed(5))
    with ctx.cache["aspl_attack"].applied():
        attacked = semantic_loss(ctx, z, torch.Generator().manual_seed(5))
    assert float(loss) == pytest.approx(float(attacked), rel=1e-6)
    assert abs(float(attacked) - float(base)) > 1e-6


def test_a_batch_shares_one_surrogate_and_restores_unet(tiny_model, textured_image, monkeypatch):
    """One kept surrogate serves every image of the set, and its protected tuning sees the whole set."""
    from engine.methods import aspl as aspl_module

    calls, current = [], {}
    original_tune, original_surrogate_for = Surrogate.tune, aspl_module.surrogate_for

    def surrogate_for(ctx, params):
        current["image"] = ctx.pool.current  # the set's pool, handed in by the batch
        return original_surrogate_for(ctx, params)

    def spy(self, images, *args, **kwargs):
        calls.append((self, current["image"], len(images)))  # the object, not its id: a freed copy's id is reused
        return original_tune(self, images, *args, **kwargs)

    monkeypatch.setattr(aspl_module, "surrogate_for", surrogate_for)
    monkeypatch.setattr(Surrogate, "tune", spy)
    snap = _unet_snapshot(tiny_model)
    images = [textured_image[:32, :32].copy(), textured_image[32:, 32:].copy()]
    params = {"pgd_per_round": 3, "clean_tune_steps": 1, "protected_tune_steps": 1}
    settings = ProtectSettings(method="aspl", strength_levels=6.4, steps=6, step_levels=2.0, preview_every=0,
                               measure_objective=False, method_params=params)
    results = protect_images(tiny_model, images, settings)
    assert len(results) == 2
    assert all(0 < np.abs(r.protected.astype(int) - im.astype(int)).max() <= 6 for r, im in zip(results, images))
    by_surrogate: dict[int, set[int]] = {}  # ids stay unique: calls holds every surrogate alive
    for surrogate, image, _ in calls:
        by_surrogate.setdefault(id(surrogate), set()).add(image)
    shared = [sid for sid, seen in by_surrogate.items() if seen == {0, 1}]
    assert len(shared) == 1, calls  # the kept surrogate; the throw-away copies are per round
    assert all(n == 2 for surrogate, _, n in calls if id(surrogate) == shared[0])  # tuned on both images of the set
    assert_unet_restored(tiny_model, snap)


def test_antipure_aspl_mode_tunes_a_surrogate_and_attacks_it(tiny_model, textured_image):
    snap = _unet_snapshot(tiny_model)
    x = torch.from_numpy(textured_image[:32, :32]).permute(2, 0, 1)[None].float() / 255
    ctx = MethodContext(model=tiny_model, x_clean=x, cond=tiny_model.encode_prompt(""), generator=torch.Generator().manual_seed(0),
                        eps=8 / 255, steps=4)
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


def test_full_surrogate_trains_a_bf16_model_at_the_published_learning_rate(textured_image):
    """mode="full" keeps fp32 master weights: at lr 5e-7 a bf16 copy would round nearly every update away
    (0.6 % of weights changed in 20 steps, against 99 % in fp32), and the tuned surrogate would be the base."""
    import dataclasses

    from engine.models import build_tiny_model

    model = build_tiny_model(seed=0, device="cpu")
    for part in (model.unet, model.vae, model.text_encoder):
        part.to(torch.bfloat16)
    model = dataclasses.replace(model, dtype=torch.bfloat16)  # a copy: prompts are encoded again, in bf16
    base = {k: v.detach().clone() for k, v in model.unet.state_dict().items()}
    x = torch.from_numpy(textured_image[:32, :32]).permute(2, 0, 1)[None].float() / 255
    s = Surrogate(model, SurrogateParams(mode="full"))  # lr None: the published 5e-7
    assert s.params.learning_rate() == 5e-7
    before = {k: v.detach().clone() for k, v in s.tensors.items()}
    s.tune([x], model.encode_prompt(""), torch.Generator().manual_seed(0), 20)
    changed = sum(int((s.tensors[k] != before[k]).sum()) for k in before)
    total = sum(v.numel() for v in before.values())
    assert changed / total > 0.9, changed / total
    # The model runs the masters in its own dtype inside applied(), and the shared UNet is untouched.
    z = D.encode(model, x)
    t = torch.tensor([400])
    cond = model.encode_prompt("")
    plain = D.unet(model, z, t, cond)
    with s.applied():
        assert all(p.dtype == torch.bfloat16 for p in model.unet.parameters())
        tuned = D.unet(model, z, t, cond)
    assert tuned.shape == plain.shape
    assert all(torch.equal(v, base[k]) for k, v in model.unet.state_dict().items())
    # Gradients reach the fp32 masters through the cast: a large lr moves the bf16 output.
    s2 = Surrogate(model, SurrogateParams(mode="full", lr=1e-3))
    s2.tune([x], cond, torch.Generator().manual_seed(0), 2)
    with s2.applied():
        assert float((D.unet(model, z, t, cond) - plain).abs().max()) > 1e-3
