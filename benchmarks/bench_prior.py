"""Benchmark of clip2latent priors: text -> image latency and training-pair throughput.

Random weights cost exactly what real ones cost, so nothing is downloaded: the paper's prior
("mid": 48.8M parameters), CLIP ViT-B/32 (open_clip architecture, random weights) and a random
StyleGAN2 with config-f channel widths.

    python benchmarks/bench_prior.py                                   # GPU if there is one, 1024 px
    python benchmarks/bench_prior.py --device cpu --repeats 1 --warmup 1
    python benchmarks/bench_prior.py ... --write benchmarks/RESULTS.md

Measured (median of --repeats after --warmup runs, device synchronised):
  text->lat  one prompt -> CLIP text embedding (cache cleared) -> N latents: the prior's sampling with
             guidance 2 (conditional and unconditional in one batch), 4 and 25 respaced steps
  text->img  one prompt -> CLIP text embedding -> N latents -> N images rendered at --res, and,
             for N = 16, each ranked by its CLIP image embedding (clip2latent's scripts/timings.py
             setting: 16 samples per prompt, clip_sort, guidance 2; the paper's "< 0.25 s on an
             A100" is its 4-step figure)
  pairs/s    training-pair generation: z -> w -> image -> CLIP image embedding, batches of --pair-batch
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from nada_ops.clip.models import load_clip  # noqa: E402
from nada_ops.prior.config import PriorConfig  # noqa: E402
from nada_ops.prior.model import new_prior  # noqa: E402
from nada_ops.prior.pairs import render_pairs  # noqa: E402
from nada_ops.prior.sampler import clip_scores  # noqa: E402
from nada_ops.stylegan.config import StyleGAN2Config  # noqa: E402
from nada_ops.stylegan.networks import Generator  # noqa: E402
from nada_ops.stylegan.sampling import synthesize  # noqa: E402


PROMPT = "a photograph of a smiling woman with curly red hair"


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, repeats, warmup):
    for _ in range(warmup):
        fn()
    _sync(dev)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(dev)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--res", type=int, default=1024)
    ap.add_argument("--size", default="mid", choices=["mid", "small", "tiny"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pair-batch", type=int, default=32)
    ap.add_argument("--pair-count", type=int, default=64)
    ap.add_argument("--skip-16", action="store_true", help="only 1 image for text->img (slow CPUs)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads (torch.set_num_threads); 1 is steadier on a shared, busy machine")
    ap.add_argument("--write", default=None, help="append a markdown section to this file")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    clip = load_clip("ViT-B-32", "random", device=dev)
    G = Generator(StyleGAN2Config(img_resolution=a.res, channel_base=32768, channel_max=512)).to(dev).eval()
    cfg = PriorConfig.preset(a.size, latent_dim=512, cond_dim=clip.embed_dim)
    prior = new_prior(cfg, torch.zeros(512), torch.ones(512), seed=0)
    prior = prior.to(dev)
    prior.net.eval().requires_grad_(False)
    rows = []
    with torch.inference_mode():
        for n in (1, 16):
            for steps in (4, 25):
                def latents(n=n, steps=steps):
                    clip.clear_text_cache()
                    e = clip.encode_text([PROMPT])
                    return prior.sample_w(e.expand(n, -1).contiguous(), 2.0, steps,
                                          generator=torch.Generator(device=dev).manual_seed(0))
                rows.append(("text->latents", n, steps, timed(latents, dev, a.repeats, a.warmup)))
        for n in (1,) if a.skip_16 else (1, 16):
            for steps in (4, 25):
                def full(n=n, steps=steps):
                    clip.clear_text_cache()
                    e = clip.encode_text([PROMPT])
                    cond = e.expand(n, -1).contiguous()
                    w = prior.sample_w(cond, 2.0, steps, generator=torch.Generator(device=dev).manual_seed(1))
                    ws = prior.to_wplus(w, G.cfg.num_ws)
                    if n > 1:           # clip2latent's timing setting: rank the 16 samples by CLIP
                        s = clip_scores(G, clip, ws, cond, batch=n)
                        return s.argsort(descending=True)
                    return synthesize(G, ws, "const", n)
                rows.append(("text->img", n, steps, timed(full, dev, a.repeats, a.warmup)))
        z = torch.randn(a.pair_count, 512, generator=torch.Generator().manual_seed(0))
        t = timed(lambda: render_pairs(G, clip, z, a.pair_batch), dev, max(1, a.repeats // 2), 1)
        pairs_per_s = a.pair_count / t
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20 if dev.type == "cuda" else None
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()}, " \
        f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''})"
    load = ""
    if dev.type == "cpu" and hasattr(os, "getloadavg"):
        load = f" Load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine)."
    lines = [f"### clip2latent prior, {name}, {datetime.date.today()}", "",
             f"torch {torch.__version__}, prior '{a.size}' ({prior.parameter_count():,} parameters, float32), CLIP "
             f"ViT-B/32 and StyleGAN2 config-f {a.res} px with random weights, guidance 2 (one batched pass), "
             f"reference respacing; median of {a.repeats} after {a.warmup} warm-up.",
             f"Command: `python benchmarks/bench_prior.py --device {a.device} --res {a.res} --repeats {a.repeats} "
             f"--warmup {a.warmup} --pair-batch {a.pair_batch} --pair-count {a.pair_count}"
             + (f" --threads {a.threads}" if a.threads else "")
             + (" --skip-16" if a.skip_16 else "") + "`." + load, "",
             "| what | images | steps | seconds | images / s |", "|---|---|---|---|---|"]
    for what, n, steps, t in rows:
        lines.append(f"| {what} | {n} | {steps} | {t:.3f} | {n / t:.1f} |")
    lines += ["", f"Training pairs ({a.res} px render + ViT-B/32 embedding, batch {a.pair_batch}): "
                  f"{pairs_per_s:.1f} pairs/s" + (f"; peak GPU memory {peak:.0f} MiB" if peak else "") + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        with open(a.write, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
