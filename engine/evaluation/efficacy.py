"""`artveil efficacy`: the efficacy table (docs/efficacy.md) on the proxy world.

Rows are protections, all at the same strength and steps; columns are purifiers. A cell is the held-out style's
accuracy after a mimic's LoRA on the (purified) protected images: the fraction of the LoRA model's generations
that the proxy world's style judge calls the artist's style. Lower is better for the artist; the "none" row is
what the mimic gets from the clean images. Each row also gives the PSNR of its protected images.

The command line is engine.evaluation.efficacy_cli (it also runs the curves, engine.evaluation.curve).

Every cell is one condition of an `artveil eval` run (engine.evaluation.run), one run folder per row, so a
stopped table resumes where it stopped and a changed setting reruns only what depends on it:

    artveil efficacy --model resources/proxy/model --out runs/efficacy --device cuda --write docs/efficacy.md

The artist is the proxy world's held-out style (swirl, never in the model's training set): the same 8 clean
renders the sanity bar's LoRA learns from (plus one held out for the denoising-loss judge), with their
captions in .txt files, and the mimic's LoRA has the sanity bar's settings. A model that has not passed the
sanity bar is refused: on it "the protection stopped the mimic" cannot be told from "the mimic never worked".
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine import machine
from engine.errors import ArtveilError
from engine.jobs import BUDGET_PRESETS, STRENGTH_PRESETS

# (label, method, method parameters): the table of the issue, in its order.
ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("none", "none", {}),
    ("AdvDM", "advdm", {}),
    ("PhotoGuard", "photoguard", {}),
    ("Mist", "mist", {}),
    ("SDS(−)", "sds", {}),
    ("ASPL", "aspl", {}),
    ("Anti-Diffusion", "antidiffusion", {}),
    ("AntiPure", "antipure", {}),
    ("AntiPure w/o PFG", "antipure", {"use_pfg": False}),
    ("AntiPure w/o ETG", "antipure", {"use_etg": False}),
]
# (label, purifier spec or None for the protected images as they are)
COLUMNS: list[tuple[str, str | None]] = [
    ("none", None),
    ("JPEG 75", "jpeg:75"),
    ("Gaussian σ 0.05", "noise:0.05"),
    ("SDEdit 0.1", "sdedit:0.1"),
    ("SDEdit 0.2", "sdedit:0.2"),
    ("SDEdit 0.3", "sdedit:0.3"),
    ("GrIDPure", "gridpure"),
]
JUDGES = ["style_accuracy", "style", "denoise_loss"]

# The two splits of the artist's work (issue 15): knobs are tuned on the "tuning" split, other renders of
# the held-out style with other seeds for the protection and the mimics; the "final" table is measured on
# images and seeds that no tuning saw (the "final" artist images are the ones the sanity bar's mimic
# learns from: that is the mimic shown to work).
# tuning-b and tuning-c are two more render sets of the same style for tuning (issue 28: three tuning gains in a
# row shrank on the final split, which the mimic seeds alone did not sample): a variant is chosen on what holds
# over the sets, not on one set of 8 images.
SPLITS = ("final", "tuning", "tuning-b", "tuning-c")
TUNING_RENDER_OFFSET = 1000  # the tuning split's artist renders: 'artist' seeds + 1000 ...
TUNING_SEED_OFFSET = 100  # ... and protection / mimic seeds + 100 (tuning-b: + 2000 and + 200; tuning-c: + 3000, + 300)


def _sanity():
    from engine.evaluation.sanity import SanitySettings

    return SanitySettings()


def _per_content(samples: int) -> int:
    from engine.proxy.styles import CONTENTS

    return -(-samples // len(CONTENTS))


@dataclass
class EfficacySettings:
    """The shared settings of every row. The mimic (LoRA, sampling) defaults to the sanity bar's own
    (engine.evaluation.sanity.SanitySettings), the one shown to learn the style from the clean images."""

    strength_levels: float = STRENGTH_PRESETS["default"]
    steps: int = BUDGET_PRESETS["default"]
    timesteps_per_step: int = 1
    train_images: int = field(default_factory=lambda: _sanity().lora_images)
    heldout: int = 1
    mimic_mode: str = field(default_factory=lambda: _sanity().mimic_mode)  # "lora" or "full" (DreamBooth-style)
    lora_rank: int = field(default_factory=lambda: _sanity().lora_rank)
    lora_steps: int = field(default_factory=lambda: _sanity().lora_steps)
    lora_lr: float = field(default_factory=lambda: _sanity().lora_lr)
    lora_batch: int = field(default_factory=lambda: _sanity().lora_images)
    lora_repeats: int = field(default_factory=lambda: _sanity().mimic_repeats)
    lora_schedule: str = field(default_factory=lambda: _sanity().mimic_schedule)
    lora_augment: str = field(default_factory=lambda: _sanity().mimic_augment)
    # Each cell is the mean of one mimic per seed (its fine-tune and its samples); the protection and the
    # purification are the same for every seed.
    mimic_seeds: tuple[int, ...] = (0, 1)
    k: int = field(default_factory=lambda: _per_content(_sanity().samples_per_style))  # samples per content prompt
    gen_steps: int = field(default_factory=lambda: _sanity().steps)
    guidance: float = field(default_factory=lambda: _sanity().guidance)
    purify_steps: int | None = None
    seed: int = 0
    split: str = "final"  # or "tuning" (SPLITS)
    rows: list[tuple[str, str, dict[str, Any]]] = field(default_factory=lambda: list(ROWS))
    columns: list[tuple[str, str | None]] = field(default_factory=lambda: list(COLUMNS))


def split_offsets(split: str) -> tuple[int, int]:
    """(render offset of the artist's images, seed offset) of a split."""
    if split not in SPLITS:
        raise ArtveilError("config", f"unknown split {split!r}: one of {', '.join(SPLITS)}")
    k = SPLITS.index(split)  # 0 for the final split
    return k * TUNING_RENDER_OFFSET, k * TUNING_SEED_OFFSET


def slug(label: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in label.replace("−", "minus").replace("/", " "))
    return "-".join(p for p in out.split("-") if p)


def check_proxy_model(model_dir: Path, allow_unchecked: bool) -> tuple[dict, dict | None]:
    """(proxy_world.json, sanity.json or None) of a proxy model folder; refuses what cannot measure efficacy."""
    world_file = model_dir / "proxy_world.json"
    if not world_file.is_file():
        raise ArtveilError("model", f"{model_dir}: not a proxy-world model (no proxy_world.json); the efficacy table "
                                    "needs the project's proxy model (docs/proxy-world.md)")
    world = json.loads(world_file.read_text())
    sanity_file = model_dir / "sanity.json"
    sanity = json.loads(sanity_file.read_text()) if sanity_file.is_file() else None
    passed = bool(sanity and sanity.get("bar", {}).get("passed"))
    if not passed and not allow_unchecked:
        why = "has no sanity.json (run python -m engine.evaluation.sanity first)" if sanity is None else "did not pass the sanity bar"
        raise ArtveilError("model", f"{model_dir.name}: {why}; on such a model no efficacy number means anything "
                                    "(--allow-unchecked runs it anyway, marked as such)")
    return world, sanity


# A row's own settings beside its method's parameters: its strength (levels) and steps, e.g. a dose response
# on the tuning split (--row 'AntiPure ε 32' antipure strength=32), and eot, the protection's expectation over
# transformations ("jpeg", "jpeg+identity": engine.eot's transforms joined by "+"), so a row can optimize
# through a purifier it is measured against.
ROW_SETTINGS = ("strength", "steps", "eot")


def row_eot(own: dict[str, Any]) -> tuple[str, ...]:
    """The EOT transforms of a row's own settings (() for none)."""
    text = own.get("eot") or ""
    return tuple(w for w in str(text).split("+") if w)


def split_row_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the method's parameters, the row's own settings among ROW_SETTINGS) of a row."""
    own = {k: params[k] for k in ROW_SETTINGS if k in params}
    return {k: v for k, v in params.items() if k not in own}, own


def row_strength_steps(settings: "EfficacySettings", params: dict[str, Any]) -> tuple[float, int]:
    """(ε in levels, steps) of a row: its own where it names them, else the table's."""
    _, own = split_row_params(params)
    return float(own.get("strength", settings.strength_levels)), int(own.get("steps", settings.steps))


def validate_rows(rows: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Every row's method and parameters, checked before the first row runs (a typo must not cost hours)."""
    from engine.evaluation.run import NO_PROTECTION
    from engine.jobs import ProtectSettings
    from engine.methods import get_method
    from engine.protect import validate_settings

    labels = [label for label, _, _ in rows]
    if len(set(map(slug, labels))) != len(labels):
        raise ArtveilError("config", f"two rows share a name: {labels}")
    for label, method, params in rows:
        if method == NO_PROTECTION:
            if params:
                raise ArtveilError("config", f"row {label!r}: the 'none' row takes no parameters")
            continue
        params, own = split_row_params(params)
        for key, value in own.items():
            if key == "eot":
                from engine.eot import EOT_TRANSFORMS

                if not isinstance(value, str) or any(w not in EOT_TRANSFORMS for w in value.split("+")):
                    raise ArtveilError("config", f"row {label!r}: eot={value!r}: give transforms among "
                                                 f"{', '.join(EOT_TRANSFORMS)}, joined by '+' (e.g. eot=jpeg)")
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or (key == "steps" and value != int(value)):
                raise ArtveilError("config", f"row {label!r}: {key}={value!r} is not a "
                                             + ("strength in levels" if key == "strength" else "step count"))
        try:
            # The engine's own check of the strength (up to STRENGTH_RANGE's top, steps at least 1),
            # so a row the protection would refuse hours later is refused now.
            validate_settings(ProtectSettings(method=method, strength_levels=float(own.get("strength", STRENGTH_PRESETS["default"])),
                                              steps=int(own.get("steps", BUDGET_PRESETS["default"])), method_params=dict(params),
                                              eot=row_eot(own)))
            get_method(method, params)
        except ArtveilError as exc:
            raise ArtveilError("config", f"row {label!r}: {exc.message}") from None


def write_artist_set(folder: Path, style: str, count: int, resolution: int, offset: int = 0) -> list[Path]:
    """The artist's images: renders of the held-out style from the 'artist' seeds (+ offset), each with a
    caption file."""
    from engine.images import save_image
    from engine.proxy.data import render_set

    art = render_set([style], count, resolution, use="artist", offset=offset)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (img, text) in enumerate(zip(art.images, art.captions)):
        path = folder / f"{style}_{i:02d}.png"
        save_image(img, path, overwrite=True)
        path.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def row_config(settings: EfficacySettings, artist: Path, resolution: int, style: str, method: str,
               params: dict[str, Any]):
    from engine.evaluation.run import EvalConfig
    from engine.proxy.styles import CONTENTS, prompt_for

    seed = settings.seed + split_offsets(settings.split)[1]
    strength, steps = row_strength_steps(settings, params)
    return EvalConfig(
        images=[str(artist)], method=method, strength_levels=strength, steps=steps,
        method_params=split_row_params(params)[0], timesteps_per_step=settings.timesteps_per_step,
        eot=list(row_eot(split_row_params(params)[1])),
        purifiers=[spec for _, spec in settings.columns if spec], purify_steps=settings.purify_steps,
        size=resolution, heldout=settings.heldout, instance_prompt=prompt_for(style), captions="files",
        prompts=[prompt_for(style, c) for c in CONTENTS], k=settings.k, customize_mode=settings.mimic_mode,
        lora_rank=settings.lora_rank,
        lora_lr=settings.lora_lr, lora_steps=settings.lora_steps, lora_batch=settings.lora_batch,
        lora_repeats=settings.lora_repeats, lora_schedule=settings.lora_schedule, lora_augment=settings.lora_augment,
        gen_steps=settings.gen_steps, guidance=settings.guidance, style=style, judges=list(JUDGES), seed=seed,
        mimic_seeds=[seed + m for m in settings.mimic_seeds], clean_control=method == "none",
    )


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of a proportion hits/n (None for n = 0)."""
    if n <= 0:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def cell_from_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from its mimics (one per seed): each judge's mean over the seeds, the style judge's hits
    over all samples pooled with their 95 % Wilson interval, and each seed's accuracy. The cell's "ci" starts
    as that Wilson interval; seed_intervals() replaces it once the table knows the seed-to-seed spread."""
    cell: dict[str, Any] = {j: _mean([m.get(j) for m in per_seed]) for j in JUDGES}
    counted = [m for m in per_seed if m.get("style_accuracy") is not None]
    hits = sum(round(m["style_accuracy"] * m["samples"]) for m in counted)
    n = sum(m["samples"] for m in counted)
    cell.update(hits=hits, n=n, ci=wilson(hits, n), ci_wilson=wilson(hits, n),
                by_seed=[m.get("style_accuracy") for m in per_seed])
    return cell


# Two-sided 95 % quantiles of Student's t for 1-30 degrees of freedom; above 30, the Cornish-Fisher
# expansion around the normal quantile (error < 1e-4 there).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: float) -> float:
    """The 97.5 % quantile of Student's t with df degrees of freedom (df ≥ 1)."""
    if df < 1:
        raise ValueError("t975 needs at least one degree of freedom")
    if df <= len(_T975) and float(df).is_integer():
        return _T975[int(df) - 1]
    z = 1.959963984540054
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def pooled_spread(groups: list[list[float]]) -> tuple[float | None, int]:
    """(sd, degrees of freedom) of the within-group spread pooled over groups (a cell's values over its mimic
    seeds); groups of fewer than two values add nothing; sd None when no group has two."""
    ss, df = 0.0, 0
    for vals in groups:
        if len(vals) >= 2:
            m = sum(vals) / len(vals)
            ss += sum((v - m) ** 2 for v in vals)
            df += len(vals) - 1
    return (math.sqrt(ss / df) if df else None), df


def seed_intervals(table_rows: list[dict], columns: list[str]) -> dict[str, float] | None:
    """Give every cell (in place) a 95 % interval for its mean over mimic seeds, with the seed-to-seed
    spread pooled over every cell of the table; returns {"sd", "df"} of that spread, or None (one seed
    per cell: the cells keep the Wilson interval of their pooled samples).

    Why not the Wilson interval of all samples pooled: the samples of one mimic are not independent draws.
    A mimic's seed (its fine-tune noise) moves its accuracy beyond what its 36 samples explain (on the final
    split's 32-level runs a seed-to-seed sd of 0.113, of which the fine-tune 0.083 and the judge's sampling
    0.077: engine.evaluation.seed_spread), so an interval that counts samples as independent is too narrow and
    calls noise a difference. The spread is pooled because two seeds per cell alone give one degree of freedom (a t
    quantile of 12.7); how far a seed moves the mimic is a property of the mimic, much the same in every cell.
    """
    cells = [r["cells"][c] for r in table_rows for c in columns if c in r.get("cells", {})]
    sd, df = pooled_spread([[v for v in cell.get("by_seed") or [] if v is not None] for cell in cells])
    if sd is None:
        return None
    q = t975(df)
    controls = [r["clean_control"] for r in table_rows if r.get("clean_control")]  # the none cell's own mimics
    for cell in cells + controls:
        vals = [v for v in cell.get("by_seed") or [] if v is not None]
        if not vals:
            cell["ci"] = None
            continue
        m = sum(vals) / len(vals)
        half = q * sd / math.sqrt(len(vals))
        lo, hi = max(0.0, m - half), min(1.0, m + half)
        wil = cell.get("ci_wilson")
        if wil:  # never narrower than the samples alone allow (seeds that happen to agree exactly)
            lo, hi = min(lo, wil[0]), max(hi, wil[1])
        cell["ci"] = (lo, hi)
    return {"sd": sd, "df": df}


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and v == v]
    return sum(vals) / len(vals) if vals else None


def kept_damage(table_rows: list[dict], columns: list[str]) -> None:
    """Fill each row's damage and kept damage per column (in place).

    damage = 1 − accuracy ÷ the clean mimic's accuracy under the same purifier (the "none" row's cell), so a
    purifier that hurts the style by itself is not counted as protection; kept = damage under the purifier
    ÷ damage without one.
    """
    base = next((r for r in table_rows if r["method"] == "none"), None)
    for row in table_rows:
        row["damage"], row["kept"] = {}, {}
        for col in columns:
            acc = row["cells"][col]["style_accuracy"]
            ref = base["cells"][col]["style_accuracy"] if base else None
            row["damage"][col] = None if acc is None or not ref else 1.0 - acc / ref
        first = row["damage"].get(columns[0])
        for col in columns:
            d = row["damage"][col]
            row["kept"][col] = None if d is None or first is None or abs(first) < 1e-9 else d / first


def no_damage_to_keep(row: dict, base: dict, first_column: str) -> bool:
    """True when a row's accuracy with no purifier is inside the noise of the clean mimic's: its kept damage
    (a ratio to that damage) then means nothing."""
    return inside_noise(row["cells"][first_column], base["cells"][first_column])


def inside_noise(cell: dict, base: dict) -> bool:
    """True when a cell's interval overlaps the "none" row's interval in the same column."""
    a, b = cell.get("ci"), base.get("ci")
    return a is None or b is None or (a[0] <= b[1] and b[0] <= a[1])


def _watch_parent(parent_pid: int, every_s: float = 1.0) -> None:
    """In a worker: end this process as soon as its parent is gone (killed, even with -9), so no worker
    outlives the command and writes into the run folder on its own."""
    import threading

    def watch():
        while True:
            time.sleep(every_s)
            if os.getppid() != parent_pid:
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="artveil-parent-watch").start()


def _row_worker(source: str, device: str, threads: int, parent_pid: int, todo, messages) -> None:
    """One of --jobs processes: loads the model itself and runs whole rows (label, EvalConfig, run folder)
    from `todo` until it reads None. Every stage lands in the row's run folder, where the parent's pass
    afterwards finds it done."""
    _watch_parent(parent_pid)
    from engine.chatter import quiet_library_chatter

    quiet_library_chatter()  # a spawned process starts with none of the parent's warning filters
    import torch

    torch.set_num_threads(threads)
    from engine.evaluation.run import run_evaluation
    from engine.models import load_model

    try:
        model = load_model(source, device=device)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the table
        messages.put(("error", "model", f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"))
        return
    while (item := todo.get()) is not None:
        label, config, run_dir = item
        try:
            messages.put(("log", label, f"== {label} ({config.method} {config.method_params or ''}) in a worker of {threads} thread(s)"))
            run_evaluation(model, config, Path(run_dir), log=lambda m, label=label: messages.put(("log", label, "   " + m)))
            messages.put(("done", label, ""))
        except Exception as exc:  # noqa: BLE001
            messages.put(("error", label, f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"))
            return


class Interrupted(ArtveilError):
    """SIGTERM or SIGINT reached a table's parent process: its workers were stopped, the finished stages kept."""

    def __init__(self, signum: int):
        import signal

        super().__init__("cancelled", f"stopped by {signal.Signals(signum).name}; the row workers were stopped and "
                                      "the finished stages kept: run the same command to resume")
        self.signum = signum


class WallClock:
    """The wall time of a table's invocations, kept in OUT/invocations.json: a table stopped and resumed
    counts the time every invocation ran, on which machine, with how many jobs. Rewritten at least once a
    minute while rows run, so a killed invocation loses at most that much of its time."""

    EVERY_S = 60.0

    def __init__(self, out: Path, jobs: int, machine_name: str):
        self.path = out / "invocations.json"
        try:
            earlier = json.loads(self.path.read_text()) if self.path.is_file() else []
        except (OSError, ValueError):
            earlier = []  # an unreadable record only loses the earlier time, never the rows
        self.earlier = [e for e in earlier if isinstance(e, dict) and isinstance(e.get("seconds"), (int, float))] \
            if isinstance(earlier, list) else []
        self.record = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": 0.0, "jobs": jobs, "machine": machine_name}
        self._t0 = time.perf_counter()
        self._written = -math.inf
        self.tick(force=True)

    @property
    def invocations(self) -> list[dict]:
        return self.earlier + [dict(self.record)]

    @property
    def seconds(self) -> float:
        """This invocation's wall time so far."""
        return round(time.perf_counter() - self._t0, 1)

    @property
    def total_seconds(self) -> float:
        return round(sum(e["seconds"] for e in self.invocations), 1)

    def tick(self, force: bool = False) -> None:
        now = time.perf_counter()
        self.record["seconds"] = self.seconds
        if force or now - self._written >= self.EVERY_S:
            self._written = now
            tmp = self.path.with_suffix(".json.part")
            tmp.write_text(json.dumps(self.invocations, indent=1) + "\n")
            os.replace(tmp, self.path)


def rows_in_workers(source: str, device: str, items: list[tuple[str, Any, Path]], jobs: int,
                     log: Callable[[str], None], tick: Callable[[], None] = lambda: None) -> None:
    """Run whole rows, items of (label, EvalConfig, run folder), in `jobs` processes side by side (the CPU's
    cores split between them). SIGTERM or SIGINT to this process stops every worker before it returns
    (raising Interrupted); a worker whose parent is gone stops by itself (_watch_parent)."""
    import multiprocessing as mp
    import queue as queue_mod
    import signal
    import threading

    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    todo, messages = ctx.Queue(), ctx.Queue()
    for label, config, run_dir in items:
        todo.put((label, config, str(run_dir)))
    for _ in range(jobs):
        todo.put(None)
    workers = [ctx.Process(target=_row_worker, args=(source, device, threads, os.getpid(), todo, messages), daemon=True)
               for _ in range(jobs)]

    def stop(signum, _frame):
        raise Interrupted(signum)

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, stop)
    for w in workers:
        w.start()
    error, finished = None, False
    try:
        while error is None and (any(w.is_alive() for w in workers) or not messages.empty()):
            tick()
            try:
                kind, label, text = messages.get(timeout=1.0)
            except queue_mod.Empty:
                continue
            if kind == "log":
                log(f"[{label}] {text}" if text.startswith("   ") else text)
            elif kind == "error":
                error = f"row {label!r} stopped in its worker: {text}" if label != "model" else f"a worker could not load the model: {text}"
        finished = error is None
    finally:
        if not finished:  # an error, a signal or any exception here: no worker may go on alone
            for w in workers:
                w.terminate()
        for w in workers:
            w.join()
        for sig, old in handlers.items():
            signal.signal(sig, old)
    if error is not None:
        raise ArtveilError("internal", error + " (the finished stages are kept: run the same command to resume)")
    bad = [w.exitcode for w in workers if w.exitcode]
    if bad:
        raise ArtveilError("internal", f"a row worker ended with exit code {bad[0]} (out of memory?); the finished "
                                       "stages are kept: run the same command to resume")


def run_efficacy(model, model_dir: Path, out: Path, settings: EfficacySettings, allow_unchecked: bool = False,
                 log: Callable[[str], None] = print, jobs: int = 1, source: str | None = None) -> dict:
    """Run (or resume) every row; returns the table as a dict, also written to out/efficacy.json and .md.

    jobs > 1: the rows first run in that many processes side by side, each loading the model from `source`
    (default: model_dir) with the CPU's cores split between them, then this process assembles the table from
    their run folders (every stage found done). On a 2-core CPU the mimic's small batches leave one process's
    two threads half idle (docs/benchmarks.md). The numbers equal a one-process table's only up to rounding
    (one thread per process sums in another order), which the mimic's 400 steps amplify, so a table records
    its jobs, and a table is best resumed with the jobs it started with."""
    from engine.evaluation.run import condition_name, run_evaluation
    from engine.proxy.styles import HELD_OUT_STYLE

    world, sanity = check_proxy_model(model_dir, allow_unchecked)
    validate_rows(settings.rows)
    resolution = int(world["resolution"])
    style = world.get("held_out_style", HELD_OUT_STYLE)
    render_offset, _ = split_offsets(settings.split)
    earlier = out / "efficacy.json"
    if earlier.is_file():
        was = json.loads(earlier.read_text()).get("settings", {}).get("split", "final")
        if was != settings.split:
            raise ArtveilError("config", f"{out} holds the {was} split's table; run the {settings.split} split "
                                         "in another --out folder")
    out.mkdir(parents=True, exist_ok=True)
    artist = out / "artist"
    write_artist_set(artist, style, settings.train_images + settings.heldout, resolution, render_offset)
    rows: list[dict] = []
    clock = WallClock(out, jobs, machine.describe(model.device))
    if jobs > 1 and len(settings.rows) > 1:
        items = [(label, row_config(settings, artist, resolution, style, method, params), out / "rows" / slug(label))
                 for label, method, params in settings.rows]
        rows_in_workers(source or str(model_dir), str(model.device), items, min(jobs, len(settings.rows)), log,
                         tick=clock.tick)

    def table_so_far() -> dict:
        done = [dict(r) for r in rows]
        kept_damage(done, [c for c, _ in settings.columns])
        spread = seed_intervals(done, [c for c, _ in settings.columns])
        return {
            "model": model.name, "model_dir_name": model_dir.name, "device": str(model.device),
            "date": time.strftime("%Y-%m-%d"), "style": style, "resolution": resolution,
            "sanity_passed": bool(sanity and sanity.get("bar", {}).get("passed")),
            "sanity": {k: sanity.get(k) for k in ("text_to_image", "held_out_without_lora", "held_out_with_lora",
                                                  "sdedit_keeps_style")} if sanity else None,
            "settings": {k: v for k, v in asdict(settings).items() if k not in ("rows", "columns")},
            "columns": [c for c, _ in settings.columns], "rows": done, "seed_spread": spread, "jobs": jobs,
            "rows_planned": [label for label, _, _ in settings.rows],
            # compute: the seconds every stage of every row took when it ran (a resumed stage keeps its
            # first time); seconds: this invocation's wall time; wall_seconds: every invocation's
            "compute_seconds": round(sum(r["seconds"] for r in done), 1),
            "seconds": clock.seconds,
            "wall_seconds": clock.total_seconds, "invocations": clock.invocations,
        }

    def write(table: dict) -> None:
        for name, text in (("efficacy.json", json.dumps(table, indent=1, default=str) + "\n"),
                           ("efficacy.md", render_markdown(table))):
            tmp = out / (name + ".part")
            tmp.write_text(text)
            os.replace(tmp, out / name)

    for label, method, params in settings.rows:
        log(f"== {label} ({method} {params or ''})")
        config = row_config(settings, artist, resolution, style, method, params)
        run_dir = out / "rows" / slug(label)
        results = run_evaluation(model, config, run_dir, log=lambda m: log("   " + m))
        by_seed = results["customization"]["scores_by_seed"]
        cells = {}
        for col, spec in settings.columns:
            cond = "protected" if spec is None else condition_name(spec)
            cells[col] = cell_from_seeds(by_seed[cond])
        quality = results["imperceptibility_mean"] if method != "none" else {}
        stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
        rows.append({"label": label, "method": method, "params": params, "psnr": quality.get("psnr"),
                     "ssim": quality.get("ssim"), "linf_levels": quality.get("linf_levels"),
                     "clean_control": cell_from_seeds(by_seed["clean"]) if "clean" in by_seed else None,
                     "cells": cells,
                     "run": (Path("rows") / slug(label)).as_posix(),
                     "seconds": round(sum(e.get("seconds", 0.0) for e in stages.values()), 1)})
        clock.tick()
        write(table_so_far())  # a stopped table still has every finished row on disk
    clock.tick(force=True)
    table = table_so_far()
    write(table)
    return table


def _cell(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _acc_cell(cell: dict, base: dict | None, is_base: bool) -> str:
    if cell.get("style_accuracy") is None:
        return "–"
    ci = cell.get("ci")
    text = f"{cell['style_accuracy']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    if not is_base and base is not None and inside_noise(cell, base):
        text += " ≈"
    return text


PROTECTED_BASELINES = ("advdm", "photoguard", "mist", "sds", "aspl", "antidiffusion")


def worst_column(table: dict) -> str | None:
    """The purifier column (not "none") that leaves the mimic the most: the highest mean accuracy over the
    protected rows; the mimic's best choice, and the one the goal is measured under."""
    cols = [c for c in table["columns"] if c != "none"]
    protected = [r for r in table["rows"] if r["method"] != "none"]
    if not cols or not protected:
        return None
    def mean_acc(col):
        vals = [r["cells"][col]["style_accuracy"] for r in protected if r["cells"][col]["style_accuracy"] is not None]
        return sum(vals) / len(vals) if vals else -1.0
    return max(cols, key=mean_acc)


def goal_verdict(table: dict) -> list[str]:
    """The issue's goal, checked on the table: AntiPure keeps ≥ 70 % of its damage under the worst purifier
    at PSNR ≥ 32 dB and beats every baseline there."""
    col = worst_column(table)
    ap = next((r for r in table["rows"] if r["label"] == "AntiPure"), None)
    if col is None or ap is None:
        return []
    kept = ap["kept"].get(col)
    psnr = ap.get("psnr")
    acc = ap["cells"][col]["style_accuracy"]
    rivals = [r for r in table["rows"] if r["method"] in PROTECTED_BASELINES and r["cells"][col]["style_accuracy"] is not None]
    beaten = [r["label"] for r in rivals if acc is not None and acc < r["cells"][col]["style_accuracy"]]
    clear = [r["label"] for r in rivals if acc is not None and r["cells"][col].get("ci") and ap["cells"][col].get("ci")
             and ap["cells"][col]["ci"][1] < r["cells"][col]["ci"][0]]
    base = next((r for r in table["rows"] if r["method"] == "none"), None)
    nothing = base is not None and no_damage_to_keep(ap, base, table["columns"][0])
    ok = (not nothing and kept is not None and kept >= 0.7 and psnr is not None and psnr >= 32
          and len(beaten) == len(rivals))
    kept_text = ("n/a (with no purifier its damage is already inside the noise)" if nothing else _cell(kept))
    return [
        f"Worst purifier of the table (highest mean accuracy over the protected rows): **{col}**. AntiPure there: "
        f"accuracy {_cell(acc)}, kept damage {kept_text}, PSNR {_cell(psnr)} dB; lower accuracy than "
        f"{len(beaten)} of {len(rivals)} baselines ({', '.join(beaten) or 'none'}), with non-overlapping intervals "
        f"against {len(clear)} ({', '.join(clear) or 'none'}).",
        "",
        "**Goal (≥ 70 % kept under the worst purifier at PSNR ≥ 32 dB, and better than every baseline there): "
        + ("met.**" if ok else "not met.**"),
    ]


def render_markdown(table: dict, command: str | None = None) -> str:
    s = table["settings"]
    own_settings = []  # rows that set their own ε or steps (a dose response)
    for r in table["rows"]:
        own = split_row_params(r.get("params") or {})[1]
        if own:
            own_settings.append(f"{r['label']} " + ", ".join(f"{k} {v:g}" if k != "eot" else f"EOT {v}"
                                                             for k, v in own.items()))
    seeds = len(s.get("mimic_seeds") or [0])
    lines = ["# Efficacy on the proxy world", ""]
    if s.get("split", "final") != "final":
        renders, seeds_off = split_offsets(s["split"])
        lines += [f"**Tuning split**: the artist's renders from seed offset {renders}, protection and mimic seeds "
                  f"from {s['seed'] + seeds_off}; not the final table, whose images and seeds no tuning sees.", ""]
    if not table["sanity_passed"]:
        lines += ["**UNCHECKED MODEL: it has not passed the sanity bar, so these numbers measure nothing.**", ""]
    lines += [
        f"Model `{table['model_dir_name']}` on {table['device']}, {table['date']}; artist style **{table['style']}** "
        f"(held out of the model's training), {table['resolution']} px, {s['train_images']} training images.",
        f"Every protection at ε = {s['strength_levels']:g}/255 and {s['steps']} steps"
        + (" (except where a row names its own: " + "; ".join(own_settings) + ")" if own_settings else "")
        + ", the set protected through engine.batch as the window and the CLI do. Mimic: "
        + ("a DreamBooth-style fine-tune of the whole UNet" if s.get("mimic_mode") == "full"
           else f"LoRA rank {s['lora_rank']}")
        + f", {s['lora_steps']} steps of {s['lora_batch']} images"
        + (f" × {s['lora_repeats']}" if s.get("lora_repeats", 1) > 1 else "")
        + f", lr {s['lora_lr']:g} ({s.get('lora_schedule', 'constant')})"
        + (f", {s['lora_augment']} augmentation" if s.get("lora_augment", "none") != "none" else "")
        + ", captions from the renders; "
        f"{seeds} mimic seed(s) per cell, each {s['k']} sample(s) per content prompt, DDIM {s['gen_steps']}, "
        f"guidance {s['guidance']:g}.",
        "",
        "## Held-out style accuracy of the mimic's samples",
        "",
        "The fraction of the mimic's generations that the style judge calls the artist's style (**lower is better** "
        "for the artist), after training on the protected images passed through the column's purifier: the mean "
        "over the mimic seeds, with "
        + (f"its 95 % interval (Student's t, the seed-to-seed spread pooled over every cell of this table: "
           f"sd {table['seed_spread']['sd']:.3f} per seed, {table['seed_spread']['df']} degrees of freedom). A mimic's "
           "seed moves its accuracy far more than its number of samples explains, so the interval counts seeds, "
           "not samples (the Wilson interval of the pooled samples, which earlier tables printed, is in "
           "`efficacy.json` as `ci_wilson`)."
           if table.get("seed_spread") else
           "the 95 % Wilson interval of all its samples pooled (one mimic seed per cell: the seed-to-seed spread, "
           "which is larger, is not measured, so these intervals are too narrow).")
        + " **≈**: the interval overlaps the *none* row's in that column, so the difference is inside the noise.",
        "",
    ]
    cols = table["columns"]
    base = next((r for r in table["rows"] if r["method"] == "none"), None)
    lines.append("| protection | PSNR dB | SSIM | " + " | ".join(cols) + " |")
    lines.append("|---|---|---|" + "---|" * len(cols))
    for r in table["rows"]:
        cells = " | ".join(_acc_cell(r["cells"][c], base["cells"][c] if base else None, r is base) for c in cols)
        psnr, ssim = r.get("psnr"), r.get("ssim")
        lines.append(f"| {r['label']} | {'–' if psnr is None else f'{psnr:.1f}'} | "
                     f"{'–' if ssim is None else f'{ssim:.3f}'} | {cells} |")
    lines += ["", "## Kept damage", "",
              "damage = 1 − accuracy ÷ the *none* row's accuracy under the same purifier; kept = damage under the "
              "purifier ÷ damage with none (1.00: the purifier removed nothing of the protection). **n/a**: the "
              "row's damage with no purifier is inside the noise (≈), so there is no damage to keep and a ratio to "
              "it would only divide noise by noise.", "",
              "| protection | damage (none) | " + " | ".join(f"kept: {c}" for c in cols[1:]) + " |",
              "|---|---|" + "---|" * (len(cols) - 1)]
    for r in table["rows"]:
        if r["method"] == "none":
            continue
        if base is not None and no_damage_to_keep(r, base, cols[0]):
            lines.append(f"| {r['label']} | {_cell(r['damage'].get(cols[0]))} ≈ | "
                         + " | ".join("n/a" for _ in cols[1:]) + " |")
            continue
        lines.append(f"| {r['label']} | {_cell(r['damage'].get(cols[0]))} | "
                     + " | ".join(_cell(r["kept"].get(c)) for c in cols[1:]) + " |")
    lines += ["", "## Second figure: the judge's mean probability of the artist's style", "",
              "Independent of the accuracy threshold: the style judge's mean softmax probability of the held-out "
              "style over the same samples (lower is better for the artist).", "",
              "| protection | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for r in table["rows"]:
        lines.append(f"| {r['label']} | " + " | ".join(_cell(r["cells"][c].get("style")) for c in cols) + " |")
    lines += ["", "Per seed (accuracy of each mimic seed, none column): " + "; ".join(
        f"{r['label']} " + "/".join(_cell(v) for v in r["cells"][cols[0]].get("by_seed", [])) for r in table["rows"]), ""]
    lines += goal_verdict(table) + [""]
    if table.get("sanity"):
        san = table["sanity"]
        lines.append(f"Sanity bar of this model: text to image min {san['text_to_image']['min']:.2f}, held-out style "
                     f"{san['held_out_without_lora']:.2f} before the mimic and {san['held_out_with_lora']:.2f} after, "
                     f"SDEdit 0.2 keeps style {san['sdedit_keeps_style']['mean']:.2f}.")
        lines.append("")
    planned = table.get("rows_planned") or []
    if len(table["rows"]) < len(planned):
        lines += [f"**Partial table: {len(table['rows'])} of {len(planned)} rows finished** (still to run: "
                  + ", ".join(planned[len(table["rows"]):]) + ").", ""]
    compute = table.get("compute_seconds", table["seconds"])
    runs = table.get("invocations")
    if runs:
        machines = sorted({r.get("machine", "?") for r in runs})
        lines.append(f"**Wall time {table['wall_seconds'] / 60:.1f} min** in {len(runs)} invocation(s)"
                     + (" (" + ", ".join(f"{r['seconds'] / 60:.1f} min with --jobs {r.get('jobs', 1)}" for r in runs) + ")"
                        if len(runs) > 1 else "")
                     + f" on {'; '.join(machines)}.")
    if table.get("jobs", 1) > 1:
        lines.append(f"Rows ran side by side in {table['jobs']} processes (`--jobs {table['jobs']}`)"
                     + ("" if runs else f"; wall time of the last invocation {table['seconds'] / 60:.1f} min")
                     + ", the compute below summed over the processes.")
    lines.append(f"Compute time {compute / 60:.1f} min; per row: " +
                 ", ".join(f"{r['label']} {r['seconds'] / 60:.1f}" for r in table["rows"]) + " min. Every number, "
                 "with the files it came from, is in each row's `results.json`.")
    if command:
        lines += ["", "Reproduce:", "", "```", command, "```"]
    return "\n".join(lines) + "\n"
