"""Batch backends: N small units in this process vs on a local Ray runtime.

    python benchmarks/bench_batch.py [--units 40] [--res 64] [--seeds 8] [--workers 2] [--repeats 3]
                                     [--write benchmarks/RESULTS.md]

Each unit is a sample grid (``--seeds`` images of a random ``--res`` px generator, one PNG +
its settings record): small on purpose, so that what is measured is the backend's cost, not
the work.  Reported:

- in-process: wall time, units/s, time per unit;
- Ray, 1 worker, 1 unit and N units: the fixed cost of a batch (runtime start, worker start:
  importing torch and the pack, loading the model once) and the time per unit on Ray; the
  overhead per unit is the difference from in-process (sending the unit, the result back);
- Ray, W workers, N units: units/s (units are independent: it scales with the workers until
  the machine's cores, GPUs or storage are the limit).

Every configuration uses one torch thread per unit (as the Ray workers do with 1 CPU each).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_units(folder, out, n, res, seeds):
    import torch

    from nada_ops.batch import load_batch_file
    from nada_ops.stylegan.config import StyleGAN2Config
    from nada_ops.stylegan.io import save_generator
    from nada_ops.stylegan.networks import Generator
    g = os.path.join(folder, "g.safetensors")
    if not os.path.exists(g):
        torch.manual_seed(0)
        cfg = StyleGAN2Config(img_resolution=res, z_dim=64, w_dim=64, channel_base=2048, channel_max=64,
                              num_mapping_layers=2)
        save_generator(Generator(cfg).eval(), g)
    jobs = [{"kind": "sample-grid", "name": f"u{i:04d}", "generator": "g.safetensors", "seeds": f"{i * seeds}-{i * seeds + seeds - 1}"}
            for i in range(n)]
    jf = os.path.join(folder, f"jobs{n}.json")
    with open(jf, "w") as fh:
        json.dump({"jobs": jobs}, fh)
    shutil.rmtree(out, ignore_errors=True)
    return load_batch_file(jf, out)


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--units", type=int, default=40)
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="median of this many runs per configuration")
    p.add_argument("--write", default=None, help="append the figures to this RESULTS.md")
    a = p.parse_args(argv)
    import torch

    import ray
    from nada_ops.batch import InProcessBackend
    from nada_ops.batch.ray_backend import RayBackend, runtime_env
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="bench_batch_")
    try:
        out = os.path.join(tmp, "out")
        n = a.units
        InProcessBackend("cpu").run(make_units(tmp, out, 2, a.res, a.seeds))          # warm-up (imports)
        t_ip = []
        for _ in range(a.repeats):           # a fresh backend each time: its model is loaded once, as on Ray
            units = make_units(tmp, out, n, a.res, a.seeds)
            t, r = timed(lambda: InProcessBackend("cpu").run(units))
            assert not r.failed
            t_ip.append(t)
        t_ip = sorted(t_ip)[len(t_ip) // 2]
        t_init, _ = timed(lambda: ray.init(num_cpus=max(a.workers, 1), include_dashboard=False, log_to_driver=False,
                                           logging_level="warning", runtime_env=runtime_env()))
        rows = {}
        for label, workers, count in (("ray1_1", 1, 1), ("ray1_n", 1, n), ("rayW_W", a.workers, a.workers),
                                      ("rayW_n", a.workers, n)):
            ts = []
            for _ in range(a.repeats):
                units = make_units(tmp, out, count, a.res, a.seeds)
                t, r = timed(lambda: RayBackend("auto", device="cpu", workers=workers).run(units))
                assert not r.failed, [x.error for x in r.failed]
                ts.append(t)
            rows[label] = sorted(ts)[len(ts) // 2]
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per_ip = t_ip / n
    per_ray = (rows["ray1_n"] - rows["ray1_1"]) / (n - 1)
    lines = [
        f"in-process: {n} units in {t_ip:.2f} s = {n / t_ip:.1f} units/s ({per_ip * 1000:.0f} ms per unit)",
        f"ray runtime start (ray.init, local, {max(a.workers, 1)} CPUs): {t_init:.1f} s",
        f"ray, 1 worker, 1 unit: {rows['ray1_1']:.2f} s (fixed cost of a batch: worker start, imports, model load)",
        f"ray, 1 worker, {n} units: {rows['ray1_n']:.2f} s = {n / rows['ray1_n']:.1f} units/s; per unit after the "
        f"first {per_ray * 1000:.0f} ms: overhead {1000 * (per_ray - per_ip):+.0f} ms per unit vs in-process",
        f"ray, {a.workers} workers, {a.workers} units: {rows['rayW_W']:.2f} s (fixed cost with {a.workers} workers "
        f"starting at once)",
        f"ray, {a.workers} workers, {n} units: {rows['rayW_n']:.2f} s = {n / rows['rayW_n']:.1f} units/s; after the "
        f"fixed cost {(n - a.workers) / max(rows['rayW_n'] - rows['rayW_W'], 1e-9):.1f} units/s, "
        f"{((n - a.workers) / max(rows['rayW_n'] - rows['rayW_W'], 1e-9)) / ((n - 1) / max(rows['ray1_n'] - rows['ray1_1'], 1e-9)):.2f}x "
        f"the 1-worker rate",
    ]
    print("\n".join(lines))
    if a.write:
        import ray as _r
        dev = f"CPU {platform.machine()}, {os.cpu_count()} cores (shared machine), 1 torch thread per unit"
        text = (f"\n## Batch backends: in-process vs local Ray ({datetime.date.today()})\n\n"
                f"`python benchmarks/bench_batch.py --units {n} --res {a.res} --seeds {a.seeds} --workers {a.workers} "
                f"--repeats {a.repeats}` (medians); "
                f"{dev}; Python {platform.python_version()}, torch {torch.__version__}, ray {_r.__version__}. "
                f"A unit: a grid of {a.seeds} images of a random {a.res} px generator (PNG + record).\n\n"
                + "\n".join(f"- {x}" for x in lines) + "\n")
        with open(a.write, "a", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
