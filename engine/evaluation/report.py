"""results.json (every number, with the files it came from) and report.md (tables and PNG grids)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from engine.images import load_image, save_image

CELL = 128  # px per grid cell


def image_grid(rows: list[list[np.ndarray]], cell: int = CELL) -> np.ndarray:
    """Rows of HxWx3 uint8 images, each resized to cell×cell (nearest: the noise stays visible), on white."""
    n_cols = max((len(r) for r in rows), default=1)
    grid = np.full((len(rows) * (cell + 4) + 4, n_cols * (cell + 4) + 4, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            tile = np.asarray(Image.fromarray(img[..., :3]).resize((cell, cell), Image.Resampling.NEAREST))
            y, x = 4 + i * (cell + 4), 4 + j * (cell + 4)
            grid[y : y + cell, x : x + cell] = tile
    return grid


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    return f"{v + 0.0:.4g}"  # + 0.0 turns -0.0 into 0.0


def _grid(run_dir: Path, name: str, rows: dict[str, list[str]]) -> tuple[Path, list[str]]:
    images = [[load_image(run_dir / f).pixels for f in files] for files in rows.values()]
    path = run_dir / "grids" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(image_grid(images), path, overwrite=True)
    return path, list(rows)


def write_report(run_dir: Path, results: dict) -> list[Path]:
    run_dir = Path(run_dir)
    files = results["files"]
    grids = {}
    grids["images"] = _grid(run_dir, "images", {c: v["train"] for c, v in files.items()})
    grids["generated"] = _grid(run_dir, "generated", {c: v["generated"] for c, v in files.items()})
    if "editing" in results:
        ef = results["editing"]["files"]
        grids["edit_inputs"] = _grid(run_dir, "edit_inputs", {c: v["inputs"] for c, v in ef.items()})
        grids["edits"] = _grid(run_dir, "edits", {c: v["edited"] for c, v in ef.items()})
    results["grids"] = {k: {"file": p.relative_to(run_dir).as_posix(), "rows": rows} for k, (p, rows) in grids.items()}

    cfg = results["config"]
    cust = results["customization"]
    judges = results["judges"]
    lines = [
        f"# Artveil evaluation: {cfg['method']} at {cfg['strength_levels']:g} levels, {cfg['steps']} steps",
        "",
        f"Model: `{results['model']}`" + (" (built-in demo model with random weights: these numbers say nothing about real protection)" if results["model_is_demo"] else ""),
        f"Training images: {len(results['reference'])}, held out for judging: {len(results['heldout'])}; "
        f"customization: {cfg['customize_mode']} rank {cfg['lora_rank']}, {cfg['lora_steps']} steps; "
        f"{cfg['k']} samples per prompt; purifiers: {', '.join(cfg['purifiers']) or 'none'}.",
        "",
        "## Imperceptibility (protected against clean, per image)",
        "",
        "| image | PSNR (dB) | SSIM | MS-SSIM | L∞ (levels) |",
        "|---|---|---|---|---|",
    ]
    for r in results["imperceptibility"]:
        lines.append(f"| {Path(r['clean']).name} | {_fmt(r['psnr'])} | {_fmt(r['ssim'])} | {_fmt(r['ms_ssim'])} | {_fmt(r['linf_levels'])} |")
    m = results["imperceptibility_mean"]
    lines += [f"| **mean** | {_fmt(m['psnr'])} | {_fmt(m['ssim'])} | {_fmt(m['ms_ssim'])} | {_fmt(m['linf_levels'])} |", ""]
    lines += [
        "## Customization (higher score = the mimic did better)",
        "",
        "Scores per condition; damage = score of the clean-trained control − score of the condition.",
        "",
        "| condition | " + " | ".join(f"{j} score | {j} damage" for j in judges) + " |",
        "|---|" + "---|---|" * len(judges),
    ]
    for c, s in cust["scores"].items():
        dmg = cust["damage"].get(c, {})
        lines.append(f"| {c} | " + " | ".join(f"{_fmt(s[j])} | {_fmt(dmg.get(j, 0.0) if c != 'clean' else None)}" for j in judges) + " |")
    lines += ["", "Damage retained under each purifier = (score_clean − score_purified) / (score_clean − score_protected):", "",
              "| purifier | " + " | ".join(judges) + " |", "|---|" + "---|" * len(judges)]
    for c, r in cust["retained"].items():
        lines.append(f"| {c} | " + " | ".join(_fmt(r.get(j)) for j in judges) + " |")
    worst = ", ".join(f"{j}: {_fmt(w['retained'])} ({w['condition']})" for j, w in cust["worst_retained"].items() if w) or "–"
    lines += ["", f"Worst case (least damage retained): {worst}", ""]
    if "editing" in results:
        ed = results["editing"]
        lines += ["## Editing (score = −MSE against the edit of the clean image, [0, 1] units)", "",
                  "| condition | score | retained |", "|---|---|---|"]
        for c, s in ed["scores"].items():
            lines.append(f"| {c} | {_fmt(s['edit_mse'])} | {_fmt(ed['retained'].get(c, {}).get('edit_mse'))} |")
        w = ed["worst_retained"].get("edit_mse")
        lines += ["", f"Worst case: {_fmt(w['retained']) + ' (' + w['condition'] + ')' if w else '–'}", ""]
    lines += ["## Grids", ""]
    for k, g in results["grids"].items():
        lines += [f"**{k}** (rows: {', '.join(g['rows'])})", "", f"![{k}]({g['file']})", ""]

    out_json = run_dir / "results.json"
    tmp = out_json.with_suffix(".json.part")
    tmp.write_text(json.dumps(results, indent=1, default=float))
    os.replace(tmp, out_json)
    out_md = run_dir / "report.md"
    out_md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [out_json, out_md] + [p for p, _ in grids.values()]
