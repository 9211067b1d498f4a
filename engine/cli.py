"""The `artveil` command line: protect, purify, models, eval, bench.

    artveil protect IN... --out DIR [--method antipure] [--strength 8] [--steps 100] [--model tiny]
    artveil purify IN... --purifier sdedit:0.2 --out DIR

IN may be files or folders. One line per failed file on stderr while the others still get done;
the exit status is 1 if any file failed, 2 if nothing could start (bad model, bad arguments).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from engine.chatter import quiet_library_chatter
from engine.cli_args import MODEL_HELP, default_model_source, load_model_or_exit, parse_param, parse_steps, parse_strength
from engine.errors import ArtveilError, Cancelled
from engine.events import Failed, Message, Progress, Result, Started
from engine.jobs import BUDGET_PRESETS, EOT_TRANSFORMS, STRENGTH_PRESETS, STRENGTH_RANGE, ProtectSettings

# Subcommands that live in their own modules register themselves when present.
_SUBCOMMAND_MODULES = ("engine.cli_models", "engine.evaluation.cli", "engine.evaluation.efficacy_cli", "engine.bench")


class ProgressLine:
    """A one-line progress bar on a terminal (stderr); silent when stderr is not a terminal."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.enabled = stream.isatty()
        self._last = 0.0

    def update(self, label: str, done: int, total: int, eta: float | None, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._last < 0.1:
            return
        self._last = now
        width = 24
        filled = int(width * done / max(total, 1))
        eta_txt = f" ETA {eta:4.0f}s" if eta is not None else ""
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label[:40]}{eta_txt}\x1b[K")
        if final:
            self.stream.write("\r\x1b[K")
        self.stream.flush()


def run_protect(args: argparse.Namespace) -> int:
    """A face over engine.batch.protect_batch: one line per image, one per failed file, a bar on a terminal."""
    from engine import batch as B
    from engine.device import pick_device
    from engine.images import validate_user_path
    from engine.methods import get_method
    from engine.protect import validate_settings

    try:
        out_dir = validate_user_path(args.out, must_exist=False, kind="folder")
    except ArtveilError as exc:
        print(f"artveil: output folder: {B.one_line(exc.message)}", file=sys.stderr)
        return 2
    settings = ProtectSettings(
        method=args.method,
        strength_levels=args.strength,
        steps=args.steps,
        step_levels=args.step_size,
        seed=args.seed,
        eot=tuple(args.eot or ()),
        eot_samples=args.eot_samples,
        low_vram=args.low_vram,
        working_size=args.working_size or 512,  # auto (None): set once the model is known, below
        large_image=args.large_image,
        timesteps_per_step=args.timesteps_per_step,
        method_params=dict(args.param or []),
        preview_every=0,
        # Only --json reports the objective; measuring it costs two extra passes per image.
        measure_objective=bool(args.json),
    )
    # Every argument is checked before anything is created or loaded: a bad one is one line and exit 2.
    try:
        validate_settings(settings)
        get_method(settings.method, settings.method_params)
        pick_device(args.device)
    except ArtveilError as exc:
        print(f"artveil: {B.one_line(exc.message)}", file=sys.stderr)
        return 2
    inputs = _inputs_and_output_folder(args.inputs, out_dir)
    if inputs is None:
        return 2
    refused = _refused_before_loading(args.model or default_model_source(), args.device, settings, args.working_size)
    if refused:
        print(f"artveil: {B.one_line(refused)}", file=sys.stderr)
        return 2
    model = load_model_or_exit(args.model, args.device)
    if args.working_size is None:
        from engine.plan import default_working_size, native_size, shape_of

        # the model's own size (64 px for the built-in proxy model), as the window chooses it
        settings = replace(settings, working_size=default_working_size(shape_of(model), model.device, native_size(model)))
    options = B.BatchOptions(out_dir, fmt=args.format, model_source=args.model or default_model_source(),
                             on_existing="overwrite" if args.overwrite else "error", redo=args.overwrite)
    bar = ProgressLine(sys.stderr)  # the stream now, not the one bound when this module was imported
    names: dict[int, str] = {}
    summary = None
    said_plan = None
    try:
        for event in B.protect_batch(model, inputs, settings, options):
            match event:
                case Message(text=text):
                    print(f"note: {text}", file=sys.stderr)
                case Started(index=i, source=source):
                    names[i] = source.name
                case Progress(phase="read", index=i, detail=read):
                    for note in read.notes:
                        print(f"note: {names[i]}: {note}", file=sys.stderr)
                case Progress(phase="protect", index=i, detail=item):
                    if item.plan and item.plan != said_plan:  # said once, again only when an image needs another
                        said_plan = item.plan
                        lead = "\n" if bar.enabled else ""
                        print(f"{lead}note: {names[i]}: {item.plan}", file=sys.stderr)
                    if item.message:
                        lead = "\n" if bar.enabled else ""
                        print(f"{lead}note: {names[i]}: {item.message}", file=sys.stderr)
                    bar.update(names[i], item.step, item.total, item.eta_s)
                case Progress(phase="save", index=i):
                    bar.update(names[i], settings.steps, settings.steps, None, final=True)
                case Failed(message=message):
                    bar.update("", 0, 1, None, final=True)
                    print(f"error: {message}", file=sys.stderr)
                case Result(value=B.ImageDone() as done):
                    _print_done(done, settings, args.json)
                case Result(value=B.BatchDone() as done):
                    summary = done
    except ArtveilError as exc:  # the batch could not start: output folder, journal held by another run
        print(f"artveil: {B.one_line(exc.message)}", file=sys.stderr)
        return 2
    if summary is not None and summary.stopped:
        raise Cancelled()
    if summary is not None and summary.failed:
        print(f"artveil: {summary.failed} of {len(inputs)} file(s) failed.", file=sys.stderr)
        return 1
    return 0


def _refused_before_loading(source: str, device: str, settings: ProtectSettings, working_size: int | None) -> str | None:
    """Why no plan fits this job (one line), from the model's configs alone, before any weights load; None when
    a plan fits or the configs cannot be read before loading (then each image is planned once it loads).
    Checked for the largest region an image can have: the working size, square."""
    from engine.device import pick_device
    from engine.methods import get_method
    from engine.plan import choose_plan, default_working_size, device_memory, shape_before_loading
    from engine.protect import two_pass_allowed, low_vram_plan

    dev = pick_device(device)
    shape = shape_before_loading(source, dev)
    if shape is None:
        return None
    side = working_size or default_working_size(shape, dev)
    method = get_method(settings.method, settings.method_params)
    try:
        choose_plan(shape, method.memory_profile(settings.timesteps_per_step), side, side, side, device_memory(dev),
                    weights_loaded=False, two_pass=two_pass_allowed(method, settings),
                    forced=low_vram_plan(replace(settings, working_size=side), method, side, side))
    except ArtveilError as exc:
        return exc.message
    return None


def _print_done(event, settings: ProtectSettings, as_json: bool) -> None:
    name = event.source.name
    if event.skipped:
        if event.skipped.startswith("already exported"):
            print(f"note: {name}: already exported to {event.target.name} by an earlier run; skipped.", file=sys.stderr)
        else:
            print(f"note: {name}: {event.skipped}; skipped.", file=sys.stderr)
        if as_json:
            print(json.dumps({"input": str(event.source), "output": str(event.target), "skipped": event.skipped}),
                  flush=True)
        return
    if event.note:
        print(f"note: {name}: {event.note}", file=sys.stderr)
    result, m = event.result, event.result.metrics
    if as_json:
        print(json.dumps({
            "input": str(event.source), "output": str(event.target), "method": settings.method,
            "strength": settings.strength_levels, "steps": settings.steps,
            "seconds": round(result.seconds, 3), "psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 5),
            "ms_ssim": None if m["ms_ssim"] != m["ms_ssim"] else round(m["ms_ssim"], 5),
            "linf": m["linf_levels"], "objective_start": result.objective_start, "objective_end": result.objective_end,
        }), flush=True)
    else:
        print(f"{name} -> {event.target}  PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  L∞ {m['linf_levels']:.0f}  "
              f"{result.seconds:.1f}s", flush=True)


def _inputs_and_output_folder(items: list[str], out_dir: Path) -> list[Path] | None:
    """The images to work on and the output folder made ready, before any model loads (a bad folder is said
    at once); None once the one line saying why not is printed."""
    from engine import batch as B
    from engine.images import collect_inputs

    inputs = collect_inputs(items, output_folder=out_dir)
    if not inputs:
        print("artveil: no images found in the given inputs.", file=sys.stderr)
        return None
    try:
        B.prepare_output_folder(out_dir)
    except ArtveilError as exc:
        print(f"artveil: {B.one_line(exc.message)}", file=sys.stderr)
        return None
    return inputs


def run_purify(args: argparse.Namespace) -> int:
    """Purify each input into --out as `{stem}.purified-{name}.png`; the output checks of protect apply: the
    folder is checked before any work, an original is never written, and two inputs of one stem get -2."""
    from engine import batch as B
    from engine.device import pick_device
    from engine.images import load_image, safe_stem, save_image, validate_user_path
    from engine.jobs import check_seed
    from engine.purify import PURIFIERS, parse_purifier, purify

    try:
        out_dir = validate_user_path(args.out, must_exist=False, kind="folder")
    except ArtveilError as exc:
        print(f"artveil: output folder: {B.one_line(exc.message)}", file=sys.stderr)
        return 2
    try:
        name, params = parse_purifier(args.purifier)
        check_seed(args.seed)
        pick_device(args.device)  # even where the purifier needs no model: a bad argument is said, not ignored
    except ArtveilError as exc:
        print(f"artveil: {B.one_line(exc.message)}", file=sys.stderr)
        return 2
    inputs = _inputs_and_output_folder(args.inputs, out_dir)
    if inputs is None:
        return 2
    model = load_model_or_exit(args.model, args.device) if PURIFIERS[name].needs_model else None
    failed = 0
    names: set[str] = set()
    originals = {k for k in (B.file_key(p) for p in inputs) if k is not None}
    for path in inputs:
        try:
            target = B.batch_name(out_dir / f"{safe_stem(path.stem)}.purified-{name}.png", names, originals)
            image = load_image(path)
            out = purify(model, image.pixels, name, seed=args.seed, **params)
            save_image(out, target, icc_profile=image.icc_profile, overwrite=args.overwrite)
            print(f"{path.name} -> {target}", flush=True)
        except Exception as exc:  # one file's failure is a line, and the others are still done
            failed += 1
            print(f"error: {B.failure_message(path, exc)}", file=sys.stderr)
    if failed:
        print(f"artveil: {failed} of {len(inputs)} file(s) failed.", file=sys.stderr)
    return 1 if failed else 0


def _presets_text(presets: dict) -> str:
    """'subtle/default/strong/maximum (4/8/12/32)'."""
    return f"{'/'.join(presets)} ({'/'.join(f'{v:g}' for v in presets.values())})"


def _listing(title: str, rows: list[tuple[str, str]]) -> str:
    """An epilog block: the title, then each name with its text, wrapped under it."""
    import textwrap

    width = max((len(name) for name, _ in rows), default=0) + 4
    lines = [f"{title}:"]
    for name, text in rows:
        lines += textwrap.wrap(text, 100, initial_indent=f"  {name}".ljust(width), subsequent_indent=" " * width)
    return "\n".join(lines)


def _purifier_rows(purifiers) -> list[tuple[str, str]]:
    """Each declared purifier for `artveil purify --help`: what it is, and what NAME:VALUE sets."""
    rows = []
    for p in purifiers.values():
        text = f"{p.label}: {p.summary}" + ("" if p.needs_model else " No model needed.")
        knob = p.param(p.knob) if p.knob else None
        if knob is not None:
            text += f" {p.name}:{knob.name.upper()} sets {knob.describe()}."
        rows.append((p.name, text))
    return rows


class OneLineParser(argparse.ArgumentParser):
    """A bad argument is one line on stderr and exit 2, like every other refusal of the command line, not
    argparse's usage block (--help still prints the whole usage). Subcommands' parsers are of this class too
    (add_subparsers takes the parent's class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from engine.methods import METHODS
    from engine.purify import PURIFIERS

    parser = OneLineParser(prog="artveil", description="Protect artwork from diffusion-model mimicry.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("protect", help="protect images or folders of images", description="Protect images; writes {name}.protected.png into --out.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_listing("methods", [(m.name, f"{m.label}: {m.summary}") for m in METHODS.values()]))
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--method", default="antipure", choices=sorted(METHODS), help="protection method (default: antipure)")
    p.add_argument("--strength", type=parse_strength, default=STRENGTH_PRESETS["default"],
                   help=f"strength ε in pixel levels 0-255, at most {STRENGTH_RANGE[1]}, or {_presets_text(STRENGTH_PRESETS)}")
    p.add_argument("--steps", type=parse_steps, default=BUDGET_PRESETS["default"],
                   help=f"optimizer steps, or {_presets_text(BUDGET_PRESETS)}")
    p.add_argument("--step-size", type=float, default=None, help="step size in pixel levels (default: automatic)")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:1 or cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eot", action="append", choices=list(EOT_TRANSFORMS), help="robustness transforms (repeatable)")
    p.add_argument("--eot-samples", type=int, default=1, metavar="K",
                   help="with --eot: transforms averaged per step (K times the cost of a step)")
    p.add_argument("--low-vram", action="store_true",
                   help="the leanest memory plan (two-pass, checkpointing, 256 px tiles) whatever the device has free")
    p.add_argument("--working-size", type=int, default=None,
                   help="longer side optimized at (px; default 512, or 256 for a Stable Diffusion model on the CPU)")
    p.add_argument("--large-image", choices=["resize", "tiles"], default="resize")
    p.add_argument("--timesteps-per-step", type=int, default=1, help="timesteps batched per UNet call")
    p.add_argument("--param", action="append", type=parse_param, metavar="KEY=VALUE", help="method parameter, e.g. lambda_pfg=0.5 (repeatable)")
    p.add_argument("--format", choices=["png", "webp", "jpg"], default="png", help="png (default, lossless); jpg weakens protection")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never originals)")
    p.add_argument("--json", action="store_true", help="one JSON line per image on stdout")
    p.set_defaults(func=run_protect)

    q = sub.add_parser("purify", help="apply a purifier (what a mimic would do) to images",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_listing("purifiers", _purifier_rows(PURIFIERS)))
    q.add_argument("inputs", nargs="+")
    q.add_argument("--purifier", required=True, metavar="NAME[:VALUE]",
                   help=f"one of {', '.join(PURIFIERS)}; VALUE sets its main setting (listed below), e.g. sdedit:0.3")
    q.add_argument("--out", required=True)
    q.add_argument("--model", default=None, help=MODEL_HELP)
    q.add_argument("--device", default="auto")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=run_purify)

    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Absent optional module (or its package): skip; a missing dependency inside it is a bug.
            if not (exc.name and name.startswith(exc.name)):
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_library_chatter()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for reports that print their own command
    try:
        return int(args.func(args) or 0)
    except Cancelled:
        print("artveil: stopped.", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nartveil: interrupted; finished files are complete, the current one was not written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
