"""The sanity bar: is a proxy model good enough to measure protections on?

Three checks, all judged by the shipped style judge (engine.proxy.classifier):

1. Text to image: samples prompted for each training style are called that style (bar for the CPU-trained
   model: mean over the training styles >= 0.7, no style below 0.4).
2. Customization: the mimic (a LoRA on the UNet's attention projections, or with mimic_mode="full" a
   DreamBooth-style fine-tune of the whole UNet), trained on 8 clean images of the held-out style, makes the
   model paint it (bar: >= 0.8 after, < 0.2 before). Without this, "protection
   stopped the mimic" cannot be told from "the mimic never worked". The LoRA is the evaluation's own mimic
   (engine.evaluation.customize on the model as engine.models.load_model loads it, then
   engine.evaluation.generate), with the settings `artveil efficacy` uses, so passing this check means the
   efficacy table's mimic learns the style from clean images.
3. Purification: SDEdit at strength 0.2 (empty prompt, no guidance) keeps the style of its input
   (bar: mean >= 0.8), so the purifier in the threat model does not destroy clean art on its own.

    python -m engine.evaluation.sanity --model runs/proxy [--device cuda] [--toy]

Writes <model>/sanity.json and the numbers into <model>/README.md. All fractions are in [0, 1].
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine.proxy.classifier import load_judge
from engine.proxy.data import render_set
from engine.proxy.styles import CONTENTS, HELD_OUT_STYLE, STYLES, TRAINING_STYLES, prompt_for
from engine.proxy.train import CARD_SANITY_BEGIN, CARD_SANITY_END

TEXT_TO_IMAGE_MEAN_BAR = 0.7  # looser than the GPU plan's 0.8 for every style: the model is trained on 2 CPU cores
TEXT_TO_IMAGE_MIN_BAR = 0.4


@dataclass(frozen=True)
class SanitySettings:
    samples_per_style: int = 32
    steps: int = 30  # DDIM steps for text to image
    guidance: float = 7.5  # diffusers' and SD's default; at 5.0 the CPU model's styles came out at 0.64 (16 each)
    lora_rank: int = 8  # used by mimic_mode "lora"
    # The mimic: a DreamBooth-style fine-tune of the whole UNet on the 8 clean images, lr 1e-3 for 600 steps.
    # Measured on the CPU model of 10,415 steps: LoRA rank 8 at lr 1e-4 or 1e-3 barely moved its loss and drew
    # no swirl (0.08 of 12); cosine decay, EMA, flipped/turned copies and training the text encoder too did no
    # better than a constant rate (docs/proxy-world.md "A steadier mimic?"). On the model of 26,207 steps,
    # 4 mimic seeds each: lr 2e-3 x 400 steps drew the held-out style in 0.52 of the tuning split's samples
    # with a seed spread of sd 0.25, lr 1e-3 x 400 0.81 (sd 0.10), lr 1e-3 x 600 0.94 (sd 0.03); on the final
    # split's sanity images 0.944 / 0.694 at seeds 0 / 1 against 0.861 / 0.583 for 2e-3 x 400.
    lora_steps: int = 600
    lora_lr: float = 1e-3
    lora_images: int = 8
    mimic_mode: str = "full"  # "lora" or "full" (DreamBooth-style, the whole UNet)
    mimic_repeats: int = 1  # each image this many times per step, each with its own noise and timestep
    mimic_schedule: str = "constant"  # or "cosine"
    mimic_augment: str = "none"  # "flip" or "dihedral": engine.evaluation.customize
    sdedit_strength: float = 0.2
    sdedit_steps: int = 50  # schedule length; strength 0.2 runs a fifth of it
    sdedit_per_style: int = 16
    batch_size: int = 32
    seed: int = 0
    # The customization check is the mean over these mimic seeds (each its own fine-tune noise and samples):
    # one mimic's result moves by 0.1-0.3 with its seed, so a bar met by one seed alone means little.
    mimic_seeds: tuple[int, ...] = (0, 1)


TOY_SETTINGS = SanitySettings(samples_per_style=2, steps=3, lora_steps=3, lora_images=2, sdedit_steps=10,
                              sdedit_per_style=1, batch_size=8, mimic_seeds=(0,))


def load_pipeline(model: str | Path, device: str = "cpu"):
    """The proxy StableDiffusionPipeline in float32 (the fp16 files are upcast) on device."""
    from diffusers import StableDiffusionPipeline

    from engine.models import import_known_components

    import_known_components(Path(model))
    pipe = StableDiffusionPipeline.from_pretrained(str(model), local_files_only=True, torch_dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@torch.no_grad()
def generate(pipe, style: str, count: int, settings: SanitySettings, seed: int) -> np.ndarray:
    """count text-to-image samples prompted for style (contents cycled): uint8 N x H x W x 3."""
    out = []
    for start in range(0, count, settings.batch_size):
        prompts = [prompt_for(style, CONTENTS[k % len(CONTENTS)])
                   for k in range(start, min(start + settings.batch_size, count))]
        generator = torch.Generator(device="cpu").manual_seed(seed + start)
        images = pipe(prompts, num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                      generator=generator, output_type="np").images
        out.append((images * 255).round().astype(np.uint8))
    return np.concatenate(out)


@torch.no_grad()
def sdedit(pipe, images: np.ndarray, strength: float, steps: int, seed: int, batch_size: int = 32) -> np.ndarray:
    """SDEdit with the pipeline's own model: uint8 N x H x W x 3 in and out; empty prompt, no guidance."""
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].astype(np.float32) / 255.0
        generator = torch.Generator(device="cpu").manual_seed(seed + start)
        result = img2img([""] * len(batch), image=batch, strength=strength, num_inference_steps=steps,
                         guidance_scale=1.0, generator=generator, output_type="np").images
        out.append((result * 255).round().astype(np.uint8))
    return np.concatenate(out)


def mimic_lora(model_dir: Path, device: str, images: np.ndarray, captions: list[str], settings: SanitySettings,
               style: str) -> tuple[np.ndarray, list[np.ndarray], list[list[float]], float]:
    """The efficacy table's mimic on clean images: (samples before it, samples after it per mimic seed, each
    seed's losses, seconds of fine-tuning in all).

    The model is loaded as every engine path loads it (engine.models.load_model), fine-tuned by
    engine.evaluation.customize (mode, rank, steps, lr, a batch of all the images per step, per-image captions)
    once per mimic seed (settings.seed + each of settings.mimic_seeds) and sampled by
    engine.evaluation.generate with that seed, exactly as `artveil efficacy` does.
    """
    from engine.evaluation import generate as G
    from engine.evaluation.customize import CustomizeSettings, customize
    from engine.models import load_model

    bundle = load_model(str(model_dir), device=device)
    size = images.shape[1]
    k = -(-settings.samples_per_style // len(CONTENTS))
    prompts = [prompt_for(style, c) for c in CONTENTS]

    def samples(surrogate, seed: int) -> np.ndarray:
        rows = G.generate(bundle, prompts, k, size, surrogate, seed, settings.steps, settings.guidance,
                          batch_size=settings.batch_size)
        return np.stack([img for row in rows for img in row])

    before = samples(None, settings.seed)
    after, losses, seconds = [], [], 0.0
    for seed in (settings.seed + m for m in settings.mimic_seeds):
        cs = CustomizeSettings(mode=settings.mimic_mode, rank=settings.lora_rank, lr=settings.lora_lr,
                               steps=settings.lora_steps, seed=seed, batch_size=len(images),
                               repeats=settings.mimic_repeats, schedule=settings.mimic_schedule,
                               augment=settings.mimic_augment)
        started = time.perf_counter()
        surrogate, seed_losses = customize(bundle, list(images), list(captions), cs)
        seconds += time.perf_counter() - started
        after.append(samples(surrogate, seed))
        losses.append(seed_losses)
        del surrogate
    return before, after, losses, seconds


def run_sanity(model: str | Path, device: str = "cpu", settings: SanitySettings = SanitySettings()) -> dict:
    """Measure the three checks on the model folder; returns the report (also written as sanity.json)."""
    model = Path(model)
    started = time.perf_counter()
    world = json.loads((model / "proxy_world.json").read_text())
    resolution = int(world["resolution"])
    judge = load_judge(device=device)
    pipe = load_pipeline(model, device)
    torch.manual_seed(settings.seed)

    text_to_image = {}
    for i, style in enumerate(TRAINING_STYLES):
        images = generate(pipe, style, settings.samples_per_style, settings, settings.seed + 1000 * i)
        text_to_image[style] = judge.style_accuracy(images, style)

    clean = render_set(STYLES, settings.sdedit_per_style, resolution, use="sanity")
    purified = sdedit(pipe, clean.images, settings.sdedit_strength, settings.sdedit_steps, settings.seed,
                      settings.batch_size)
    kept = {s: judge.style_accuracy(purified[clean.labels == STYLES.index(s)], s) for s in STYLES}

    del pipe
    artist = render_set([HELD_OUT_STYLE], settings.lora_images, resolution, use="artist")
    before, after, losses, lora_seconds = mimic_lora(model, device, artist.images, artist.captions, settings,
                                                     HELD_OUT_STYLE)
    held_out_before = judge.style_accuracy(before, HELD_OUT_STYLE)
    per_seed = [judge.style_accuracy(samples, HELD_OUT_STYLE) for samples in after]
    held_out_after = float(np.mean(per_seed))

    t2i_mean, t2i_min = float(np.mean(list(text_to_image.values()))), float(min(text_to_image.values()))
    kept_mean = float(np.mean(list(kept.values())))
    report = {
        "model": model.name,
        "device": device,
        "settings": asdict(settings),
        "text_to_image": {"per_style": text_to_image, "mean": t2i_mean, "min": t2i_min},
        "held_out_without_lora": held_out_before,
        "held_out_with_lora": held_out_after,
        "held_out_with_lora_per_seed": dict(zip((str(settings.seed + m) for m in settings.mimic_seeds), per_seed)),
        "lora": {"first_loss": [seed[0] for seed in losses if seed],
                 "last_loss": [float(np.mean(seed[-20:])) for seed in losses if seed],
                 "seconds": round(lora_seconds, 1)},
        "sdedit_keeps_style": {"strength": settings.sdedit_strength, "per_style": kept, "mean": kept_mean},
        "bar": {
            "text_to_image": t2i_mean >= TEXT_TO_IMAGE_MEAN_BAR and t2i_min >= TEXT_TO_IMAGE_MIN_BAR,
            "lora_learns_held_out": held_out_after >= 0.8 and held_out_before < 0.2,
            "sdedit_keeps_style": kept_mean >= 0.8,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    report["bar"]["passed"] = all(report["bar"].values())
    (model / "sanity.json").write_text(json.dumps(report, indent=2) + "\n")
    _write_card_section(model / "README.md", report)
    return report


def _mimic_words(s: dict) -> str:
    return ("DreamBooth-style fine-tune of the whole UNet" if s.get("mimic_mode") == "full"
            else f"LoRA rank {s['lora_rank']}")


def _write_card_section(card: Path, report: dict) -> None:
    s = report["settings"]
    t2i = report["text_to_image"]
    bar = report["bar"]
    lines = [
        CARD_SANITY_BEGIN,
        f"Measured by `engine.evaluation.sanity` on {report['device']} in {report['seconds']} s "
        f"(judge: resources/proxy/classifier). **{'PASSED' if bar['passed'] else 'NOT PASSED'}**.",
        "",
        "| check | measured | bar |",
        "|---|---|---|",
        f"| text to image, min over training styles ({s['samples_per_style']} each, DDIM {s['steps']}, "
        f"guidance {s['guidance']}) | mean {t2i['mean']:.3f}, min {t2i['min']:.3f} | mean >= "
        f"{TEXT_TO_IMAGE_MEAN_BAR}, min >= {TEXT_TO_IMAGE_MIN_BAR} |",
        f"| held-out style before the mimic | {report['held_out_without_lora']:.3f} | < 0.2 |",
        f"| held-out style after the mimic ({_mimic_words(s)}, {s['lora_steps']} steps, lr {s['lora_lr']}, "
        f"{s['lora_images']} images; mean over mimic seeds " + ", ".join(
            f"{seed}: {v:.3f}" for seed, v in report.get("held_out_with_lora_per_seed", {}).items())
        + f") | {report['held_out_with_lora']:.3f} | >= 0.8 |",
        f"| SDEdit strength {s['sdedit_strength']} keeps style (mean over {len(STYLES)} styles) | "
        f"{report['sdedit_keeps_style']['mean']:.3f} | >= 0.8 |",
        "",
        "Per style, text to image: " + ", ".join(f"{k} {v:.2f}" for k, v in t2i["per_style"].items()) + ".",
        "Per style, SDEdit: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                          report["sdedit_keeps_style"]["per_style"].items()) + ".",
        CARD_SANITY_END,
    ]
    section = "\n".join(lines)
    text = card.read_text() if card.exists() else ""
    if CARD_SANITY_BEGIN in text and CARD_SANITY_END in text:
        head, rest = text.split(CARD_SANITY_BEGIN, 1)
        text = head + section + rest.split(CARD_SANITY_END, 1)[1]
    else:
        text = text + "\n## Sanity bar\n\n" + section + "\n"
    card.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check that a proxy model can measure protections.")
    parser.add_argument("--model", required=True, help="the proxy pipeline folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--toy", action="store_true", help="a handful of samples and steps (tests)")
    parser.add_argument("--samples-per-style", type=int, default=None)
    parser.add_argument("--lora-steps", type=int, default=None)
    parser.add_argument("--lora-lr", type=float, default=None)
    parser.add_argument("--lora-rank", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--mimic", choices=("lora", "full"), default=None,
                        help="the mimic: a LoRA, or a DreamBooth-style fine-tune of the whole UNet")
    parser.add_argument("--seed", type=int, default=None, help="the samples' and the mimic's seed (default 0)")
    parser.add_argument("--mimic-seeds", type=int, default=None,
                        help="how many mimics (seeds SEED, SEED+1, ...) the customization check averages (default 2)")
    args = parser.parse_args(argv)
    settings = TOY_SETTINGS if args.toy else SanitySettings()
    overrides = {k: v for k, v in {"samples_per_style": args.samples_per_style, "lora_steps": args.lora_steps,
                                   "lora_lr": args.lora_lr, "lora_rank": args.lora_rank,
                                   "guidance": args.guidance, "mimic_mode": args.mimic,
                                   "seed": args.seed}.items() if v is not None}
    if args.mimic_seeds is not None:
        if not 1 <= args.mimic_seeds <= 16:
            parser.error("--mimic-seeds must be between 1 and 16")
        overrides["mimic_seeds"] = tuple(range(args.mimic_seeds))
    from dataclasses import replace

    settings = replace(settings, **overrides)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    report = run_sanity(args.model, device, settings)
    print(json.dumps({k: report[k] for k in ("text_to_image", "held_out_without_lora", "held_out_with_lora",
                                              "held_out_with_lora_per_seed", "sdedit_keeps_style", "bar",
                                              "seconds")}, indent=2))


if __name__ == "__main__":
    main()
