"""`artveil bench`: seconds per step, seconds per image and peak memory of every method.

    artveil bench [--model sd15|sd21-base|tiny|PATH] [--size 512] [--steps 10] [--json]

Each method runs twice on the same deterministic image: through the real optimizer loop
(engine.protect, with the speed options given) and through a naive reference loop written the way a
first implementation would be (fp32 weights left trainable so every backward also computes weight
gradients, eager, one graph from pixels to loss, no autocast, channels_last, checkpointing, compile
or cuDNN autotuning). Both are timed in the same process, after warm-up steps, so the speed-up is
measured rather than assumed.

--model sd15 (default) builds an SD 1.5-shaped pipeline from the configs shipped in
resources/model_configs with random weights: convolutions and attention cost the same whatever the
weights hold, so the timings are those of the real model, with no download. Seconds per image are
extrapolated to 100 optimizer steps (the default budget) from the timed steps and say so.

Peak memory: on CUDA torch.cuda.max_memory_allocated (weights included), on the CPU the process's
peak resident set from resource.getrusage, its high-water mark reset before each run where Linux
allows it (otherwise the number is the process's peak so far, which the report says).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import resource
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from engine.jobs import BUDGET_PRESETS
from engine.plan import RANDOM_CONFIGS  # the configs' names live with the planner, which reads them

EXTRAPOLATED_STEPS = BUDGET_PRESETS["default"]


# --- the model under test -----------------------------------------------------------------------

def build_random_model(config_name: str = "sd15", device: str = "auto", seed: int = 0):
    """A full-size SD pipeline from a shipped config with random weights (timing only: no download)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from engine.device import pick_device, pick_dtype
    from engine.models import ModelBundle, freeze

    root = Path(str(resources.files("resources") / "model_configs" / config_name))
    # "meta": the shapes alone, no memory (tests); any other device as --device names it.
    dev = torch.device("meta") if device == "meta" else pick_device(device)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        # Initialising ~1 B parameters on the GPU takes a second; on the CPU it takes much longer.
        with torch.device(dev):
            unet = UNet2DConditionModel.from_config(json.loads((root / "unet" / "config.json").read_text()))
            vae = AutoencoderKL.from_config(json.loads((root / "vae" / "config.json").read_text()))
            text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(root / "text_encoder", local_files_only=True))
    finally:
        torch.random.set_rng_state(state)
    tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
    scheduler = DDPMScheduler.from_config(json.loads((root / "scheduler" / "scheduler_config.json").read_text()))
    bundle = ModelBundle(
        name=f"{config_name} (random weights)", vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=scheduler, device=dev, dtype=pick_dtype(dev), is_demo=True,
        description=f"{config_name}-shaped pipeline with random weights: for timing only",
    )
    return freeze(bundle)


def load_bench_model(source: str, device: str):
    from engine.models import load_model

    if source in RANDOM_CONFIGS:
        return build_random_model(source, device)
    return load_model(source, device=device)


def bench_image(size: int, seed: int = 0) -> np.ndarray:
    """A size×size RGB image with gradients, edges and noise (uint8): flat images hide nothing, but
    a fixed image keeps runs comparable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    rings = 0.5 + 0.5 * np.sin(40 * np.hypot(xx - 0.4, yy - 0.6))
    img = np.stack([xx, yy, rings], axis=2) * 200 + 25 + rng.normal(0, 8, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


# --- memory -------------------------------------------------------------------------------------

class MemoryMeter:
    """Peak memory of one run, in MiB: CUDA allocations, or the process's resident set on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss"
        self.reset_works = True

    def reset(self) -> float:
        """Start a run; returns the memory held before it (weights, caches) in MiB."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device) / 2**20
        try:
            # Writing 5 resets the kernel's RSS high-water mark, which getrusage reports (Linux >= 4.0).
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.reset_works = False
        return self._current_rss_mb()

    def peak(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10  # bytes on macOS, KiB on Linux

    @staticmethod
    def _current_rss_mb() -> float:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**10
        except OSError:
            pass
        return float("nan")


# --- the two loops ------------------------------------------------------------------------------

def _per_step(stamps: list[float], warmup: int, steps_per_item: float) -> float:
    timed = stamps[warmup - 1 :]  # from the end of the last warm-up step
    return (timed[-1] - timed[0]) / (len(timed) - 1) * steps_per_item


def time_fast(model, settings, image: np.ndarray, warmup: int, which_plan: str = "default",
              budget_mb: float | None = None) -> dict:
    """The real loop (engine.protect) with the given speed options, under the plan the engine chooses
    (which_plan "default") or its smallest plan at the same working size ("smallest"). budget_mb: choose the
    plan for a device with this much memory instead of this one's (a 6 GB card's plan, run on a larger one)."""
    from dataclasses import replace

    from engine.jobs import ProtectProgress, ProtectResult
    from engine.methods import get_method
    from engine.plan import device_memory, smallest_plan
    from engine.protect import plan_job, protect_iter, two_pass_allowed

    h, w = image.shape[:2]
    forced = None
    if which_plan == "smallest":
        method = get_method(settings.method, settings.method_params)
        forced = smallest_plan(settings.working_size, two_pass_allowed(method, settings), h, w)
    elif budget_mb:
        memory = replace(device_memory(model.device), budget_mb=budget_mb)
        forced = plan_job(model, h, w, settings, memory=memory).plan
    stamps = [time.perf_counter()]
    plan = None
    for item in protect_iter(model, image, settings, plan=forced):
        if isinstance(item, ProtectProgress) and item.step > 0:
            stamps.append(time.perf_counter())
            plan = plan or item.plan
        elif isinstance(item, ProtectResult):
            plan = item.plan
    regions = round((len(stamps) - 1) / settings.steps)  # a whole-image step is one step of every region
    return {
        "seconds_per_step": _per_step(stamps[1:], warmup, regions),
        "regions": regions,
        "plan": plan,
    }


def time_naive(model, settings, image: np.ndarray, warmup: int) -> dict:
    """A reference loop with none of the tricks, the same method, noise draws and step rule."""
    from engine.methods import MethodContext, get_method
    from engine.metrics import to_tensor
    from engine.protect import default_step_levels, pad_to_multiple

    method = get_method(settings.method, settings.method_params)
    x = pad_to_multiple(to_tensor(image).to(model.device), model.vae_scale_factor)[0]
    eps = settings.strength_levels / 255.0
    alpha = default_step_levels(settings.strength_levels, settings.steps) / 255.0
    gen = torch.Generator(device=model.device).manual_seed(settings.seed)
    ctx = MethodContext(model=model, x_clean=x, cond=model.encode_prompt(""), generator=gen, eps=eps,
                        steps=settings.steps, timesteps_per_step=settings.timesteps_per_step)
    method.setup(ctx)
    delta = torch.zeros_like(x)
    params = [p for m in (model.unet, model.vae, model.text_encoder) for p in m.parameters()]
    stamps = [time.perf_counter()]
    for step in range(settings.steps):
        method.between_steps(ctx, (x + delta).detach(), step)
        delta.requires_grad_(True)
        loss, _ = method.loss(ctx, x + delta, gen)
        loss.backward()
        with torch.no_grad():
            delta = (delta + alpha * delta.grad.sign()).clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x
        for p in params:
            p.grad = None
        float(loss.detach())  # wait for the device, as the real loop does when it reports the loss
        stamps.append(time.perf_counter())
    return {"seconds_per_step": _per_step(stamps[1:], warmup, 1.0), "regions": 1, "two_pass": False}


@contextlib.contextmanager
def naive_model(model):
    """The same modules in fp32 with trainable weights and no cuDNN autotuning; restored afterwards."""
    modules = (model.unet, model.vae, model.text_encoder)
    saved_cudnn = torch.backends.cudnn.benchmark
    if model.dtype != torch.float32:
        for m in modules:
            m.to(torch.float32)
    for m in modules:
        m.requires_grad_(True)
    torch.backends.cudnn.benchmark = False
    try:
        # A copy starts without the original's kept state: prompts are encoded again in fp32, no compiled UNet.
        yield dataclasses.replace(model, dtype=torch.float32)
    finally:
        torch.backends.cudnn.benchmark = saved_cudnn
        for m in modules:
            m.requires_grad_(False)
            for p in m.parameters():
                p.grad = None
            if model.dtype != torch.float32:
                m.to(model.dtype)


def _measure(meter: MemoryMeter, fn, *args) -> dict:
    row: dict = {}
    try:
        baseline = meter.reset()
        row.update(fn(*args))
        row["peak_memory_mb"] = round(meter.peak(), 1)
        row["baseline_memory_mb"] = round(baseline, 1)
    except Exception as exc:  # one failing method must not hide the others' numbers
        row["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if meter.device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def run_bench(model, methods: list[str], size: int, steps: int, warmup: int, speed: dict, naive: bool = True,
              timesteps_per_step: int = 1, working_size: int | None = None, which_plan: str = "default",
              budget_mb: float | None = None) -> dict:
    """Time every method fast and naive on `model` at size×size; the report as plain data.

    working_size: the longer side δ is optimized at (None: the image's size); which_plan: "default" (the plan
    the engine chooses) or "smallest" (engine.plan.smallest_plan)."""
    from engine.device import describe_device
    from engine.jobs import ProtectSettings

    image = bench_image(size)
    working_size = working_size or size
    meter = MemoryMeter(model.device)
    total_steps = warmup + steps
    rows = []

    def settings_for(name: str) -> ProtectSettings:
        return ProtectSettings(method=name, steps=total_steps, working_size=working_size, preview_every=0,
                               measure_objective=False, timesteps_per_step=timesteps_per_step, **speed)

    for name in methods:
        rows.append({"method": name, "variant": "fast",
                     **_measure(meter, time_fast, model, settings_for(name), image, warmup, which_plan, budget_mb)})
    if naive:
        with naive_model(model) as ref:
            for name in methods:
                plain = ProtectSettings(method=name, steps=total_steps, working_size=size,
                                        timesteps_per_step=timesteps_per_step)
                rows.append({"method": name, "variant": "naive", **_measure(meter, time_naive, ref, plain, image, warmup)})
    naive_step = {r["method"]: r.get("seconds_per_step") for r in rows if r["variant"] == "naive"}
    for r in rows:
        r["memory_kind"] = meter.kind
        if "seconds_per_step" in r:
            r["seconds_per_image_100_steps_extrapolated"] = r["seconds_per_step"] * EXTRAPOLATED_STEPS
            ref_step = naive_step.get(r["method"])
            if r["variant"] == "fast" and ref_step:
                r["speedup_vs_naive"] = ref_step / r["seconds_per_step"]
    info = describe_device(str(model.device))
    return {
        "date": datetime.date.today().isoformat(),
        "model": model.name,
        "device": info.name,
        "device_kind": info.kind,
        "dtype": str(model.dtype).replace("torch.", ""),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "size": size,
        "working_size": working_size,
        "which_plan": which_plan,
        "memory_budget_mb": budget_mb,
        "timed_steps": steps,
        "warmup_steps": warmup,
        "extrapolated_to_steps": EXTRAPOLATED_STEPS,
        "timesteps_per_step": timesteps_per_step,
        "speed_options": speed,
        "peak_memory_is_per_run": meter.reset_works,
        "results": rows,
    }


# --- output -------------------------------------------------------------------------------------

def format_table(report: dict) -> str:
    mem = "peak VRAM MiB" if report["device_kind"] == "cuda" else "peak RSS MiB"
    lines = [
        f"artveil bench: {report['model']} on {report['device']} ({report['dtype']}, {report['cpu_threads']} CPU threads), "
        f"{report['size']}x{report['size']} px, {report['timed_steps']} timed steps after {report['warmup_steps']} warm-up",
        f"{'method':<16}{'loop':<7}{'s/step':>10}{'s/image*':>11}{mem:>15}{'speed-up':>10}",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"{r['method']:<16}{r['variant']:<7}  failed: {r['error']}")
            continue
        speedup = f"{r['speedup_vs_naive']:.1f}x" if "speedup_vs_naive" in r else ""
        lines.append(f"{r['method']:<16}{r['variant']:<7}{r['seconds_per_step']:>10.3f}"
                     f"{r['seconds_per_image_100_steps_extrapolated']:>11.1f}{r['peak_memory_mb']:>15.0f}{speedup:>10}"
                     + (f"  {r['plan']}" if r.get("plan") else ""))
    lines.append(f"* seconds per image extrapolated to {report['extrapolated_to_steps']} steps from the timed steps.")
    lines.append("naive: fp32, trainable weights, eager, one graph, no autocast/channels_last/checkpointing/compile.")
    if report.get("naive_skipped"):
        lines.append(f"naive: not run ({report['naive_skipped']}).")
    if not report["peak_memory_is_per_run"]:
        lines.append("note: the peak RSS could not be reset between runs: each number is the process's peak so far.")
    return "\n".join(lines)


def selected_methods(arg: str) -> list[str]:
    """--methods a,b,c; empty: every registered method."""
    from engine.methods import METHODS

    return [m.strip() for m in arg.split(",") if m.strip()] if arg else list(METHODS)


def _naive_skipped(model, naive: str) -> str | None:
    """Why the naive loop is left out ("auto": for a real-size model on the CPU), or None to run it."""
    from engine.plan import is_real_size, shape_of

    if naive == "off":
        return "--naive off"
    if naive == "auto" and model.device.type == "cpu" and is_real_size(shape_of(model)):
        # fp32 weight gradients and one graph from pixels: twice the weights' memory and hours per method.
        return "a real-size model on the CPU: it needs the weights' memory twice over and hours per method; --naive on runs it"
    return None


def _check_plans_before_loading(source: str, device: str, methods: list[str], size: int, working_size: int,
                                timesteps_per_step: int, which_plan: str) -> str | None:
    """The one line that refuses the run when some method fits no plan, from the model's configs alone (before
    its weights are built or loaded); None when every method fits, or when the configs cannot be read first."""
    from engine.device import pick_device
    from engine.errors import ArtveilError
    from engine.methods import get_method
    from engine.plan import choose_plan, device_memory, shape_before_loading, smallest_plan

    dev = pick_device(device)
    shape = shape_before_loading(source, dev)
    if shape is None:
        return None
    memory = device_memory(dev)
    for name in methods:
        method = get_method(name)
        two_pass = None if method.declares_latent_loss() else False
        forced = smallest_plan(working_size, two_pass, size, size) if which_plan == "smallest" else None
        try:
            choose_plan(shape, method.memory_profile(timesteps_per_step), size, size, working_size, memory,
                        weights_loaded=False, two_pass=two_pass, forced=forced)
        except ArtveilError as exc:
            return f"{name}: {exc.message}"
    return None


def run(args: argparse.Namespace) -> int:
    from engine.errors import ArtveilError
    from engine.methods import METHODS
    from engine.plan import default_working_size, shape_of

    methods = selected_methods(args.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"artveil: unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}", file=sys.stderr)
        return 2
    if args.size < 64 or args.size % 8:
        print(f"artveil: --size must be a multiple of 8 and at least 64, got {args.size}", file=sys.stderr)
        return 2
    if args.steps < 1 or args.warmup < 1:
        print("artveil: --steps and --warmup must be at least 1 (the first step pays for allocation)", file=sys.stderr)
        return 2
    if args.working_size and (args.working_size < 64 or args.working_size % 8):
        print(f"artveil: --working-size must be a multiple of 8 and at least 64, got {args.working_size}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from engine.device import pick_device
        from engine.plan import shape_before_loading

        shape = shape_before_loading(args.model, pick_device(args.device))
        working_size = args.working_size or (default_working_size(shape, pick_device(args.device), args.size)
                                             if shape is not None else None)
        refused = _check_plans_before_loading(args.model, args.device, methods, args.size, working_size or args.size,
                                              args.timesteps_per_step, args.plan)
        if refused:
            print(f"artveil: {refused}", file=sys.stderr)
            return 2
        model = load_bench_model(args.model, args.device)
    except ArtveilError as exc:
        print(f"artveil: model: {exc.message}", file=sys.stderr)
        return 2
    if working_size is None:
        working_size = args.working_size or default_working_size(shape_of(model), model.device, args.size)
    speed = {
        "precision": args.precision,
        "two_pass": {"auto": None, "on": True, "off": False}[args.two_pass],
        "channels_last": args.channels_last,
        "low_vram": args.low_vram,
        "compile_unet": args.compile,
    }
    naive = "off" if args.no_naive else args.naive
    skipped = _naive_skipped(model, naive)
    report = run_bench(model, methods, args.size, args.steps, args.warmup, speed, naive=skipped is None,
                       timesteps_per_step=args.timesteps_per_step, working_size=working_size, which_plan=args.plan,
                       budget_mb=args.memory_budget * 1024 if args.memory_budget else None)
    report["naive_skipped"] = skipped
    print(json.dumps(report, indent=2) if args.json else format_table(report), flush=True)
    return 1 if any("error" in r for r in report["results"]) else 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time every method against a naive loop (seconds per step, per image, peak memory)",
        description="Time each protection method through the optimizer loop and through a naive reference loop.",
    )
    p.add_argument("--model", default="sd15",
                   help="sd15 or sd21-base (random weights built from the shipped config: timing only), tiny, or a model as for protect")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:1 or cpu")
    p.add_argument("--size", type=int, default=512, help="image side in px (default 512)")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per method (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocation, autotuning, compilation)")
    p.add_argument("--methods", default="", help="comma-separated methods (default: all)")
    p.add_argument("--timesteps-per-step", type=int, default=1)
    p.add_argument("--precision", choices=["auto", "bf16"], default="auto", help="auto: the model dtype (bf16 on CUDA); bf16: autocast")
    p.add_argument("--two-pass", choices=["auto", "on", "off"], default="auto", help="Mist-v2 two-pass VAE backward (auto: on CUDA)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--low-vram", action="store_true", help="two-pass + gradient checkpointing + 256-px tiles")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (needs Triton on CUDA)")
    p.add_argument("--naive", choices=["auto", "on", "off"], default="auto",
                   help="the naive reference loop (auto: not for a real-size model on the CPU, where it takes hours)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive reference loop (--naive off)")
    p.add_argument("--working-size", type=int, default=0,
                   help="longer side δ is optimized at (default: the engine's default for this model and device)")
    p.add_argument("--memory-budget", type=float, default=0,
                   help="GB: choose each plan for a device with this much memory (e.g. 6 for a 6 GB card's plan on a larger GPU)")
    p.add_argument("--plan", choices=["default", "smallest"], default="default",
                   help="default: the plan the engine chooses; smallest: its least-memory plan at the same working size")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)
