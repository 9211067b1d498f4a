"""`artveil efficacy`: the command line of the efficacy table (engine.evaluation.efficacy) and of the
efficacy curves (engine.evaluation.curve, with --strengths). It sits above both, so neither imports the other's
command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.errors import ArtveilError
from engine.evaluation import curve as CV
from engine.evaluation.efficacy import (
    ROWS,
    SPLITS,
    EfficacySettings,
    Interrupted,
    check_proxy_model,
    render_markdown,
    run_efficacy,
    validate_rows,
)


def _parse_row(values: list[str]) -> tuple[str, str, dict[str, Any]]:
    from engine.cli_args import parse_param

    if len(values) < 2:
        raise argparse.ArgumentTypeError("--row needs a LABEL and a METHOD, then KEY=VALUE parameters")
    return values[0], values[1], dict(parse_param(v) for v in values[2:])


def register(subparsers) -> None:
    from engine.cli_args import parse_steps, parse_strength
    from engine.jobs import STRENGTH_PRESETS

    e = subparsers.add_parser("efficacy", help="the efficacy table on the proxy world (methods × purifiers)",
                              description="Protect the proxy world's held-out style with every method, purify, "
                                          "fine-tune a LoRA as a mimic would, and tabulate how often the mimic "
                                          "still paints the style.")
    e.add_argument("--model", required=True,
                   help="the proxy model folder, or 'proxy' for the built-in one (it must have passed the sanity bar)")
    e.add_argument("--out", required=True, help="run folder (created; reused to resume)")
    e.add_argument("--write", default=None, help="also write the table to this Markdown file (e.g. docs/efficacy.md)")
    e.add_argument("--strength", type=parse_strength, default=STRENGTH_PRESETS["default"],
                   help="strength ε in pixel levels (0-255), every row")
    e.add_argument("--steps", type=parse_steps, default=100)
    e.add_argument("--only", action="append", default=None, metavar="LABEL",
                   help="run only these rows of the standard table (repeatable; e.g. --only none --only AntiPure)")
    e.add_argument("--row", action="append", nargs="+", default=None, metavar="ARG",
                   help="an extra row: LABEL METHOD [KEY=VALUE ...] (repeatable), e.g. --row 'AntiPure λt 0.5' antipure lambda_t=0.5")
    e.add_argument("--column", action="append", default=None, metavar="SPEC",
                   help="purifier columns instead of the standard ones (repeatable; 'none' = unpurified)")
    e.add_argument("--lora-steps", type=int, default=None)
    e.add_argument("--lora-lr", type=float, default=None)
    e.add_argument("--k", type=int, default=None, help="samples per content prompt")
    e.add_argument("--mimic-seeds", type=int, default=None, metavar="N",
                   help="mimics per cell, each its own fine-tune and samples (default 2); more narrow the intervals")
    e.add_argument("--gen-steps", type=int, default=None)
    e.add_argument("--purify-steps", type=int, default=None)
    e.add_argument("--allow-unchecked", action="store_true", help="run on a model without a passed sanity bar")
    e.add_argument("--device", default="auto")
    e.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="rows side by side in N processes, the CPU cores split between them (2 on a 2-core CPU "
                        "is faster: docs/benchmarks.md); the numbers then differ from --jobs 1 by rounding")
    e.add_argument("--strengths", default=None, metavar="LIST",
                   help="the efficacy curves instead of the table: every row at these strengths in levels (e.g. "
                        "4,8,16,32; the Random ±ε control added), under none, JPEG 75, SDEdit 0.2 and GrIDPure, "
                        "with several measures (docs/efficacy.md)")
    e.add_argument("--full-strengths", default="8,16", metavar="LIST",
                   help="curves: the strengths measured under every purifier (the others: unpurified and after "
                        "SDEdit 0.2, and not for the ablations); 'none': no strength under every purifier")
    e.add_argument("--edge-purifiers", default=None, metavar="LIST",
                   help="curves: the purifiers measured at the strengths that are not full (default none,sdedit; "
                        "any of none, jpeg, sdedit, gridpure), e.g. none,jpeg,sdedit at 32 levels without GrIDPure")
    e.add_argument("--ablations-everywhere", action="store_true",
                   help="curves: measure AntiPure w/o PFG and w/o ETG at every strength, not only the full ones "
                        "(issue 28 compares them with AntiPure where the mimic reacts, at 32 levels)")
    e.add_argument("--curve-dir", default=None, metavar="DIR",
                   help="curves: where curve.csv, curves.png, curve.md and the contact sheets go (default OUT/curve)")
    e.add_argument("--assemble-only", action="store_true",
                   help="curves: run nothing, measure and draw what is finished in OUT (a partial curve says so)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--split", choices=SPLITS, default="final",
                   help="tuning (and tuning-b, tuning-c: two more render sets): other renders of the artist's "
                        "style and other seeds, for choosing a method's settings; final (default): the table, on "
                        "images and seeds no tuning saw")
    e.set_defaults(func=run_efficacy_cli)


def run_efficacy_cli(args: argparse.Namespace) -> int:
    from engine.cli_args import load_model_or_exit
    from engine.purify import parse_purifier, purifier_label

    from engine.models import PROXY_NAME, proxy_model_dir

    model_dir = proxy_model_dir() if args.model == PROXY_NAME else Path(os.path.expanduser(args.model))
    if args.model == PROXY_NAME and not (model_dir / "model_index.json").is_file():
        print("artveil: the built-in proxy model is not in this build (train it with "
              "python -m engine.proxy.train, docs/proxy-world.md); pass --model with the folder of a trained proxy model.", file=sys.stderr)
        return 2
    settings = EfficacySettings(strength_levels=args.strength, steps=args.steps, seed=args.seed,
                                purify_steps=args.purify_steps, split=args.split)
    overrides = {"lora_steps": args.lora_steps, "lora_lr": args.lora_lr, "k": args.k, "gen_steps": args.gen_steps}
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    try:
        if not 1 <= args.jobs <= max(1, os.cpu_count() or 1):
            raise ArtveilError("config", f"--jobs {args.jobs}: give 1 to {os.cpu_count() or 1} (this machine's cores)")
        if args.mimic_seeds is not None:
            if not 1 <= args.mimic_seeds <= 64:
                raise ArtveilError("config", f"--mimic-seeds {args.mimic_seeds}: give 1 to 64 mimics per cell")
            settings.mimic_seeds = tuple(range(args.mimic_seeds))
        rows = list(ROWS)
        if args.only:
            known = {label.lower(): (label, m, p) for label, m, p in ROWS}
            missing = [o for o in args.only if o.lower() not in known]
            if missing:
                raise ArtveilError("config", f"--only {missing[0]!r}: not a row; rows: {', '.join(l for l, _, _ in ROWS)}")
            rows = [known[o.lower()] for o in args.only]
        if args.row:
            try:
                rows += [_parse_row(r) for r in args.row]
            except argparse.ArgumentTypeError as exc:
                raise ArtveilError("config", str(exc)) from None
        if args.only is not None or args.row:
            settings.rows = rows
        if args.column:
            cols = []
            for spec in args.column:
                if spec == "none":
                    cols.append(("none", None))
                else:
                    name, params = parse_purifier(spec)
                    cols.append((purifier_label(name, params), spec))
            settings.columns = cols
        check_proxy_model(model_dir, args.allow_unchecked)
        validate_rows(settings.rows)
        plan = None
        if args.strengths is not None:
            if args.column:
                raise ArtveilError("config", "--column is the table's; the curves have their own purifiers")
            strengths = CV.parse_strengths(args.strengths)
            full = () if args.full_strengths.strip().lower() == "none" else CV.parse_strengths(args.full_strengths)
            if set(full) - set(strengths):
                raise ArtveilError("config", f"--full-strengths {args.full_strengths!r}: "
                                             f"{', '.join(f'{s:g}' for s in sorted(set(full) - set(strengths)))} "
                                             f"not among --strengths {args.strengths!r}")
            plan = CV.CurvePlan(strengths=strengths, full_strengths=full)
            if args.edge_purifiers is not None:
                plan.edge_purifiers = CV.parse_purifier_labels(args.edge_purifiers, plan.purifiers)
            if args.ablations_everywhere:
                plan.skip_at_edges = ()
            if args.only is not None or args.row:  # a subset still has its clean mimic and its Random control
                plan.rows = [ROWS[0], CV.RANDOM_ROW] + [r for r in settings.rows if r[1] != "none"]
            CV.validate_plan(plan, settings.steps)
    except ArtveilError as exc:
        print(f"artveil: {exc.message}", file=sys.stderr)
        return 2
    model = load_model_or_exit(str(model_dir), args.device)
    if plan is not None:
        return _run_curve_cli(args, model, model_dir, settings, plan)
    out = Path(args.out)
    table, code = _reported(lambda: run_efficacy(model, model_dir, out, settings, args.allow_unchecked, log=_log,
                                                 jobs=args.jobs, source=str(model_dir)))
    if code is not None:
        return code
    command = "artveil " + " ".join(_quote(a) for a in getattr(args, "argv", []))
    text = render_markdown(table, command)
    (out / "efficacy.md").write_text(text)
    if args.write:
        target = Path(args.write)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_text(text)
        os.replace(tmp, target)
    print(text)
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _reported(run):
    """(run()'s result, None), or (None, the exit status) with its one line said: 128 + the signal that
    stopped the workers, 2 for any other refusal."""
    try:
        return run(), None
    except Interrupted as exc:
        print(f"artveil: {exc.message}", file=sys.stderr)
        return None, 128 + exc.signum
    except ArtveilError as exc:
        print(f"artveil: {exc.message}", file=sys.stderr)
        return None, 2


def _run_curve_cli(args, model, model_dir: Path, settings: EfficacySettings, plan) -> int:
    from engine.evaluation import curve as CV

    out = Path(args.out)
    curve, code = _reported(lambda: CV.run_curve(model, model_dir, out, settings, plan, args.allow_unchecked, log=_log,
                                                 jobs=args.jobs, source=str(model_dir), assemble_only=args.assemble_only))
    if code is not None:
        return code
    command = "artveil " + " ".join(_quote(a) for a in getattr(args, "argv", []) if a != "--assemble-only")
    folder = Path(args.curve_dir) if args.curve_dir else out / "curve"
    for path in CV.write_outputs(curve, out, plan, folder, command):
        print(path, file=sys.stderr)
    print((folder / "curve.md").read_text())
    return 0


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
