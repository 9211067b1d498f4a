"""The worst case over the purifiers: what a mimic who tries every purifier gets, row by row, on one or more
render sets (one curve.csv each), and its mean over the sets. Issue 28 chooses AntiPure's settings on it: a
setting that keeps its damage through JPEG but loses it through SDEdit is only as good as what SDEdit leaves.

    python -m engine.evaluation.worst_case docs/efficacy/tune-sweep/curve.csv docs/efficacy/tune-b-sweep/curve.csv \\
        docs/efficacy/tune-c-sweep/curve.csv --purifiers 'none,JPEG 75,SDEdit 0.2' --out docs/efficacy/share-sweep.png

"Worst" follows each measure's direction in the file: the highest accuracy ("lower" is better for the artist),
the lowest Fréchet distance ("higher" is better). A row that lacks one of the purifiers in a file has no worst
case there (a worst case over fewer purifiers would flatter it), and no mean. `--same A=B` reads row A as B
(one setting measured under two labels, e.g. the default and its explicit value). `A.csv+B.csv` reads one render
set measured in two curve folders (new rows beside earlier ones); a cell both have must read the same in each.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ArtveilError
from engine.evaluation.variants import read_curve_csv, save_figure

NONE_LABEL = "none"
MEASURES = ("accuracy", "frechet")


@dataclass
class Worst:
    """One row's worst case under one measure: per file (value, purifier), None where a purifier is missing."""

    label: str
    measure: str
    per_file: dict[str, tuple[float, str] | None] = field(default_factory=dict)

    @property
    def mean(self) -> float | None:
        values = list(self.per_file.values())
        if not values or any(v is None for v in values):
            return None
        return sum(v[0] for v in values) / len(values)


def _name(path: Path) -> str:
    return path.parent.name or path.stem


def read_worst(paths: list[Path | list[Path]], strength: float, purifiers: list[str], measures=MEASURES,
               same: dict[str, str] | None = None) -> list[Worst]:
    """Every row (the clean images at strength 0, the others at `strength`) of every render set, per measure. A
    render set is one file, or a list of files: rows measured in several curve folders of one set (a cell found in
    more than one of them must read the same in each)."""
    same = same or {}
    out: dict[tuple[str, str], Worst] = {}
    sets = [p if isinstance(p, list) else [p] for p in paths]
    names = ["+".join(_name(f) for f in files) for files in sets]
    if len(set(names)) != len(names):
        raise ArtveilError("input", "two of the files are in folders of the same name; give each render set its own")
    for files, name in zip(sets, names):
        cells: dict[tuple[str, str], dict[str, tuple[float, str]]] = {}
        seen: dict[tuple[str, str, str], tuple[float, Path]] = {}
        for path in files:
            for row in read_curve_csv(path, ("method", "strength", "purifier", "measure", "direction", "mean")):
                if row["measure"] not in measures or row["purifier"] not in purifiers:
                    continue
                if row["method"] != NONE_LABEL and float(row["strength"]) != strength:
                    continue
                label = same.get(row["method"], row["method"])
                key, value = (label, row["measure"], row["purifier"]), float(row["mean"])
                if key in seen and seen[key][0] != value:
                    raise ArtveilError("input", f"{label}'s {row['measure']} under {row['purifier']} reads "
                                                f"{seen[key][0]:g} in {seen[key][1]} and {value:g} in {path}: "
                                                "not one render set")
                seen[key] = (value, path)
                cells.setdefault((label, row["measure"]), {})[row["purifier"]] = (value, row["direction"])
        path = files[0]
        for (label, measure), by_purifier in cells.items():
            w = out.setdefault((label, measure), Worst(label, measure))
            if set(by_purifier) != set(purifiers):
                w.per_file[name] = None
                continue
            directions = {d for _, d in by_purifier.values()}
            if directions not in ({"lower"}, {"higher"}):
                raise ArtveilError("input", f"{path}: {label}'s {measure} has no single direction")
            pick = max if directions == {"lower"} else min  # the worst: the highest where lower is better
            purifier = pick(by_purifier, key=lambda p: by_purifier[p][0])
            w.per_file[name] = (by_purifier[purifier][0], purifier)
    for w in out.values():  # a row absent from a file has no worst case there either
        for name in names:
            w.per_file.setdefault(name, None)
        w.per_file = {name: w.per_file[name] for name in names}
    return list(out.values())


def table(worsts: list[Worst], measure: str) -> str:
    rows = [w for w in worsts if w.measure == measure]
    if not rows:
        return ""
    names = list(rows[0].per_file)
    lines = [f"| row | {' | '.join(names)} | mean |", "|---" * (len(names) + 2) + "|"]
    for w in rows:
        cells = [f"{v[0]:.3f} ({v[1]})" if v else "–" for v in w.per_file.values()]
        mean = f"{w.mean:.3f}" if w.mean is not None else "–"
        lines.append(f"| {'clean images' if w.label == NONE_LABEL else w.label} | {' | '.join(cells)} | {mean} |")
    return "\n".join(lines)


def plot(worsts: list[Worst], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [m for m in MEASURES if any(w.measure == m for w in worsts)]
    n_rows = max(sum(w.measure == m for w in worsts) for m in measures)
    width = max(6.2, 0.8 * n_rows)  # room for each row's wrapped label
    fig, axes = plt.subplots(1, len(measures), figsize=(width * len(measures), 5.2), squeeze=False)
    for ax, measure in zip(axes[0], measures):
        rows = [w for w in worsts if w.measure == measure]
        labels = ["clean images" if w.label == NONE_LABEL else w.label for w in rows]
        xs = range(len(rows))
        for k, name in enumerate(rows[0].per_file):
            ys = [w.per_file[name][0] if w.per_file[name] else float("nan") for w in rows]
            ax.plot(xs, ys, "o", ms=6, alpha=0.75, label=name, color=plt.get_cmap("tab10")(k))
        ax.plot(xs, [w.mean if w.mean is not None else float("nan") for w in rows], "k_", ms=22, mew=2.5,
                label="mean over the sets")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(["\n".join(textwrap.wrap(t, 14)) for t in labels], fontsize=7)
        better = "lower" if measure == "accuracy" else "higher"
        ax.set_ylabel(f"worst {'judge’s accuracy' if measure == 'accuracy' else 'Fréchet distance'} "
                      f"over the purifiers ({better}: better for the artist)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=9)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.evaluation.worst_case", description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+", help="curve.csv files, one per render set; A.csv+B.csv: one set measured in "
                                           "two curve folders")
    ap.add_argument("--strength", type=float, default=32.0, help="the strength in levels whose rows are read")
    ap.add_argument("--purifiers", default="none,JPEG 75,SDEdit 0.2", help="comma-separated purifier columns")
    ap.add_argument("--same", action="append", default=[], metavar="A=B", help="read row A as row B (repeatable)")
    ap.add_argument("--title", default=None)
    ap.add_argument("--out", type=Path, default=None, help="also draw the worst cases to this PNG")
    args = ap.parse_args(argv)
    try:
        same = {}
        for pair in args.same:
            a, sep, b = pair.partition("=")
            if not sep or not a or not b:
                raise ArtveilError("input", f"--same {pair!r}: give it as LABEL=OTHER LABEL")
            same[a] = b
        purifiers = [p.strip() for p in args.purifiers.split(",") if p.strip()]
        if not purifiers:
            raise ArtveilError("input", "--purifiers: name at least one purifier column")
        sets = [[Path(part) for part in arg.split("+")] for arg in args.csv]
        worsts = read_worst(sets, args.strength, purifiers, same=same)
        if not any(w.label != NONE_LABEL for w in worsts):
            raise ArtveilError("input", f"no row at {args.strength:g} levels under {purifiers} in those files")
    except ArtveilError as exc:
        print(f"worst_case: {exc.message}", file=sys.stderr)
        return 2
    for measure in MEASURES:
        text = table(worsts, measure)
        if text:
            print(f"\nworst {measure} over {', '.join(purifiers)} at {args.strength:g} levels\n\n{text}")
    if args.out:
        plot(worsts, args.out, args.title or f"The worst case over {', '.join(purifiers)}, {args.strength:g} levels")
        print(args.out, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
