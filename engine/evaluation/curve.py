"""`artveil efficacy --strengths 4,8,16,32`: the efficacy curves (issue 27, docs/efficacy.md).

The table (engine.evaluation.efficacy) measures one strength; the curves put the strength on an axis. Each
protection is measured at several strengths, each against the Random ±ε control at the same strength, under
the purifiers a mimic would use, with several measures of the mimic's samples (engine.evaluation.measures),
each with a 95 % interval over mimic seeds, beside the protected images' PSNR and SSIM.

One run folder per (row, strength), an `artveil eval` run with only the purifier columns that cell needs
(CurvePlan), so a stopped curve resumes where it stopped. The measures are computed afterwards from the
files on disk (the samples of every mimic seed), so they never depend on a method's own loss.

Outputs (in --curve-dir): curve.csv (one line per method × strength × purifier × measure), curves.png (one
panel per purifier and measure: the measure against PSNR, one line per method, the Random control dashed),
samples-<method>.png (contact sheets of the mimic's samples per strength) and curve.md (the verdict tables).
"""

from __future__ import annotations

import csv
import json
import math
import time
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.errors import ArtveilError
from engine.evaluation import efficacy as E
from engine.evaluation import measures as M

STRENGTHS = (4.0, 8.0, 16.0, 32.0)
RANDOM_ROW = ("Random ±ε", "random", {})
# (label, spec): the columns of issue 27. GrIDPure at the AntiPure paper's evaluation setting, 2 rounds of 20
# iterations, run here as 40 iterations of the purifier's one loop (crops, light re-draw, blend γ 0.1); on
# the 64 px proxy the 256 px crop covers the whole picture, so each iteration is one crop plus the mosaic.
PURIFIERS: list[tuple[str, str | None]] = [
    ("none", None),
    ("JPEG 75", "jpeg:75"),
    ("SDEdit 0.2", "sdedit:0.2"),
    ("GrIDPure", "gridpure:40"),
]
ABLATIONS = ("AntiPure w/o PFG", "AntiPure w/o ETG")
CSV_COLUMNS = ("method", "strength", "purifier", "measure", "direction", "mean", "lo", "hi", "seeds", "psnr", "ssim")
# The artist's clean renders the Fréchet distance compares against: other seeds than any image the mimic or
# a protection saw (the final split uses 'artist' seeds 0.., the tuning split 1000..).
REFERENCE_OFFSET = 20_000
REFERENCE_COUNT = 512


@dataclass(frozen=True)
class CurveRun:
    """One run folder: a row at one strength (None for the 'none' row) with the purifier columns it needs."""

    label: str
    method: str
    params: tuple[tuple[str, Any], ...]
    strength: float | None
    purifiers: tuple[str, ...]  # column labels of PURIFIERS

    @property
    def folder(self) -> str:
        return ascii_slug(self.label) + ("" if self.strength is None else f"-e{self.strength:g}")


def ascii_slug(label: str) -> str:
    """A file name for a row label in ASCII only ('Random ±ε' -> 'random'), as every platform takes."""
    return "-".join(p for p in E.slug(label).encode("ascii", "ignore").decode().split("-") if p)


def curve_rows() -> list[tuple[str, str, dict[str, Any]]]:
    """none, the Random control, then the product's method and the baselines, the ablations last."""
    by_label = {label: row for row in E.ROWS for label in [row[0]]}
    order = ["none", "AntiPure", "AdvDM", "Mist", "PhotoGuard", "SDS(−)", "ASPL", "Anti-Diffusion", *ABLATIONS]
    rows = [by_label[label] for label in order]
    return [rows[0], RANDOM_ROW, *rows[1:]]


@dataclass
class CurvePlan:
    """Which cells to measure (issue 27, point 5): every row at the full strengths under every purifier;
    every row but the ablations at the edge strengths, unpurified and after SDEdit 0.2; the Random control
    wherever a method is measured."""

    rows: list[tuple[str, str, dict[str, Any]]] = field(default_factory=lambda: curve_rows())
    strengths: tuple[float, ...] = STRENGTHS
    full_strengths: tuple[float, ...] = (8.0, 16.0)
    edge_purifiers: tuple[str, ...] = ("none", "SDEdit 0.2")
    skip_at_edges: tuple[str, ...] = ABLATIONS
    purifiers: list[tuple[str, str | None]] = field(default_factory=lambda: list(PURIFIERS))

    def runs(self) -> list[CurveRun]:
        """The none row first, then strength by strength from the strongest (where a proxy mimic reacts first,
        so a curve stopped early has the informative end), Random first within a strength."""
        labels = [label for label, _ in self.purifiers]
        out = []
        # The clean mimic under every purifier some row is measured under (all of them when a full strength
        # is measured; else only the edge purifiers).
        full = any(s in self.full_strengths for s in self.strengths)
        clean_cols = tuple(labels) if full else tuple(c for c in labels if c in self.edge_purifiers)
        for label, method, params in self.rows:
            if method == "none":
                out.append(CurveRun(label, method, (), None, clean_cols))
        for s in sorted(self.strengths, reverse=True):
            for label, method, params in self.rows:
                if method == "none":
                    continue
                if s in self.full_strengths:
                    cols = tuple(labels)
                elif label in self.skip_at_edges:
                    continue
                else:
                    cols = tuple(c for c in labels if c in self.edge_purifiers)
                out.append(CurveRun(label, method, tuple(sorted(params.items())), float(s), cols))
        return out


def validate_plan(plan: CurvePlan, steps: int) -> None:
    """Every run's settings through the engine's own validation, before the first run starts: a strength the
    engine refuses (above 32 levels), an unknown method or a bad parameter costs seconds, not hours."""
    from engine.jobs import ProtectSettings
    from engine.methods import get_method
    from engine.protect import validate_settings

    if not plan.strengths:
        raise ArtveilError("config", "the curve needs at least one strength")
    for s in plan.strengths:
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s):
            raise ArtveilError("config", f"strength {s!r} is not a number of levels")
    from engine.purify import parse_purifier

    for label, spec in plan.purifiers:
        if spec:
            try:
                parse_purifier(spec)
            except ArtveilError as exc:
                raise ArtveilError("config", f"purifier column {label!r}: {exc.message}") from None
    known = {label for label, _ in plan.purifiers}
    for col in plan.edge_purifiers:
        if col not in known:
            raise ArtveilError("config", f"edge purifier {col!r} is not one of the columns {sorted(known)}")
    E.validate_rows(plan.rows)
    for label, _, params in plan.rows:
        if "strength" in params:
            # The curve measures every row at each of --strengths (run_config sets it): a row's own strength
            # would be overridden without a word, and a "Grid ±ε 24" row measured at 32 under that name.
            raise ArtveilError("config", f"row {label!r} sets strength={params['strength']:g}; a curve measures "
                                         "every row at each of --strengths, so give the strength there")
    for run in plan.runs():
        if run.method == "none":
            continue
        # A row's own settings (steps=, eot=) are the protection's, not its method's parameters.
        params, own = E.split_row_params(dict(run.params))
        settings = ProtectSettings(method=run.method, strength_levels=run.strength, steps=int(own.get("steps", steps)),
                                   method_params=params, eot=E.row_eot(own))
        try:
            validate_settings(settings)
            get_method(run.method, params)
        except ArtveilError as exc:
            raise ArtveilError("config", f"{run.label} at strength {run.strength:g}: {exc.message}") from None


def parse_strengths(text: str) -> tuple[float, ...]:
    """'4,8,16,32' -> (4.0, 8.0, 16.0, 32.0); one line for anything else."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ArtveilError("config", f"--strengths {text!r}: give levels separated by commas, e.g. 4,8,16,32") from None
    if not values:
        raise ArtveilError("config", "--strengths: give at least one strength in levels, e.g. 4,8,16,32")
    if len(set(values)) != len(values):
        raise ArtveilError("config", f"--strengths {text!r}: a strength is listed twice")
    return tuple(sorted(values))


def parse_purifier_labels(text: str, purifiers: list[tuple[str, str | None]]) -> tuple[str, ...]:
    """'none,jpeg,sdedit' -> the column labels ('none', 'JPEG 75', 'SDEdit 0.2'), in the curve's order; a name
    is a column's label or its purifier's name (the part of its spec before ':'), in any case."""
    names = {}
    for label, spec in purifiers:
        names[label.lower()] = label
        names[(spec or "none").split(":")[0].lower()] = label
    chosen = []
    for word in (w.strip().lower() for w in text.split(",")):
        if not word:
            continue
        if word not in names:
            raise ArtveilError("config", f"--edge-purifiers {text!r}: {word!r} is not a purifier of the curves; "
                                         f"give some of {', '.join(sorted({(s or 'none').split(':')[0] for _, s in purifiers}))}")
        chosen.append(names[word])
    if not chosen:
        raise ArtveilError("config", "--edge-purifiers: give at least one purifier, e.g. none,sdedit")
    return tuple(label for label, _ in purifiers if label in chosen)


def run_config(settings: E.EfficacySettings, plan: CurvePlan, run: CurveRun, artist: Path, resolution: int, style: str):
    """The eval run of one CurveRun (engine.evaluation.run.EvalConfig)."""
    params = dict(run.params)
    if run.strength is not None:
        params["strength"] = run.strength
    config = E.row_config(settings, artist, resolution, style, run.method, params)
    specs = [spec for label, spec in plan.purifiers if label in run.purifiers and spec]
    return replace(config, purifiers=specs)


def run_curve(model, model_dir: Path, out: Path, settings: E.EfficacySettings, plan: CurvePlan,
              allow_unchecked: bool = False, log: Callable[[str], None] = print, jobs: int = 1,
              source: str | None = None, assemble_only: bool = False) -> dict:
    """Run (or resume) every run of the plan, then measure every finished cell; returns the curve
    (also written to out/curve.json). assemble_only: run nothing, measure what is finished (a partial curve)."""
    from engine import machine
    from engine.evaluation.run import run_evaluation
    from engine.proxy.styles import HELD_OUT_STYLE

    world, sanity = E.check_proxy_model(model_dir, allow_unchecked)
    validate_plan(plan, settings.steps)
    resolution = int(world["resolution"])
    style = world.get("held_out_style", HELD_OUT_STYLE)
    out.mkdir(parents=True, exist_ok=True)
    artist = out / "artist"
    E.write_artist_set(artist, style, settings.train_images + settings.heldout, resolution, E.split_offsets(settings.split)[0])
    runs = plan.runs()
    clock = E.WallClock(out, jobs, machine.describe(model.device))
    if assemble_only:
        stale = stale_runs(out, {r.folder: run_config(settings, plan, r, artist, resolution, style) for r in runs})
        if stale:
            raise ArtveilError("config", f"{out}: {stale[0]}" + (f" (and {len(stale) - 1} more run(s))" if len(stale) > 1 else "")
                               + "; run without --assemble-only to measure them again, or give another --out")
    else:
        items = [(f"{r.label} ε{r.strength:g}" if r.strength else r.label,
                  run_config(settings, plan, r, artist, resolution, style), out / "runs" / r.folder) for r in runs]
        if jobs > 1:
            E.rows_in_workers(source or str(model_dir), str(model.device), items, min(jobs, len(items)), log,
                               tick=clock.tick)
        else:
            for label, config, run_dir in items:
                log(f"== {label}")
                run_evaluation(model, config, run_dir, log=lambda m: (clock.tick(), log("   " + m)))
    clock.tick(force=True)
    curve = assemble(out, plan, runs, style, resolution)
    curve.update(model=model.name, model_dir_name=model_dir.name, device=str(model.device), date=time.strftime("%Y-%m-%d"),
                 settings={"steps": settings.steps, "split": settings.split, "mimic_seeds": list(settings.mimic_seeds),
                           "lora_steps": settings.lora_steps, "lora_lr": settings.lora_lr, "mode": settings.mimic_mode,
                           "k": settings.k, "gen_steps": settings.gen_steps, "guidance": settings.guidance},
                 sanity_passed=bool(sanity and sanity.get("bar", {}).get("passed")),
                 invocations=clock.invocations, wall_seconds=clock.total_seconds)
    (out / "curve.json").write_text(json.dumps(curve, indent=1, default=_json_default) + "\n")
    return curve


# The settings a finished run must share with the curve being assembled: what the mimic learned from and how
# it was measured (not the paths of the artist's images, which are the folder's own).
MATCHED_SETTINGS = ("method", "strength_levels", "steps", "method_params", "timesteps_per_step", "purifiers",
                    "purify_steps", "size", "k", "customize_mode", "lora_rank", "lora_lr", "lora_steps", "lora_batch",
                    "lora_repeats", "lora_schedule", "lora_augment", "gen_steps", "guidance", "seed", "mimic_seeds",
                    "eot")
# What a finished run that predates a setting had in its place (results.json without the key).
MATCHED_DEFAULTS = {"eot": []}


def stale_runs(out: Path, expected: dict) -> list[str]:
    """'runs/F was measured with steps 50, not 100' for each finished run (results.json) whose settings are not
    those the curve would run now (expected: folder -> EvalConfig). --assemble-only runs nothing, so it must not
    mix runs of other settings into one curve."""
    from dataclasses import asdict

    stale = []
    for folder, config in expected.items():
        f = out / "runs" / folder / "results.json"
        if not f.is_file():
            continue
        have = json.loads(f.read_text()).get("config", {})
        want = json.loads(json.dumps(asdict(config), default=str))
        for key in MATCHED_SETTINGS:
            if have.get(key, MATCHED_DEFAULTS.get(key)) != want.get(key):
                stale.append(f"runs/{folder} was measured with {key} {have.get(key)!r}, not {want.get(key)!r}")
                break
    return stale


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value))


# ---------------------------------------------------------------- measuring the finished runs


def _cond(spec: str | None) -> str:
    from engine.evaluation.run import condition_name

    return "protected" if spec is None else condition_name(spec)


def _read(path: Path) -> np.ndarray:
    from engine.images import load_image

    return load_image(path).pixels[..., :3]


def reference_space(style: str, resolution: int):
    """(judge, FeatureSpace, reference images): the artist's clean renders the Fréchet distance compares with."""
    from engine.evaluation.judges import load_style_judge
    from engine.proxy.data import render_set

    judge = load_style_judge()
    if judge is None:
        raise ArtveilError("model", "the style judge is not available (resources/proxy/judge): the curves need it")
    ref = render_set([style], REFERENCE_COUNT, resolution, use="artist", offset=REFERENCE_OFFSET).images
    return judge, M.FeatureSpace.fit(judge.features(ref)), ref


def assemble(out: Path, plan: CurvePlan, runs: list[CurveRun], style: str, resolution: int) -> dict:
    """Measure every finished run's cells (per mimic seed), pool each measure's seed spread over the cells,
    and give every cell its 95 % interval. Unfinished runs are listed, not guessed."""
    results = {}
    for r in runs:
        f = out / "runs" / r.folder / "results.json"
        if f.is_file():
            results[r.folder] = json.loads(f.read_text())
    missing = [r.folder for r in runs if r.folder not in results]
    none_run = next((r for r in runs if r.method == "none"), None)
    if none_run is None or none_run.folder not in results:
        return {"cells": [], "missing": missing, "spread": {}, "planned": len(runs)}
    judge, space, reference = reference_space(style, resolution)
    distance = M.Frechet(judge, space, reference)
    clean_by_seed = _samples_by_seed(out / "runs" / none_run.folder, results[none_run.folder], "protected")
    specs = dict(plan.purifiers)
    cells = []
    for r in runs:
        if r.folder not in results:
            continue
        res = results[r.folder]
        psnr = res["imperceptibility_mean"].get("psnr") if r.method != "none" else math.inf
        ssim = res["imperceptibility_mean"].get("ssim") if r.method != "none" else 1.0
        for col in r.purifiers:
            cond = _cond(specs[col])
            seeds = _samples_by_seed(out / "runs" / r.folder, res, cond)
            acc = {s["seed"]: s.get("style_accuracy") for s in res["customization"]["scores_by_seed"].get(cond, [])}
            values: dict[str, list[float]] = {m: [] for m in M.MEASURES}
            for seed, samples in seeds.items():
                clean = clean_by_seed.get(seed)
                values["accuracy"].append(acc.get(seed))
                values["frechet"].append(distance(samples))
                values["paired_ssim"].append(M.paired_ssim(samples, clean) if clean else None)
                values["hf_ratio"].append(M.hf_ratio(samples, clean) if clean else None)
            cells.append({"method": r.label, "kind": r.method, "strength": r.strength, "purifier": col,
                          "psnr": psnr, "ssim": ssim, "seeds": sorted(seeds),
                          "values": {m: [v for v in vs if v is not None] for m, vs in values.items()}})
    spread = pooled_intervals(cells)
    return {"cells": cells, "missing": missing, "spread": spread, "planned": len(runs)}


def _samples_by_seed(run_dir: Path, results: dict, cond: str) -> dict[int, list[np.ndarray]]:
    files = results["files"].get(cond)
    if not files:
        return {}
    return {m["seed"]: [_read(run_dir / f) for f in m["generated"]] for m in files["mimics"]}


def degenerate(cell: dict, measure: str) -> bool:
    """The clean mimic unpurified, on a measure paired with itself: 1 (or the ratio 1) by construction, no
    spread to pool."""
    return cell["kind"] == "none" and cell["purifier"] == "none" and measure in ("paired_ssim", "hf_ratio")


def pooled_intervals(cells: list[dict]) -> dict[str, dict[str, float]]:
    """Give every cell (in place) per measure its mean and 95 % interval over mimic seeds, the seed-to-seed
    spread pooled over every cell of the curve (as the table does: two seeds alone give one degree of freedom).
    Returns {measure: {"sd", "df"}}."""
    spread = {}
    for m in M.MEASURES:
        sd, df = E.pooled_spread([c["values"][m] for c in cells if not degenerate(c, m)])
        spread[m] = {"sd": sd, "df": df}
        for c in cells:
            vals = c["values"][m]
            c.setdefault("stats", {})[m] = interval(vals, sd, df, degenerate(c, m), bounded=(m == "accuracy"))
    return spread


def interval(vals: list[float], sd: float | None, df: int, exact: bool = False, bounded: bool = False) -> dict:
    """mean, lo, hi of a cell's per-seed values: Student's t with the pooled sd (exact: no interval)."""
    if not vals:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mu = sum(vals) / len(vals)
    if exact:
        return {"mean": mu, "lo": mu, "hi": mu, "n": len(vals)}
    if sd is None or df < 1:
        return {"mean": mu, "lo": None, "hi": None, "n": len(vals)}
    half = E.t975(df) * sd / math.sqrt(len(vals))
    lo, hi = mu - half, mu + half
    if bounded:
        lo, hi = max(0.0, lo), min(1.0, hi)
    return {"mean": mu, "lo": lo, "hi": hi, "n": len(vals)}


def clear_of(cell_stats: dict, other: dict | None, direction: str) -> bool:
    """True when the cell's interval lies wholly on the artist's side of the other's (no overlap)."""
    if other is None or cell_stats.get("lo") is None or other.get("lo") is None:
        return False
    return cell_stats["lo"] > other["hi"] if direction == "higher" else cell_stats["hi"] < other["lo"]


def onsets(curve: dict) -> list[dict]:
    """For every method, measure and purifier: the smallest strength at which the method damages the mimic
    outside the noise of the clean mimic (none row, same purifier) and beyond the Random control (same
    strength and purifier). The Random row itself is compared with the none row only."""
    cells = curve["cells"]
    by = {(c["method"], c["strength"], c["purifier"]): c for c in cells}
    none = {c["purifier"]: c for c in cells if c["kind"] == "none"}
    rand = {(c["strength"], c["purifier"]): c for c in cells if c["kind"] == "random"}
    out = []
    methods = list(dict.fromkeys(c["method"] for c in cells if c["kind"] != "none"))
    purifiers = list(dict.fromkeys(c["purifier"] for c in cells))
    for method in methods:
        for m in M.MEASURES:
            d = M.DIRECTIONS[m]
            for p in purifiers:
                measured = sorted(s for (mm, s, pp) in by if mm == method and pp == p)
                if not measured:
                    continue
                first = None
                for s in measured:
                    c = by[(method, s, p)]
                    beats_none = clear_of(c["stats"][m], none.get(p, {}).get("stats", {}).get(m), d)
                    r = rand.get((s, p))
                    beats_random = c["kind"] == "random" or (r is not None and clear_of(c["stats"][m], r["stats"][m], d))
                    if beats_none and beats_random:
                        first = s
                        break
                out.append({"method": method, "measure": m, "purifier": p, "onset": first, "measured": measured})
    return out


# ---------------------------------------------------------------- outputs


def write_csv(curve: dict, path: Path) -> None:
    """curve.csv: method,strength,purifier,measure,direction,mean,lo,hi,seeds,psnr,ssim (strength 0: the
    clean images; psnr inf there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.part")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for c in curve["cells"]:
            for m in M.MEASURES:
                st = c["stats"][m]
                w.writerow([c["method"], f"{c['strength'] or 0:g}", c["purifier"], m, M.DIRECTIONS[m],
                            _num(st["mean"]), _num(st["lo"]), _num(st["hi"]), st["n"], _num(c["psnr"]), _num(c["ssim"])])
    tmp.replace(path)


def _num(v) -> str:
    if v is None:
        return ""
    return "inf" if v == math.inf else f"{v:.6g}"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# The controls' line colours (engine.methods.CONTROLS: Random ±ε, Grid ±ε), apart from the methods' tab10 colours.
CONTROL_COLOURS = {"random": "black", "grid_sign": "0.5"}

MEASURE_TITLES = {"accuracy": "judge's accuracy (lower: better for the artist)",
                  "frechet": "Fréchet distance to clean renders (higher: better)",
                  "paired_ssim": "paired SSIM to the clean mimic (lower: better)",
                  "hf_ratio": "high-frequency ratio to the clean mimic (higher: more grain)"}


def plot_curves(curve: dict, path: Path) -> None:
    """curves.png: a grid, one row per measure and one column per purifier; x = PSNR of the protected images
    (left: more visible), one line per method with its 95 % interval bars, the Random control dashed, the
    clean mimic's interval as a grey band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = curve["cells"]
    purifiers = list(dict.fromkeys(c["purifier"] for c in cells))
    methods = list(dict.fromkeys(c["method"] for c in cells if c["kind"] != "none"))
    fig, axes = plt.subplots(len(M.MEASURES), len(purifiers), figsize=(4.2 * len(purifiers), 3.3 * len(M.MEASURES)),
                             squeeze=False, sharex=True)
    colours = plt.get_cmap("tab10")
    for i, m in enumerate(M.MEASURES):
        for j, p in enumerate(purifiers):
            ax = axes[i][j]
            base = next((c for c in cells if c["kind"] == "none" and c["purifier"] == p), None)
            if base and base["stats"][m]["lo"] is not None:
                ax.axhspan(base["stats"][m]["lo"], base["stats"][m]["hi"], color="0.85", zorder=0, label="clean mimic (95 %)")
            for k, method in enumerate(methods):
                pts = sorted((c["psnr"], c["stats"][m], c["strength"]) for c in cells
                             if c["method"] == method and c["purifier"] == p and c["stats"][m]["mean"] is not None
                             and c["psnr"] is not None)
                if not pts:
                    continue
                xs = [x for x, _, _ in pts]
                ys = [st["mean"] for _, st, _ in pts]
                err = [[max(0.0, st["mean"] - st["lo"]) if st["lo"] is not None else 0 for _, st, _ in pts],
                       [max(0.0, st["hi"] - st["mean"]) if st["hi"] is not None else 0 for _, st, _ in pts]]
                kind = next(c["kind"] for c in cells if c["method"] == method)
                if kind in CONTROL_COLOURS:  # the controls: dashed, in greys, a diamond; the methods in colour
                    style = dict(ls="--", color=CONTROL_COLOURS[kind], marker="D")
                else:
                    style = dict(ls="-", color=colours(k % 10), marker="o")
                ax.errorbar(xs, ys, yerr=err, label=method, capsize=2, lw=1.2, ms=3, **style)
            ax.invert_xaxis()
            if i == 0:
                ax.set_title(f"purifier: {p}")
            if j == 0:
                ax.set_ylabel("\n".join(textwrap.wrap(MEASURE_TITLES[m], 42)), fontsize=8)
            if i == len(M.MEASURES) - 1:
                ax.set_xlabel("PSNR of the protected images, dB\n(left: more visible)")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    for row in axes:
        for ax in row:
            h, lab = ax.get_legend_handles_labels()
            seen.update(zip(lab, h))
    # As many legend columns as the figure's width holds (one purifier's column holds two), and room below
    # the plots for as many legend rows as that makes: a narrow figure's legend is not cut off.
    width, height = fig.get_size_inches()
    ncol = max(1, min(len(seen), int(width // 2.1)))
    legend_rows = -(-len(seen) // ncol)
    fig.legend(list(seen.values()), list(seen.keys()), loc="lower center", ncol=ncol, fontsize=8)
    fig.tight_layout(rect=(0, min(0.4, (0.25 * legend_rows + 0.2) / height), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def contact_sheets(out: Path, plan: CurvePlan, runs: list[CurveRun], folder: Path, per_row: int = 12, zoom: int = 2) -> list[Path]:
    """samples-<method>.png: for each method, the clean mimic's samples on top, then one row per strength
    measured (mimic seed of the first sample list, unpurified): one protected training image, then `per_row`
    samples (the same prompts and seeds in every row), each labelled."""
    from PIL import Image, ImageDraw

    def load(run: CurveRun):
        f = out / "runs" / run.folder / "results.json"
        if not f.is_file():
            return None
        res = json.loads(f.read_text())
        mimic = res["files"]["protected"]["mimics"][0]
        train = res["files"]["protected"]["train"][0]
        pick = _spread_pick(len(mimic["generated"]), per_row)
        return _read(out / "runs" / run.folder / train), [_read(out / "runs" / run.folder / mimic["generated"][i]) for i in pick]

    none_run = next((r for r in runs if r.method == "none"), None)
    clean = load(none_run) if none_run else None
    written = []
    for label in dict.fromkeys(r.label for r in runs if r.method != "none"):
        rows = [("clean mimic", clean)] if clean else []
        for r in sorted((r for r in runs if r.label == label), key=lambda r: r.strength):
            got = load(r)
            if got:
                rows.append((f"{r.strength:g} levels", got))  # the default font has no ε
        if len(rows) <= 1:
            continue
        size = rows[0][1][0].shape[0] * zoom
        pad, label_w = 4, 70
        w = label_w + (per_row + 1) * (size + pad) + pad
        h = len(rows) * (size + pad) + pad + 18
        sheet = Image.new("RGB", (w, h), (250, 250, 250))
        draw = ImageDraw.Draw(sheet)
        title = label.replace("ε", "eps")  # PIL's default font has no Greek letters
        draw.text((label_w, 2), f"{title}: a protected training image | the mimic's samples (same prompts, same seeds)", fill=(0, 0, 0))
        for i, (name, (train, samples)) in enumerate(rows):
            y = 18 + pad + i * (size + pad)
            draw.text((4, y + size // 2 - 6), name, fill=(0, 0, 0))
            for j, img in enumerate([train] + samples):
                x = label_w + pad + j * (size + pad) + (pad if j else 0)
                sheet.paste(Image.fromarray(img).resize((size, size), Image.Resampling.NEAREST), (x, y))
        path = folder / f"samples-{ascii_slug(label)}.png"
        folder.mkdir(parents=True, exist_ok=True)
        sheet.save(path, optimize=True)
        written.append(path)
    return written


def _spread_pick(n: int, k: int) -> list[int]:
    """k indices spread over n samples (every content prompt shown), in order."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(i * (n - 1) / (k - 1))) for i in range(k)})


def render_markdown(curve: dict, command: str | None = None) -> str:
    """curve.md: what was measured, the onset table per measure, the wall time and machine."""
    s = curve.get("settings", {})
    lines = ["# Efficacy curves on the proxy world", ""]
    if not curve.get("sanity_passed", True):
        lines += ["**UNCHECKED MODEL: it has not passed the sanity bar, so these numbers measure nothing.**", ""]
    done = len({(c["method"], c["strength"]) for c in curve["cells"]})
    if curve.get("missing"):
        lines += [f"**Partial curve: {done} of {curve['planned']} runs finished**; still to run: "
                  + ", ".join(curve["missing"]) + ".", ""]
    lines += [f"Model `{curve.get('model_dir_name')}` on {curve.get('device')}, {curve.get('date')}, {s.get('split')} split; "
              f"{s.get('steps')} optimizer steps per protection; the mimic: {s.get('mode')} fine-tune, "
              f"{s.get('lora_steps')} steps at lr {s.get('lora_lr')}, mimic seeds {s.get('mimic_seeds')}, "
              f"{s.get('k')} samples per content prompt.", "",
              "Seed-to-seed spread of each measure, pooled over the cells: " + "; ".join(
                  f"{m} sd {v['sd']:.4g} ({v['df']} df)" for m, v in curve["spread"].items() if v.get("sd") is not None) + ".", ""]
    ons = onsets(curve)
    purifiers = list(dict.fromkeys(c["purifier"] for c in curve["cells"]))
    for m in M.MEASURES:
        lines += [f"## {MEASURE_TITLES[m]}", "",
                  "Smallest strength (levels) at which the method is outside the clean mimic's interval and beyond the "
                  "Random control's, on the artist's side (**–**: at no strength measured; the strengths measured in brackets).", "",
                  "| method | " + " | ".join(purifiers) + " |", "|---|" + "---|" * len(purifiers)]
        for method in dict.fromkeys(o["method"] for o in ons):
            row = []
            for p in purifiers:
                o = next((o for o in ons if o["method"] == method and o["measure"] == m and o["purifier"] == p), None)
                if o is None:
                    row.append("")
                else:
                    row.append(("**" + f"{o['onset']:g}" + "**" if o["onset"] is not None else "–")
                               + " (" + "/".join(f"{x:g}" for x in o["measured"]) + ")")
            lines.append(f"| {method} | " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Every cell", "", "| method | ε | PSNR | SSIM | purifier | " + " | ".join(M.MEASURES) + " |",
              "|---|---|---|---|---|" + "---|" * len(M.MEASURES)]
    for c in curve["cells"]:
        def fmt(st):
            if st["mean"] is None:
                return ""
            return f"{st['mean']:.3g}" + (f" [{st['lo']:.3g}, {st['hi']:.3g}]" if st["lo"] is not None else "")
        lines.append(f"| {c['method']} | {c['strength'] or 0:g} | {_num(c['psnr'])} | {_num(c['ssim'])} | {c['purifier']} | "
                     + " | ".join(fmt(c["stats"][m]) for m in M.MEASURES) + " |")
    runs = curve.get("invocations") or []
    if runs:
        machines = sorted({r.get("machine", "?") for r in runs})
        lines += ["", f"**Wall time {curve['wall_seconds'] / 60:.1f} min** in {len(runs)} invocation(s) on {'; '.join(machines)}."]
    if command:
        lines += ["", "Reproduce:", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


def write_outputs(curve: dict, out: Path, plan: CurvePlan, folder: Path, command: str | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "curve.csv", folder / "curves.png", folder / "curve.md"]
    write_csv(curve, written[0])
    if curve["cells"]:
        plot_curves(curve, written[1])
    else:
        written.remove(written[1])
    written[-1].write_text(render_markdown(curve, command))
    written += contact_sheets(out, plan, plan.runs(), folder)
    return written
