"""Loading Stable Diffusion 1.x / 2.x through diffusers, and the built-in tiny demo model.

Sources: "tiny" (random weights, for trying the app and for tests: no protection), "proxy" (the project's
small proxy-world model in resources/proxy/model, when the build has it: also a demo, not Stable Diffusion),
a local diffusers folder, a single .safetensors checkpoint (configs shipped in resources/model_configs), or a hub id
resolved from the local Hugging Face cache only. Nothing here touches the network.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from engine.device import pick_device, pick_dtype
from engine.errors import ArtveilError

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
TINY_NAME = "tiny"
TINY_DESCRIPTION = "Built-in demo model (random weights): for trying Artveil, gives NO real protection."
PROXY_NAME = "proxy"
PROXY_DESCRIPTION = (
    "Built-in proxy model: a small model trained by the project on procedural art, for trying Artveil. "
    "It is not Stable Diffusion: images protected with it are NOT protected against real models."
)


def proxy_model_dir() -> Path:
    """Where a build ships the proxy-world model (docs/proxy-world.md); it may be absent."""
    return Path(str(resources.files("resources") / "proxy" / "model"))


def demo_source() -> str:
    """The built-in demo model to offer: the trained proxy model when the build has it, else the tiny one."""
    return PROXY_NAME if (proxy_model_dir() / "model_index.json").is_file() else TINY_NAME


@dataclass
class LoraWrappers:
    """What engine.surrogate keeps on a model between optimizer steps, so that applying a LoRA surrogate swaps
    prebuilt layers (microseconds) instead of injecting peft adapters into the UNet again (seconds on SD)."""

    # (rank, scale, target paths) -> {path: peft wrapper around the UNet's layer at that path}
    layers: dict[tuple, dict[str, torch.nn.Module]] = field(default_factory=dict)
    # path -> (parent module, child name): where a wrapper goes in the UNet
    slots: dict[str, tuple[torch.nn.Module, str]] = field(default_factory=dict)
    # The surrogate applied to the UNet now, if any: two at once would wrap each other's layers.
    active: object | None = None


@dataclass
class ModelBundle:
    """The frozen parts of an SD pipeline plus what the optimizer needs to know about them.

    What the bundle builds from its modules (prompt embeddings, pipelines, a compiled UNet) is kept on it
    and never passed in: a copy made with dataclasses.replace, in another dtype say, starts without them.
    """

    name: str
    vae: torch.nn.Module
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    device: torch.device
    dtype: torch.dtype
    is_demo: bool = False
    description: str = ""
    lora_wrappers: LoraWrappers = field(default_factory=LoraWrappers, init=False, repr=False)
    _prompt_embeddings: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _alphas_cumprod: dict[torch.device, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _pipelines: dict[str, object] = field(default_factory=dict, init=False, repr=False)
    _upscalers: dict[str, object] = field(default_factory=dict, init=False, repr=False)
    # torch.compile of the UNet, kept across jobs (compiling again costs more than a job) ...
    _compiled_unet: torch.nn.Module | None = field(default=None, init=False, repr=False)
    # ... and run only inside speed_mode(compile_unet=True).
    _job_unet: torch.nn.Module | None = field(default=None, init=False, repr=False)

    @property
    def unet_runner(self):
        """The UNet to call in the optimizer: the compiled one inside speed_mode(compile_unet=True)."""
        return self.unet if self._job_unet is None else self._job_unet

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.get("prediction_type", "epsilon")

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(self.vae.config.get("shift_factor", None) or 0.0)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        if self.device not in self._alphas_cumprod:
            self._alphas_cumprod[self.device] = self.scheduler.alphas_cumprod.to(self.device, torch.float32)
        return self._alphas_cumprod[self.device]

    @torch.no_grad()
    def encode_prompt(self, prompt: str = "") -> torch.Tensor:
        """Text condition [1, 77, d] in the model dtype; cached per prompt."""
        if prompt not in self._prompt_embeddings:
            ids = self.tokenizer(
                [prompt],
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            self._prompt_embeddings[prompt] = self.text_encoder(ids)[0].to(self.dtype)
        return self._prompt_embeddings[prompt]

    def as_pipeline(self, cls=None):
        """A diffusers pipeline sharing these modules (no copies), for img2img purification and sampling."""
        from diffusers import StableDiffusionPipeline

        cls = cls or StableDiffusionPipeline
        pipe = cls(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def pipeline(self, kind: str):
        """The DDIM pipeline of `kind` ("txt2img" or "img2img") over these modules, built once and kept:
        what purification (SDEdit) and the evaluation's sampling and edits run."""
        if kind not in self._pipelines:
            from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

            classes = {"txt2img": StableDiffusionPipeline, "img2img": StableDiffusionImg2ImgPipeline}
            pipe = self.as_pipeline(classes[kind])
            pipe.scheduler = DDIMScheduler.from_config(self.scheduler.config)
            self._pipelines[kind] = pipe
        return self._pipelines[kind]

    def upscaler(self, folder: str):
        """The SD ×4 upscaler pipeline in a local diffusers folder, on this model's device and dtype; loaded
        once per folder (noisy-upscaling purification)."""
        if folder not in self._upscalers:
            from diffusers import StableDiffusionUpscalePipeline

            pipe = StableDiffusionUpscalePipeline.from_pretrained(folder, local_files_only=True)
            pipe.to(self.device, self.dtype)
            pipe.set_progress_bar_config(disable=True)
            self._upscalers[folder] = pipe
        return self._upscalers[folder]


def freeze(bundle: ModelBundle) -> ModelBundle:
    """The bundle's modules frozen for inference (no gradients, eval mode) on its device and dtype,
    with SDPA attention; returns the bundle."""
    for module in (bundle.vae, bundle.unet, bundle.text_encoder):
        module.requires_grad_(False)
        module.eval()
        # .to() only when something changes: diffusers warns on every cast otherwise.
        first = next(module.parameters())
        if first.device != bundle.device or first.dtype != bundle.dtype:
            module.to(bundle.device, bundle.dtype)
    # SDPA is diffusers' default processor on torch 2; set it explicitly in case a checkpoint
    # carried another (attention slicing is slower and saves less than SDPA's fused kernels).
    from diffusers.models.attention_processor import AttnProcessor2_0

    bundle.unet.set_attn_processor(AttnProcessor2_0())
    bundle.vae.set_attn_processor(AttnProcessor2_0())
    return bundle


def compile_available(device: torch.device) -> str | None:
    """None if torch.compile can run on this device, else why not (for a note to the user)."""
    import importlib.util
    import shutil

    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "torch.compile needs Triton, which this install lacks (it is missing on Windows)"
    if device.type == "cpu" and not any(shutil.which(c) for c in ("cc", "gcc", "clang", "cl")):
        return "torch.compile needs a C++ compiler on the CPU"
    return None


@contextmanager
def speed_mode(
    bundle: ModelBundle,
    *,
    channels_last: bool = False,
    checkpointing: bool = False,
    vae_tiling: bool = False,
    compile_unet: bool = False,
):
    """Put the frozen modules in a faster or leaner state for one job and restore them afterwards.

    The bundle is shared with purification and the preview, which want the plain state, so nothing
    here outlives the job. Compiled UNets are kept (compiling again costs more than the job).
    """
    modules = (bundle.unet, bundle.vae)
    saved_cudnn = torch.backends.cudnn.benchmark
    try:
        if bundle.device.type == "cuda":
            # Shapes are fixed for a whole job: let cuDNN time its convolution algorithms once.
            torch.backends.cudnn.benchmark = True
        if channels_last:
            for m in modules:
                m.to(memory_format=torch.channels_last)
        if checkpointing:
            # Activations are recomputed in the backward pass: about 30 % slower, a fraction of the memory.
            bundle.unet.enable_gradient_checkpointing()
            bundle.vae.enable_gradient_checkpointing()
        if vae_tiling:
            bundle.vae.enable_slicing()
            bundle.vae.enable_tiling()
        if compile_unet and compile_available(bundle.device) is None:
            if bundle._compiled_unet is None:
                bundle._compiled_unet = torch.compile(bundle.unet, dynamic=False)
            bundle._job_unet = bundle._compiled_unet
        yield bundle
    finally:
        bundle._job_unet = None
        if vae_tiling:
            bundle.vae.disable_slicing()
            bundle.vae.disable_tiling()
        if checkpointing:
            bundle.unet.disable_gradient_checkpointing()
            bundle.vae.disable_gradient_checkpointing()
        if channels_last:
            for m in modules:
                m.to(memory_format=torch.contiguous_format)
        torch.backends.cudnn.benchmark = saved_cudnn


def _tiny_tokenizer_dir() -> Path:
    return Path(str(resources.files("resources") / "tiny" / "tokenizer"))


def build_tiny_model(seed: int = 0, device: str = "auto") -> ModelBundle:
    """An SD-shaped pipeline with random weights, identical for the same seed.

    Same structure as SD (factor-8 VAE, cross-attention UNet, CLIP text encoder) at a tiny width so
    every engine path runs in seconds on a CPU. It protects nothing: it has learned nothing.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    dev = pick_device(device)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=2,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=64,
        )
        tokenizer = CLIPTokenizer.from_pretrained(_tiny_tokenizer_dir(), local_files_only=True)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_attention_heads=4,
                num_hidden_layers=2,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    finally:
        torch.random.set_rng_state(gen_state)
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )
    bundle = ModelBundle(
        name=TINY_NAME,
        vae=vae,
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        device=dev,
        dtype=pick_dtype(dev),
        is_demo=True,
        description=TINY_DESCRIPTION,
    )
    return freeze(bundle)


def _refuse_unsafe_pickle(path: Path, label: str | None = None) -> None:
    """A pickle can run code when loaded: accept it only if torch's weights_only loader can read it.
    label: how the refusal names the file (default its name)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, or anything a hostile file raises
        raise ArtveilError(
            "model",
            f"{label or path.name}: refused: a pickled checkpoint that does not load with weights_only=True "
            f"(it may contain code). Convert it to .safetensors. ({type(exc).__name__})",
        ) from None


# The weight files diffusers (unet, vae) and transformers (text_encoder) load from a part's folder, by kind:
# safetensors first, then the pickle; `{stem}.{variant}.{ext}` for a variant; an index for sharded weights.
_WEIGHT_STEMS = {"unet": ("diffusion_pytorch_model",), "vae": ("diffusion_pytorch_model",),
                 "text_encoder": ("model", "pytorch_model")}


def _loaded_safetensors(part_dir: Path, part: str, variant: str | None) -> bool:
    """True when the part holds the safetensors weights its loader looks for (not just any .safetensors file,
    such as a LoRA dropped in beside a pickled model)."""
    tail = f".{variant}" if variant else ""
    return any((part_dir / f"{stem}{tail}.safetensors").is_file() or (part_dir / f"{stem}{tail}.safetensors.index.json").is_file()
               for stem in _WEIGHT_STEMS[part])


def _check_diffusers_folder(folder: Path, variant: str | None = None) -> bool | None:
    """Check a diffusers folder before loading it; returns from_pretrained's use_safetensors: True when every
    part loads from safetensors (then no pickle is ever opened), False when none does, None for a mix. A part
    that would load pickled weights has each pickle in it checked with weights_only first: ArtveilError("model")
    names the one refused."""
    if not (folder / "model_index.json").is_file():
        raise ArtveilError("model", f"{folder}: not a diffusers model folder (no model_index.json).")
    missing = [part for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (folder / part).is_dir()]
    if missing:
        raise ArtveilError("model", f"{folder}: model folder is missing {', '.join(missing)}.")
    safe_parts = 0
    for part in ("unet", "vae", "text_encoder"):
        if _loaded_safetensors(folder / part, part, variant):
            safe_parts += 1
            continue
        files = [p for p in (folder / part).iterdir() if p.is_file()]
        pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
        if not pickles:
            if any(p.suffix == ".safetensors" for p in files):
                names = " or ".join(f"{stem}.safetensors" for stem in _WEIGHT_STEMS[part])
                raise ArtveilError("model", f"{folder}: {part}/ has no {names} (its .safetensors files are "
                                            "not the part's weights).")
            raise ArtveilError("model", f"{folder}: {part}/ has no weights.")
        for p in pickles:
            _refuse_unsafe_pickle(p, f"{part}/{p.name}")
    return True if safe_parts == 3 else False if safe_parts == 0 else None


# Autoencoder classes of Artveil's own that a model folder may name in model_index.json. diffusers imports no
# module a folder names (that would run its code); these are imported here, and nothing else is.
KNOWN_COMPONENT_MODULES = ("engine.taef2",)


def import_known_components(folder: Path) -> None:
    """Import the Artveil modules that `folder/model_index.json` names (the proxy model's TAEF2 autoencoder)."""
    import importlib

    try:
        index = json.loads((Path(folder) / "model_index.json").read_text())
    except (OSError, ValueError):
        return
    for value in index.values():
        if isinstance(value, list) and value and value[0] in KNOWN_COMPONENT_MODULES:
            importlib.import_module(value[0])


def _weights_variant(folder: Path) -> str | None:
    """'fp16' when the unet ships only *.fp16.safetensors (what `artveil models download` fetches)."""
    names = [p.name for p in (folder / "unet").glob("*.safetensors")]
    if names and all(n.endswith(".fp16.safetensors") for n in names):
        return "fp16"
    return None


def _from_cache(cls, repo_id: str, dtype: torch.dtype):
    """A hub id from the local cache only: full-precision files if cached, else the fp16 variant."""
    common = dict(local_files_only=True, safety_checker=None, requires_safety_checker=False,
                  use_safetensors=True, torch_dtype=dtype)
    try:
        return cls.from_pretrained(repo_id, **common)
    except (OSError, ValueError, EnvironmentError):
        return cls.from_pretrained(repo_id, variant="fp16", **common)


def _bundle_from_pipeline(pipe, name: str, dev: torch.device, dtype: torch.dtype) -> ModelBundle:
    return freeze(
        ModelBundle(
            name=name,
            vae=pipe.vae,
            unet=pipe.unet,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            scheduler=pipe.scheduler,
            device=dev,
            dtype=dtype,
            is_demo=False,
            description=f"Stable Diffusion model: {name}",
        )
    )


def _single_file_config(path: Path) -> Path:
    """Pick the shipped config folder by the checkpoint's text-encoder width (768: SD 1.x, 1024: SD 2.x)."""
    from safetensors import safe_open

    root = Path(str(resources.files("resources") / "model_configs"))
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as exc:
        raise ArtveilError("model", f"{path.name}: not a readable .safetensors file ({exc}).") from None
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return root / "sd21-base"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return root / "sd15"
    raise ArtveilError("model", f"{path.name}: not a Stable Diffusion 1.x/2.x checkpoint (unknown layout).")


def load_model(source: str, device: str = "auto", seed: int = 0) -> ModelBundle:
    """Load a model for protection; weights frozen, on `device`, in bf16/fp16 (CUDA) or fp32 (CPU)."""
    if source == TINY_NAME:
        return build_tiny_model(seed=seed, device=device)
    if source == PROXY_NAME:
        folder = proxy_model_dir()
        if not (folder / "model_index.json").is_file():
            raise ArtveilError("model", "the built-in proxy model is not in this build (train it with "
                                        "python -m engine.proxy.train, docs/proxy-world.md); use the 'tiny' demo model or your own model.")
        bundle = load_model(str(folder), device=device, seed=seed)
        bundle.name, bundle.is_demo, bundle.description = "proxy", True, PROXY_DESCRIPTION
        return bundle
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # "Loading pipeline components": every face shows its own progress
    dev = pick_device(device)
    dtype = pick_dtype(dev)
    path = Path(os.path.expanduser(source))
    try:
        if path.is_dir():
            variant = _weights_variant(path)
            safe = _check_diffusers_folder(path, variant)  # use_safetensors: True, False or None (a mix)
            import_known_components(path)
            pipe = StableDiffusionPipeline.from_pretrained(
                path, local_files_only=True, safety_checker=None, requires_safety_checker=False,
                variant=variant, torch_dtype=dtype, use_safetensors=safe,
            )
            return _bundle_from_pipeline(pipe, path.name, dev, dtype)
        if path.suffix in PICKLE_SUFFIXES and path.is_file():
            _refuse_unsafe_pickle(path)
            raise ArtveilError(
                "model", f"{path.name}: pickled single-file checkpoints are not supported; use .safetensors."
            )
        if path.suffix == ".safetensors":
            if not path.is_file():
                raise ArtveilError("model", f"{path}: file not found.")
            config = _single_file_config(path)
            pipe = StableDiffusionPipeline.from_single_file(
                str(path), config=str(config), local_files_only=True, safety_checker=None,
                requires_safety_checker=False,
            )
            return _bundle_from_pipeline(pipe, path.stem, dev, dtype)
        if source.count("/") == 1 and not path.exists() and not source.startswith(("/", ".", "~")):
            try:
                pipe = _from_cache(StableDiffusionPipeline, source, dtype)
            except (OSError, ValueError, EnvironmentError) as exc:
                raise ArtveilError(
                    "model",
                    f"{source}: not found in the local Hugging Face cache. "
                    f"Download it first: artveil models download {source}",
                ) from exc
            return _bundle_from_pipeline(pipe, source, dev, dtype)
    except ArtveilError:
        raise
    except Exception as exc:
        raise ArtveilError("model", f"{source}: could not be loaded: {type(exc).__name__}: {exc}") from exc
    raise ArtveilError("model", f"{source}: no such model folder, checkpoint or cached hub id.")


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Write the tiny model as a diffusers folder (safetensors): used by tests and the installer."""
    bundle = build_tiny_model(seed=seed, device="cpu")
    bundle.as_pipeline().save_pretrained(folder, safe_serialization=True)
    # model_index lists no safety checker; diffusers writes [null, null] for it, which is what we want.
    json.loads((Path(folder) / "model_index.json").read_text())
    return Path(folder)
