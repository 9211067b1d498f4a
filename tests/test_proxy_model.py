"""The shipped proxy model (resources/proxy/model) and its TAEF2 autoencoder, on the CPU.

The shipped model is the project's instrument: the built-in demo, and what efficacy is measured on. These
tests check that it is there, loads the way every engine path loads a model, protects and purifies, and still
paints its styles (a few samples, seconds), so that a broken export or a lost file cannot land unnoticed.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.jobs import ProtectSettings
from engine.models import PROXY_NAME, demo_source, load_model, proxy_model_dir
from engine.proxy.classifier import load_judge
from engine.proxy.data import render_set, to_tensor, to_uint8
from engine.proxy.styles import CONTENTS, HELD_OUT_STYLE, STYLES, TRAINING_STYLES, prompt_for
from engine.proxy.train import SIZE_LIMIT_BYTES, folder_bytes, taef2_weights_dir
from engine.taef2 import TAEF2Autoencoder

MODEL = proxy_model_dir()


@pytest.fixture(scope="module")
def proxy():
    return load_model(PROXY_NAME, device="cpu")


@pytest.fixture(scope="module")
def judge():
    return load_judge()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_the_published_taef2_reconstructs_every_style_the_judge_knows(judge):
    weights = taef2_weights_dir()
    assert (weights / "LICENSE").read_text().startswith("MIT License")  # the licence travels with the weights
    vae = TAEF2Autoencoder.from_original(weights / "taef2_encoder.pth", weights / "taef2_decoder.pth")
    art = render_set(STYLES, 3, 64, use="judge_test", offset=900_000)
    with torch.no_grad():
        latents = vae.encode(to_tensor(art.images)).latent_dist
        assert latents.mean.shape == (len(art), 32, 8, 8)
        assert torch.equal(latents.sample(), latents.mean)  # deterministic: the attacks need a fixed E
        recon = to_uint8(vae.decode(latents.mean).sample)
    assert _psnr(art.images, recon) > 16.0  # 17.9 dB measured on these 27 renders (pooled); noise gives ~8
    assert np.mean(judge.classify(recon) == art.labels) >= 0.85


def test_latent_statistics_centre_latents_without_changing_reconstructions():
    vae = TAEF2Autoencoder.from_original(taef2_weights_dir() / "taef2_encoder.pth",
                                         taef2_weights_dir() / "taef2_decoder.pth")
    x = to_tensor(render_set(["mosaic", "rings"], 2, 64, use="judge_test").images)
    with torch.no_grad():
        raw = vae.encode(x).latent_dist.mean
        before = vae.decode(raw).sample
        mean, std = raw.mean((0, 2, 3)), raw.std((0, 2, 3))
        vae.set_latent_statistics(mean, std)
        centred = vae.encode(x).latent_dist.mean
        after = vae.decode(centred).sample
    assert centred.mean((0, 2, 3)).abs().max() < 1e-4 and (centred.std((0, 2, 3)) - 1).abs().max() < 1e-4
    assert torch.allclose(before, after, atol=1e-4)


def test_the_build_ships_the_proxy_model_as_the_demo_within_its_size_limit():
    assert (MODEL / "model_index.json").is_file(), "resources/proxy/model is missing (docs/proxy-world.md)"
    assert demo_source() == PROXY_NAME
    assert folder_bytes(MODEL) <= SIZE_LIMIT_BYTES
    assert (MODEL / "vae" / "LICENSE").read_text().startswith("MIT License")
    # the sanity bar was measured on exactly this model, and the card says what it found
    sanity = json.loads((MODEL / "sanity.json").read_text())
    assert set(sanity["bar"]) == {"text_to_image", "lora_learns_held_out", "sdedit_keeps_style", "passed"}
    assert sanity["bar"]["passed"] == all(v for k, v in sanity["bar"].items() if k != "passed")
    card = (MODEL / "README.md").read_text()
    assert ("**PASSED**" if sanity["bar"]["passed"] else "**NOT PASSED**") in card
    assert "wall time of the whole run" in card.lower() and "Not measured yet" not in card


def test_the_proxy_model_loads_through_load_model_as_a_labelled_demo(proxy):
    assert proxy.is_demo and proxy.name == PROXY_NAME
    assert "not Stable Diffusion" in proxy.description
    assert isinstance(proxy.vae, TAEF2Autoencoder) and proxy.vae_scale_factor == 8
    assert proxy.dtype == torch.float32 and not any(p.requires_grad for p in proxy.unet.parameters())


def test_the_proxy_model_still_paints_its_styles(proxy, judge):
    """A few samples per style (seconds), scored by the judge: far above chance (1/9) over the styles.

    0.46 measured for the shipped model on these seeds; it was 0.16 at step 750 of its training."""
    from engine.evaluation.generate import generate

    styles = TRAINING_STYLES
    rows = generate(proxy, [prompt_for(s, CONTENTS[i % len(CONTENTS)]) for i, s in enumerate(styles)], 3, 64,
                    None, seed=123, steps=20, guidance=5.0, batch_size=24)
    accuracy = [judge.style_accuracy(np.stack(row), s) for row, s in zip(rows, styles)]
    assert np.mean(accuracy) >= 0.3, dict(zip(styles, accuracy))


def test_protect_and_sdedit_purify_run_on_the_proxy_model(proxy, judge, tmp_path):
    from engine.images import save_image
    from engine.protect import protect_image
    from engine.purify import purify

    art = render_set([HELD_OUT_STYLE], 1, 64, use="artist").images[0]
    result = protect_image(proxy, art, ProtectSettings(method="antipure", strength_levels=8, steps=3,
                                                       preview_every=0, measure_objective=False))
    exported = np.asarray(Image.open(save_image(result.protected, tmp_path / "swirl.png"))).astype(int)
    change = np.abs(exported - art.astype(int))
    assert exported.shape == art.shape and 0 < change.max() <= 8  # the budget holds on the 8-bit file
    washed = purify(proxy, art, "sdedit", seed=0, strength=0.2, steps=20)
    # a light SDEdit redraws the picture, not a different one: its style survives and it stays close
    assert washed.shape == art.shape and _psnr(art, washed) > 14.0
    assert judge.style_accuracy(washed[None], HELD_OUT_STYLE) == 1.0
