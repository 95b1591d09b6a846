"""Benchmark of the NADA training loop (iterations/s and peak memory).

Random weights cost exactly what real ones cost, so nothing is downloaded: the generator
is a random StyleGAN2 (config-f channel widths) and the CLIP models are open_clip
architectures with random weights.

    python benchmarks/bench_adapt.py                          # GPU: paper settings, 256 + 1024 px
    python benchmarks/bench_adapt.py --device cpu --res 256 --iters 3 --warmup 1
    python benchmarks/bench_adapt.py ... --write benchmarks/RESULTS.md

Configurations (paper settings: batch 2, ViT-B/32 + ViT-B/16, Adam 0.002):
  all      every synthesis conv trained
  adaptive adaptive layer freezing, k=12 (N_w=8, N_i=1)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from nada_ops.clip.direction import text_direction  # noqa: E402
from nada_ops.clip.models import load_clip  # noqa: E402
from nada_ops.nada.guidance import guidance_from  # noqa: E402
from nada_ops.nada.schedule import FreezeSchedule  # noqa: E402
from nada_ops.nada.trainer import AdaptSettings, adapt  # noqa: E402
from nada_ops.stylegan.config import StyleGAN2Config  # noqa: E402
from nada_ops.stylegan.networks import Generator  # noqa: E402


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_mb(dev):
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def bench(res: int, mode: str, dev, clip_names, iters: int, warmup: int, batch: int):
    cfg = StyleGAN2Config(img_resolution=res, channel_base=32768, channel_max=512)  # config-f widths
    torch.manual_seed(0)
    G = Generator(cfg).to(dev).eval()
    models = [load_clip(n, "random", device=dev) for n in clip_names]
    direction = text_direction(models, "photo", "pencil sketch", "single")
    guidance = guidance_from([(m, 1.0) for m in models], direction)
    sched = FreezeSchedule() if mode == "all" else FreezeSchedule(mode="adaptive", k=min(12, cfg.num_ws))
    times = []

    def progress(info):
        _sync(dev)
        times.append(time.perf_counter())

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    settings = AdaptSettings(iterations=warmup + iters, batch_size=batch, preview_every=0, mixing_prob=0.9)
    _sync(dev)
    t0 = time.perf_counter()
    adapt(G, guidance, settings, sched, progress=progress)
    steps = [b - a for a, b in zip([t0] + times[:-1], times)][warmup:]
    med = statistics.median(steps)
    return {"res": res, "mode": mode, "batch": batch, "clip": clip_names, "iters_timed": len(steps),
            "median_s_per_iter": med, "iters_per_s": 1 / med, "peak_mem_mb": _peak_mb(dev)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--res", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--modes", nargs="+", default=["all", "adaptive"])
    p.add_argument("--clip", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write", default=None, help="append a markdown section to this results file")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    rows = []
    for res in a.res:
        for mode in a.modes:
            r = bench(res, mode, dev, a.clip, a.iters, a.warmup, a.batch)
            rows.append(r)
            print(json.dumps(r), flush=True)
    devname = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    header = (f"### Training loop, {devname}, {datetime.date.today().isoformat()}\n\n"
              f"torch {torch.__version__}, CUDA {torch.version.cuda}, batch {a.batch}, CLIP {' + '.join(a.clip)} "
              f"(random weights), {a.warmup} warm-up + {a.iters} timed iterations, median. "
              f"Command: `python benchmarks/bench_adapt.py {' '.join(sys.argv[1:])}`\n\n"
              "| resolution | layers | s / iteration | iterations / s | peak memory (MiB) |\n|---|---|---|---|---|\n")
    lines = [f"| {r['res']} | {'all' if r['mode'] == 'all' else 'adaptive k=12'} | {r['median_s_per_iter']:.3f} | "
             f"{r['iters_per_s']:.2f} | {r['peak_mem_mb']:.0f} |" for r in rows]
    text = header + "\n".join(lines) + "\n"
    if dev.type == "cpu":
        text += "\nPeak memory on CPU is the process's peak resident set size (includes the Python runtime).\n"
    print(text)
    if a.write:
        with open(a.write, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
