"""AntiPure's guidance terms on synthetic inputs: the DCT band, the wrong timestep, the ablation switches."""

from __future__ import annotations

import math

import pytest
import torch

from engine.methods import get_method
from engine.methods.antipure import dct_matrix, etg_target, etg_target_timestep, high_band_mask, high_frequency_distance, patch_dct
from engine.methods.base import MethodContext


def test_dct_matrix_is_orthonormal_and_matches_the_definition():
    c = dct_matrix(8, dtype=torch.float64)
    assert torch.allclose(c @ c.T, torch.eye(8, dtype=torch.float64), atol=1e-12)
    x = torch.randn(8, dtype=torch.float64)
    k = 3
    expected = math.sqrt(2 / 8) * sum(float(x[i]) * math.cos(math.pi * (2 * i + 1) * k / 16) for i in range(8))
    assert torch.isclose((c @ x)[k], torch.tensor(expected, dtype=torch.float64))


def test_patch_dct_of_a_flat_patch_is_dc_only():
    x = torch.full((1, 1, 16, 16), 0.3)
    coeffs = patch_dct(x, 8)
    assert coeffs.shape == (1, 1, 2, 2, 8, 8)
    assert torch.allclose(coeffs[..., 0, 0], torch.tensor(0.3 * 8))
    coeffs[..., 0, 0] = 0
    assert coeffs.abs().max() < 1e-5


def test_high_band_mask_keeps_exactly_u_plus_v_at_least_k():
    m = high_band_mask(8, 4)
    for u in range(8):
        for v in range(8):
            assert m[u, v] == (1.0 if u + v >= 4 else 0.0)
    assert int(m.sum()) == 64 - 10  # 10 coefficients have u + v < 4


def test_pfg_distance_ignores_low_frequencies_and_sees_high_ones():
    low = torch.zeros(1, 3, 16, 16)
    smooth = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16) * 0.01  # mostly DC + first AC
    checker = ((torch.arange(16).view(16, 1) + torch.arange(16).view(1, 16)) % 2).float().expand(1, 3, 16, 16) * 0.01
    d_smooth = high_frequency_distance(low + smooth, low, 8, 4)
    d_checker = high_frequency_distance(low + checker, low, 8, 4)
    assert d_checker > 100 * d_smooth


def test_etg_target_timestep_differs_and_is_clamped():
    t = torch.tensor([1, 100, 600, 999])
    wrong = etg_target_timestep(t, 500, 1000)
    assert wrong.tolist() == [501, 600, 999, 999]
    assert (wrong[:3] != t[:3]).all()


def test_etg_target_carries_no_gradient(tiny_model):
    method = get_method("antipure", {"use_pfg": False, "normalize": False})
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    ctx = MethodContext(tiny_model, x.detach(), tiny_model.encode_prompt(""), g, 8 / 255, 10)
    terms = method._terms(ctx, x, g)
    # The ETG loss itself reaches the image (through eps at the true t) ...
    grad_etg = torch.autograd.grad(terms["etg"], x, retain_graph=True)[0]
    assert grad_etg.abs().sum() > 0
    # ... but its target, the prediction at the wrong timestep, is a constant for the optimizer.
    z_t = torch.randn(2, 4, 4, 4, requires_grad=True)
    target = etg_target(tiny_model, z_t, torch.tensor([10, 200]), 500, tiny_model.encode_prompt(""))
    assert not target.requires_grad and target.grad_fn is None


@pytest.mark.parametrize(
    "params, expected",
    [
        ({}, {"semantic", "pfg", "etg"}),
        ({"use_pfg": False}, {"semantic", "etg"}),
        ({"use_etg": False}, {"semantic", "pfg"}),
        ({"use_pfg": False, "use_etg": False}, {"semantic"}),
        ({"pfg_variant": "contrast", "etg_variant": "band_error"}, {"semantic", "pfg", "etg"}),
    ],
)
def test_ablation_switches_select_terms(tiny_model, params, expected):
    method = get_method("antipure", params)
    x = torch.rand(1, 3, 32, 32)
    ctx = MethodContext(tiny_model, x, tiny_model.encode_prompt(""), torch.Generator().manual_seed(0), 8 / 255, 10)
    method.setup(ctx)
    _, terms = method.loss(ctx, x.clone().requires_grad_(True), torch.Generator().manual_seed(1))
    assert set(terms) == expected


def test_normalization_balances_gradient_norms(tiny_model):
    method = get_method("antipure", {})
    x = torch.rand(1, 3, 32, 32)
    ctx = MethodContext(tiny_model, x, tiny_model.encode_prompt(""), torch.Generator().manual_seed(0), 8 / 255, 10)
    method.setup(ctx)
    scales = ctx.cache["antipure_scales"]
    assert scales["pfg"] > 0 and scales["etg"] > 0 and (scales["pfg"] != 1.0 or scales["etg"] != 1.0)


def test_unknown_parameter_is_refused():
    from engine.errors import ArtveilError

    with pytest.raises(ArtveilError, match="lambda_pgf"):
        get_method("antipure", {"lambda_pgf": 1.0})
