"""Is this path a model Artveil can load? Quick checks that read no weights and import no torch.

The window's model dialog asks this the moment a file or folder is chosen, so that a wrong choice (a
folder of paintings, a LoRA, a pickled checkpoint) is explained in the dialog at once instead of failing
later in a long load. Passing the check does not promise the load succeeds (a damaged weight file is
only found by reading it), but failing it means the load would fail.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
PIPELINE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_MAX_HEADER_BYTES = 100 * 2**20  # a safetensors header is a few MB at most; more is not one


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a .safetensors file, from its JSON header (8-byte length, then JSON)."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError("too short")
        (length,) = struct.unpack("<Q", prefix)
        if not 0 < length <= _MAX_HEADER_BYTES:
            raise ValueError("no safetensors header")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError("no safetensors header")
    return [k for k in header if k != "__metadata__"]


def _check_checkpoint(path: Path) -> str | None:
    try:
        keys = safetensors_keys(path)
    except (OSError, ValueError, UnicodeDecodeError):
        return f"{path.name} is not a readable .safetensors file (damaged, or another format renamed)."
    if any(k.startswith(("cond_stage_model.transformer.", "cond_stage_model.model.")) for k in keys):
        return None
    if any(k.startswith(("lora_", "lora_unet")) or ".lora_" in k or "lora_down" in k for k in keys):
        return f"{path.name} is a LoRA (a small add-on), not a full model. Choose the Stable Diffusion checkpoint it was made for."
    if any(k.startswith(("encoder.", "decoder.")) for k in keys) and not any(k.startswith("model.diffusion_model.") for k in keys):
        return f"{path.name} holds only an autoencoder (VAE), not a full model."
    if any(k.startswith(("conditioner.embedders.", "text_encoders.")) for k in keys):
        return f"{path.name} is an SDXL or newer checkpoint; Artveil works with Stable Diffusion 1.x and 2.x."
    return f"{path.name} is not a Stable Diffusion 1.x/2.x checkpoint (its layout is not one Artveil knows)."


def _check_folder(folder: Path) -> str | None:
    if (folder / "model_index.json").is_file():
        missing = [part for part in PIPELINE_PARTS if not (folder / part).is_dir()]
        if missing:
            return f"This model folder is incomplete: it has no {', '.join(missing)} folder."
        for part in ("unet", "vae", "text_encoder"):
            weights = [p for p in (folder / part).iterdir() if p.suffix == ".safetensors" or p.suffix in PICKLE_SUFFIXES]
            if not weights:
                return f"This model folder is incomplete: {part}/ has no weights (perhaps a download that stopped)."
        return None
    try:
        files = [p for p in folder.iterdir() if p.is_file()]
    except OSError as exc:
        return f"This folder cannot be read ({exc.strerror})."
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    checkpoints = sorted(p.name for p in files if p.suffix == ".safetensors")
    if checkpoints:
        return (f"This folder is not a model folder itself, but it holds {checkpoints[0]}"
                f"{' and others' if len(checkpoints) > 1 else ''}: choose that file instead.")
    if images:
        return (f"This folder holds {len(images)} image{'s' if len(images) != 1 else ''}, not a model. "
                "Choose a model folder (it contains model_index.json) or a .safetensors file.")
    return "This folder is not a model: a model folder contains model_index.json, unet/, vae/ and text_encoder/."


def check_model_path(path: str | Path) -> str | None:
    """None when ``path`` looks like a loadable model, else one line saying what is wrong with it."""
    path = Path(str(path)).expanduser()
    if not str(path).strip():
        return "Choose a .safetensors file or a model folder."
    if not path.exists():
        return f"{path} does not exist."
    if path.is_dir():
        return _check_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _check_checkpoint(path)
    if suffix in PICKLE_SUFFIXES:
        return (f"{path.name} is a pickled checkpoint, which can run code when opened; Artveil does not load "
                "single-file pickles. Look for the .safetensors version of this model.")
    if suffix in IMAGE_SUFFIXES:
        return f"{path.name} is an image, not a model."
    return f"{path.name} is not a model file: choose a .safetensors file or a model folder."
