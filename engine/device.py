"""Which device and precision the engine runs on, described for a person."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceInfo:
    """name: what the user sees; kind: "cuda" or "cpu"; vram_gb: total GPU memory in GiB."""

    name: str
    kind: str
    vram_gb: float | None
    warning: str | None


def pick_device(device: str = "auto") -> torch.device:
    if device in ("auto", None, ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from engine.errors import ArtveilError

        raise ArtveilError("config", "CUDA was asked for, but no NVIDIA GPU is usable by this torch build.")
    return dev


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA where the GPU has it (no loss scaling needed), fp16 otherwise; fp32 on the CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def describe_device(device: str = "auto") -> DeviceInfo:
    dev = pick_device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        vram = props.total_memory / 2**30
        warning = None
        if vram < 6:
            warning = f"{vram:.1f} GB of GPU memory: large images are protected in tiles, more slowly."
        return DeviceInfo(props.name, "cuda", round(vram, 1), warning)
    return DeviceInfo(
        "CPU",
        "cpu",
        None,
        "No NVIDIA GPU found: protection runs on the CPU and is very slow with a real model.",
    )
