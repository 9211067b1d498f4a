"""`artveil eval`: the purification-customization evaluation from the command line.

    artveil eval ART_FOLDER --out runs/antipure-8 --method antipure --strength 8 --steps 100 \
        --purifier sdedit:0.2 --purifier jpeg:75 --lora-steps 300 --k 4 [--edit-dir DEFENSE_EDIT]

Running the same command again resumes: finished stages are skipped.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers) -> None:
    from engine.cli_args import parse_param, parse_steps, parse_strength
    from engine.jobs import BUDGET_PRESETS, STRENGTH_PRESETS
    from engine.methods import METHODS

    e = subparsers.add_parser("eval", help="evaluate a protection: protect, purify, customize, generate, score",
                              description="Protect a set, purify it, fine-tune on it as a mimic would, and report the damage.")
    e.add_argument("images", nargs="+", help="the artist's images (files or folders); the last --heldout are kept for judging")
    e.add_argument("--out", required=True, help="run folder (created; reused to resume)")
    e.add_argument("--method", default="antipure", choices=["none"] + sorted(METHODS),
                   help="the protection to evaluate; 'none' gives the mimic the clean images (the baseline)")
    e.add_argument("--strength", type=parse_strength, default=STRENGTH_PRESETS["default"],
                   help="strength ε in pixel levels (0-255)")
    e.add_argument("--steps", type=parse_steps, default=BUDGET_PRESETS["default"])
    e.add_argument("--param", action="append", type=parse_param, metavar="KEY=VALUE", help="method parameter (repeatable)")
    e.add_argument("--purifier", action="append", help="purifier spec, e.g. sdedit:0.2, jpeg:75 (repeatable; default sdedit:0.2 and jpeg:75)")
    e.add_argument("--no-purifier", action="store_true", help="run no purifier")
    e.add_argument("--size", type=int, default=512, help="images are centre-cropped and resized to SIZE×SIZE px")
    e.add_argument("--heldout", type=int, default=1, help="images held out of training, for the denoising-loss judge")
    e.add_argument("--instance-prompt", default="a painting in sks style")
    e.add_argument("--prompt", action="append", help="generation prompt (repeatable; default: the instance prompt)")
    e.add_argument("--k", type=int, default=4, help="images generated per prompt")
    e.add_argument("--customize", choices=["lora", "full"], default="lora", help="LoRA (default) or full-UNet DreamBooth-style")
    e.add_argument("--lora-rank", type=int, default=4)
    e.add_argument("--lora-lr", type=float, default=None, help="default 1e-4 (LoRA) / 5e-6 (full)")
    e.add_argument("--lora-steps", type=int, default=200)
    e.add_argument("--lora-batch", type=int, default=1, help="images per LoRA step")
    e.add_argument("--captions", choices=["instance", "files"], default="instance",
                   help="instance: every image captioned --instance-prompt; files: IMAGE.txt beside each image")
    e.add_argument("--gen-steps", type=int, default=30)
    e.add_argument("--guidance", type=float, default=7.5)
    e.add_argument("--edit-dir", default=None, help="Defense-Edit-style folder: image + same-name .txt prompt")
    e.add_argument("--edit-strength", type=float, default=0.5)
    e.add_argument("--style", default=None, help="the artist's style name for the style-classifier judge (proxy world)")
    e.add_argument("--model", default=None, help="the model (default: the built-in demo, or $ARTVEIL_MODEL)")
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from engine.cli_args import load_model_or_exit
    from engine.errors import ArtveilError
    from engine.evaluation.run import EvalConfig, run_evaluation

    purifiers = [] if args.no_purifier else (args.purifier or ["sdedit:0.2", "jpeg:75"])
    config = EvalConfig(
        images=list(args.images), method=args.method, strength_levels=args.strength, steps=args.steps,
        method_params=dict(args.param or []), purifiers=purifiers, size=args.size, heldout=args.heldout,
        instance_prompt=args.instance_prompt, prompts=args.prompt, k=args.k, customize_mode=args.customize,
        lora_rank=args.lora_rank, lora_lr=args.lora_lr, lora_steps=args.lora_steps, lora_batch=args.lora_batch,
        captions=args.captions, gen_steps=args.gen_steps,
        guidance=args.guidance, edit_dir=args.edit_dir, edit_strength=args.edit_strength, style=args.style, seed=args.seed,
    )
    model = load_model_or_exit(args.model, args.device)
    try:
        results = run_evaluation(model, config, args.out, log=lambda m: print(m, file=sys.stderr, flush=True))
    except ArtveilError as exc:
        print(f"artveil: {exc.message}", file=sys.stderr)
        return 2
    worst = results["customization"]["worst_retained"]
    for judge, w in worst.items():
        if w:
            print(f"worst case ({judge}): {w['retained']:.3f} of the damage retained under {w['condition']}")
    print(f"report: {os.path.join(args.out, 'report.md')}")
    return 0
