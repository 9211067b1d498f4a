"""`artveil models`: what is on disk, and `artveil models download NAME` to fetch a model.

engine.cli calls `register(subparsers)`; `python -m engine.cli_models models ...` runs it alone.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from engine import hub
from engine.errors import ArtveilError
from engine.events import Event, Progress
from engine.jobs import Job


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `models` command (and its `list` / `download` subcommands) to a CLI."""
    models = subparsers.add_parser("models", help="list local models or download one",
                                   description="List which models are on disk and what each lacks.")
    _add_listing_options(models)
    actions = models.add_subparsers(dest="models_action", metavar="{list,download}")
    _add_listing_options(actions.add_parser("list", help="list local models (the default)"))
    download = actions.add_parser("download", help="download a model's inference files",
                                  description="Download only what inference needs (fp16 safetensors where offered).")
    download.add_argument("name", help=f"{', '.join(hub.KNOWN_MODELS)} or a diffusers repository id (owner/name)")
    download.add_argument("--dir", dest="local_dir", metavar="DIR",
                          help="put the files in this folder instead of the Hugging Face cache")
    download.add_argument("--endpoint", metavar="URL", help="hub mirror to use (default: HF_ENDPOINT or huggingface.co)")
    download.add_argument("--cache-dir", metavar="DIR", help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    models.set_defaults(func=run, models_action=None)
    return models


def _add_listing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", metavar="DIR", help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    parser.add_argument("--extra-dir", metavar="DIR", action="append", default=[],
                        help="also look for diffusers folders here (repeatable)")


def run(args: argparse.Namespace) -> int:
    """Run `models` / `models list` / `models download`; returns the process exit code."""
    try:
        if getattr(args, "models_action", None) == "download":
            return _download(args)
        return _list(args)
    except ArtveilError as error:
        print(f"\nerror: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped; finished files are kept and the next download continues from them.", file=sys.stderr)
        return 130


def _list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    for model in hub.list_local_models(cache_dir=args.cache_dir, extra_dirs=args.extra_dir):
        if model.present:
            state = f"present  {model.path}"
        elif model.path is None:
            state = f"not downloaded  (artveil models download {model.name})"
        else:
            state = f"incomplete  {model.path}"
        print(f"{model.name:<10} {model.title:<36} {state}", file=out)
        if model.path is not None and model.missing:
            for path in model.missing:
                print(f"{'':<10}   missing: {path}", file=out)
    return 0


def _download(args: argparse.Namespace) -> int:
    line = _ProgressLine(sys.stderr)
    result = hub.download_model(args.name, cache_dir=args.cache_dir, local_dir=args.local_dir,
                                endpoint=args.endpoint, job=Job(line.show))
    line.finish()
    variant = f", variant {result.variant}" if result.variant else ""
    print(f"{result.name}: {format_bytes(result.bytes_total)} verified{variant} in {result.path}")
    return 0


def format_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _ProgressLine:
    """One terminal line, rewritten in place: file, bytes, percent, speed, ETA."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._width = 0

    def show(self, event: Event) -> None:
        if not isinstance(event, Progress) or event.phase != "download":
            return
        event = event.detail
        percent = 100 * event.bytes_done / event.bytes_total if event.bytes_total else 100
        name = event.current_file if len(event.current_file) <= 48 else "…" + event.current_file[-47:]
        text = (f"{name:<48} {format_bytes(event.bytes_done):>9} / {format_bytes(event.bytes_total):<9}"
                f" {percent:3.0f}%  {format_bytes(event.speed_bps):>9}/s  ETA {format_duration(event.eta_s)}")
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def finish(self) -> None:
        if self._width:
            self._stream.write("\n")
            self._stream.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="artveil")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
