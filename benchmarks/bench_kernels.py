"""Benchmark of the compiled CUDA ops against the PyTorch reference.

Per op (bias_act and upfirdn2d on the shapes a config-f StyleGAN2 uses) and for a whole
generator forward and forward+backward at 256 and 1024 px, it reports the median time of
the reference and of the compiled implementation, and appends the results (device, date,
torch/CUDA versions, settings, a table and the raw JSON) to benchmarks/RESULTS.md.

    python benchmarks/bench_kernels.py                    # CUDA GPU: full run
    python benchmarks/bench_kernels.py --quick            # fewer repeats, smaller batches
    python benchmarks/bench_kernels.py --cpu-reference    # no GPU: reference only, small, labelled

This is a script, not a test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from nada_ops.ops import backend, bias_act, setup_filter, upfirdn2d  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


# ------------------------------------------------------------------ timing

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in milliseconds (synchronised around every call)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run_both(make_fn, impls, device, repeats, warmup):
    out = {}
    for impl in impls:
        backend.set_impl(impl)
        try:
            fn = make_fn()
            out[impl] = time_fn(fn, device, repeats, warmup)
        except Exception as exc:  # report, keep benchmarking the rest
            out[impl] = None
            out[f"{impl}_error"] = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            backend.set_impl(None)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------- cases

def op_cases(batch: int, small: bool):
    """(name, shape description, dtype, pass, make_fn factory taking device)."""
    f4 = setup_filter([1, 3, 3, 1])
    if small:
        ba_shapes = [("bias_act lrelu+clamp", (batch, 64, 32, 32))]
        up_shapes = [("upfirdn2d upsample2d (ToRGB skip)", (batch, 3, 64, 64), 2, 1, (2, 1, 2, 1), 4.0),
                     ("upfirdn2d conv-up FIR (4x4)", (batch, 64, 33, 33), 1, 1, (1, 1, 1, 1), 4.0)]
    else:
        ba_shapes = [("bias_act lrelu (mapping)", (batch * 64, 512)),
                     ("bias_act lrelu+clamp", (batch, 512, 64, 64)),
                     ("bias_act lrelu+clamp", (batch, 128, 256, 256)),
                     ("bias_act lrelu+clamp", (batch, 32, 1024, 1024))]
        up_shapes = [("upfirdn2d upsample2d (ToRGB skip)", (batch, 3, 512, 512), 2, 1, (2, 1, 2, 1), 4.0),
                     ("upfirdn2d conv-up FIR (4x4)", (batch, 512, 129, 129), 1, 1, (1, 1, 1, 1), 4.0),
                     ("upfirdn2d conv-up FIR (4x4)", (batch, 64, 513, 513), 1, 1, (1, 1, 1, 1), 4.0),
                     ("upfirdn2d downsample2d", (batch, 3, 1024, 1024), 1, 2, (1, 1, 1, 1), 1.0)]
    cases = []
    for name, shape in ba_shapes:
        for dtype in (torch.float32, torch.float16):
            for bwd in (False, True):
                def factory(device, shape=shape, dtype=dtype, bwd=bwd):
                    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=bwd)
                    b = torch.randn(shape[1], device=device, dtype=dtype, requires_grad=bwd)
                    dy = torch.randn(shape, device=device, dtype=dtype)

                    def make():
                        def fn():
                            y = bias_act(x, b, act="lrelu", clamp=256.0 if len(shape) == 4 else None)
                            if bwd:
                                torch.autograd.grad(y, (x, b), dy)
                        return fn
                    return make
                cases.append((name, shape, dtype, "fwd+bwd" if bwd else "fwd", factory))
    for name, shape, up, down, pad, gain in up_shapes:
        for dtype in (torch.float32, torch.float16):
            for bwd in (False, True):
                def factory(device, shape=shape, up=up, down=down, pad=pad, gain=gain, dtype=dtype, bwd=bwd):
                    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=bwd)
                    f = f4.to(device)

                    def make():
                        def fn():
                            y = upfirdn2d(x, f, up=up, down=down, padding=pad, gain=gain)
                            if bwd:
                                torch.autograd.grad(y, x, torch.ones_like(y))
                        return fn
                    return make
                cases.append((name, shape, dtype, "fwd+bwd" if bwd else "fwd", factory))
    return cases


def generator_cases(resolutions, batch_for, small: bool):
    from nada_ops.stylegan.config import StyleGAN2Config
    cases = []
    for res in resolutions:
        if small:
            cfg = StyleGAN2Config(img_resolution=res, z_dim=64, w_dim=64, channel_base=1024, channel_max=64,
                                  num_mapping_layers=2, conv_clamp=256.0)
        else:  # config-f: channel_base 32768, channel_max 512, NVIDIA's conv_clamp
            cfg = StyleGAN2Config(img_resolution=res, channel_base=32768, channel_max=512, conv_clamp=256.0)
        batch = batch_for(res)
        for bwd in (False, True):
            def factory(device, cfg=cfg, batch=batch, bwd=bwd):
                from nada_ops.stylegan.networks import Generator
                torch.manual_seed(0)
                G = Generator(cfg).to(device)
                G.requires_grad_(bwd)
                z = torch.randn(batch, cfg.z_dim, device=device)

                def make():
                    def fn():
                        if bwd:
                            img = G(z, noise_mode="const")
                            img.square().mean().backward()
                            G.zero_grad(set_to_none=True)
                        else:
                            with torch.no_grad():
                                G(z, noise_mode="const")
                    return fn
                return make
            cases.append((f"generator {res}px ({'config-f' if not small else 'tiny'})",
                          (batch, 3, res, res), torch.float32, "fwd+bwd" if bwd else "fwd", factory))
    return cases


# ------------------------------------------------------------------ report

def environment(device) -> dict:
    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2 ** 30, 1), sm_count=props.multi_processor_count)
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except Exception:
            pass
        try:
            from nada_ops.kernels import loader
            home, _ = loader.find_cuda_home()
            env["nvcc"] = loader.nvcc_version(home) if home else None
        except Exception:
            pass
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def to_markdown(env: dict, settings: dict, rows: list[dict], note: str) -> str:
    lines = [f"## Compiled ops vs reference (bench_kernels.py) — {env['date']} — "
             f"{env.get('device_name', env['device'])}", "",
             "Median synchronised wall-clock times in ms; speed-up = reference / compiled.", ""]
    if note:
        lines += [f"**{note}**", ""]
    lines.append("- " + ", ".join(f"{k}: `{v}`" for k, v in env.items() if k != "date"))
    lines.append("- settings: " + ", ".join(f"{k}=`{v}`" for k, v in settings.items()))
    lines += ["", "| case | shape | dtype | pass | reference ms | compiled ms | speed-up |",
              "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        ref, comp = r.get("reference"), r.get("compiled")
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
        speed = f"{ref / comp:.2f}x" if ref and comp else "n/a"
        lines.append(f"| {r['case']} | {r['shape']} | {r['dtype']} | {r['pass']} | {fmt(ref)} | {fmt(comp)} | {speed} |")
    errors = [(r["case"], k, v) for r in rows for k, v in r.items() if k.endswith("_error")]
    if errors:
        lines += ["", "Errors:"] + [f"- {c} ({k}): {v}" for c, k, v in errors]
    lines += ["", "<details><summary>raw JSON</summary>", "", "```json",
              json.dumps({"environment": env, "settings": settings, "results": rows}, indent=1), "```", "",
              "</details>", ""]
    return "\n".join(lines)


HEADER = """# Benchmark results

Appended by the scripts in `benchmarks/` (newest run last).

"""


def append_results(text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else HEADER
    path.write_text(old.rstrip() + "\n\n" + text)


# -------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batch", type=int, default=4, help="batch of the per-op cases")
    ap.add_argument("--gen-batch", type=int, default=None, help="generator batch (default: 8 at <=256 px, 2 above)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="repeats=5, warmup=2, batch=2")
    ap.add_argument("--skip-ops", action="store_true")
    ap.add_argument("--skip-generator", action="store_true")
    ap.add_argument("--cpu-reference", action="store_true",
                    help="without CUDA: time the reference only, at small sizes (labelled as such)")
    ap.add_argument("--output", type=Path, default=RESULTS, help="markdown file to append to")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.batch = 5, 2, 2

    note = ""
    if torch.cuda.is_available():
        device = torch.device("cuda")
        impls = ["reference", "compiled"]
        from nada_ops.kernels import loader
        print("building/loading the compiled ops ...", flush=True)
        t0 = time.monotonic()
        ops, why = loader.get_extension("bias_act")
        if ops is None:
            print(f"WARNING: the compiled ops are unavailable ({why}); timing the reference only", file=sys.stderr)
            impls = ["reference"]
            note = f"compiled ops unavailable: {why}"
        else:
            print(f"  ready in {time.monotonic() - t0:.1f} s")
        small = False
    elif args.cpu_reference:
        device = torch.device("cpu")
        impls = ["reference"]
        small = True
        args.resolutions = [r for r in args.resolutions if r <= 64] or [32]
        note = ("CPU only, reference implementation only, tiny sizes: NOT a compiled-vs-reference "
                "comparison (no CUDA device was available)")
    else:
        print("bench_kernels: no CUDA device is available. The compiled ops run on CUDA only, so there is "
              "nothing to compare; run this on a GPU machine (or pass --cpu-reference to time the "
              "reference alone at small sizes).", file=sys.stderr)
        return 2

    gen_batch = (lambda res: args.gen_batch) if args.gen_batch else (lambda res: 8 if res <= 256 else 2)
    if small:
        gen_batch = lambda res: 2  # noqa: E731
    settings = {"repeats": args.repeats, "warmup": args.warmup, "op_batch": args.batch,
                "generator_batch": {r: gen_batch(r) for r in args.resolutions}, "impls": impls,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark}

    cases = []
    if not args.skip_ops:
        cases += op_cases(args.batch, small)
    if not args.skip_generator:
        cases += generator_cases(args.resolutions, gen_batch, small)

    rows = []
    for name, shape, dtype, pas, factory in cases:
        try:
            make = factory(device)
        except Exception as exc:
            rows.append({"case": name, "shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
                         "pass": pas, "reference": None, "compiled": None, "setup_error": str(exc)[:300]})
            continue
        res = run_both(make, impls, device, args.repeats, args.warmup)
        row = {"case": name, "shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
               "pass": pas, "reference": res.get("reference"), "compiled": res.get("compiled")}
        row.update({k: v for k, v in res.items() if k.endswith("_error")})
        rows.append(row)
        ref, comp = row["reference"], row["compiled"]
        speed = f"{ref / comp:5.2f}x" if ref and comp else "  n/a"
        fmt = lambda v: "   n/a   " if v is None else f"{v:9.3f}"
        print(f"{name:36s} {row['shape']:>18s} {row['dtype']:>8s} {pas:>7s}  ref {fmt(ref)} ms  "
              f"compiled {fmt(comp)} ms  {speed}", flush=True)
        del make
        if device.type == "cuda":
            torch.cuda.empty_cache()

    env = environment(device)
    text = to_markdown(env, settings, rows, note)
    if not args.no_write:
        append_results(text, args.output)
        print(f"results appended to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
