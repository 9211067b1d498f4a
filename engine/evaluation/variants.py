"""A map of the variants a tuning tried: every row of one or more curve.csv files at one strength, one point
each, with one measure under one purifier on x and under another on y (by default the judge's accuracy
unpurified against after SDEdit 0.2), each with its 95 % interval. The clean mimic and the Random control
are drawn apart, so where a family of variants sits against them is seen at a glance (issue 28's closing
note: "the curves of every variant tried").

    python -m engine.evaluation.variants docs/efficacy/tune-grid/curve.csv docs/efficacy/tune-latent/curve.csv \\
        --strength 32 --out docs/efficacy/tuning-map.png

The clean mimic and the controls (Random ±ε, Grid ±ε), shared by the files of one run folder, are drawn once, from the first
file that has them; every other row is named with its file's folder, so one label in two files (the same
method under older defaults) stays two points, unless both its cells are the same numbers there (the same runs,
reused in another folder's curve): then it is drawn once, named with the first folder.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ArtveilError

NONE_LABEL = "none"
CONTROL_MARK = "±ε"  # the controls' labels: Random ±ε, Grid ±ε


@dataclass
class Point:
    label: str
    source: str
    x: tuple[float, float, float]  # mean, lo, hi
    y: tuple[float, float, float]
    psnr: float | None


def read_points(paths: list[Path], strength: float, measure: str, x_purifier: str, y_purifier: str) -> list[Point]:
    """One Point per row label that has both cells at `strength` (the clean mimic at strength 0) in the files."""
    points: dict[str, Point] = {}
    for path in paths:
        cells: dict[tuple[str, str], dict] = {}
        for row in read_curve_csv(path, ("method", "strength", "purifier", "measure", "mean", "lo", "hi")):
            if row["measure"] != measure:
                continue
            if row["method"] != NONE_LABEL and float(row["strength"]) != strength:
                continue
            cells[(row["method"], row["purifier"])] = row
        for (label, purifier), row in cells.items():
            if purifier != x_purifier:
                continue
            control = _is_control(label)
            key = label if control else f"{label} [{path.parent.name}]"
            if key in points:
                continue
            other = cells.get((label, y_purifier))
            if other is None:
                continue
            if any(p.label == label and p.x[0] == float(row["mean"]) and p.y[0] == float(other["mean"])
                   for p in points.values()):
                continue  # the same runs in another folder's curve (a baseline reused cell for cell): drawn once
            psnr = float(row["psnr"]) if row.get("psnr") not in (None, "", "inf") else None
            points[key] = Point(label, path.parent.name, _triple(row), _triple(other), psnr)
    return list(points.values())


def read_curve_csv(path: Path, columns) -> list[dict]:
    """The rows of a curve.csv (artveil efficacy --strengths); ArtveilError("input") when the file is missing or
    lacks one of `columns`."""
    if not path.is_file():
        raise ArtveilError("input", f"{path}: no such curve.csv")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = set(columns) - set(reader.fieldnames or ())
        if missing:
            raise ArtveilError("input", f"{path}: not a curve.csv (no column {sorted(missing)[0]!r})")
        return list(reader)


def _is_control(label: str) -> bool:
    return label == NONE_LABEL or CONTROL_MARK in label


def _triple(row: dict) -> tuple[float, float, float]:
    mean = float(row["mean"])
    lo = float(row["lo"]) if row["lo"] not in ("", None) else mean
    hi = float(row["hi"]) if row["hi"] not in ("", None) else mean
    return mean, lo, hi


def plot_map(points: list[Point], path: Path, measure: str, x_purifier: str, y_purifier: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.5, 7.5))
    colours = plt.get_cmap("tab20")
    controls = [p for p in points if _is_control(p.label)]
    for k, p in enumerate(sorted(points, key=lambda p: (p.label != NONE_LABEL, not _is_control(p.label), p.label))):
        control = _is_control(p.label)
        colour = "0.4" if p.label == NONE_LABEL else ("black", "0.55", "0.3")[controls.index(p) % 3] if control else colours(k % 20)
        marker = "s" if p.label == NONE_LABEL else "D" if control else "o^vPX*<>h"[k % 9]
        name = "clean images" if p.label == NONE_LABEL else p.label
        if not control:
            name += f" [{p.source}]"
        if p.psnr is not None and math.isfinite(p.psnr):
            name += f" ({p.psnr:.1f} dB)"
        ax.errorbar([p.x[0]], [p.y[0]], xerr=[[p.x[0] - p.x[1]], [p.x[2] - p.x[0]]],
                    yerr=[[p.y[0] - p.y[1]], [p.y[2] - p.y[0]]], fmt=marker, ms=6, capsize=2, lw=1,
                    color=colour, label=name)
    ax.set_xlabel(f"{measure} {x_purifier if x_purifier != 'none' else 'unpurified'}")
    ax.set_ylabel(f"{measure} after {y_purifier}")
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Lay out, write (the folder made if missing) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")  # a legend beside the axes is not cut off
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.evaluation.variants", description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+", type=Path, help="curve.csv files (artveil efficacy --strengths)")
    ap.add_argument("--strength", type=float, default=32.0, help="the strength in levels whose rows are drawn")
    ap.add_argument("--measure", default="accuracy", help="accuracy, frechet, paired_ssim or hf_ratio")
    ap.add_argument("--x", dest="x_purifier", default="none", help="purifier column on x ('none': unpurified)")
    ap.add_argument("--y", dest="y_purifier", default="SDEdit 0.2", help="purifier column on y")
    ap.add_argument("--title", default=None)
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = ap.parse_args(argv)
    try:
        points = read_points(args.csv, args.strength, args.measure, args.x_purifier, args.y_purifier)
        if not points:
            raise ArtveilError("input", f"no row has {args.measure} under both {args.x_purifier!r} and "
                                        f"{args.y_purifier!r} at {args.strength:g} levels in those files")
    except ArtveilError as exc:
        print(f"variants: {exc.message}", file=sys.stderr)
        return 2
    title = args.title or f"{len(points)} rows at {args.strength:g} levels"
    plot_map(points, args.out, args.measure, args.x_purifier, args.y_purifier, title)
    for p in points:
        print(f"{p.label:55s} {p.x[0]:.3f} [{p.x[1]:.2f}, {p.x[2]:.2f}]  {p.y[0]:.3f} [{p.y[1]:.2f}, {p.y[2]:.2f}]  {p.source}")
    print(args.out, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
