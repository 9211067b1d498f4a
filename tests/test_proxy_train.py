"""The proxy training script at toy scale: a complete, loadable Stable Diffusion folder, and the sanity bar."""

import csv
import json

import numpy as np
import pytest
import torch

from engine.proxy import train
from engine.proxy.data import render_set, to_tensor
from engine.proxy.styles import STYLES, TRAINING_STYLES


# One worker runs this module: its tests share an expensive module-scoped fixture.
pytestmark = pytest.mark.xdist_group("proxy_toy_model")

@pytest.fixture(scope="module")
def toy_model(toy_proxy_model, tmp_path_factory):
    """This module's own copy of the toy proxy model (its tests write into the folder)."""
    import shutil

    out = tmp_path_factory.mktemp("proxy") / "toy"
    shutil.copytree(toy_proxy_model, out)
    return out


def _load(out):
    from diffusers import StableDiffusionPipeline

    import engine.taef2  # noqa: F401  (the folder's VAE class: diffusers imports no module a folder names)

    pipe = StableDiffusionPipeline.from_pretrained(str(out), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_toy_run_writes_a_loadable_stable_diffusion_folder(toy_model):
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from engine.taef2 import TAEF2Autoencoder

    pipe = _load(toy_model)
    assert isinstance(pipe.vae, TAEF2Autoencoder) and isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.safety_checker is None
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert train.folder_bytes(toy_model) < train.SIZE_LIMIT_BYTES
    image = pipe("a painting of a circle in stripes style", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, train.TOY.resolution, train.TOY.resolution, 3) and np.isfinite(image).all()


def test_toy_run_writes_loss_curve_samples_and_card(toy_model):
    from PIL import Image

    rows = list(csv.DictReader((toy_model / "loss.csv").open()))
    assert {r["stage"] for r in rows} == {"unet"}  # TAEF2 is pretrained: no autoencoder training
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    grid = Image.open(toy_model / "samples.png")
    assert grid.size == (train.TOY.resolution * train.TOY.samples_per_style, train.TOY.resolution * len(STYLES))
    card = (toy_model / "README.md").read_text()
    assert train.CARD_SANITY_BEGIN in card and "swirl" in card
    world = json.loads((toy_model / "proxy_world.json").read_text())
    assert world["held_out_style"] == "swirl" and "swirl" not in world["training_styles"]


def test_latents_are_centred_without_changing_reconstructions(toy_model):
    pipe = _load(toy_model)
    assert pipe.vae.config.scaling_factor == 1.0
    art = render_set(TRAINING_STYLES, train.TOY.images_per_style, train.TOY.resolution, use="model_train")
    with torch.no_grad():
        latents = pipe.vae.encode(to_tensor(art.images)).latent_dist.mean
    # the statistics were measured on exactly these images
    assert latents.mean((0, 2, 3)).abs().max() < 0.05
    assert (latents.std((0, 2, 3)) - 1).abs().max() < 0.05

    vae = train.build_vae(train.TOY_GPU).eval()  # the GPU plan's trained VAE: centring folded into its convs
    x = to_tensor(art.images[:4])
    with torch.no_grad():
        before = vae.decode(vae.encode(x).latent_dist.mean).sample
        train.center_latents(vae, torch.tensor([0.3, -1.0, 2.0, 0.0]), torch.tensor([2.0, 0.5, 1.0, 3.0]))
        after = vae.decode(vae.encode(x).latent_dist.mean).sample
    assert torch.allclose(before, after, atol=1e-4)


@pytest.mark.slow  # a second toy training run and export
def test_unet_training_resumes_where_it_stopped(toy_model):
    before = json.loads((toy_model / "work" / "state.json").read_text())["unet_steps"]
    train.main(["--out", str(toy_model), "--toy", "--device", "cpu", "--stage", "unet", "--resume",
                "--unet-steps", "2"])
    state = json.loads((toy_model / "work" / "state.json").read_text())
    assert state["unet_steps"] == before + 2


def test_toy_sanity_reports_every_number(toy_model):
    from engine.evaluation.sanity import TOY_SETTINGS, run_sanity

    report = run_sanity(toy_model, "cpu", TOY_SETTINGS)
    on_disk = json.loads((toy_model / "sanity.json").read_text())
    assert on_disk["text_to_image"] == report["text_to_image"]
    assert set(report["text_to_image"]["per_style"]) == set(TRAINING_STYLES)
    assert set(report["sdedit_keeps_style"]["per_style"]) == set(STYLES)
    fractions = [*report["text_to_image"]["per_style"].values(), report["text_to_image"]["mean"],
                 report["held_out_without_lora"], report["held_out_with_lora"],
                 *report["sdedit_keeps_style"]["per_style"].values(), report["sdedit_keeps_style"]["mean"]]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert set(report["bar"]) == {"text_to_image", "lora_learns_held_out", "sdedit_keeps_style", "passed"}
    assert all(loss > 0 for loss in report["lora"]["first_loss"])
    card = (toy_model / "README.md").read_text()
    assert "held-out style after the mimic" in card and "Not measured yet" not in card


def test_the_customization_check_is_the_mean_over_its_mimic_seeds(toy_model):
    """One mimic's result moves with its seed; the bar judges the mean of several, and says each."""
    from dataclasses import replace

    from engine.evaluation.sanity import TOY_SETTINGS, run_sanity

    report = run_sanity(toy_model, "cpu", replace(TOY_SETTINGS, mimic_seeds=(0, 1), seed=5))
    per_seed = report["held_out_with_lora_per_seed"]
    assert list(per_seed) == ["5", "6"]
    assert report["held_out_with_lora"] == pytest.approx(sum(per_seed.values()) / 2)
    assert len(report["lora"]["first_loss"]) == 2
    assert report["lora"]["first_loss"][0] != report["lora"]["first_loss"][1]  # each seed its own fine-tune noise
    assert report["bar"]["lora_learns_held_out"] == (report["held_out_with_lora"] >= 0.8
                                                      and report["held_out_without_lora"] < 0.2)
    assert "mean over mimic seeds 5:" in (toy_model / "README.md").read_text()


def test_a_fresh_machine_resumes_from_the_exported_model_alone(toy_model, tmp_path):
    """What the repository keeps is the exported folder (no work/): --resume continues from its EMA weights."""
    import shutil

    shipped = tmp_path / "proxy"
    shutil.copytree(toy_model, shipped, ignore=shutil.ignore_patterns("work"))
    before = json.loads((shipped / "proxy_world.json").read_text())["state"]["unet_steps"]
    exported = _load(shipped).unet.state_dict()
    train.main(["--out", str(shipped), "--toy", "--device", "cpu", "--resume", "--unet-steps", "2"])
    state = json.loads((shipped / "work" / "state.json").read_text())
    assert state["unet_steps"] == before + 2
    checkpoint = torch.load(shipped / "work" / "unet_state.pt", weights_only=True)
    # two steps from the exported weights, not from a fresh initialisation
    drift = max((checkpoint["unet"][k].float() - v.float()).abs().max().item() for k, v in exported.items())
    torch.manual_seed(train.TOY.seed)  # the initialisation a run from scratch starts from
    fresh = train.build_unet(train.TOY, train.latent_size(train.TOY)).state_dict()
    distance_to_fresh = max((checkpoint["unet"][k].float() - v).abs().max().item() for k, v in fresh.items())
    assert drift < distance_to_fresh


def test_the_learning_rate_warms_up_holds_and_cools_down_to_zero_at_the_end_of_the_budget():
    warm, cool = 100, 0.25
    assert train.lr_factor(0, 0.0, warm, cool) == pytest.approx(0.01)
    assert train.lr_factor(49, 0.01, warm, cool) == pytest.approx(0.5)
    assert train.lr_factor(500, 0.5, warm, cool) == 1.0
    assert train.lr_factor(500, 0.75, warm, cool) == 1.0  # the cool-down starts at 1 - cooldown
    assert train.lr_factor(500, 0.875, warm, cool) == pytest.approx(0.5)
    assert train.lr_factor(500, 1.0, warm, cool) == 0.0
    assert train.lr_factor(500, 1.2, warm, cool) == 0.0  # a step past the budget never goes negative
    assert train.lr_factor(500, 0.99, warm, 0.0) == 1.0  # no cool-down: constant to the end, as before


def test_a_run_with_a_cooldown_ends_its_loss_curve_near_zero_lr(tmp_path):
    """The schedule the run really used, read back from its own loss.csv: peak after the warm-up, then down."""
    out = tmp_path / "toy"
    train.main(["--out", str(out), "--toy", "--device", "cpu", "--stage", "vae"])
    train.main(["--out", str(out), "--toy", "--device", "cpu", "--stage", "unet", "--unet-steps", "40",
                "--cooldown", "0.5", "--unet-lr", "1e-3", "--eval-every", "0"])
    rows = [r for r in csv.DictReader((out / "loss.csv").open()) if r["stage"] == "unet"]
    lrs = {int(r["step"]): float(r["lr"]) for r in rows}
    assert max(lrs.values()) == pytest.approx(1e-3)
    assert lrs[20] == pytest.approx(1e-3)  # the stable phase: the step budget's first half
    assert lrs[40] < 0.06e-3  # the last step's lr, (1 - 39/40) / 0.5 of the peak
    after_peak = [lrs[s] for s in sorted(lrs) if s >= 20]
    assert after_peak == sorted(after_peak, reverse=True)
