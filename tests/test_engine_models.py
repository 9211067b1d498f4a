"""Model loading: every supported source works offline; unsafe or broken files get clear refusals."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from engine.errors import ArtveilError
from engine.models import build_tiny_model, load_model, save_tiny_model


# One worker runs this module: its tests share an expensive module-scoped fixture.
pytestmark = pytest.mark.xdist_group("tiny_folder")

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd", seed=0)


def _same_weights(a, b) -> bool:
    sa, sb = a.unet.state_dict(), b.unet.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_model_is_deterministic_and_labelled_as_demo():
    a, b = build_tiny_model(seed=0, device="cpu"), build_tiny_model(seed=0, device="cpu")
    assert _same_weights(a, b)
    assert a.is_demo and "NO real protection" in a.description
    assert not any(p.requires_grad for p in a.unet.parameters())
    assert a.vae_scale_factor == 8


def test_saved_folder_loads_offline_with_the_same_weights(tiny_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model(str(tiny_folder), device="cpu")
    assert _same_weights(loaded, build_tiny_model(seed=0, device="cpu"))
    assert not loaded.is_demo and loaded.dtype == torch.float32
    assert not any(p.requires_grad for p in loaded.unet.parameters())


def test_hub_id_resolves_from_the_local_cache_only(tiny_folder, tmp_path, monkeypatch):
    # The hub cache layout: models--ORG--NAME/{refs/main, snapshots/<commit>/...}
    import shutil

    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--artveil--tiny-sd"
    shutil.copytree(tiny_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    loaded = load_model("artveil/tiny-sd", device="cpu")
    assert _same_weights(loaded, build_tiny_model(seed=0, device="cpu"))
    with pytest.raises(ArtveilError, match="artveil models download"):
        load_model("artveil/not-downloaded", device="cpu")


def test_folder_without_unet_is_refused(tiny_folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ArtveilError, match="missing unet"):
        load_model(str(broken), device="cpu")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ArtveilError, match="no such model"):
        load_model(str(tmp_path / "nowhere"), device="cpu")
    # One slash, like a hub id, but a path: not sent to the hub cache with a "download it" hint.
    for path in ("/nowhere", "./nowhere", "~/nowhere"):
        with pytest.raises(ArtveilError, match="no such model folder"):
            load_model(path, device="cpu")


class _Exploit:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_pickled_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": _Exploit()}, fh)
    with pytest.raises(ArtveilError, match="weights_only"):
        load_model(str(path), device="cpu")


def test_folder_with_pickled_weights_that_run_code_is_refused(tiny_folder, tmp_path):
    import shutil

    broken = tmp_path / "pickled"
    shutil.copytree(tiny_folder, broken)
    for f in (broken / "unet").glob("*.safetensors"):
        f.unlink()
    with open(broken / "unet" / "diffusion_pytorch_model.bin", "wb") as fh:
        pickle.dump({"x": _Exploit()}, fh)
    with pytest.raises(ArtveilError, match="refused"):
        load_model(str(broken), device="cpu")


def test_safetensors_that_is_not_sd_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "random.safetensors"
    save_file({"some.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ArtveilError, match="not a Stable Diffusion"):
        load_model(str(path), device="cpu")


def test_protect_and_purify_run_on_a_loaded_folder(tiny_folder):
    from engine.jobs import ProtectSettings
    from engine.protect import protect_image
    from engine.purify import purify

    model = load_model(str(tiny_folder), device="cpu")
    img = np.full((32, 32, 3), 100, np.uint8)
    result = protect_image(model, img, ProtectSettings(method="advdm", steps=2, working_size=64, measure_objective=False))
    assert 0 < result.metrics["linf_levels"] <= 8
    assert purify(model, img, "sdedit", strength=0.1).shape == img.shape


def test_folder_with_only_fp16_variant_files_loads(tmp_path):
    # `artveil models download` fetches *.fp16.safetensors where the hub offers them.
    bundle = build_tiny_model(seed=0, device="cpu")
    folder = tmp_path / "fp16-only"
    bundle.as_pipeline().save_pretrained(folder, safe_serialization=True, variant="fp16")
    assert not list((folder / "unet").glob("diffusion_pytorch_model.safetensors"))
    loaded = load_model(str(folder), device="cpu")
    assert loaded.dtype == torch.float32 and next(loaded.unet.parameters()).dtype == torch.float32
    assert _same_weights(loaded, bundle)
