"""Benchmark of photo encoders (images/s): pSp, e4e, ReStyle at full size.

Random weights cost exactly what real ones cost, so nothing is downloaded: the encoders are
our full-size networks (IR-SE-50 / ResNet-34, the authors' layouts) with random weights and
the generator a random StyleGAN2 at config-f widths.

    python benchmarks/bench_encoders.py                                # GPU if there is one
    python benchmarks/bench_encoders.py --device cpu --repeats 2 --warmup 1
    python benchmarks/bench_encoders.py ... --write benchmarks/RESULTS.md

For each encoder: the encoder alone (ReStyle: all its passes, with the reconstructions it
renders in between), and end to end (encode + render the final codes at the generator's
resolution, what Invert Image does without refinement). Synchronised wall-clock time, median.
"""
from __future__ import annotations

import argparse
import contextlib
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

from nada_ops.invert.encoders import StyleEncoderModel, encode  # noqa: E402
from nada_ops.invert.networks import EncoderConfig, StyleEncoder  # noqa: E402
from nada_ops.stylegan.config import StyleGAN2Config  # noqa: E402
from nada_ops.stylegan.networks import Generator  # noqa: E402

IRSE50 = dict(stem_width=64, stage_units=(3, 4, 14, 3), stage_widths=(64, 128, 256, 512), se_hidden=(4, 8, 16, 32))
RESNET34 = dict(stem_width=64, stage_units=(3, 4, 6, 3), stage_widths=(64, 128, 256, 512))


def encoder_config(name: str, res: int) -> tuple[EncoderConfig, str]:
    n = 2 * (res.bit_length() - 1) - 2
    fpn_heads = tuple(4 if i < 3 else 5 if i < 7 else 6 for i in range(n))
    if name in ("e4e", "pSp"):
        return EncoderConfig(backbone="ir_se", style_source="fpn", progressive=name == "e4e", in_channels=3,
                             n_styles=n, head_convs=fpn_heads, **IRSE50), name
    if name == "restyle_e4e":
        return EncoderConfig(backbone="ir_se", style_source="flat", progressive=True, in_channels=6, n_styles=n,
                             head_convs=(4,) * n, **IRSE50), "ReStyle"
    if name == "restyle_e4e_resnet34":
        return EncoderConfig(backbone="resnet34", style_source="flat", progressive=True, in_channels=6, n_styles=n,
                             head_convs=(4,) * n, **RESNET34), "ReStyle"
    raise ValueError(name)


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_mb(dev):
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, dev, repeats, warmup):
    for _ in range(warmup):
        fn()
    _sync(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(name, res, G, dev, batch, repeats, warmup, iterations, half):
    cfg, method = encoder_config(name, res)
    torch.manual_seed(0)
    net = StyleEncoder(cfg).to(dev).eval().requires_grad_(False)
    enc = StyleEncoderModel(net=net, cfg=cfg, method=method, encoder_type=name, resolution=res,
                            latent_avg=G.w_avg[None].expand(cfg.n_styles, -1).clone(), add_latent_avg=True)
    x = torch.rand(batch, 3, 256, 256, device=dev) * 2 - 1
    amp = torch.autocast("cuda", dtype=torch.float16) if half and dev.type == "cuda" else contextlib.nullcontext()
    n_iter = iterations if cfg.iterative else 1
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def encoder_only():
        with torch.no_grad(), amp:
            return encode(enc, G, x, iterations=n_iter, batch_size=batch)

    def end_to_end():
        with torch.no_grad(), amp:
            r = encode(enc, G, x, iterations=n_iter, batch_size=batch)
            return G.synthesis(r.ws, noise_mode="const")

    t_enc = _timed(encoder_only, dev, repeats, warmup)
    t_all = _timed(end_to_end, dev, repeats, warmup)
    return {"encoder": name, "res": res, "batch": batch, "iterations": n_iter, "half": bool(half),
            "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "encoder_s": t_enc, "encoder_img_s": batch / t_enc, "end_to_end_s": t_all,
            "end_to_end_img_s": batch / t_all, "ms_per_image_end_to_end": 1000 * t_all / batch,
            "peak_mem_mb": _peak_mb(dev)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--encoders", nargs="+", default=["e4e", "pSp", "restyle_e4e", "restyle_e4e_resnet34"])
    p.add_argument("--res", type=int, default=1024, help="generator resolution (W+ entries follow)")
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument("--iterations", type=int, default=5, help="ReStyle passes")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--half", action="store_true", help="CUDA: encoder and generator under fp16 autocast")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write", default=None, help="append a markdown section to this results file")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    G = Generator(StyleGAN2Config(img_resolution=a.res, channel_base=32768, channel_max=512)).to(dev).eval()
    G.requires_grad_(False)
    rows = []
    for b in a.batch:
        for name in a.encoders:
            r = bench(name, a.res, G, dev, b, a.repeats, a.warmup, a.iterations, a.half)
            rows.append(r)
            print(json.dumps(r), flush=True)
    if dev.type == "cuda":
        devname = torch.cuda.get_device_name(dev)
    else:
        devname = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
                  f"{torch.get_num_threads()} threads)"
    header = (f"### Photo encoders, {devname}, {datetime.date.today().isoformat()}\n\n"
              f"torch {torch.__version__}, CUDA {torch.version.cuda}, python {platform.python_version()}, "
              f"generator {a.res} px config-f widths, random weights, {a.warmup} warm-up + {a.repeats} timed runs, "
              f"median{', fp16 autocast' if a.half else ', float32'}. "
              f"Command: `python benchmarks/bench_encoders.py {' '.join(sys.argv[1:])}`\n\n"
              "| encoder | params (M) | batch | passes | encoder images/s | encode + render images/s | "
              "ms / image (encode + render) | peak memory (MiB) |\n|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['encoder']} | {r['params_m']:.1f} | {r['batch']} | {r['iterations']} | "
             f"{r['encoder_img_s']:.3f} | {r['end_to_end_img_s']:.3f} | {r['ms_per_image_end_to_end']:.0f} | "
             f"{r['peak_mem_mb']:.0f} |" for r in rows]
    text = header + "\n".join(lines) + "\n"
    if dev.type == "cpu":
        text += ("\nOn CPU, peak memory is the process's peak resident set size. ReStyle's passes include the "
                 "reconstructions it renders between passes (4 syntheses at full resolution for 5 passes).\n")
    print(text)
    if a.write:
        with open(a.write, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
