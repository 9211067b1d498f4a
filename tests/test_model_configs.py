"""The bundled SD configs describe the published architectures, so single-file checkpoints load offline."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
import torch

CONFIGS = Path(str(files("resources") / "model_configs"))
ASTRONAUT_IDS = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]

# Parameter counts of the published models; an architecture typo changes them.
EXPECTED = {
    "sd15": {"cross_attention_dim": 768, "unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd21-base": {"cross_attention_dim": 1024, "unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
}


def _config(model: str, part: str) -> dict:
    return json.loads((CONFIGS / model / part).read_text(encoding="utf-8"))


def _param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_tokenizer_gives_the_known_stable_diffusion_ids(model):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(CONFIGS / model / "tokenizer")
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of an astronaut riding a horse").input_ids == ASTRONAUT_IDS
    assert tokenizer.model_max_length == 77


def test_sd2_pads_with_exclamation_mark_and_sd1_with_end_of_text():
    from transformers import CLIPTokenizer

    sd15 = CLIPTokenizer.from_pretrained(CONFIGS / "sd15" / "tokenizer")
    sd21 = CLIPTokenizer.from_pretrained(CONFIGS / "sd21-base" / "tokenizer")
    assert sd15("a cat", padding="max_length", max_length=6).input_ids == [49406, 320, 2368, 49407, 49407, 49407]
    assert sd21("a cat", padding="max_length", max_length=6).input_ids == [49406, 320, 2368, 49407, 0, 0]


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_configs_build_the_published_architectures(model):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    expected = EXPECTED[model]
    unet_cfg = _config(model, "unet/config.json")
    assert unet_cfg["cross_attention_dim"] == expected["cross_attention_dim"]
    assert _config(model, "text_encoder/config.json")["hidden_size"] == expected["cross_attention_dim"]
    assert _config(model, "scheduler/scheduler_config.json")["prediction_type"] == "epsilon"
    # meta tensors: full-size shapes without allocating gigabytes on a shared CPU
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(_config(model, "vae/config.json"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(CONFIGS / model / "text_encoder"))
    assert _param_count(unet) == expected["unet"]
    assert _param_count(vae) == expected["vae"]
    assert _param_count(text_encoder) == expected["text_encoder"]


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_pipeline_index_needs_no_safety_checker(model):
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    index = StableDiffusionPipeline.load_config(str(CONFIGS / model))
    assert index["safety_checker"] == [None, None]
    for part in ("scheduler", "text_encoder", "tokenizer", "unet", "vae"):
        assert (CONFIGS / model / part).is_dir(), part
    # the two loads from_single_file(config=folder) makes for parts a checkpoint does not hold
    scheduler = PNDMScheduler.from_pretrained(str(CONFIGS / model), subfolder="scheduler", local_files_only=True)
    assert scheduler.config.steps_offset == 1 and scheduler.config.beta_schedule == "scaled_linear"
    tokenizer = CLIPTokenizer.from_pretrained(str(CONFIGS / model), subfolder="tokenizer", local_files_only=True)
    assert tokenizer("a photo of an astronaut riding a horse").input_ids == ASTRONAUT_IDS
