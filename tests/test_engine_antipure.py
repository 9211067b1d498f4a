"""AntiPure's guidance terms: the DCT band, the wrong timestep, the ablation switches, the normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from engine import diffusion as D
from engine.methods import get_method
from engine.methods.antipure import (dct_matrix, etg_target, etg_target_timestep, grid_pattern, high_band_mask,
                                     high_frequency_distance, patch_dct)
from engine.methods.base import MethodContext

# Largest spread (max/min over seeds) of a normalisation scale. With one draw per seed the tiny model's
# scales spread by 45-140x over six seeds; with the default 8 draws by 2-5x (docs/benchmarks.md).
STABLE_RATIO = 8.0


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


def _ctx(model, x, seed=0, **kw):
    return MethodContext(model, x, model.encode_prompt(""), torch.Generator().manual_seed(seed), 8 / 255, 10, **kw)


def _image(size=32, seed=7):
    from tests.conftest import make_image

    return torch.from_numpy(make_image(size, size, seed=seed)).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize(
    "params, expected",
    [
        ({}, {"semantic", "pfg", "etg"}),
        ({"use_pfg": False}, {"semantic", "etg"}),
        ({"use_etg": False}, {"semantic", "pfg"}),
        ({"use_pfg": False, "use_etg": False}, {"semantic"}),
    ],
)
def test_ablation_switches_remove_the_term_from_the_gradient(tiny_model, params, expected):
    """A switched-off term is neither reported nor in the step's gradient: the loss's gradient is exactly
    the gradient of L_sem - Σ λ·s·L over the terms that are on, computed here from the terms alone."""
    x = _image()
    method = get_method("antipure", params)
    ctx = _ctx(tiny_model, x)
    method.setup(ctx)
    xl = x.clone().requires_grad_(True)
    loss, reported = method.loss(ctx, xl, torch.Generator().manual_seed(1))
    assert set(reported) == expected
    g_loss = torch.autograd.grad(loss, xl)[0]
    xr = x.clone().requires_grad_(True)
    terms = method._terms(ctx, xr, torch.Generator().manual_seed(1))
    scales = ctx.cache["antipure_scales"]
    weights = {"pfg": method.params.lambda_pfg, "etg": method.params.lambda_etg}
    total = terms["semantic"] - sum(weights[k] * scales[k] * terms[k] for k in ("pfg", "etg") if k in expected)
    assert torch.allclose(g_loss, torch.autograd.grad(total, xr)[0], rtol=1e-4, atol=1e-8)


def test_variants_other_than_the_default_change_the_terms(tiny_model):
    x = _image()
    values = {}
    for params in ({}, {"pfg_variant": "contrast", "etg_variant": "band_error"}):
        method = get_method("antipure", {**params, "normalize": False})
        ctx = _ctx(tiny_model, x)
        _, values[str(params)] = method.loss(ctx, (x + 0.02).clamp(0, 1), torch.Generator().manual_seed(1))
    a, b = values.values()
    assert a["semantic"] == pytest.approx(b["semantic"])  # same draws
    assert a["pfg"] > 0 > b["pfg"]  # match is penalized (>= 0), contrast maximized (enters negated)
    assert b["etg"] < 0 and a["etg"] > 0


@pytest.mark.parametrize("params, word", [({"pfg_variant": "contrasts"}, "pfg_variant"), ({"etg_variant": "wrong-timestep"}, "etg_variant")])
def test_a_misspelt_variant_is_refused_not_replaced_by_the_default(params, word):
    from engine.errors import ArtveilError

    with pytest.raises(ArtveilError, match=word):
        get_method("antipure", params)


@pytest.mark.parametrize("variant", ["grid", "grid_latent"])
def test_grid_variants_pull_every_image_of_a_set_toward_one_target(tiny_model, variant):
    """The grid target is the set's, not the image's: two different images of one size get the same target
    (the pattern of grid_period px), so a mimic sees one change in every image."""
    targets = []
    for seed in (7, 8):
        method = get_method("antipure", {"pfg_variant": variant, "use_etg": False, "normalize": False})
        ctx = _ctx(tiny_model, _image(seed=seed))
        method.setup(ctx)
        targets.append(method._grid(ctx)[0])
        _, terms = method.loss(ctx, ctx.x_clean, torch.Generator().manual_seed(1))
        assert terms["pfg"] > 0
    assert torch.equal(targets[0], targets[1])
    assert torch.allclose(targets[0][0], torch.from_numpy(grid_pattern(32, 32, 8, "luma")))  # the default grid


def test_the_luma_grid_is_the_colour_grids_grey_in_every_channel_and_is_what_the_terms_pull_toward(tiny_model):
    """grid_color=luma: no chroma (JPEG halves chroma), the same grey pattern as the colour grid's first channel,
    and the latent both grid terms pull toward is E(that grey grid), not E(the colour grid)."""
    from engine.methods.mist import target_pattern

    luma, colour = (get_method("antipure", {"grid_color": c, "normalize": False}) for c in ("luma", "color"))
    g_luma, z_luma = luma._grid(_ctx(tiny_model, _image()))
    g_colour, z_colour = colour._grid(_ctx(tiny_model, _image()))
    assert torch.equal(g_luma[0, 0], g_luma[0, 1]) and torch.equal(g_luma[0, 0], g_luma[0, 2])
    assert torch.allclose(g_luma[0, 0], torch.from_numpy(target_pattern(32, 32, 8)[0]))
    assert not torch.equal(g_colour[0, 0], g_colour[0, 1])  # "color" keeps Mist's colour pattern
    with torch.no_grad():
        assert torch.allclose(z_luma, D.encode(tiny_model, g_luma)) and not torch.allclose(z_luma, z_colour)


def test_patch_dct_pads_sides_that_are_not_multiples_of_the_patch():
    x = torch.rand(1, 3, 20, 28)
    coeffs = patch_dct(x, 8)
    assert coeffs.shape == (1, 3, 3, 4, 8, 8)
    # The whole patches are the plain per-patch DCT, untouched by the padding.
    assert torch.allclose(coeffs[:, :, :2, :3], patch_dct(x[..., :16, :24], 8), atol=1e-6)
    # And PFG runs with a patch size the (8-px padded) image is not a multiple of.
    assert float(high_frequency_distance(x, torch.zeros_like(x), 16, 8)) > 0


def test_pfg_match_stops_the_gradient_at_the_protected_image(tiny_model):
    """sg[x']: with z = E(x) given (the two-pass path), the match term reaches x only through x_hat."""
    x = _image()
    ctx = _ctx(tiny_model, x)
    z = D.encode(tiny_model, x).detach().requires_grad_(True)
    for stop, reaches_x in ((True, False), (False, True)):
        method = get_method("antipure", {"use_etg": False, "normalize": False, "pfg_variant": "match",
                                             "pfg_stop_gradient": stop})
        xl = x.clone().requires_grad_(True)
        terms = method._terms(ctx, xl, torch.Generator().manual_seed(1), z)
        g_x, g_z = torch.autograd.grad(terms["pfg"], (xl, z), allow_unused=True)
        assert (g_x is not None) == reaches_x
        assert float(g_z.abs().sum()) > 0


def test_contrast_under_eot_compares_both_sides_through_the_same_transform(tiny_model):
    """At δ = 0 a flipped x' purifies exactly like the flipped original: the contrast term is 0."""
    x = _image()
    method = get_method("antipure", {"pfg_variant": "contrast", "use_etg": False, "normalize": False})
    flip = lambda t: torch.flip(t, dims=[-1])  # noqa: E731
    ctx = _ctx(tiny_model, x, transform=flip)
    _, terms = method.loss(ctx, flip(x), torch.Generator().manual_seed(1))
    assert abs(terms["pfg"]) < 1e-8
    # Without the shared transform (the old behaviour) the term compares two different images.
    ctx.transform = None
    _, terms = method.loss(ctx, flip(x), torch.Generator().manual_seed(1))
    assert abs(terms["pfg"]) > 1e-4


def test_contrast_normalization_is_measured_where_the_term_exists(tiny_model):
    """At δ = 0 the contrast term is identically 0, so a scale measured there is floating-point residue.
    The scale is measured at a δ of the budget's size: finite, and of the same order across seeds."""
    x = _image()
    method = get_method("antipure", {"pfg_variant": "contrast", "use_etg": False, "normalize_draws": 4})
    ctx = _ctx(tiny_model, x)
    at_zero = get_method("antipure", {"pfg_variant": "contrast", "use_etg": False, "normalize": False})
    xz = x.clone().requires_grad_(True)
    term = at_zero._terms(ctx, xz, torch.Generator().manual_seed(1))["pfg"]
    assert abs(float(term)) < 1e-9  # the degenerate point the old normalisation measured at
    scales = [method.normalization_scales(ctx, seed=s)["pfg"] for s in (1, 2)]
    assert all(0 < s < 1e3 for s in scales), scales
    assert max(scales) / min(scales) < 10, scales


def test_normalization_balances_gradient_norms_steadily_across_seeds(tiny_model):
    """λ's normalisation averages the norms over several draws: the resulting scales vary little from
    seed to seed, and each scale does balance the averaged gradient norms."""
    x = _image()
    method = get_method("antipure", {})
    ctx = _ctx(tiny_model, x)
    seeds = (1, 2, 3, 4)
    scales = [method.normalization_scales(ctx, seed=s) for s in seeds]
    for k in ("pfg", "etg"):
        values = [s[k] for s in scales]
        assert max(values) / min(values) < STABLE_RATIO, (k, values)
    norms = method.gradient_norms(ctx, seed=seeds[0])
    for k in ("pfg", "etg"):
        assert scales[0][k] * norms[k] == pytest.approx(norms["semantic"], rel=1e-6)
    method.setup(ctx)
    assert ctx.cache["antipure_scales"] == method.normalization_scales(ctx)


def test_unknown_parameter_is_refused():
    from engine.errors import ArtveilError

    with pytest.raises(ArtveilError, match="lambda_pgf"):
        get_method("antipure", {"lambda_pgf": 1.0})


def test_grid_start_begins_at_the_grid_controls_delta_and_steps_from_there(tiny_model, tmp_path):
    """grid_start: after one step of α = 1.6 levels the exported δ still has the grey grid's sign everywhere the
    clip cannot touch, within α of ±ε; without it, δ starts at 0 and its signs have nothing to do with the grid."""
    import numpy as np

    from engine import batch as B
    from engine.events import Failed
    from engine.images import load_image, save_image
    from engine.jobs import ProtectSettings

    src = tmp_path / "in.png"
    save_image((_image(64, seed=3)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), src)
    eps = 16
    grid = grid_pattern(64, 64, 8, "luma").transpose(1, 2, 0)
    agree = {}
    for start in (True, False):
        settings = ProtectSettings(method="antipure", strength_levels=eps, steps=1, working_size=64, preview_every=0,
                                   measure_objective=False, method_params={"grid_start": start, "grid_share": 0.0,
                                                                                 "normalize": False})
        out = tmp_path / str(start)
        events = list(B.protect_batch(tiny_model, [src], settings, B.BatchOptions(out, fmt="png", journal=False)))
        assert not [e for e in events if isinstance(e, Failed)]
        a = load_image(src).pixels[..., :3].astype(int)
        d = load_image(out / "in.protected.png").pixels[..., :3].astype(int) - a
        inside = (a >= eps) & (a <= 255 - eps)
        agree[start] = (np.sign(d[inside]) == np.where(grid >= 0.5, 1, -1)[inside]).mean()
        if start:
            assert (np.abs(d[inside]) >= eps - 2).all()
    assert agree[True] == 1.0 and agree[False] < 0.8


def test_grid_share_keeps_the_grid_sign_whatever_the_optimizer_does(tiny_model, tmp_path):
    """grid_share a = 0.75 at ε = 16: after 4 steps (α = 1.6 levels each, enough to cross zero from
    ½ε without the box) every exported δ that the [0, 255] clip cannot touch has the grid's sign, lies within
    (1 − a)·ε (+1 for the 8-bit rounding) of a·ε·sign, and the optimizer has moved it off that centre; grid_start
    without a share, after the same steps of 8 levels, leaves no such band around the grid."""
    import numpy as np

    from engine import batch as B
    from engine.events import Failed
    from engine.images import load_image, save_image
    from engine.jobs import ProtectSettings

    src = tmp_path / "in.png"
    save_image((_image(64, seed=3)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), src)
    eps, share, steps = 16, 0.75, 4
    sign = np.where(grid_pattern(64, 64, 8, "luma").transpose(1, 2, 0) >= 0.5, 1, -1)
    a = load_image(src).pixels[..., :3].astype(int)
    inside = (a >= eps) & (a <= 255 - eps)
    off_centre = {}
    cases = (("share", {"grid_share": share}, None), ("start", {"grid_start": True, "grid_share": 0.0}, 8.0))
    for name, params, step_levels in cases:
        settings = ProtectSettings(method="antipure", strength_levels=eps, steps=steps, working_size=64,
                                   preview_every=0, measure_objective=False, step_levels=step_levels,
                                   method_params=dict(params, normalize=False))
        out = tmp_path / name
        events = list(B.protect_batch(tiny_model, [src], settings, B.BatchOptions(out, fmt="png", journal=False)))
        assert not [e for e in events if isinstance(e, Failed)]
        d = load_image(out / "in.protected.png").pixels[..., :3].astype(int) - a
        off_centre[name] = np.abs(d - share * eps * sign)[inside]
        if name == "share":
            assert (np.sign(d[inside]) == sign[inside]).all()
            assert off_centre["share"].max() <= (1 - share) * eps + 1
            assert off_centre["share"].max() >= 2
    # Without the box, steps of 8 levels take δ well outside that band: the bound above is the box's doing.
    assert off_centre["start"].max() > (1 - share) * eps + 1


def test_tile_over_repeats_from_the_corner_and_crops_the_far_edges():
    from engine.methods.antipure import tile_over

    tile = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = tile_over(tile, 10, 7)
    assert out.shape == (1, 1, 10, 7)
    assert torch.equal(out[..., 4:8, 0:4], tile[0:1]) and torch.equal(out[..., 8:10, 4:7], tile[..., :2, :3])


def _set_denoising_loss(model, images, delta_tile, draws=6):
    """This test's own measure: the mean denoising error of `model` over the set with the tile added, at fixed
    (t, noise) draws spread over the whole range of t. Not the method's loss code."""
    from engine.methods.antipure import tile_over

    g = torch.Generator().manual_seed(123)
    total = 0.0
    with torch.no_grad():
        for x in images:
            _, _, h, w = x.shape
            z = D.encode(model, (x + tile_over(delta_tile, h, w).expand_as(x)).clamp(0, 1))
            for k in range(draws):
                t = torch.tensor([int((k + 0.5) * model.num_train_timesteps / draws)])
                noise = torch.randn(z.shape, generator=g)
                out = D.unet(model, D.add_noise(model, z, noise, t), t, model.encode_prompt(""))
                total += float(((out - D.target(model, z, noise, t)) ** 2).mean())
    return total / (len(images) * draws)


def _learned_tile(model, images, cls=None, steps=6, objective="semantic"):
    from engine.surrogate import SurrogatePool

    pool = SurrogatePool()
    for k, x in enumerate(images):
        pool.clean[k] = x
    params = {"grid_learn_steps": steps, "normalize": False, "grid_learn_objective": objective}
    method = get_method("antipure", params) if cls is None else cls(params)
    ctx = _ctx(model, images[0], pool=pool, timesteps_per_step=2)
    ctx.eps = 16 / 255
    return method._learned_tile(ctx), pool, ctx.eps


class _DescendingTile(get_method("antipure", {}).__class__):
    """AntiPure with the tile's objective negated: its learner walks the wrong way."""

    def _tile_loss(self, *args, **kwargs):
        return -super()._tile_loss(*args, **kwargs)


@pytest.fixture(scope="module")
def proxy_and_set():
    """The proxy model (it has learned the proxy world's styles; the random tiny model's denoising error barely
    depends on its input) and two 64 px images of the held-out style it never saw."""
    from engine.models import load_model
    from engine.proxy.data import render_set
    from engine.proxy.styles import HELD_OUT_STYLE

    images = render_set([HELD_OUT_STYLE], 2, size=64, use="artist").images
    return load_model("proxy", device="cpu"), [torch.from_numpy(i).permute(2, 0, 1)[None].float() / 255 for i in images]


@pytest.mark.parametrize("cls, raises", [(None, True), (_DescendingTile, False)])
def test_the_learned_tile_raises_the_sets_denoising_error_and_a_descending_learner_does_not(proxy_and_set, cls, raises):
    """Learned over a two-image set, the tile at ε raises the proxy's denoising error on the set (this test's own
    fixed draws) above the starting tile, Mist's pattern's sign (measured 0.268 → 0.275; no tile 0.238); the
    same learner with its objective negated lowers it (0.255), so the check tells the two apart."""
    from engine.methods.antipure import grid_signs

    model, images = proxy_and_set
    tile, pool, eps = _learned_tile(model, images, cls, steps=4)
    start = grid_signs(torch.from_numpy(grid_pattern(16, 16, 8, "luma"))[None][:, :1])
    assert tile.shape == start.shape == (1, 1, 16, 16) and set(tile.unique().tolist()) <= {-1.0, 1.0}
    assert pool.shared["antipure_tile"] is tile  # learned once, kept for the set's other images
    assert not torch.equal(tile, start)
    learned, started = (_set_denoising_loss(model, images, eps * t) for t in (tile, start))
    assert (learned > started) is raises, (learned, started)


def _latent_distance(model, images, delta_tile):
    """This test's own measure for the latent objective: the mean squared move of the set's latents."""
    from engine.methods.antipure import tile_over

    with torch.no_grad():
        return sum(float(((D.encode(model, (x + tile_over(delta_tile, *x.shape[-2:]).expand_as(x)).clamp(0, 1))
                           - D.encode(model, x)) ** 2).mean()) for x in images) / len(images)


@pytest.mark.parametrize("cls, raises", [(None, True), (_DescendingTile, False)])
def test_the_latent_objective_moves_the_sets_latents_further_and_a_negated_one_does_not(proxy_and_set, cls, raises):
    """grid_learn_objective=latent: the learned tile moves the set's latents further from the clean ones' than the
    starting tile (measured 0.247 → 0.340 after 8 steps); negated, the learner brings them closer."""
    from engine.methods.antipure import grid_signs

    model, images = proxy_and_set
    tile, _, eps = _learned_tile(model, images, cls, steps=4, objective="latent")
    start = grid_signs(torch.from_numpy(grid_pattern(16, 16, 8, "luma"))[None][:, :1])
    learned, started = (_latent_distance(model, images, eps * t) for t in (tile, start))
    assert (learned > started) is raises, (learned, started)


def test_a_set_shares_one_learned_tile_and_the_same_input_gives_the_same_bytes(tiny_model):
    """Two images protected as a set with grid_learn_steps and the whole ε held on the grid (grid_share 1): both
    exported δ are ±ε on one 16-px tile, not on Mist's pattern; a second run gives the same bytes."""
    import numpy as np

    from engine.events import Result
    from engine.jobs import ProtectSettings
    from engine.protect_set import ModelProtector, protect_set
    from tests.conftest import make_image

    images = [make_image(64, 64, seed=s) for s in (5, 6)]
    eps = 16
    settings = ProtectSettings(method="antipure", strength_levels=eps, steps=1, working_size=64, preview_every=0,
                               measure_objective=False,
                               method_params={"grid_learn_steps": 4, "grid_share": 1.0, "normalize": False})
    runs = [[e.value.protected for e in protect_set(ModelProtector(tiny_model), images, settings)
             if isinstance(e, Result)] for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    signs = []
    for clean, protected in zip(images, runs[0]):
        d = protected.astype(int) - clean.astype(int)
        inside = (clean >= eps) & (clean <= 255 - eps)
        assert (np.abs(d[inside]) == eps).all()
        signs.append(np.where(inside, np.sign(d), 0))
    tile = np.zeros((16, 16, 3))
    for s in signs:  # every pixel the clip leaves alone agrees with one 16-px tile, in both images
        for i in range(0, 64, 16):
            for j in range(0, 64, 16):
                block = s[i:i + 16, j:j + 16]
                clash = (tile != 0) & (block != 0) & (tile != block)
                assert not clash.any()
                tile = np.where(tile == 0, block, tile)
    mist = np.where(grid_pattern(16, 16, 8, "luma").transpose(1, 2, 0) >= 0.5, 1, -1)
    assert (tile[tile != 0] != mist[tile != 0]).any()  # learned: not Mist's pattern
