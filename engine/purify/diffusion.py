"""Diffusion purifiers: SDEdit/DiffPure, GrIDPure and noisy upscaling, on the user's own model.

SDEdit runs diffusers' img2img pipeline over the loaded modules (no copies): DDIM, empty prompt, no
classifier-free guidance. Images larger than max_side are purified at max_side and resized back, as a
mimic working at the model's resolution would.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from engine.errors import ArtveilError
from engine.events import Progress
from engine.purify.base import Param, Purifier


def _fit(rgb: np.ndarray, max_side: int, multiple: int) -> tuple[Image.Image, tuple[int, int]]:
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    nh = max(multiple, int(round(h * scale / multiple)) * multiple)
    nw = max(multiple, int(round(w * scale / multiple)) * multiple)
    img = Image.fromarray(rgb)
    if (nh, nw) != (h, w):
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
    return img, (w, h)


def _step_end(job, total: int):
    """A diffusers step-end callback: after every denoising step, Progress("purify", step, total) to the job
    and job.check(), so Stop ends a long re-draw within one step instead of at its end."""

    def step_end(pipe, step, timestep, callback_kwargs):
        if job is not None:
            job.report(Progress("purify", step + 1, total))
            job.check()
        return callback_kwargs

    return step_end


def _img2img(model, img: Image.Image, strength: float, seed: int, steps: int, prompt: str, job) -> np.ndarray:
    pipe = model.pipeline("img2img")
    generator = torch.Generator(device=model.device).manual_seed(seed)
    # At least one denoising step must run: strength * steps >= 1.
    steps = max(steps, int(np.ceil(1.0 / max(strength, 1e-3))))
    with torch.no_grad():
        out = pipe(
            prompt=prompt,
            image=img,
            strength=float(strength),
            num_inference_steps=steps,
            guidance_scale=1.0,
            generator=generator,
            output_type="np",
            callback_on_step_end=_step_end(job, max(1, int(steps * strength))),
        ).images[0]
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def purify_sdedit(model, rgb: np.ndarray, seed: int, job=None, *, strength: float, steps: int, max_side: int, prompt: str) -> np.ndarray:
    """Noise to t = strength·T and denoise back with DDIM (SDEdit / DiffPure). strength in (0, 1]."""
    img, (w, h) = _fit(rgb, max_side, model.vae_scale_factor)
    out = _img2img(model, img, strength, seed, steps, prompt, job)
    if out.shape[:2] != (h, w):
        out = np.asarray(Image.fromarray(out).resize((w, h), Image.Resampling.LANCZOS))
    return out


def purify_gridpure(model, rgb: np.ndarray, seed: int, job=None, *, rounds: int, t: int, gamma: float, max_side: int, crop: int, steps: int) -> np.ndarray:
    """GrIDPure (Zhao et al. 2024): 256² crops at stride 128 plus a mosaic of the four 128² corners,
    each purified at a very small strength (t / 1000), overlaps averaged, blended x <- (1-γ)·pure + γ·x,
    repeated `rounds` times."""
    img, (w0, h0) = _fit(rgb, max_side, model.vae_scale_factor)
    x = np.asarray(img, dtype=np.float64) / 255.0
    h, w = x.shape[:2]
    c = min(crop, h, w) // 8 * 8
    half = c // 2
    strength = t / model.num_train_timesteps
    for r in range(int(rounds)):
        acc = np.zeros_like(x)
        cnt = np.zeros(x.shape[:2] + (1,))
        ys = sorted(set(list(range(0, max(1, h - c + 1), half)) + [h - c]))
        xs = sorted(set(list(range(0, max(1, w - c + 1), half)) + [w - c]))
        k = 0
        for y in ys:
            for xx in xs:
                patch = (x[y : y + c, xx : xx + c] * 255).round().astype(np.uint8)
                out = _img2img(model, Image.fromarray(patch), strength, seed + 7919 * r + k, steps, "", job) / 255.0
                acc[y : y + c, xx : xx + c] += out
                cnt[y : y + c, xx : xx + c] += 1
                k += 1
        # The corner mosaic lets the image borders see a centred context once per round.
        if h >= c and w >= c:
            corners = [(0, 0), (0, w - half), (h - half, 0), (h - half, w - half)]
            mosaic = np.zeros((c, c, 3))
            for (cy, cx), (my, mx) in zip(corners, [(0, 0), (0, half), (half, 0), (half, half)]):
                mosaic[my : my + half, mx : mx + half] = x[cy : cy + half, cx : cx + half]
            out = _img2img(model, Image.fromarray((mosaic * 255).round().astype(np.uint8)), strength, seed + 7919 * r + k, steps, "", job) / 255.0
            for (cy, cx), (my, mx) in zip(corners, [(0, 0), (0, half), (half, 0), (half, half)]):
                acc[cy : cy + half, cx : cx + half] += out[my : my + half, mx : mx + half]
                cnt[cy : cy + half, cx : cx + half] += 1
        pure = acc / np.maximum(cnt, 1)
        x = (1 - gamma) * pure + gamma * x
    out = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    if out.shape[:2] != (h0, w0):
        out = np.asarray(Image.fromarray(out).resize((w0, h0), Image.Resampling.LANCZOS))
    return out


def purify_upscale(model, rgb: np.ndarray, seed: int, job=None, *, sigma: float, noise_level: int, upscaler: str | None, prompt: str, steps: int) -> np.ndarray:
    """Noisy upscaling (Hönig et al. 2024): Gaussian noise, downscale ×4, the SD ×4 upscaler back up."""
    upscaler = upscaler or os.environ.get("ARTVEIL_UPSCALER")
    if not upscaler or not os.path.isdir(upscaler):
        raise ArtveilError(
            "model",
            "noisy upscaling needs the SD ×4 upscaler weights (stabilityai/stable-diffusion-x4-upscaler) in a "
            "local folder: pass upscaler=DIR (CLI: --purifier upscale:DIR) or set ARTVEIL_UPSCALER.",
        )
    pipe = model.upscaler(upscaler)
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    noisy = np.clip(rgb / 255.0 + rng.normal(0, sigma, rgb.shape), 0, 1)
    small = Image.fromarray((noisy * 255).round().astype(np.uint8)).resize((max(8, w // 4), max(8, h // 4)), Image.Resampling.BICUBIC)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    # diffusers' upscale pipeline has only the older per-step `callback=`, not callback_on_step_end.
    with torch.no_grad():
        out = pipe(prompt=prompt, image=small, noise_level=int(noise_level), num_inference_steps=steps, guidance_scale=0.0, generator=generator, output_type="np", callback=lambda step, t, latents: _step_end(job, steps)(pipe, step, t, {}), callback_steps=1).images[0]
    out = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
    return np.asarray(Image.fromarray(out).resize((w, h), Image.Resampling.LANCZOS))


def _steps(default: int, what: str) -> Param:
    return Param("steps", default, what, int, 1, 1000)


def _max_side(default: int) -> Param:
    return Param("max_side", default, "px of the longer side it works at, larger images resized there and back",
                 int, 32, 8192)


SDEDIT = Purifier(
    "sdedit", "SDEdit (light diffusion re-draw)", "Noise the image a little and let the model redraw it.",
    purify_sdedit,
    (
        Param("strength", 0.2, "fraction of the noise schedule the image is noised to", float, 0.0, 1.0, low_open=True),
        _steps(50, "DDIM steps of a full re-draw, of which strength × steps run"),
        _max_side(768),
        Param("prompt", "", "the re-draw's prompt", str),
    ),
    knob="strength", levels=(0.1, 0.2, 0.3),
)
GRIDPURE = Purifier(
    "gridpure", "GrIDPure (tiled, repeated)", "Many very light re-draws on overlapping crops.", purify_gridpure,
    (
        Param("rounds", 20, "re-draw rounds", int, 1, 100),
        Param("t", 10, "timesteps of noise per re-draw, of the schedule's T", int, 1, 1000),
        Param("gamma", 0.1, "share of the previous round blended back", float, 0.0, 1.0),
        Param("crop", 256, "px of the square crops' side", int, 8, 2048),
        _max_side(512),
        _steps(100, "DDIM steps of a full re-draw"),
    ),
    knob="rounds", levels=(5, 10, 20),
)
UPSCALE = Purifier(
    "upscale", "Noisy upscaling (SD ×4 upscaler)", "Add noise, then the SD ×4 upscaler (needs its weights).",
    purify_upscale,
    (
        Param("sigma", 0.1, "standard deviation of the added noise in [0, 1] pixel units", float, 0.0, 1.0),
        Param("noise_level", 320, "the upscaler's own noise level", int, 0, 350),
        Param("upscaler", None, "folder of the SD ×4 upscaler weights, else $ARTVEIL_UPSCALER", str),
        Param("prompt", "", "the upscaler's prompt", str),
        _steps(20, "denoising steps of the upscaler"),
    ),
    knob="upscaler",
)
