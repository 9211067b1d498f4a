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


DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def pick_device(device: str = "auto") -> torch.device:
    """The torch device a --device value names; ArtveilError("config") in one line for a name torch does
    not know, a kind Artveil does not run on, or a GPU this machine does not have."""
    from engine.errors import ArtveilError

    if device in ("auto", None, ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ArtveilError("config", f"unknown device {device!r}; use {DEVICE_CHOICES}.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ArtveilError("config", "CUDA was asked for, but no NVIDIA GPU is usable by this torch build.")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ArtveilError("config", f"device {device!r}: this machine has {count} GPU(s), numbered from 0.")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ArtveilError("config", "mps was asked for, but this machine has no usable Apple GPU.")
    elif dev.type != "cpu":
        raise ArtveilError("config", f"device {device!r} is not one Artveil runs on; use {DEVICE_CHOICES}.")
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
