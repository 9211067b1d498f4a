"""Mist's loss is the spec's: 10⁴·L_sem − ‖E(x') − E(pattern)‖², the texture term a sum as in Mist's code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.methods import MethodContext, get_method
from engine.methods.mist import target_pattern
from tests.conftest import make_image


@pytest.mark.parametrize("size", [32, 64])
def test_texture_term_is_the_squared_latent_distance_summed_not_averaged(tiny_model, size):
    """A mean would weaken the texture term by the latent's element count (16,384 at 512 px)."""
    x = torch.from_numpy(make_image(size, size, seed=7)).permute(2, 0, 1)[None].float() / 255
    ctx = MethodContext(tiny_model, x, tiny_model.encode_prompt(""), torch.Generator().manual_seed(0), 8 / 255, 10)
    method = get_method("mist")
    method.setup(ctx)
    _, terms = method.loss(ctx, x, torch.Generator().manual_seed(1))
    pattern = torch.from_numpy(target_pattern(size, size))[None]
    with torch.no_grad():
        z = tiny_model.vae.encode(x * 2 - 1).latent_dist.mean * tiny_model.vae.config.scaling_factor
        zp = tiny_model.vae.encode(pattern * 2 - 1).latent_dist.mean * tiny_model.vae.config.scaling_factor
    expected = float(((z - zp) ** 2).sum())
    assert terms["texture"] == pytest.approx(expected, rel=1e-4)
    assert np.prod(z.shape) > 1  # so a mean could not pass for the sum


def test_fused_loss_weights_the_semantic_term_by_ten_thousand(tiny_model):
    x = torch.from_numpy(make_image(32, 32, seed=7)).permute(2, 0, 1)[None].float() / 255
    ctx = MethodContext(tiny_model, x, tiny_model.encode_prompt(""), torch.Generator().manual_seed(0), 8 / 255, 10)
    method = get_method("mist")
    method.setup(ctx)
    loss, terms = method.loss(ctx, x, torch.Generator().manual_seed(1))
    assert float(loss) == pytest.approx(1e4 * terms["semantic"] - terms["texture"], rel=1e-5)
