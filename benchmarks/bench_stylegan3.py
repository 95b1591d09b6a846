"""Benchmark of StyleGAN3: the compiled filtered_lrelu kernel against the PyTorch reference, per
layer shape of NVIDIA's 1024 px T and R generators and for whole generators (sampling and
forward+backward, the NADA training pass), plus sampling throughput in images/s.

    python benchmarks/bench_stylegan3.py                  # CUDA GPU: full run (256 and 1024 px)
    python benchmarks/bench_stylegan3.py --quick          # fewer repeats
    python benchmarks/bench_stylegan3.py --cpu-reference  # no GPU: reference only, small, labelled

Results (device, date, versions, a table and the raw JSON) are appended to benchmarks/RESULTS.md.
The compiled case forces ``NADA_OPS_IMPL=compiled`` (filtered_lrelu is not taken by ``auto`` until
this benchmark shows it faster: see nada_ops/ops/backend.py, AUTO_COMPILED).
This is a script, not a test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

import bench_kernels as bk  # noqa: E402  (timing, environment and report helpers)
from nada_ops.ops import backend, filtered_lrelu  # noqa: E402
from nada_ops.stylegan.config import StyleGAN3Config  # noqa: E402


def config(kind: str, res: int, small: bool) -> StyleGAN3Config:
    if small:
        base = dict(z_dim=64, w_dim=64, channel_base=1024, channel_max=32)
    else:       # NVIDIA's published widths
        base = dict(channel_base=32768 * (2 if kind == "r" else 1), channel_max=512 * (2 if kind == "r" else 1))
    extra = dict(conv_kernel=1, use_radial_filters=True) if kind == "r" else {}
    return StyleGAN3Config(img_resolution=res, **base, **extra).validate()


def op_cases(batch: int, small: bool):
    """filtered_lrelu on the distinct layer geometries of a T and an R generator (fwd, fwd+bwd)."""
    from nada_ops.stylegan.networks_sg3 import layer_filters
    cases, seen = [], set()
    for kind in ("t", "r"):
        cfg = config(kind, 64 if small else 1024, small)
        for l in cfg.layers():
            key = (kind, l.in_size, l.out_size, l.up, l.down, l.down_radial, l.out_channels)
            if l.is_torgb or key in seen:
                continue
            seen.add(key)
            conv = l.in_size + l.conv_kernel - 1
            shape = (batch, l.out_channels, conv, conv)
            for bwd in (False, True):
                def factory(device, l=l, shape=shape, bwd=bwd):
                    fu, fd = (f if f is None else f.to(device) for f in layer_filters(l))
                    x = torch.randn(shape, device=device).requires_grad_(bwd)
                    b = torch.randn(shape[1], device=device).requires_grad_(bwd)

                    def make():
                        def fn():
                            y = filtered_lrelu(x, fu, fd, b, up=l.up, down=l.down, padding=list(l.padding),
                                               clamp=256.0)
                            if bwd:
                                y.square().mean().backward()
                        return fn
                    return make
                cases.append((f"filtered_lrelu {kind.upper()} {l.name}", shape, torch.float32,
                              "fwd+bwd" if bwd else "fwd", factory))
    return cases


def generator_cases(resolutions, batch_for, small: bool):
    cases = []
    passes = ("fwd", "fwd+bwd") if small else ("fwd", "fwd+bwd", "fwd fp16")   # fp16 only on a GPU
    for kind in ("t", "r"):
        for res in resolutions:
            cfg = config(kind, res, small)
            batch = batch_for(res)
            for pas in passes:
                def factory(device, cfg=cfg, batch=batch, pas=pas):
                    from nada_ops.stylegan.networks_sg3 import StyleGAN3Generator
                    torch.manual_seed(0)
                    G = StyleGAN3Generator(cfg).to(device)
                    G.requires_grad_(pas == "fwd+bwd")
                    z = torch.randn(batch, cfg.z_dim, device=device)
                    dtype = torch.float16 if pas == "fwd fp16" else torch.float32

                    def make():
                        def fn():
                            if pas == "fwd+bwd":
                                G(z).square().mean().backward()
                                G.zero_grad(set_to_none=True)
                            else:
                                with torch.no_grad():
                                    G.synthesis(G.map(z), dtype=dtype)
                        return fn
                    return make
                cases.append((f"StyleGAN3-{kind.upper()} {res}px", (batch, 3, res, res), torch.float32, pas, factory))
    return cases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batch", type=int, default=4, help="batch of the per-op cases")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="repeats=5, warmup=2, batch=2")
    ap.add_argument("--skip-ops", action="store_true")
    ap.add_argument("--skip-generator", action="store_true")
    ap.add_argument("--cpu-reference", action="store_true",
                    help="no GPU: time the reference alone at small sizes (labelled as such)")
    ap.add_argument("--output", type=Path, default=bk.RESULTS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.batch = 5, 2, 2
    note = ""
    if torch.cuda.is_available():
        device, small, impls = torch.device("cuda"), False, ["reference", "compiled"]
        from nada_ops.kernels import loader
        t0 = time.monotonic()
        ops, why = loader.get_extension("filtered_lrelu")
        if ops is None:
            impls, note = ["reference"], f"compiled ops unavailable: {why}"
        print(f"compiled ops: {'ready' if ops else why} ({time.monotonic() - t0:.1f} s)", flush=True)
        batch_for = lambda res: 8 if res <= 256 else 2  # noqa: E731
    elif args.cpu_reference:
        device, small, impls = torch.device("cpu"), True, ["reference"]
        args.resolutions = [r for r in args.resolutions if r <= 64] or [32]
        batch_for = lambda res: 2  # noqa: E731
        note = ("CPU only, reference implementation only, narrow networks (NVIDIA's layer design, 32 channels): "
                "NOT a compiled-vs-reference comparison (no CUDA device was available)")
    else:
        print("bench_stylegan3: no CUDA device; run it on a GPU machine or pass --cpu-reference", file=sys.stderr)
        return 2
    settings = {"repeats": args.repeats, "warmup": args.warmup, "op_batch": args.batch,
                "generator_batch": {r: batch_for(r) for r in args.resolutions}, "impls": impls,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    cases = ([] if args.skip_ops else op_cases(args.batch, small)) + \
        ([] if args.skip_generator else generator_cases(args.resolutions, batch_for, small))
    rows = []
    for name, shape, dtype, pas, factory in cases:
        make = factory(device)
        res = bk.run_both(make, impls, device, args.repeats, args.warmup)
        row = {"case": name, "shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
               "pass": pas, "reference": res.get("reference"), "compiled": res.get("compiled")}
        if name.startswith("StyleGAN3") and pas == "fwd":
            row["images_per_s_reference"] = round(shape[0] / (row["reference"] / 1e3), 2) if row["reference"] else None
        row.update({k: v for k, v in res.items() if k.endswith("_error")})
        rows.append(row)
        fmt = lambda v: "   n/a   " if v is None else f"{v:9.3f}"  # noqa: E731
        print(f"{name:34s} {row['shape']:>16s} {pas:>8s}  ref {fmt(row['reference'])} ms  "
              f"compiled {fmt(row['compiled'])} ms", flush=True)
        del make
        if device.type == "cuda":
            torch.cuda.empty_cache()
    backend.set_impl(None)
    text = bk.to_markdown(bk.environment(device), settings, rows, note)
    text = text.replace("## Compiled ops vs reference (bench_kernels.py)", "## StyleGAN3 (bench_stylegan3.py)", 1)
    if not args.no_write:
        bk.append_results(text, args.output)
        print(f"results appended to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
