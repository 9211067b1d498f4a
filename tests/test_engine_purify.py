"""Purifiers: deterministic for a seed, and they change the image by the expected amount."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ArtveilError, Cancelled
from engine.jobs import Job, ProtectSettings
from engine.metrics import image_metrics
from engine.protect import protect_image
from engine.purify import parse_purifier, purifier_label, purify
from engine.robustness import robustness_summary
from tests.conftest import make_image


def smooth_image(h=64, w=64):
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([x, y, (x + y) / 2], axis=2) * 200 + 30
    return img.astype(np.uint8)


@pytest.mark.parametrize("name, params", [("jpeg", {"quality": 75}), ("noise", {"sigma": 0.02}), ("sdedit", {"strength": 0.2}), ("gridpure", {"rounds": 1, "crop": 32})])
def test_purifiers_are_deterministic_for_a_seed(tiny_model, name, params):
    img = make_image(48, 64)
    a = purify(tiny_model, img, name, seed=5, **params)
    b = purify(tiny_model, img, name, seed=5, **params)
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, img), "a purifier that returns its input unchanged is not deterministic, it is absent"
    if name in ("noise", "sdedit", "gridpure"):
        assert not np.array_equal(a, purify(tiny_model, img, name, seed=6, **params))


@pytest.mark.parametrize("quality, low, high", [(95, 38, 55), (50, 30, 44)])
def test_jpeg_changes_a_smooth_image_by_the_expected_amount(quality, low, high):
    psnr = image_metrics(smooth_image(), purify(None, smooth_image(), "jpeg", quality=quality))["psnr"]
    assert low <= psnr <= high


@pytest.mark.parametrize("sigma", [0.02, 0.05])
def test_gaussian_noise_psnr_matches_sigma(sigma):
    img = np.full((128, 128, 3), 128, np.uint8)  # mid-gray: no clipping, PSNR = -20 log10(sigma)
    psnr = image_metrics(img, purify(None, img, "noise", seed=0, sigma=sigma))["psnr"]
    assert abs(psnr - (-20 * np.log10(sigma))) < 0.3


def test_alpha_passes_through_purification(tiny_model):
    img = make_image(32, 32, channels=4)
    out = purify(tiny_model, img, "jpeg", quality=50)
    assert out.shape == (32, 32, 4) and np.array_equal(out[..., 3], img[..., 3])


def test_parse_purifier_and_bad_names():
    assert parse_purifier("sdedit:0.3") == ("sdedit", {"strength": 0.3})
    assert parse_purifier("jpeg:50") == ("jpeg", {"quality": 50})
    with pytest.raises(ArtveilError, match="unknown purifier"):
        parse_purifier("bleach")
    with pytest.raises(ArtveilError, match="not a number"):
        parse_purifier("jpeg:high")


def test_upscale_without_weights_says_what_is_missing(tiny_model, monkeypatch):
    monkeypatch.delenv("ARTVEIL_UPSCALER", raising=False)
    with pytest.raises(ArtveilError, match="x4-upscaler"):
        purify(tiny_model, make_image(32, 32), "upscale")


def test_robustness_summary_reports_each_purifier_and_the_worst(tiny_model):
    from engine import diffusion as D
    from engine.metrics import to_tensor

    img = make_image(64, 64)
    settings = ProtectSettings(method="advdm", steps=4, working_size=64, measure_objective=False)
    protected = protect_image(tiny_model, img, settings).protected
    report = robustness_summary(tiny_model, img, protected, settings, ["jpeg", ("noise", {"sigma": 0.05}), ("sdedit", {"strength": 0.1})])
    assert [r.name for r in report.rows] == ["jpeg", "noise", "sdedit"]

    def latent(a):
        return D.encode(tiny_model, to_tensor(a[..., :3]))

    base = float((latent(protected) - latent(img)).norm())
    for row in report.rows:
        assert row.purified_original.shape == img.shape and row.purified_protected.shape == img.shape
        # Survival is the share of the protection's latent shift that is left after purification,
        # measured here from the purified pair itself.
        left = float((latent(row.purified_protected) - latent(row.purified_original)).norm()) / base
        assert row.latent_ratio == pytest.approx(left, rel=1e-4)
        assert row.survival == pytest.approx(min(1.0, left), rel=1e-4)
        assert 0.0 < row.survival < 1.0, row  # every one of these purifiers removes part, not all
    assert report.worst.survival == min(r.survival for r in report.rows)
    assert "Demo model" in report.verdict
    assert report.as_dict()["worst"]["purifier"] == report.worst.label


def test_an_unprotected_image_has_no_survival_to_report(tiny_model):
    """Nothing was added, so nothing survives: 0 %, never the 100 % a ratio of two zeros could turn into."""
    img = make_image(64, 64)
    settings = ProtectSettings(method="advdm", steps=4, working_size=64, measure_objective=False)
    report = robustness_summary(tiny_model, img, img.copy(), settings, ["jpeg", ("sdedit", {"strength": 0.1})], with_objective=False)
    assert [r.survival for r in report.rows] == [0.0, 0.0]
    assert "Little of the protection survives" in report.verdict


class _CancelAfter(Job):
    """A Job whose Stop is pressed once the UNet has run `steps` times."""

    def __init__(self, unet, steps: int):
        super().__init__()
        self.calls = 0
        self.steps = steps
        unet.register_forward_hook(self._count)

    def _count(self, *args):
        self.calls += 1

    def check(self, message=None) -> None:
        if self.calls >= self.steps:
            raise Cancelled()


def test_stop_ends_an_sdedit_redraw_within_one_denoising_step(tiny_model):
    from engine.errors import Cancelled
    from engine.purify import purify

    img = make_image(64, 64)
    job = _CancelAfter(tiny_model.unet, steps=1)
    try:
        with pytest.raises(Cancelled):
            purify(tiny_model, img, "sdedit", strength=0.5, steps=20, job=job)  # 10 denoising steps
        assert job.calls == 1
        job.steps = 10**9  # the same call without a stop runs every step and finishes
        job.calls = 0
        out = purify(tiny_model, img, "sdedit", strength=0.5, steps=20, job=job)
        assert out.shape == img.shape and job.calls == 10
    finally:
        tiny_model.unet._forward_hooks.clear()


def test_a_stopped_purification_check_raises_before_redrawing(tiny_model):
    from engine.errors import Cancelled
    from engine.jobs import Job, ProtectSettings
    from engine.robustness import robustness_summary

    job = Job()
    job.cancel()
    img = make_image(64, 64)
    with pytest.raises(Cancelled):
        robustness_summary(tiny_model, img, img, ProtectSettings(method="advdm"), ["sdedit"], with_objective=False,
                           job=job)


def test_the_preview_reports_the_robustness_measure_at_its_own_size_in_its_three_phases(tiny_model):
    """The window's preview is the robustness summary for one purifier at the preview's size: its survival is
    the latent ratio measured here from the images it returns, and it reports each phase as it begins."""
    from engine import diffusion as D
    from engine.events import Progress
    from engine.metrics import to_tensor
    from engine.preview import PreviewOptions, preview_purification

    img = make_image(64, 64)
    settings = ProtectSettings(method="advdm", steps=4, working_size=64, measure_objective=False)
    protected = protect_image(tiny_model, img, settings).protected
    events = []
    report = preview_purification(tiny_model, img, protected, "noise", {"sigma": 0.05}, PreviewOptions(max_side=64),
                                  job=Job(events.append))

    def latent(a):
        return D.encode(tiny_model, to_tensor(a[..., :3]))

    row = report.rows[0]
    left = float((latent(row.purified_protected) - latent(row.purified_original)).norm()) / float(
        (latent(protected) - latent(img)).norm())
    assert row.latent_ratio == pytest.approx(left, rel=1e-4) and 0 < row.survival < 1
    assert row.label == purifier_label("noise", {"sigma": 0.05})  # named as the artist chose it, not at the preview size
    assert [(e.phase, e.step, e.total) for e in events if isinstance(e, Progress)] == [
        ("original", 1, 3), ("protected", 2, 3), ("comparing", 3, 3)]
