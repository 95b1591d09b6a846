"""Benchmark of the NADA training loop: s/iteration, peak memory, which path ran.

Random weights cost exactly what real ones cost, so nothing is downloaded: the generator
is a random StyleGAN2 (config-f channel widths) and the CLIP models are open_clip
architectures with random weights.

    python benchmarks/bench_adapt.py                          # GPU: paper settings, 1024 + 256 px
    python benchmarks/bench_adapt.py --device cpu --res 64 --iters 2 --warmup 1 --clip ViT-B-32
    python benchmarks/bench_adapt.py --precision exact fast --capture none cuda_graph --profile
    python benchmarks/bench_adapt.py ... --write benchmarks/RESULTS.md --json out.json

Named configurations: every combination of --res x --modes x --precision x --capture (x
--modconv x --channels-last x --ops), batch --batch, CLIP --clip (paper: ViT-B/32 + ViT-B/16):
  all       every synthesis conv trained
  adaptive  adaptive layer freezing, k=12 (N_w=8, N_i=1); at the top resolution only
Each row: median s/iteration (after --warmup iterations, which include a CUDA graph's capture),
iterations/s, peak allocated and reserved GPU memory (CPU: peak RSS of the process), the ops
implementation and the path that ran (loop, capture, precision, fallbacks).  --profile prints the
top CUDA kernels and the kernel launches per iteration (torch.profiler).
"""
from __future__ import annotations

import argparse
import datetime
import itertools
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
from nada_ops.nada import trainer as T  # noqa: E402
from nada_ops.nada.guidance import guidance_from  # noqa: E402
from nada_ops.nada.schedule import FreezeSchedule  # noqa: E402
from nada_ops.nada.trainer import AdaptSettings, adapt  # noqa: E402
from nada_ops.ops import backend  # noqa: E402
from nada_ops.stylegan.config import StyleGAN2Config  # noqa: E402
from nada_ops.stylegan.networks import Generator  # noqa: E402


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak(dev):
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2 ** 20, torch.cuda.max_memory_reserved(dev) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, None   # process peak RSS (Linux: KiB)


_CLIP_CACHE = {}


def _clips(names, dev):
    key = (tuple(names), str(dev))
    if key not in _CLIP_CACHE:
        _CLIP_CACHE.clear()
        _CLIP_CACHE[key] = [load_clip(n, "random", device=dev) for n in names]
    return _CLIP_CACHE[key]


class _Profile:
    """torch.profiler over ``n`` iterations starting after ``start`` (called from progress)."""

    def __init__(self, start, n):
        self.start, self.n, self.prof, self.report = start, n, None, None

    def __call__(self, step):
        from torch.profiler import ProfilerActivity, profile
        if step == self.start:
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.prof = profile(activities=acts)
            self.prof.start()
        elif self.prof is not None and step == self.start + self.n:
            _sync(torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
            self.prof.stop()
            self.report = _profile_report(self.prof, self.n)
            self.prof = None


def _profile_report(prof, n):
    ev = prof.key_averages()
    launches = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                "cudaGraphLaunch", "cudaLaunchCooperativeKernel"}
    per = {e.key: e.count / n for e in ev if e.key in launches}
    dev_time = lambda e: getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0))  # noqa: E731
    kernels = [e for e in ev if getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type)]
    n_kernels = sum(e.count for e in kernels) / n
    top = sorted(ev, key=dev_time, reverse=True)[:15]
    lines = [f"kernel launches per iteration: {n_kernels:.0f}; host launch calls per iteration: "
             + ", ".join(f"{k} {v:.0f}" for k, v in sorted(per.items())),
             "top 15 by device time (ms per iteration):"]
    for e in top:
        lines.append(f"  {dev_time(e) / 1000 / n:8.3f}  x{e.count / n:6.1f}  {e.key[:110]}")
    cpu_total = sum(e.self_cpu_time_total for e in ev) / 1000 / n
    lines.append(f"host (CPU) time in profiled ops per iteration: {cpu_total:.1f} ms")
    return "\n".join(lines)


def bench(res, mode, dev, clip_names, iters, warmup, batch, precision, capture, modconv="scaled",
          channels_last=False, num_fp16_res=None, profile=0, channel_base=32768):
    cfg = StyleGAN2Config(img_resolution=res, channel_base=channel_base, channel_max=512)  # 32768: config-f widths
    torch.manual_seed(0)
    G = Generator(cfg).to(dev).eval()
    models = _clips(clip_names, dev)
    direction = text_direction(models, "photo", "pencil sketch", "single")
    guidance = guidance_from([(m, 1.0) for m in models], direction)
    sched = FreezeSchedule() if mode == "all" else FreezeSchedule(mode="adaptive", k=min(12, cfg.num_ws))
    times = []
    prof = _Profile(warmup + 1, profile) if profile else None

    def progress(info):
        _sync(dev)
        times.append(time.perf_counter())
        if prof is not None:
            prof(info.step)

    real = T.resolve_precision
    opts = {}
    if modconv == "grouped":
        opts["fused_modconv"] = True
    if channels_last:
        opts["channels_last"] = True
    if num_fp16_res is not None:
        opts["num_fp16_res"] = num_fp16_res
    T.resolve_precision = lambda n, d: real(n, d).with_options(**opts) if opts else real(n, d)
    try:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        n = warmup + iters + (profile or 0)
        settings = AdaptSettings(iterations=n, batch_size=batch, preview_every=0, mixing_prob=0.9,
                                 precision=precision, capture=capture)
        _sync(dev)
        t0 = time.perf_counter()
        r = adapt(G, guidance, settings, sched, progress=progress)
    finally:
        T.resolve_precision = real
    steps = [b - a for a, b in zip([t0] + times[:-1], times)][warmup:warmup + iters]
    med = statistics.median(steps)
    alloc, reserved = _peak(dev)
    row = {"res": res, "mode": mode, "batch": batch, "clip": clip_names, "precision": precision, "capture": capture,
           "modconv": modconv, "channels_last": channels_last, "iters_timed": len(steps),
           "median_s_per_iter": med, "iters_per_s": 1 / med, "first_iters_s": [round(s, 4) for s in
                                                                                 [b - a for a, b in zip(
                                                                                     [t0] + times[:-1], times)][:warmup]],
           "peak_alloc_mb": alloc, "peak_reserved_mb": reserved, "ops": r.runtime.get("ops"),
           "path": r.runtime.get("path"), "precision_detail": r.runtime.get("precision"),
           "notes": r.runtime.get("notes"), "overflow_skips": r.runtime.get("overflow_skips"),
           "stopped": str(r.stop_exception) if r.stop_exception else None}
    if prof is not None:
        row["profile"] = prof.report
    del r, G
    return row


def device_line(dev):
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions_line():
    import open_clip
    return (f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
            f"open_clip {open_clip.__version__}, Python {platform.python_version()}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--res", type=int, nargs="+", default=[1024, 256])
    p.add_argument("--modes", nargs="+", default=["all", "adaptive"])
    p.add_argument("--clip", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    p.add_argument("--precision", nargs="+", default=["auto"], help="auto / exact / fast / bf16 (several: compare)")
    p.add_argument("--capture", nargs="+", default=["auto"], help="auto / none / cuda_graph / compile")
    p.add_argument("--modconv", nargs="+", default=["scaled"], choices=["scaled", "grouped"],
                   help="modulated conv by activation scaling (today) or grouped conv (NVIDIA's fused_modconv)")
    p.add_argument("--channels-last", nargs="+", default=["off"], choices=["off", "on"])
    p.add_argument("--num-fp16-res", type=int, default=None, help="override the policy's reduced-precision resolutions")
    p.add_argument("--ops", nargs="+", default=["auto"], choices=["auto", "reference", "compiled"],
                   help="generator ops (NADA_OPS_IMPL)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--channel-base", type=int, default=32768, help="generator width (32768 = config-f; smaller: dry runs)")
    p.add_argument("--profile", type=int, nargs="?", const=3, default=0,
                   help="profile N iterations (default 3) after the timed ones: top kernels, launches/iteration")
    p.add_argument("--write", default=None, help="append a markdown section to this results file")
    p.add_argument("--json", default=None, help="write the rows to this file")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    rows = []
    top = max(a.res)
    for res, mode, prec, cap, mc, cl, ops in itertools.product(a.res, a.modes, a.precision, a.capture, a.modconv,
                                                             a.channels_last, a.ops):
        if mode == "adaptive" and res != top:
            continue
        backend.set_impl(ops)
        try:
            r = bench(res, mode, dev, a.clip, a.iters, a.warmup, a.batch, prec, cap, mc, cl == "on", a.num_fp16_res,
                      a.profile, a.channel_base)
        except Exception as e:   # noqa: BLE001 - a configuration that fails is a result too
            r = {"res": res, "mode": mode, "precision": prec, "capture": cap, "modconv": mc,
                 "channels_last": cl == "on", "error": f"{type(e).__name__}: {e}"[:500]}
        finally:
            backend.set_impl(None)
        r["ops_requested"] = ops
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "profile"}), flush=True)
        if r.get("profile"):
            print(r["profile"], flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": device_line(dev), "versions": versions_line(), "rows": rows}, f, indent=1)
    header = (f"### Training loop, {device_line(dev)}, {datetime.date.today().isoformat()}\n\n"
              f"{versions_line()}; batch {a.batch}, CLIP {' + '.join(a.clip)} (random weights), "
              f"{a.warmup} warm-up + {a.iters} timed iterations, median. "
              f"Command: `python benchmarks/bench_adapt.py {' '.join(sys.argv[1:])}`\n\n"
              "| resolution | layers | precision | path | ops | modconv | s / iteration | iterations / s | "
              "peak allocated (MiB) | peak reserved (MiB) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['res']} | {r['mode']} | {r['precision']} | {r['capture']} | | {r['modconv']} | "
                         f"error: {r['error'][:80]} | | | |")
            continue
        layers = "all" if r["mode"] == "all" else "adaptive k=12"
        res_mb = f"{r['peak_reserved_mb']:.0f}" if r["peak_reserved_mb"] is not None else "-"
        lines.append(f"| {r['res']} | {layers} | {r['precision_detail']} | {r['path']} | {r['ops']} | "
                     f"{r['modconv']}{' + channels_last' if r['channels_last'] else ''} | "
                     f"{r['median_s_per_iter']:.4f} | {r['iters_per_s']:.2f} | {r['peak_alloc_mb']:.0f} | {res_mb} |")
    text = header + "\n".join(lines) + "\n"
    if dev.type == "cpu":
        text += "\nPeak memory on CPU is the process's peak resident set size (includes the Python runtime).\n"
    print(text)
    if a.write:
        with open(a.write, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
