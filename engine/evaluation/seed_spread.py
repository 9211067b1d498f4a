"""Where the mimic-seed spread of the judge's accuracy comes from: the judge's sampling or the fine-tune.

Each cell of an efficacy run is the mean over mimic seeds, each mimic its own fine-tune and its own samples. Its
interval comes from the seed-to-seed spread (engine.evaluation.efficacy.seed_intervals). Part of that spread is
the judge counting a finite number of samples (binomial: a(1 - a)/n per mimic), the rest is the fine-tune itself.
More samples per mimic (`artveil efficacy --k`) shrink only the first part; more mimic seeds shrink both. This
splits the pooled spread of one or more run folders into the two, and says what a cell's 95 % interval would be
with other numbers of seeds and samples:

    python -m engine.evaluation.seed_spread runs/final32

It reads each row's results.json (customization.scores_by_seed); a cell with fewer than two seeds is left out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ArtveilError


@dataclass
class Spread:
    """Pooled over the cells read: the seed-to-seed variance of a mimic's accuracy, the part of it the judge's
    sampling explains, and the degrees of freedom."""

    seed_var: float
    sampling_var: float
    df: int
    cells: int
    samples: int = 36  # samples per mimic in the folders read (the most common count)

    @property
    def finetune_var(self) -> float:
        return max(self.seed_var - self.sampling_var, 0.0)

    def half_width(self, seeds: int, samples: int, accuracy: float = 0.5) -> float:
        """The 95 % half-width of a cell's mean over `seeds` mimics of `samples` samples each (normal quantile)."""
        per_mimic = self.finetune_var + accuracy * (1 - accuracy) / samples
        return 1.96 * math.sqrt(per_mimic / seeds)


def read_spread(folders: list[Path]) -> Spread:
    """The pooled spread of every cell with two or more seeds in the run folders' results.json files."""
    from engine.evaluation.efficacy import pooled_spread  # the intervals' own pooling

    cells: list[list[tuple[float, int]]] = []  # per cell: (accuracy, samples) of each mimic
    found = False
    for folder in folders:
        if not folder.is_dir():
            raise ArtveilError("input", f"{folder}: no such run folder")
        for path in sorted(folder.rglob("results.json")):
            found = True
            try:
                by_seed = json.loads(path.read_text())["customization"]["scores_by_seed"]
            except (OSError, ValueError, KeyError, TypeError):
                raise ArtveilError("input", f"{path}: not an efficacy results.json (no customization.scores_by_seed)") from None
            for mimics in by_seed.values():
                pairs = [(m["style_accuracy"], m["samples"]) for m in mimics
                         if m.get("style_accuracy") is not None and m.get("samples", 0) > 1]
                if len(pairs) >= 2:
                    cells.append(pairs)
    if not found:
        raise ArtveilError("input", f"no results.json under {', '.join(str(f) for f in folders)}")
    if not cells:
        raise ArtveilError("input", "no cell with two or more mimic seeds in those folders")
    seed_sd, df = pooled_spread([[a for a, _ in pairs] for pairs in cells])
    # each mimic's own binomial variance, unbiased (n - 1), averaged per cell and pooled with the cell's weight
    sampling_ss = sum((len(pairs) - 1) * sum(a * (1 - a) / (n - 1) for a, n in pairs) / len(pairs) for pairs in cells)
    counts = [n for pairs in cells for _, n in pairs]
    return Spread(seed_sd**2, sampling_ss / df, df, len(cells), max(set(counts), key=counts.count))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.evaluation.seed_spread", description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="efficacy run folders (artveil efficacy --out)")
    args = ap.parse_args(argv)
    try:
        spread = read_spread(args.folders)
    except ArtveilError as exc:
        print(f"seed_spread: {exc.message}", file=sys.stderr)
        return 2
    print(f"{spread.cells} cells, {spread.df} degrees of freedom")
    print(f"seed-to-seed sd of a mimic's accuracy  {math.sqrt(spread.seed_var):.3f}")
    print(f"  of which the judge's sampling         {math.sqrt(spread.sampling_var):.3f}")
    print(f"  and the fine-tune                     {math.sqrt(spread.finetune_var):.3f}")
    sizes = [spread.samples, 2 * spread.samples, 4 * spread.samples]  # as measured, and 2× and 4× that
    print("\n95 % half-width of a cell at accuracy 0.5, by mimic seeds (rows) and samples per mimic (columns):")
    print("seeds " + "".join(f"{n:>8d}" for n in sizes))
    for seeds in (2, 4, 8, 16):
        print(f"{seeds:5d} " + "".join(f"{spread.half_width(seeds, n):8.3f}" for n in sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
