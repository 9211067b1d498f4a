"""What the `artveil` subcommands share to turn their arguments into values: the argparse types of
--strength, --steps and --param, and --model / --device into a loaded model (with the demo-model notes).

engine.cli, engine.evaluation and engine.bench all import it; it imports neither them nor torch
(the model is loaded lazily), so `artveil --help` stays quick.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from engine.errors import ArtveilError
from engine.jobs import BUDGET_PRESETS, STRENGTH_PRESETS

MODEL_HELP = ("diffusers folder, .safetensors file or cached hub id; default: the built-in demo ('proxy', a small "
              "model that is not Stable Diffusion, or 'tiny' where the build lacks it), or $ARTVEIL_MODEL")


def parse_strength(value: str) -> float:
    """--strength: the strength ε in pixel levels (0-255), or a preset name (subtle, default, ...)."""
    if value in STRENGTH_PRESETS:
        return STRENGTH_PRESETS[value]
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number of pixel levels or one of {', '.join(STRENGTH_PRESETS)}") from None


def parse_steps(value: str) -> int:
    """--steps: an optimizer step count, or a preset name (quick, default, ...)."""
    if value in BUDGET_PRESETS:
        return BUDGET_PRESETS[value]
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a step count or one of {', '.join(BUDGET_PRESETS)}") from None


def parse_param(value: str) -> tuple[str, object]:
    """--param KEY=VALUE: VALUE read as JSON (numbers, true/false, lists), else kept as a string."""
    key, sep, raw = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--param expects KEY=VALUE, got '{value}'")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def default_model_source() -> str:
    """--model when none is given: $ARTVEIL_MODEL, else the built-in demo (the proxy model when the build
    ships it, else 'tiny')."""
    env = os.environ.get("ARTVEIL_MODEL")
    if env:
        return env
    from engine.models import demo_source

    return demo_source()


def load_model_or_exit(source: str | None, device: str):
    """The model --model names (None: the default) on --device; exits with status 2 and one line on stderr
    when it cannot be loaded. A demo model gets a note that it gives no real protection."""
    from engine.models import PROXY_NAME, load_model

    source = source or default_model_source()
    try:
        model = load_model(source, device=device)
    except ArtveilError as exc:
        print(f"artveil: model: {exc.message}", file=sys.stderr)
        raise SystemExit(2)
    if model.is_demo and model.name == PROXY_NAME:
        print("artveil: note: using the built-in proxy model, a small model trained on procedural art: it is not "
              "Stable Diffusion, so this gives NO protection against real models; use --model for that.",
              file=sys.stderr)
    elif model.is_demo:
        print("artveil: note: the built-in 'tiny' demo model gives NO real protection; use a Stable Diffusion model (--model).", file=sys.stderr)
    return model
