"""The style judge: a small CNN that says which procedural style an image is in.

It decides every efficacy number of the proxy world ("does the customized model still paint the artist's
style?"), so it must be right on *generated* images, which are smoother and noisier than the renders it learns
from. Training therefore degrades the renders the way a VAE and a sampler do: blur, down-and-up resampling
(the VAE's detail loss), noise, small colour shifts, random crops and flips.

Train: `python -m engine.proxy.classifier --out resources/proxy/classifier` (about 4 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.machine import cpu_name
from engine.proxy.data import render_set, to_tensor
from engine.proxy.styles import STYLES

INPUT_SIZE = 64  # pixels; the judge looks at every image at this size


class StyleNet(nn.Module):
    """A strided stem and three conv stages (64 -> 8 px), then global average + max pooling.

    Small on purpose: it trains in minutes on two CPU cores, and average + max pooling of late features is
    what separates textures (dots, cells, strokes) from layouts (one centre of rings, spiral arms).
    """

    def __init__(self, num_classes: int = len(STYLES), widths: tuple[int, ...] = (24, 32, 64, 112)):
        super().__init__()

        def conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = widths
        self.features = nn.Sequential(
            *conv(3, w[0], stride=2),
            *conv(w[0], w[1]), nn.MaxPool2d(2),
            *conv(w[1], w[2]), *conv(w[2], w[2]), nn.MaxPool2d(2),
            *conv(w[2], w[3]), *conv(w[3], w[3]),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * w[3], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N x 3 x 64 x 64 in [-1, 1] -> logits N x classes."""
        f = self.features(x.contiguous(memory_format=torch.channels_last))
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))


def _to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N x) H x W x 3 or float N x 3 x H x W in [-1, 1] -> float N x 3 x 64 x 64 in [-1, 1]."""
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        x = to_tensor(images)
    else:
        x = images.float()
    if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x


@dataclass
class StyleJudge:
    """A trained StyleNet and its label names; call classify() on uint8 images of any square size."""

    net: StyleNet
    styles: tuple[str, ...]
    device: torch.device = torch.device("cpu")

    @torch.no_grad()
    def probabilities(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Style probabilities N x len(styles) for uint8 N x H x W x 3 (0-255) or float N x 3 x H x W ([-1, 1])."""
        self.net.eval()
        out = []
        for start in range(0, len(images), batch_size):
            x = _to_input(images[start : start + batch_size]).to(self.device)
            out.append(self.net(x).softmax(-1).float().cpu())
        return torch.cat(out).numpy()

    @torch.no_grad()
    def features(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """The penultimate features N x 224 (mean and max pooling of the last stage, what the head reads) of
        uint8 N x H x W x 3 images: the feature space of the efficacy curves' Fréchet distance."""
        self.net.eval()
        out = []
        for start in range(0, len(images), batch_size):
            x = _to_input(images[start : start + batch_size]).to(self.device)
            f = self.net.features(x.contiguous(memory_format=torch.channels_last))
            out.append(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1).float().cpu())
        return torch.cat(out).numpy()

    def classify(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Labels N (int64 indices into self.styles) for uint8 N x H x W x 3 images (0-255)."""
        return self.probabilities(images).argmax(-1)

    def style_names(self, images: np.ndarray | torch.Tensor) -> list[str]:
        return [self.styles[i] for i in self.classify(images)]

    def style_accuracy(self, images: np.ndarray | torch.Tensor, style: str) -> float:
        """Fraction in [0, 1] of the images that the judge calls `style`."""
        if len(images) == 0:
            raise ValueError("no images to judge")
        return float(np.mean(self.classify(images) == self.styles.index(style)))


def judge_dir() -> Path:
    """The shipped judge folder (resources/proxy/classifier)."""
    return Path(str(resources.files("resources") / "proxy" / "classifier"))


def load_judge(path: str | Path | None = None, device: str | torch.device = "cpu") -> StyleJudge:
    """The trained style judge from resources/proxy/classifier (or path)."""
    from safetensors.torch import load_file

    folder = Path(path) if path else judge_dir()
    config = json.loads((folder / "config.json").read_text())
    net = StyleNet(len(config["styles"]), tuple(config["widths"]))
    net.load_state_dict(load_file(str(folder / "model.safetensors")))
    net.to(device).eval()
    return StyleJudge(net, tuple(config["styles"]), torch.device(device))


# ----------------------------------------------------------------------------------------------- training


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur; sigma N (pixels)."""
    radius = 3
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # N x K
    n, c, h, w = x.shape
    flat = x.reshape(1, n * c, h, w)
    k = kernel.repeat_interleave(c, 0)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def degrade(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop/flip and generation-like damage on N x 3 x 64 x 64 in [-1, 1]; same shape out."""
    n = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    # crop 70-100 % of the side at a random place, random horizontal flip
    scale = u(0.7, 1.0)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = u(-1, 1) * (1 - scale)
    theta[:, 1, 2] = u(-1, 1) * (1 - scale)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    kind = torch.rand(n, generator=generator)
    # VAE-like: lose detail by going down 2-4x and back up
    resample = kind < 0.35
    if resample.any():
        factor = int(torch.randint(2, 5, (1,), generator=generator))
        small = F.interpolate(x[resample], scale_factor=1 / factor, mode="area")
        x[resample] = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
    blur = (kind >= 0.35) & (kind < 0.7)
    if blur.any():
        x[blur] = _gaussian_blur(x[blur], u(0.4, 1.4)[blur])
    # colour: contrast, brightness and a per-channel shift, as sampler drift does
    x = x * u(0.8, 1.1)[:, None, None, None] + u(-0.12, 0.12)[:, None, None, None]
    x = x + 0.06 * (torch.rand(n, 3, 1, 1, generator=generator) - 0.5)
    x = x + u(0.0, 0.08)[:, None, None, None] * torch.randn(x.shape, generator=generator)
    return x.clamp(-1, 1)


def _resize_set(images: np.ndarray) -> torch.Tensor:
    return torch.cat([_to_input(images[i : i + 512]) for i in range(0, len(images), 512)])


def _per_style_accuracy(judge: StyleJudge, x: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    predicted = judge.classify(x)
    return {s: float(np.mean(predicted[labels == i] == i)) for i, s in enumerate(judge.styles)}


def train(out: Path, per_style: int, holdout_per_style: int, steps: int, batch_size: int, lr: float, seed: int,
          workers: int, init: Path | None = None) -> dict:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    train_art = render_set(STYLES, per_style, 128, use="judge_train", workers=workers)
    holdout_art = render_set(STYLES, holdout_per_style, 128, use="judge_holdout", workers=workers)
    render_seconds = time.perf_counter() - started
    x_train, y_train = _resize_set(train_art.images), torch.from_numpy(train_art.labels)
    x_hold = _resize_set(holdout_art.images)

    net = StyleNet().to(memory_format=torch.channels_last)
    history = []
    if init is not None:  # continue a previous run (its card's history is kept)
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(init / "model.safetensors")))
        previous = json.loads((init / "config.json").read_text())
        history = previous.get("history", []) + [{k: previous["train"][k] for k in ("steps", "lr", "batch_size")}
                                                 | {"train_s": previous["timing_s"]["train"]}]
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    train_started = time.perf_counter()
    losses = []
    for step in range(steps):
        net.train()
        index = torch.randint(0, len(x_train), (batch_size,), generator=generator)
        x = degrade(x_train[index].clone(), generator)
        loss = F.cross_entropy(net(x), y_train[index], label_smoothing=0.05)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {np.mean(losses[-100:]):.3f}  {time.perf_counter() - train_started:.0f} s")
    train_seconds = time.perf_counter() - train_started

    judge = StyleJudge(net.eval(), STYLES)
    # evaluation: fresh seeds, clean renders at both sizes and two kinds of generation-like damage
    holdout_64 = render_set(STYLES, holdout_per_style, 64, use="judge_holdout")
    eval_gen = torch.Generator().manual_seed(seed + 1)
    small = F.interpolate(x_hold, scale_factor=0.25, mode="area")
    evaluations = {
        "clean_128": _per_style_accuracy(judge, x_hold, holdout_art.labels),
        "clean_64": _per_style_accuracy(judge, holdout_64.images, holdout_64.labels),
        "blur_sigma1": _per_style_accuracy(judge, _gaussian_blur(x_hold, torch.full((len(x_hold),), 1.0)),
                                           holdout_art.labels),
        "down_up_4x": _per_style_accuracy(judge, F.interpolate(small, size=x_hold.shape[-2:], mode="bilinear"),
                                          holdout_art.labels),
        "noise_0.05": _per_style_accuracy(
            judge, (x_hold + 0.1 * torch.randn(x_hold.shape, generator=eval_gen)).clamp(-1, 1), holdout_art.labels),
    }
    summary = {k: float(np.mean(list(v.values()))) for k, v in evaluations.items()}

    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "model.safetensors"))
    params = sum(p.numel() for p in net.parameters())
    config = {
        "styles": list(STYLES),
        "widths": [24, 32, 64, 112],
        "input_size": INPUT_SIZE,
        "parameters": params,
        "train": {
            "per_style": per_style, "holdout_per_style": holdout_per_style, "steps": steps,
            "batch_size": batch_size, "lr": lr, "seed": seed, "render_size": 128,
            "seeds": "judge_train (0 ..), judge_holdout (1,000,000 ..)",
        },
        "timing_s": {"render": round(render_seconds, 1), "train": round(train_seconds, 1)},
        "machine": f"{cpu_name()}, torch threads {torch.get_num_threads()}",
        "accuracy": summary,
        "accuracy_per_style": evaluations,
        "final_loss": float(np.mean(losses[-100:])),
        "history": history,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "README.md").write_text(_card(config))
    return config


def _card(c: dict) -> str:
    t = c["train"]
    lines = [
        "# Proxy style judge",
        "",
        "A small CNN (`engine.proxy.classifier.StyleNet`, "
        f"{c['parameters']:,} parameters, float32 safetensors) that names the procedural style of an image. "
        "It is the judge of every proxy-world efficacy number: load it with `engine.proxy.classifier.load_judge()`.",
        "",
        "## Data",
        "",
        f"- {t['per_style']} renders per style at {t['render_size']} px (seeds from 0), {len(c['styles'])} styles: "
        + ", ".join(c["styles"]) + " (swirl is the held-out artist style: it is in the judge, not in the model).",
        f"- Input: resized to {c['input_size']} px (bilinear, antialiased).",
        "- Augmentation per batch: crop 70-100 % + flip; one of VAE-like 2-4x down-and-up resampling (35 %), "
        "Gaussian blur sigma 0.4-1.4 px (35 %) or none; contrast 0.8-1.1, brightness +-0.12, "
        "channel shift +-0.03, Gaussian noise sigma 0-0.08 (in [-1, 1] units).",
        "",
        "## Training",
        "",
        *[f"- Earlier run continued here: {h['steps']} steps, batch {h['batch_size']}, one-cycle lr peak {h['lr']}, "
          f"{h['train_s']} s." for h in c["history"]],
        f"- {t['steps']} AdamW steps, batch {t['batch_size']}, one-cycle lr peak {t['lr']}, label smoothing 0.05, "
        f"seed {t['seed']}; final loss {c['final_loss']:.3f}.",
        f"- Time: rendering {c['timing_s']['render']} s, training {c['timing_s']['train']} s on the CPU "
        f"({c['machine']}).",
        "- Command: `OMP_NUM_THREADS=2 python -m engine.proxy.classifier --out resources/proxy/classifier`",
        "",
        f"## Accuracy on fresh seeds ({t['holdout_per_style']} per style, seeds from 1,000,000)",
        "",
        "| style | " + " | ".join(c["accuracy_per_style"]) + " |",
        "|---|" + "---|" * len(c["accuracy_per_style"]),
    ]
    for style in c["styles"]:
        lines.append(f"| {style} | " + " | ".join(f"{v[style]:.3f}" for v in c["accuracy_per_style"].values()) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{v:.3f}**" for v in c["accuracy"].values()) + " |")
    lines += [
        "",
        "clean_128 / clean_64: renders at that size; blur_sigma1: Gaussian blur of 1 px at 64 px; down_up_4x: "
        "area-down to 16 px and bilinear back up (harsher than the proxy VAE); noise_0.05: Gaussian noise of "
        "0.05 in [0, 1] units.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the proxy style judge.")
    parser.add_argument("--out", default="resources/proxy/classifier")
    parser.add_argument("--per-style", type=int, default=500)
    parser.add_argument("--holdout-per-style", type=int, default=200)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--init", type=Path, default=None, help="continue from this judge folder's weights")
    args = parser.parse_args(argv)
    config = train(Path(args.out), args.per_style, args.holdout_per_style, args.steps, args.batch_size, args.lr,
                   args.seed, args.workers, args.init)
    print(json.dumps(config["accuracy"], indent=2))


if __name__ == "__main__":
    main()
