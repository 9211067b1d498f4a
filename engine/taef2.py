"""TAEF2, a pretrained tiny autoencoder (Ollin Boer Bohan, MIT licence), as a diffusers model.

The proxy model (docs/proxy-world.md) uses it as its VAE: a decoder trained for an afternoon on two CPU cores
cannot draw the proxy styles (14.6 dB, judge 0.36), while TAEF2 reconstructs them with no training at all.
Images in [-1, 1] (diffusers' convention) go in and come out; latents are 32 channels at 1/8 size.

It speaks AutoencoderKL's interface, so every engine path (encode/decode in engine.diffusion, the SDEdit and
GrIDPure purifiers, StableDiffusionPipeline and its img2img sibling, the evaluation's mimic) runs unchanged:
`encode(x).latent_dist` is a deterministic DiagonalGaussianDistribution (mean = sample = mode, std 0), and
`decode(z).sample` is the image. `latent_mean` / `latent_std` (per channel, buffers saved with the weights)
centre the latents, so that the diffusion model sees zero-mean, unit-std channels and `scaling_factor` is 1.

Loading: `model_index.json` names `["engine.taef2", "TAEF2Autoencoder"]`, which diffusers imports like any
library class; the original state dicts (`taef2_encoder.pth`, `taef2_decoder.pth`) load with
`TAEF2Autoencoder.from_original(encoder_path, decoder_path)`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin

WIDTH = 64


def _conv(c_in: int, c_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, **kwargs)


class _Block(nn.Module):
    """conv-ReLU-conv-ReLU-conv plus the input, then ReLU; at the lowest resolution a normalised 1x1 branch
    (`pool`) is added to the input first. Key names follow the original state dicts."""

    def __init__(self, channels: int = WIDTH, pooled: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.pool = (nn.Sequential(nn.Conv2d(channels, 4 * channels, 1, bias=False), nn.GroupNorm(4, 4 * channels),
                                   nn.ReLU(), nn.Conv2d(4 * channels, channels, 1, bias=False))
                     if pooled else None)
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + x)


class _Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


def _encoder(latent_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = [_conv(3, WIDTH), _Block()]
    for level in range(3):
        layers += [_conv(WIDTH, WIDTH, stride=2, bias=False)] + [_Block(pooled=level == 2) for _ in range(3)]
    layers.append(_conv(WIDTH, latent_channels))
    return nn.Sequential(*layers)


def _decoder(latent_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = [_Clamp(), _conv(latent_channels, WIDTH), nn.ReLU()]
    for level in range(3):
        layers += [_Block(pooled=level == 0) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]
    layers += [_Block(), _conv(WIDTH, 3)]
    return nn.Sequential(*layers)


class TAEF2Autoencoder(ModelMixin, ConfigMixin):
    """The TAEF2 encoder and decoder with per-channel latent centring, in AutoencoderKL's interface."""

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 32,
        scaling_factor: float = 1.0,
        # four entries: diffusers pipelines read the spatial factor as 2 ** (len - 1) = 8
        block_out_channels: tuple[int, ...] = (WIDTH, WIDTH, WIDTH, WIDTH),
        sample_size: int = 64,
        force_upcast: bool = False,
    ):
        super().__init__()
        self.encoder = _encoder(latent_channels)
        self.decoder = _decoder(latent_channels)
        self.register_buffer("latent_mean", torch.zeros(latent_channels))
        self.register_buffer("latent_std", torch.ones(latent_channels))

    @classmethod
    def from_original(cls, encoder_path: str | Path, decoder_path: str | Path) -> "TAEF2Autoencoder":
        """Build from the published state dicts (plain tensors, read with weights_only=True)."""
        model = cls()
        model.encoder.load_state_dict(torch.load(encoder_path, map_location="cpu", weights_only=True))
        model.decoder.load_state_dict(torch.load(decoder_path, map_location="cpu", weights_only=True))
        return model.eval()

    @torch.no_grad()
    def set_latent_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-channel mean and std (C) of the raw latents of the training images; encode then centres."""
        self.latent_mean.copy_(mean.to(self.latent_mean))
        self.latent_std.copy_(std.to(self.latent_std))

    def set_attn_processor(self, processor) -> None:  # no attention layers: the engine calls this on every VAE
        return None

    def _view(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.to(like.dtype).view(1, -1, 1, 1)

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] (B x 3 x H x W) -> centred latents B x C x H/8 x W/8."""
        raw = self.encoder(x.add(1).div(2))
        return (raw - self._view(self.latent_mean, raw)) / self._view(self.latent_std, raw)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Centred latents -> image in [-1, 1] (not clamped, so gradients pass the borders)."""
        raw = z * self._view(self.latent_std, z) + self._view(self.latent_mean, z)
        return self.decoder(raw).mul(2).sub(1)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        z = self.encode_latents(x)
        # deterministic: std 0, so .sample() and .mode() are the mean (the encoder has no posterior)
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        x = self.decode_latents(z)
        return DecoderOutput(sample=x) if return_dict else (x,)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        x = self.decode_latents(self.encode_latents(sample))
        return DecoderOutput(sample=x) if return_dict else (x,)
