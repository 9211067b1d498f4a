"""The evaluation pipeline as resumable stages (methods.md §1 and §6).

Run folder layout (all paths in the manifest and in results.json are relative to it):

    manifest.json                  one entry per finished stage: key (hash of what it depends on), files
    clean/  heldout/               the artist's images at size×size (training set / held-out for judging)
    protected/                     the protected training images, exported as 8-bit PNG
    purified/<purifier>/           what the mimic trains on after each purifier
    lora/<condition>.safetensors   the mimic's fine-tune per condition (clean control, protected, purified)
    generated/<condition>/         K samples per prompt, same seeds in every condition
    edit/...                       the editing path, when an edit folder is given
    results.json  report.md  grids/

A stage is skipped when the manifest has it with the same key and all its files exist; a changed
setting changes the key of that stage and of everything downstream, which then runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from engine.errors import ArtveilError
from engine.events import Event, Failed, Message, Progress, Result
from engine.evaluation import customize as C
from engine.evaluation import generate as G
from engine.evaluation import judges as J
from engine.images import collect_inputs, load_image, safe_stem, save_image
from engine.jobs import BUDGET_PRESETS, STRENGTH_PRESETS, Job, ProtectResult, ProtectSettings
from engine.models import ModelBundle
from engine.purify import get_purifier, parse_purifier, purifier_label, purify


@dataclass
class EvalConfig:
    """Everything an evaluation depends on. strength_levels: pixel levels (0-255); size: px (square)."""

    images: list[str] = field(default_factory=list)
    method: str = "antipure"  # or "none": the mimic gets the clean images (the table's baseline row)
    strength_levels: float = STRENGTH_PRESETS["default"]
    steps: int = BUDGET_PRESETS["default"]
    method_params: dict[str, Any] = field(default_factory=dict)
    timesteps_per_step: int = 1
    eot: list[str] = field(default_factory=list)  # the protection's EOT transforms (engine.eot); [] none
    purifiers: list[str] = field(default_factory=lambda: ["sdedit:0.2", "jpeg:75"])
    purify_steps: int | None = None  # DDIM steps of diffusion purifiers (None: their default)
    size: int = 512
    heldout: int = 1
    instance_prompt: str = "a painting in sks style"
    prompts: list[str] | None = None  # None: the instance prompt alone
    k: int = 4
    customize_mode: str = "lora"
    lora_rank: int = 4
    lora_lr: float | None = None
    lora_steps: int = 200
    lora_batch: int = 1  # images per LoRA step
    lora_repeats: int = 1  # each image this many times per step (engine.evaluation.customize)
    lora_schedule: str = "constant"  # or "cosine"
    lora_augment: str = "none"  # "flip" or "dihedral"
    captions: str = "instance"  # "instance": every image captioned instance_prompt; "files": IMAGE.txt beside each
    gen_steps: int = 30
    guidance: float = 7.5
    edit_dir: str | None = None
    edit_strength: float = 0.5
    edit_steps: int = 30
    style: str | None = None  # the artist's style name for the style-classifier judge
    judges: list[str] = field(default_factory=lambda: ["image_stats", "denoise_loss", "style", "style_accuracy"])
    seed: int = 0
    # The mimic's seeds (its fine-tune and its sampling), each a mimic of its own on the same protected and
    # purified images; scores are their mean. None: one mimic with `seed`.
    mimic_seeds: list[int] | None = None
    # False: no mimic on the clean images in this run (the efficacy table's "none" row is every row's
    # control, so each protected row need not train it again); its damage figures are then left out.
    clean_control: bool = True

    def mimic_seed_list(self) -> list[int]:
        return list(self.mimic_seeds) if self.mimic_seeds else [self.seed]

    def protect_settings(self) -> ProtectSettings:
        return ProtectSettings(
            method=self.method, strength_levels=self.strength_levels, steps=self.steps, seed=self.seed,
            working_size=max(64, self.size), timesteps_per_step=self.timesteps_per_step,
            preview_every=0, measure_objective=False, method_params=dict(self.method_params), eot=tuple(self.eot),
        )


NO_PROTECTION = "none"


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def protect_key(upstream: str, settings: ProtectSettings) -> str:
    """The protect stage's key: the settings as given and every parameter the method runs with, its defaults
    included, so a protection made before a method's defaults changed is made again, not reused."""
    from engine.methods import get_method

    method = asdict(get_method(settings.method, settings.method_params).params)
    return _key(upstream, asdict(settings), method)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class StageDone:
    """Progress's detail when a stage of an evaluation ends: its name, its seconds, whether an earlier run
    had done it (then it was skipped)."""

    name: str
    seconds: float
    skipped: bool = False


def stage_line(event: Event) -> str | None:
    """One log line for an evaluation's event ('customize:protected-seed0: done in 73.1s'); None: nothing to say."""
    match event:
        case Progress(detail=StageDone(name=name, skipped=True)):
            return f"{name}: done before, skipped"
        case Progress(detail=StageDone(name=name, seconds=seconds)):
            return f"{name}: done in {seconds:.1f}s"
        case Message(text=text):
            return text
    return None


class StageRunner:
    """Runs named stages once; the manifest remembers what each produced and from which inputs. Each stage's
    end is Progress(stage name, stages done so far, detail=StageDone) to the job; Stop is checked before each."""

    def __init__(self, run_dir: Path, job: Job):
        self.run_dir = run_dir
        self.job = job
        self.path = run_dir / "manifest.json"
        self.manifest = json.loads(self.path.read_text()) if self.path.exists() else {"stages": {}}
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def done(self, name: str, key: str) -> bool:
        entry = self.manifest["stages"].get(name)
        return bool(entry and entry["key"] == key and all((self.run_dir / f).exists() for f in entry["files"]))

    def run(self, name: str, key: str, fn: Callable[[], tuple[list[Path], dict]]) -> dict:
        self.job.check()
        if self.done(name, key):
            self.skipped.append(name)
            self.job.report(Progress(name, len(self.ran) + len(self.skipped), detail=StageDone(name, 0.0, True)))
            return self.manifest["stages"][name]
        start = time.perf_counter()
        files, info = fn()
        entry = {
            "key": key,
            "files": [Path(f).relative_to(self.run_dir).as_posix() for f in files],
            "info": info,
            "seconds": round(time.perf_counter() - start, 3),
        }
        self.manifest["stages"][name] = entry
        tmp = self.path.with_suffix(".json.part")
        tmp.write_text(json.dumps(self.manifest, indent=1))
        os.replace(tmp, self.path)
        self.ran.append(name)
        self.job.report(Progress(name, len(self.ran) + len(self.skipped), detail=StageDone(name, entry["seconds"])))
        return entry


def square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square, resize to size×size (Lanczos), RGB uint8: what a mimic's trainer does."""
    h, w = pixels.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    img = Image.fromarray(np.ascontiguousarray(pixels[y : y + s, x : x + s, :3]))
    if s != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def _save(pixels: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_image(pixels, path, overwrite=True)


def _read(run_dir: Path, rel: str) -> np.ndarray:
    return load_image(run_dir / rel).pixels[..., :3]


def condition_name(purifier_spec: str) -> str:
    name, params = parse_purifier(purifier_spec)
    return "purified-" + re.sub(r"[^A-Za-z0-9.]+", "-", purifier_label(name, params)).strip("-")


def _purify_params(config: EvalConfig, spec: str) -> tuple[str, dict]:
    """The spec's purifier and parameters, with config.purify_steps for every purifier that declares steps."""
    name, params = parse_purifier(spec)
    if config.purify_steps and get_purifier(name).param("steps") is not None:
        params["steps"] = config.purify_steps
    return name, params


def _protect_purify_stages(runner: StageRunner, model: ModelBundle, config: EvalConfig, prefix: str,
                           clean_files: list[str], upstream: str) -> dict[str, tuple[list[str], str]]:
    """protect → purify for one set of clean files; returns {condition: (files, key)} incl. "clean"."""
    from engine import batch as B

    run_dir = runner.run_dir
    conditions = {"clean": (clean_files, upstream)}
    if config.method == NO_PROTECTION:
        # The baseline row: the mimic trains on the clean images themselves (and their purified copies).
        conditions["protected"] = (list(clean_files), upstream)
    else:
        settings = config.protect_settings()
        pkey = protect_key(upstream, settings)

        def protect():
            # The very batch the window and the CLI run: one surrogate shared across the set, PNG export.
            out = run_dir / prefix / "protected"
            # (the run keeps its own resume, so no journal; each file keeps its clean name, which later
            # stages key prompts by)
            options = B.BatchOptions(out, fmt="png", model_source=model.name, on_existing="overwrite", redo=True,
                                     journal=False)
            files, seconds = [], []
            for event in B.protect_batch(model, [run_dir / f for f in clean_files], settings, options):
                match event:
                    case Failed(message=message):
                        raise ArtveilError("input", message)
                    case Result(value=B.ImageDone(result=ProtectResult() as result) as done):
                        files.append(str(done.target.replace(out / Path(clean_files[done.index]).name)))
                        seconds.append(round(result.seconds, 3))
                    case Result(value=B.BatchDone(stopped=True)):
                        raise ArtveilError("internal", "the protection batch stopped before its end.")
            return files, {"seconds_per_image": seconds}

        conditions["protected"] = (runner.run(f"{prefix}protect", pkey, protect)["files"], pkey)
    protected, pkey = conditions["protected"]
    for spec in config.purifiers:
        cond = condition_name(spec)
        name, params = _purify_params(config, spec)
        ukey = _key(pkey, spec, params)

        def do_purify(name=name, params=params, cond=cond):
            out = [_save(purify(model, _read(run_dir, f), name, seed=config.seed, **params),
                         run_dir / prefix / "purified" / cond / Path(f).name) for f in protected]
            return out, {"purifier": name, "params": params}

        conditions[cond] = (runner.run(f"{prefix}purify:{cond}", ukey, do_purify)["files"], ukey)
    return conditions


def logging_job(log: Callable[[str], None]) -> Job:
    """A Job that writes each of an evaluation's events as its one line (stage_line) to log."""

    def as_lines(event: Event) -> None:
        line = stage_line(event)
        if line is not None:
            log(line)

    return Job(as_lines)


def check_config(config: EvalConfig) -> None:
    """ArtveilError("config") in one line for a purifier, judge or method the evaluation does not know."""
    from engine.methods import CONTROLS, METHODS

    for spec in config.purifiers:
        parse_purifier(spec)
    unknown = set(config.judges) - set(J.JUDGES)
    if unknown:
        raise ArtveilError("config", f"unknown judge(s) {sorted(unknown)}; known: {', '.join(J.JUDGES)}")
    if config.method != NO_PROTECTION and config.method not in METHODS and config.method not in CONTROLS:
        raise ArtveilError("config", f"unknown method {config.method!r}; known: {NO_PROTECTION}, "
                                     f"{', '.join(sorted(METHODS) + sorted(CONTROLS))}")


def run_evaluation(model: ModelBundle, config: EvalConfig, run_dir: str | os.PathLike, log: Callable[[str], None] = print,
                   job: Job | None = None) -> dict:
    """Run (or resume) an evaluation in run_dir; returns the results dict also written to results.json.

    Each stage's end goes to the job as Progress (detail: StageDone); without a job, to log as one line each
    (stage_line). Stop on the job ends it before its next stage, the finished ones kept."""
    from engine.evaluation.report import write_report

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(run_dir, job if job is not None else logging_job(log))
    check_config(config)
    if config.captions not in ("instance", "files"):
        raise ArtveilError("config", f"captions must be 'instance' or 'files', not {config.captions!r}")
    inputs = collect_inputs(config.images)
    if len(inputs) < config.heldout + 1:
        raise ArtveilError("input", f"need at least {config.heldout + 1} images ({config.heldout} held out for judging), found {len(inputs)}")
    size = config.size // 8 * 8
    prompts = config.prompts or [config.instance_prompt]
    names = [f"{i:03d}_{safe_stem(p.stem)}.png" for i, p in enumerate(inputs)]
    captions = {n: read_caption(p) if config.captions == "files" else config.instance_prompt for n, p in zip(names, inputs)}

    # ---- prepare: the artist's images at the working size, split into training and held-out
    # The files' bytes, not only their names: an image edited in place (or an artist set written again
    # with other renders into the same folder) must not reuse stages made from the old pixels. Their names
    # and bytes, not where they lie: a run folder moved or copied with its images (another machine, another
    # checkout) keeps every finished stage.
    prep_key = _key([(n, _digest(p)) for n, p in zip(names, inputs)], size, config.heldout, model.name)
    if config.captions == "files":
        prep_key = _key(prep_key, captions)

    def prepare():
        files = []
        for i, (p, name) in enumerate(zip(inputs, names)):
            folder = "heldout" if i >= len(inputs) - config.heldout else "clean"
            files.append(_save(square(load_image(p).pixels, size), run_dir / folder / name))
        return files, {"sources": [p.name for p in inputs], "captions": captions}

    prep = runner.run("prepare", prep_key, prepare)
    clean_files = [f for f in prep["files"] if f.startswith("clean/")]
    heldout_files = [f for f in prep["files"] if f.startswith("heldout/")]
    conditions = _protect_purify_stages(runner, model, config, "", clean_files, prep_key)

    # ---- customize and generate, one mimic per condition and mimic seed
    customized: dict[str, dict] = {}
    by_key: dict[str, dict] = {}
    seeds = config.mimic_seed_list()
    for cond, (files, ckey) in conditions.items():
        if cond == "clean" and not config.clean_control and config.method != NO_PROTECTION:
            continue
        mimics = []
        for mseed in seeds:
            cs = customize_settings(config, mseed)
            lkey = _key(ckey, asdict(cs), config.instance_prompt, config.captions)
            if lkey in by_key:  # the same training set as an earlier condition (method "none"): same mimic
                mimics.append(by_key[lkey])
                continue
            # One seed keeps the names of a plain evaluation; several get the seed in every name.
            tag = cond if config.mimic_seeds is None else f"{cond}-seed{mseed}"

            def do_customize(tag=tag, files=files, cs=cs):
                texts = [captions[Path(f).name] for f in files] if config.captions == "files" else config.instance_prompt
                surrogate, losses = C.customize(model, [_read(run_dir, f) for f in files], texts, cs)
                path = run_dir / "lora" / f"{tag}.safetensors"
                path.parent.mkdir(parents=True, exist_ok=True)
                surrogate.save(path)
                return [path], {"loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}

            lora_entry = runner.run(f"customize:{tag}", lkey, do_customize)
            gkey = _key(lkey, prompts, config.k, config.gen_steps, config.guidance, size, mseed)

            def do_generate(tag=tag, lora=lora_entry["files"][0], cs=cs, mseed=mseed):
                from engine.surrogate import Surrogate

                surrogate = Surrogate.load(model, run_dir / lora, cs.surrogate_params())
                rows = G.generate(model, prompts, config.k, size, surrogate, mseed, config.gen_steps, config.guidance)
                files = [_save(img, run_dir / "generated" / tag / f"p{j}_{i}.png") for j, row in enumerate(rows) for i, img in enumerate(row)]
                return files, {}

            gen_entry = runner.run(f"generate:{tag}", gkey, do_generate)
            mimic = {"seed": mseed, "lora": lora_entry["files"][0], "generated": gen_entry["files"], "key": gkey,
                     "train_loss": lora_entry["info"]}
            by_key[lkey] = mimic
            mimics.append(mimic)
        first = mimics[0]
        customized[cond] = {"train": files, "lora": first["lora"], "generated": first["generated"],
                            "key": _key([m["key"] for m in mimics]), "train_loss": first["train_loss"], "mimics": mimics}

    # ---- editing path: each image edited with its own prompt, compared with the edit of the clean image
    edits: dict[str, dict] = {}
    if config.edit_dir:
        edit_inputs = [p for p in collect_inputs([config.edit_dir])]
        if not edit_inputs:
            raise ArtveilError("input", f"{config.edit_dir}: no images for the editing evaluation")
        ekey = _key([(p.name, _digest(p)) for p in edit_inputs], size, model.name)

        def edit_prepare():
            files, prompts_by_file = [], {}
            for i, p in enumerate(edit_inputs):
                txt = p.with_suffix(".txt")
                if not txt.exists():
                    raise ArtveilError("input", f"{p.name}: no prompt file {txt.name} next to it (Defense-Edit layout)")
                f = _save(square(load_image(p).pixels, size), run_dir / "edit" / "clean" / f"{i:03d}_{safe_stem(p.stem)}.png")
                files.append(f)
                prompts_by_file[f.name] = txt.read_text(encoding="utf-8").strip()
            return files, {"prompts": prompts_by_file}

        ep = runner.run("edit:prepare", ekey, edit_prepare)
        edit_prompts = ep["info"]["prompts"]
        edit_conditions = _protect_purify_stages(runner, model, config, "edit/", ep["files"], ekey)
        for cond, (files, ck) in edit_conditions.items():
            dkey = _key(ck, config.edit_strength, config.edit_steps, config.guidance, config.seed, edit_prompts)

            def do_edit(cond=cond, files=files):
                out = []
                for f in files:
                    prompt = edit_prompts[Path(f).name]
                    img = G.edit(model, _read(run_dir, f), prompt, config.edit_strength, config.seed, config.edit_steps, config.guidance)
                    out.append(_save(img, run_dir / "edit" / "edited" / cond / Path(f).name))
                return out, {}

            edits[cond] = {"inputs": files, "edited": runner.run(f"edit:{cond}", dkey, do_edit)["files"], "key": dkey}

    # ---- score and report
    skey = _key({c: v["key"] for c, v in customized.items()}, {c: v["key"] for c, v in edits.items()},
                heldout_files, config.judges, config.style, config.instance_prompt)

    def score():
        results = score_run(model, config, run_dir, clean_files, heldout_files, conditions, customized, edits)
        files = write_report(run_dir, results)
        return files, {}

    runner.run("score", skey, score)
    results = json.loads((run_dir / "results.json").read_text())
    results["stages_run"], results["stages_skipped"] = runner.ran, runner.skipped
    return results


def score_run(model, config: EvalConfig, run_dir: Path, clean_files, heldout_files, conditions, customized, edits) -> dict:
    """All numbers of the report, from the files on disk (so they can be recomputed from results.json)."""
    from engine.metrics import image_metrics
    from engine.surrogate import Surrogate

    reference = [_read(run_dir, f) for f in clean_files]
    heldout = [_read(run_dir, f) for f in heldout_files]
    purified = [c for c in conditions if c.startswith("purified-")]
    imperceptibility = []
    for c, p in zip(conditions["clean"][0], conditions["protected"][0]):
        m = image_metrics(_read(run_dir, c), _read(run_dir, p))
        imperceptibility.append({"clean": c, "protected": p, **{k: (None if v != v else v) for k, v in m.items()}})
    scores: dict[str, dict[str, float | None]] = {}
    by_seed: dict[str, list[dict[str, Any]]] = {}
    for cond, info in customized.items():
        per_seed = []
        for mimic in info["mimics"]:
            surrogate = Surrogate.load(model, run_dir / mimic["lora"], customize_settings(config, mimic["seed"]).surrogate_params())
            inputs = J.JudgeInputs(model=model, generated=[_read(run_dir, f) for f in mimic["generated"]],
                                   reference=reference, heldout=heldout, surrogate=surrogate,
                                   prompt=config.instance_prompt, style=config.style)
            per_seed.append({"seed": mimic["seed"], "samples": len(mimic["generated"]),
                             **{name: J.JUDGES[name](inputs) for name in config.judges}})
        by_seed[cond] = per_seed
        scores[cond] = {name: _mean([row[name] for row in per_seed]) for name in config.judges}
    judges_used = [j for j in config.judges if all(scores[c][j] is not None for c in scores)]
    customization = {
        "scores": scores,
        "scores_by_seed": by_seed,
        "damage": {c: {j: scores["clean"][j] - scores[c][j] for j in judges_used} for c in scores if c != "clean"}
        if "clean" in scores else {},
        "retained": {c: {j: J.damage_retained(scores["clean"][j], scores[c][j], scores["protected"][j]) for j in judges_used} for c in purified}
        if "clean" in scores else {},
    }
    customization["worst_retained"] = _worst(customization["retained"], judges_used)
    results: dict[str, Any] = {
        "config": asdict(config),
        "model": model.name,
        "model_is_demo": bool(model.is_demo),
        "imperceptibility": imperceptibility,
        "imperceptibility_mean": {k: _mean([r[k] for r in imperceptibility]) for k in ("psnr", "ssim", "ms_ssim", "linf_levels")},
        "judges": judges_used,
        "customization": customization,
        "files": {c: {"train": v["train"], "lora": v["lora"], "generated": v["generated"],
                      "mimics": [{"seed": m["seed"], "generated": m["generated"]} for m in v["mimics"]]}
                  for c, v in customized.items()},
        "heldout": heldout_files,
        "reference": list(clean_files),
    }
    if edits:
        clean_edits = [_read(run_dir, f) for f in edits["clean"]["edited"]]
        edit_scores = {}
        for cond, info in edits.items():
            # −MSE in [0, 1]² units against the clean image's edit: 0 for the clean condition itself.
            errs = [float(((_read(run_dir, f).astype(np.float64) - ce) / 255.0).__pow__(2).mean()) for f, ce in zip(info["edited"], clean_edits)]
            edit_scores[cond] = -float(np.mean(errs))
        edit_purified = [c for c in edits if c.startswith("purified-")]
        retained = {c: {"edit_mse": J.damage_retained(edit_scores["clean"], edit_scores[c], edit_scores["protected"])} for c in edit_purified}
        results["editing"] = {
            "scores": {c: {"edit_mse": s} for c, s in edit_scores.items()},
            "retained": retained,
            "worst_retained": _worst(retained, ["edit_mse"]),
            "files": {c: {"inputs": v["inputs"], "edited": v["edited"]} for c, v in edits.items()},
        }
    return results


def customize_settings(config: EvalConfig, seed: int | None = None) -> C.CustomizeSettings:
    """The mimic's fine-tune settings; seed: the mimic's seed (None: config.seed)."""
    return C.CustomizeSettings(mode=config.customize_mode, rank=config.lora_rank, lr=config.lora_lr,
                               steps=config.lora_steps, seed=config.seed if seed is None else seed,
                               batch_size=config.lora_batch, repeats=config.lora_repeats,
                               schedule=config.lora_schedule, augment=config.lora_augment)


def read_caption(image: Path) -> str:
    """The caption a LoRA trainer reads for an image: IMAGE.txt beside it (kohya/diffusers convention)."""
    txt = image.with_suffix(".txt")
    if not txt.is_file():
        raise ArtveilError("input", f"{image.name}: no caption file {txt.name} beside it (--captions files)")
    text = txt.read_text(encoding="utf-8", errors="replace").strip()
    if not text:
        raise ArtveilError("input", f"{txt.name}: the caption file is empty")
    return text


def _mean(values):
    vals = [v for v in values if v is not None and v == v and v != float("inf")]
    return float(np.mean(vals)) if vals else None


def _worst(retained: dict[str, dict[str, float | None]], judges: list[str]) -> dict[str, dict | None]:
    """Per judge, the purifier that leaves the least damage (the mimic's best choice)."""
    worst = {}
    for j in judges:
        rows = [(c, r[j]) for c, r in retained.items() if r.get(j) is not None]
        worst[j] = None if not rows else dict(zip(("condition", "retained"), min(rows, key=lambda cr: cr[1])))
    return worst
