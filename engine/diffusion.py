"""The latent-diffusion arithmetic every method and purifier shares.

Images are [B, 3, H, W] tensors in [0, 1] (fp32); latents are scaled by the VAE scaling factor.
Both epsilon- and v-prediction models are handled (SD 2.x at 768 px predicts v).
"""

from __future__ import annotations

import torch

from engine.faults import maybe_fail
from engine.models import ModelBundle


def encode(model: ModelBundle, x01: torch.Tensor) -> torch.Tensor:
    """VAE encoder mean times the scaling factor (no sampling: the attack needs a deterministic E)."""
    maybe_fail("vae")
    h = model.vae.encode((x01 * 2 - 1).to(model.dtype)).latent_dist.mean
    return ((h.float() - model.shift_factor) * model.scaling_factor)


def decode(model: ModelBundle, z: torch.Tensor) -> torch.Tensor:
    """Latent to image in [0, 1] (not clamped, so gradients are not cut at the borders)."""
    maybe_fail("vae")
    x = model.vae.decode((z / model.scaling_factor + model.shift_factor).to(model.dtype)).sample
    return (x.float() + 1) / 2


def unet(model: ModelBundle, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """The UNet's raw output (epsilon or v) in fp32. cond is broadcast over the batch."""
    maybe_fail("unet")
    if cond.shape[0] != z_t.shape[0]:
        cond = cond.expand(z_t.shape[0], -1, -1)
    return model.unet_runner(z_t.to(model.dtype), t, encoder_hidden_states=cond).sample.float()


def _coef(model: ModelBundle, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = model.alphas_cumprod[t].view(-1, 1, 1, 1)
    return a.sqrt(), (1 - a).sqrt()


def add_noise(model: ModelBundle, z: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    sa, s1a = _coef(model, t)
    return sa * z + s1a * noise


def target(model: ModelBundle, z: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to predict at t: the noise, or v = sqrt(a) n - sqrt(1-a) z."""
    if model.prediction_type == "v_prediction":
        sa, s1a = _coef(model, t)
        return sa * noise - s1a * z
    return noise


def predict_eps(model: ModelBundle, z_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if model.prediction_type == "v_prediction":
        sa, s1a = _coef(model, t)
        return sa * out + s1a * z_t
    return out


def predict_x0(model: ModelBundle, z_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """One-step estimate of the clean latent from the UNet output at t."""
    sa, s1a = _coef(model, t)
    if model.prediction_type == "v_prediction":
        return sa * z_t - s1a * out
    return (z_t - s1a * out) / sa


def sample_timesteps(model: ModelBundle, n: int, generator: torch.Generator, low: int = 0, high: int | None = None) -> torch.Tensor:
    high = model.num_train_timesteps if high is None else high
    return torch.randint(low, high, (n,), generator=generator, device=generator.device).to(model.device)


def randn_like(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(z.shape, generator=generator, device=generator.device, dtype=torch.float32).to(z.device)


def denoising_loss(
    model: ModelBundle,
    z: torch.Tensor,
    cond: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    reduce: bool = True,
) -> torch.Tensor:
    """The LDM training loss ||model(z_t, t, c) - target||^2, batched over the timesteps in t.

    z is [1, 4, h, w] (repeated over t) or already [len(t), 4, h, w].
    """
    if z.shape[0] != t.shape[0]:
        z = z.expand(t.shape[0], -1, -1, -1)
    z_t = add_noise(model, z, noise, t)
    out = unet(model, z_t, t, cond)
    err = (out - target(model, z, noise, t)) ** 2
    return err.mean() if reduce else err.mean(dim=(1, 2, 3))
