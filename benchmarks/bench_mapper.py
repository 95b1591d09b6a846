"""Benchmark of latent-mapper training (StyleGAN-NADA sec. 4.3): iterations/s and peak memory.

Random weights cost exactly what real ones cost, so nothing is downloaded: the generator is a
random StyleGAN2 (config-f channel widths; AFHQ's 512 px by default) and the CLIP models are
open_clip architectures with random weights.

    python benchmarks/bench_mapper.py                                   # GPU: 512 + 1024 px
    python benchmarks/bench_mapper.py --device cpu --res 256 --iters 5 --warmup 1
    python benchmarks/bench_mapper.py ... --write benchmarks/RESULTS.md

Settings: the paper's / StyleCLIP's (batch 2, Ranger lr 0.5, three level mappers, lambda_L2 0.5,
lambda_norm 0.2, constant noise), CLIP ViT-B/32 + ViT-B/16 as in StyleGAN-NADA's mapper code.
One iteration: G(w) without grad (for the norm loss), G(w + 0.1 M(w)) forward + backward to the
mapper, CLIP forward on both, backward through CLIP for the mapped images.
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

from nada_ops.clip.models import load_clip  # noqa: E402
from nada_ops.nada.mapper import MapperConfig, MapperSettings, text_guidance, train_mapper  # noqa: E402
from nada_ops.stylegan.config import StyleGAN2Config  # noqa: E402
from nada_ops.stylegan.networks import Generator  # noqa: E402


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_mb(dev):
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def bench(res: int, dev, clip_names, iters: int, warmup: int, batch: int, lambda_norm: float):
    cfg = StyleGAN2Config(img_resolution=res, channel_base=32768, channel_max=512)  # config-f widths
    torch.manual_seed(0)
    G = Generator(cfg).to(dev).eval()
    models = [load_clip(n, "random", device=dev) for n in clip_names]
    guidance = text_guidance([(m, 1.0) for m in models], "cat", "single")
    times, cpu = [], []

    def progress(info):
        _sync(dev)
        times.append(time.perf_counter())
        cpu.append(time.process_time())

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    settings = MapperSettings(iterations=warmup + iters, batch_size=batch, preview_every=0, lambda_norm=lambda_norm)
    _sync(dev)
    t0, c0 = time.perf_counter(), time.process_time()
    train_mapper(G, guidance, settings, MapperConfig.for_generator(cfg), progress=progress)
    steps = [b - a for a, b in zip([t0] + times[:-1], times)][warmup:]
    cpu_steps = [b - a for a, b in zip([c0] + cpu[:-1], cpu)][warmup:]
    med = statistics.median(steps)
    return {"res": res, "batch": batch, "clip": clip_names, "lambda_norm": lambda_norm, "iters_timed": len(steps),
            "median_s_per_iter": med, "iters_per_s": 1 / med, "median_cpu_s_per_iter": statistics.median(cpu_steps),
            "peak_mem_mb": _peak_mb(dev)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--res", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--clip", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    p.add_argument("--lambda-norm", type=float, nargs="+", default=[0.2],
                   help="0 skips the source images' forward pass (no norm loss)")
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
        for ln in a.lambda_norm:
            r = bench(res, dev, a.clip, a.iters, a.warmup, a.batch, ln)
            rows.append(r)
            print(json.dumps(r), flush=True)
    devname = torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    header = (f"### Latent-mapper training (bench_mapper.py), {devname}, {datetime.date.today().isoformat()}\n\n"
              f"torch {torch.__version__}, CUDA {torch.version.cuda}, batch {a.batch}, CLIP {' + '.join(a.clip)} "
              f"(random weights), Ranger, three level mappers, {a.warmup} warm-up + {a.iters} timed iterations, "
              f"median. Command: `python benchmarks/bench_mapper.py {' '.join(sys.argv[1:])}`\n\n"
              "| resolution | CLIP | lambda_norm | s / iteration | iterations / s | process CPU s / iteration | "
              "peak memory (MiB) |\n|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['res']} | {' + '.join(r['clip'])} | {r['lambda_norm']:g} | {r['median_s_per_iter']:.3f} | "
             f"{r['iters_per_s']:.3f} | {r['median_cpu_s_per_iter']:.2f} | {r['peak_mem_mb']:.0f} |" for r in rows]
    text = header + "\n".join(lines) + "\n"
    if dev.type == "cpu":
        text += ("\nPeak memory on CPU is the process's peak resident set size (includes the Python runtime). "
                 "Process CPU time (all threads) is given because wall-clock time on a shared machine depends on "
                 "the load.\n")
    print(text)
    if a.write:
        with open(a.write, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
