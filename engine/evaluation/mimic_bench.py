"""How fast the efficacy table's mimic runs on this machine, and whether running mimics side by side helps.

    python -m engine.evaluation.mimic_bench --model resources/proxy/model [--steps 60] [--procs 2] [--threads 1]

The mimic (the sanity bar's fine-tune of the whole UNet on 8 renders of the held-out style, batch 8) is 85 %
of the efficacy table's time on a CPU. On 2 cores its small batches leave torch's two threads half idle, so
two mimics in two processes of one thread each may finish more work per minute than one of two threads.
This prints seconds per fine-tune step for each process and the throughput (steps per second, all processes
together) so the two layouts can be compared on the same machine, one after the other.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import replace


def _one(model_dir: str, steps: int, threads: int, seed: int, start, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    from engine.evaluation import customize as C
    from engine.models import load_model
    from engine.proxy.data import render_set
    from engine.evaluation.sanity import SanitySettings
    from engine.proxy.styles import HELD_OUT_STYLE

    s = SanitySettings()
    model = load_model(model_dir, device="cpu")
    from pathlib import Path

    resolution = int(json.loads((Path(model_dir) / "proxy_world.json").read_text())["resolution"])
    art = render_set([HELD_OUT_STYLE], s.lora_images, resolution, use="artist")
    settings = C.CustomizeSettings(mode=s.mimic_mode, rank=s.lora_rank, lr=s.lora_lr, steps=5, seed=seed,
                                   batch_size=s.lora_images)
    C.customize(model, list(art.images), list(art.captions), settings)  # warm-up: allocation, first calls
    start.wait()
    t0 = time.perf_counter()
    C.customize(model, list(art.images), list(art.captions), replace(settings, steps=steps))
    queue.put((seed, time.perf_counter() - t0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resources/proxy/model")
    p.add_argument("--steps", type=int, default=60, help="timed fine-tune steps per process")
    p.add_argument("--procs", type=int, default=1, help="mimics side by side, one process each")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: cores ÷ procs)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.procs)
    ctx = mp.get_context("spawn")
    start, queue = ctx.Barrier(args.procs + 1), ctx.Queue()
    procs = [ctx.Process(target=_one, args=(args.model, args.steps, threads, i, start, queue)) for i in range(args.procs)]
    for pr in procs:
        pr.start()
    start.wait()
    t0 = time.perf_counter()
    times = [queue.get() for _ in procs]
    wall = time.perf_counter() - t0
    for pr in procs:
        pr.join()
    result = {"procs": args.procs, "threads": threads, "steps": args.steps, "cores": os.cpu_count(),
              "s_per_step": [round(t / args.steps, 4) for _, t in sorted(times)],
              "throughput_steps_per_s": round(args.procs * args.steps / wall, 3), "wall_s": round(wall, 1)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.procs} process(es) × {threads} thread(s), {args.steps} steps each: "
              f"{', '.join(f'{v:.3f}' for v in result['s_per_step'])} s/step; "
              f"{result['throughput_steps_per_s']:.2f} steps/s together ({wall:.1f} s wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
