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
import os
import sys
import time
from pathlib import Path

from engine.cli_args import MODEL_HELP, default_model_source, load_model_or_exit, parse_param, parse_steps, parse_strength
from engine.errors import ArtveilError, Cancelled
from engine.jobs import BUDGET_PRESETS, STRENGTH_PRESETS, STRENGTH_RANGE, ProtectSettings

# Subcommands that live in their own modules register themselves when present.
_SUBCOMMAND_MODULES = ("engine.cli_models", "engine.evaluation.cli", "engine.evaluation.efficacy", "engine.bench")


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


# run_protect's name for it, until its rewrite calls load_model_or_exit (issue #13).
_load_model_or_exit = load_model_or_exit


def _fail(path: Path, exc: BaseException) -> None:
    message = exc.message if isinstance(exc, ArtveilError) else f"{path.name}: {type(exc).__name__}: {exc}"
    print(f"error: {message}", file=sys.stderr)


def run_protect(args: argparse.Namespace) -> int:
    from engine.images import collect_inputs, load_image, output_path_for, save_image, validate_user_path
    from engine.journal import BatchJournal, input_identity, settings_fingerprint
    from engine.protect import protect_iter
    from engine.jobs import ProtectResult

    def one_line(text: str) -> str:
        # Library messages can span lines; the contract is one line per failed file.
        text = " ".join(str(text).split())
        return text if len(text) <= 400 else text[:399] + "…"

    def report_failure(path: Path, exc: BaseException) -> None:
        if isinstance(exc, ArtveilError):
            message = exc.message
        else:
            # A bug, not a bad file: still one line, and the batch goes on.
            message = f"unexpected {type(exc).__name__}: {exc} (please report this)"
        if not message.startswith(path.name):
            message = f"{path.name}: {message}"
        print(f"error: {one_line(message)}", file=sys.stderr)

    try:
        out_dir = validate_user_path(args.out, must_exist=False, kind="folder")
        out_dir.mkdir(parents=True, exist_ok=True)
    except ArtveilError as exc:
        print(f"artveil: output folder: {one_line(exc.message)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"artveil: cannot create output folder {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if not os.access(out_dir, os.W_OK):
        print(f"artveil: output folder {out_dir} is not writable.", file=sys.stderr)
        return 2
    inputs = collect_inputs(args.inputs)
    if not inputs:
        print("artveil: no images found in the given inputs.", file=sys.stderr)
        return 2
    settings = ProtectSettings(
        method=args.method,
        strength_levels=args.strength,
        steps=args.steps,
        step_levels=args.step_size,
        seed=args.seed,
        eot=tuple(args.eot or ()),
        working_size=args.working_size,
        large_image=args.large_image,
        timesteps_per_step=args.timesteps_per_step,
        method_params=dict(args.param or []),
        preview_every=0,
        # Only --json reports the objective; measuring it costs two extra passes per image.
        measure_objective=bool(args.json),
    )
    try:
        from engine.methods import get_method
        from engine.protect import validate_settings

        validate_settings(settings)
        get_method(settings.method, settings.method_params)
    except ArtveilError as exc:
        print(f"artveil: {exc.message}", file=sys.stderr)
        return 2
    model = _load_model_or_exit(args.model, args.device)
    try:
        journal = BatchJournal.open(out_dir)
    except ArtveilError as exc:
        print(f"artveil: {one_line(exc.message)}", file=sys.stderr)
        return 2
    fingerprint = settings_fingerprint(settings, args.model or default_model_source(), args.format)
    # An explicitly given file is an original even when its name looks like an earlier output.
    # Compared by (device, inode): also right on case-insensitive disks and through links.
    originals = set()
    for p in inputs:
        try:
            st = p.stat()
            originals.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    planned = []
    for path in inputs:
        try:
            planned.append(output_path_for(path, out_dir, args.format))
        except ArtveilError:
            pass  # reported in the loop below
    # Two inputs can map to one output name (a.png and a.jpg): the first one exported keeps it.
    produced: dict[str, Path] = {}
    stale = journal.remove_stale_temps(planned)
    if stale:
        print(f"note: removed {len(stale)} unfinished temporary file(s) left by an interrupted run.", file=sys.stderr)
    bar = ProgressLine(sys.stderr)  # the stream now, not the one bound when this module was imported
    failed = 0
    try:
        for path in inputs:
            try:
                target = output_path_for(path, out_dir, args.format)
                if target.name in produced:
                    raise ArtveilError("output", f"{target.name}: is also the output name of {produced[target.name].name} "
                                                 "in this batch; rename one of them.")
                try:
                    target_st = target.stat()
                except OSError:
                    target_st = None
                if target_st is not None and (target_st.st_dev, target_st.st_ino) in originals:
                    raise ArtveilError("output", f"{target.name}: is one of the inputs; an original is never overwritten.")
                try:
                    identity = input_identity(path)
                except OSError:
                    identity = None  # load_image below says what is wrong with it
                if not args.overwrite and identity is not None and journal.finished(identity, fingerprint, target):
                    produced[target.name] = path
                    print(f"note: {path.name}: already exported to {target.name} by an earlier run; skipped.", file=sys.stderr)
                    if args.json:
                        print(json.dumps({"input": str(path), "output": str(target), "skipped": "already exported"}), flush=True)
                    continue
                if target.exists() and not args.overwrite:
                    why = " by a run with other settings or from an edited original" if journal.claims(target) else ""
                    raise ArtveilError("output", f"{target.name}: already exists in {out_dir}{why} (use --overwrite to replace it).")
                image = load_image(path)
                for note in image.notes:
                    print(f"note: {path.name}: {note}", file=sys.stderr)
                result = None
                for item in protect_iter(model, image.pixels, settings):
                    if isinstance(item, ProtectResult):
                        result = item
                    else:
                        if item.message:
                            lead = "\n" if bar.enabled else ""
                            print(f"{lead}note: {path.name}: {item.message}", file=sys.stderr)
                        bar.update(path.name, item.step, item.total, item.eta_s)
                bar.update(path.name, settings.steps, settings.steps, None, final=True)
                journal_problems = []

                def record_committing(tmp: Path) -> None:
                    journal_problems.append(journal.record("committing", identity, fingerprint, target, tmp))

                save_image(result.protected, target, icc_profile=image.icc_profile, overwrite=args.overwrite,
                           before_replace=record_committing)
                produced[target.name] = path
                journal_problems.append(journal.record("done", identity, fingerprint, target, target))
                problem = next((p for p in journal_problems if p), None)
                if problem:
                    print(f"note: {path.name}: exported, but {problem}; a re-run would protect it again.", file=sys.stderr)
            except Cancelled:
                raise
            except Exception as exc:
                failed += 1
                report_failure(path, exc)
                continue
            m = result.metrics
            if args.json:
                print(json.dumps({
                    "input": str(path), "output": str(target), "method": settings.method,
                    "strength": settings.strength_levels, "steps": settings.steps,
                    "seconds": round(result.seconds, 3), "psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 5),
                    "ms_ssim": None if m["ms_ssim"] != m["ms_ssim"] else round(m["ms_ssim"], 5),
                    "linf": m["linf_levels"], "objective_start": result.objective_start, "objective_end": result.objective_end,
                }), flush=True)
            else:
                print(f"{path.name} -> {target}  PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  L∞ {m['linf_levels']:.0f}  {result.seconds:.1f}s", flush=True)
    finally:
        journal.close()
    if failed:
        print(f"artveil: {failed} of {len(inputs)} file(s) failed.", file=sys.stderr)
    return 1 if failed else 0


def run_purify(args: argparse.Namespace) -> int:
    from engine.images import collect_inputs, load_image, safe_stem, save_image
    from engine.purify import PURIFIERS, parse_purifier, purify

    try:
        name, params = parse_purifier(args.purifier)
    except ArtveilError as exc:
        print(f"artveil: {exc.message}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_model_or_exit(args.model, args.device) if PURIFIERS[name].needs_model else None
    failed = 0
    inputs = collect_inputs(args.inputs)
    for path in inputs:
        try:
            image = load_image(path)
            out = purify(model, image.pixels, name, seed=args.seed, **params)
            target = out_dir / f"{safe_stem(path.stem)}.purified-{name}.png"
            save_image(out, target, icc_profile=image.icc_profile, overwrite=args.overwrite)
            print(f"{path.name} -> {target}", flush=True)
        except ArtveilError as exc:
            failed += 1
            _fail(path, exc)
    return 1 if failed else 0


def _presets_text(presets: dict) -> str:
    """'subtle/default/strong/maximum (4/8/12/16)'."""
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


def build_parser() -> argparse.ArgumentParser:
    from engine.methods import METHODS
    from engine.purify import PURIFIERS

    parser = argparse.ArgumentParser(prog="artveil", description="Protect artwork from diffusion-model mimicry.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("protect", help="protect images or folders of images", description="Protect images; writes {name}.protected.png into --out.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_listing("methods", [(m.name, f"{m.label}: {m.summary}") for m in METHODS.values()]))
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--method", default="antipure", choices=sorted(METHODS), help="protection method (default: antipure)")
    p.add_argument("--strength", type=parse_strength, default=STRENGTH_PRESETS["default"],
                   help=f"budget in pixel levels 0-255, at most {STRENGTH_RANGE[1]}, or {_presets_text(STRENGTH_PRESETS)}")
    p.add_argument("--steps", type=parse_steps, default=BUDGET_PRESETS["default"],
                   help=f"optimizer steps, or {_presets_text(BUDGET_PRESETS)}")
    p.add_argument("--step-size", type=float, default=None, help="step size in pixel levels (default: automatic)")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:1 or cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eot", action="append", choices=["blur", "resize", "jpeg", "flip"], help="robustness transforms (repeatable)")
    p.add_argument("--working-size", type=int, default=512, help="longer side optimized at (px)")
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


def quiet_library_chatter() -> None:
    """Keep the terminal for Artveil's own lines: the libraries' notes about optional backends
    (torchvision) and renamed arguments say nothing an artist can act on. Real errors still show."""
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    # transformers' "Loading weights" bars (diffusers' are turned off where models load, engine.models)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message=r".*`torch_dtype` is deprecated", category=FutureWarning)


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
