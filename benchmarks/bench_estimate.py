"""How good is the run-time estimate that `adapt` prints before training (nada_ops/timing.py)?

Times the single-image forward passes the estimate is built from, the estimate itself, and the
measured seconds per iteration of a short real run (random weights cost as much as real ones),
for a few configurations; appends a markdown table to benchmarks/RESULTS.md with --write.

    python benchmarks/bench_estimate.py --device cpu --res 64 --write benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(res: int, clips: list[str], mode: str, device: str, iters: int) -> dict:
    from nada_ops.clip.direction import text_direction
    from nada_ops.clip.ensemble import ClipEnsemble
    from nada_ops.clip.models import load_clip
    from nada_ops.nada.guidance import guidance_from
    from nada_ops.nada.schedule import FreezeSchedule
    from nada_ops.nada.trainer import AdaptSettings, adapt
    from nada_ops.stylegan.config import StyleGAN2Config
    from nada_ops.stylegan.networks import Generator
    from nada_ops.timing import adapt_iteration_seconds, clip_forward_seconds, generator_forward_seconds
    G = Generator(StyleGAN2Config(img_resolution=res)).eval().to(device)
    ens = ClipEnsemble([(load_clip(c, "random", device=device), 1.0) for c in clips])
    d = text_direction(ens, "photo", "sketch", "single")
    sched = FreezeSchedule(mode="adaptive", k=4, n_w=8, n_i=1) if mode == "adaptive" else FreezeSchedule()
    t_g = generator_forward_seconds(G)
    t_c = [clip_forward_seconds(m) for m in ens.models]
    est = adapt_iteration_seconds(t_g, t_c, 2, 8 if mode == "adaptive" else 0)
    stamps = []
    adapt(G, guidance_from(ens, d), AdaptSettings(iterations=iters, preview_every=0, mixing_prob=0), sched,
          progress=lambda info: stamps.append(time.perf_counter()))
    per = (stamps[-1] - stamps[0]) / (len(stamps) - 1)      # from the end of the first iteration
    return {"res": res, "clips": "+".join(clips), "mode": mode, "t_g": t_g, "t_c": sum(t_c), "estimate": est,
            "measured": per}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--res", type=int, nargs="+", default=[64])
    p.add_argument("--clips", nargs="+", default=["ViT-B-32"])
    p.add_argument("--modes", nargs="+", default=["all", "adaptive"])
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = [measure(r, a.clips, m, a.device, a.iters) for r in a.res for m in a.modes]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    head = (f"### Run-time estimate vs measured (bench_estimate.py), {datetime.date.today()}\n\n"
            f"device {a.device} ({platform.machine()}, {torch.get_num_threads()} threads, load average {load:.1f}), "
            f"torch {torch.__version__}, batch 2, random weights, {a.iters} iterations (the first not counted).\n"
            f"Command: `python benchmarks/bench_estimate.py {' '.join(sys.argv[1:])}`.\n\n"
            "| resolution | CLIP | layers | generator fwd (s) | CLIP fwd (s) | estimate (s/it) | measured (s/it) | "
            "measured / estimate |\n|---|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {r['res']} | {r['clips']} | {r['mode']} | {r['t_g']:.3f} | {r['t_c']:.3f} | "
                   f"{r['estimate']:.2f} | {r['measured']:.2f} | {r['measured'] / r['estimate']:.2f} |\n" for r in rows)
    print(head + body)
    if a.write:
        with open(a.write, "a", encoding="utf-8") as fh:
            fh.write("\n" + head + body)


if __name__ == "__main__":
    main()
