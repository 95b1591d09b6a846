"""Sampling throughput (images/s) of the generator per precision policy and modulated-conv form.

    python benchmarks/bench_sample.py                                   # GPU: 256 + 1024 px, batch 1/16/64
    python benchmarks/bench_sample.py --device cpu --res 64 --batch 1 4 --repeats 2
    python benchmarks/bench_sample.py ... --write benchmarks/RESULTS.md --json out.json

Random config-f generator (channel_base 32768); W -> image through ``synthesize`` with the
policy's settings (``nada_ops.precision``), constant noise; median of --repeats timed calls after
one warm-up call, synchronised.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench_adapt import device_line, versions_line  # noqa: E402
from nada_ops.precision import resolve  # noqa: E402
from nada_ops.stylegan.config import StyleGAN2Config  # noqa: E402
from nada_ops.stylegan.networks import Generator  # noqa: E402


def bench(G, dev, batch, precision, modconv, repeats):
    pol = resolve(precision, dev)
    if modconv == "grouped":
        pol = pol.with_options(fused_modconv=True)
    kw = pol.synthesis_kwargs(G.cfg)
    ws = G.map(torch.randn(batch, G.cfg.z_dim, device=dev), truncation_psi=0.7)

    def once():
        with torch.no_grad(), pol.math():
            return G.synthesis(ws, noise_mode="const", **kw)

    once()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        once()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        ts.append(time.perf_counter() - t)
    med = statistics.median(ts)
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20 if dev.type == "cuda" else None
    return {"batch": batch, "precision": pol.describe(), "policy": precision, "modconv": modconv,
            "s_per_batch": med, "img_per_s": batch / med, "peak_alloc_mb": peak}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--res", type=int, nargs="+", default=[1024, 256])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--precision", nargs="+", default=["exact", "fast"])
    p.add_argument("--modconv", nargs="+", default=["scaled", "grouped"], choices=["scaled", "grouped"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--channel-base", type=int, default=32768, help="generator width (32768 = config-f)")
    p.add_argument("--write", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    dev = torch.device(a.device)
    rows = []
    for res in a.res:
        torch.manual_seed(0)
        G = Generator(StyleGAN2Config(img_resolution=res, channel_base=a.channel_base, channel_max=512)).to(dev).eval()
        for b, prec, mc in itertools.product(a.batch, a.precision, a.modconv):
            try:
                r = bench(G, dev, b, prec, mc, a.repeats)
            except Exception as e:   # noqa: BLE001 - out of memory at batch 64 is a result too
                r = {"batch": b, "policy": prec, "modconv": mc, "error": f"{type(e).__name__}: {e}"[:300]}
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            r["res"] = res
            rows.append(r)
            print(json.dumps(r), flush=True)
        del G
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": device_line(dev), "versions": versions_line(), "rows": rows}, f, indent=1)
    text = (f"### Sampling, {device_line(dev)}, {datetime.date.today().isoformat()}\n\n{versions_line()}; random "
            f"config-f generator, constant noise, median of {a.repeats}. Command: `python benchmarks/bench_sample.py "
            f"{' '.join(sys.argv[1:])}`\n\n| resolution | batch | precision | modconv | images / s | peak allocated (MiB) |\n"
            "|---|---|---|---|---|---|\n")
    for r in rows:
        if "error" in r:
            text += f"| {r['res']} | {r['batch']} | {r['policy']} | {r['modconv']} | error: {r['error'][:60]} | |\n"
        else:
            pk = f"{r['peak_alloc_mb']:.0f}" if r["peak_alloc_mb"] is not None else "-"
            text += (f"| {r['res']} | {r['batch']} | {r['precision']} | {r['modconv']} | {r['img_per_s']:.1f} | "
                     f"{pk} |\n")
    print(text)
    if a.write:
        with open(a.write, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
