"""``python -m nada_ops mapper train | apply``: latent-mapper "mining" (StyleGAN-NADA sec. 4.3).

train: a StyleCLIP latent mapper on an adapted generator (writes .safetensors, sample grids);
apply: mapped latents of seeds or of a latents file, and a before / after grid.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from ..limits import arg

USAGE = "usage: python -m nada_ops mapper {train,apply} [options]  (--help after the subcommand for details)"


def run(argv) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print("  train   train a latent mapper on an adapted generator (StyleGAN-NADA sec. 4.3)")
        print("  apply   map latents (seeds or a latents file) and render them before / after")
        return 0 if argv else 2
    sub, rest = argv[0], argv[1:]
    if sub == "train":
        return train(rest)
    if sub == "apply":
        return apply(rest)
    print(f"unknown mapper subcommand {sub!r}; {USAGE}", file=sys.stderr)
    return 2


def _levels(text: str) -> list[str]:
    from ..nada.mapper.network import LEVELS
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in LEVELS]
    if bad or not parts:
        raise SystemExit(f"--levels {text!r}: use a comma-separated subset of {', '.join(LEVELS)}")
    return parts


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nada_ops mapper train",
                                description="Train a StyleCLIP latent mapper on an ADAPTED generator so that every "
                                            "latent shows the target (StyleGAN-NADA sec. 4.3, eq. 5).")
    p.add_argument("--generator", required=True, help="the adapted generator (.pkl / .pt / .safetensors)")
    p.add_argument("--target", required=True, help="target text, e.g. 'cat'")
    p.add_argument("--templates", choices=["nada", "imagenet", "single"], default="nada",
                   help="text embedding averaged over prompt templates (single = raw text, StyleCLIP's code)")
    p.add_argument("--clip", action="append", default=None,
                   help="CLIP model NAME[:WEIGHT], repeatable (default: ViT-B-32:1 ViT-B-16:1)")
    p.add_argument("--clip-weights", action="append", default=[],
                   help="NAME=FILE weights for a CLIP model, or NAME=random for benchmarks")
    p.add_argument("--clip-dir", action="append", default=[], help="folder to search for CLIP weights")
    p.add_argument("--iterations", type=arg("iterations"), default=10000)
    p.add_argument("--batch", type=arg("train_batch"), default=2)
    p.add_argument("--optimizer", choices=["ranger", "adam"], default="ranger")
    p.add_argument("--lr", type=arg("lr"), default=0.5)
    p.add_argument("--lambda-clip", type=arg("mapper_lambda"), default=1.0)
    p.add_argument("--lambda-l2", type=arg("mapper_lambda"), default=0.5,
                   help="latent L2 weight (paper 0.5; StyleGAN-NADA's code 0.8)")
    p.add_argument("--lambda-norm", type=arg("mapper_lambda"), default=0.2,
                   help="embedding-norm loss weight, eq. 5 (paper 0.2; StyleGAN-NADA's code 0.5)")
    p.add_argument("--norm-loss", choices=["norms", "embeddings"], default="norms",
                   help="eq. 5 as squared difference of the embedding norms (paper text, NADA's code) or as "
                        "squared distance of the embeddings")
    p.add_argument("--levels", default="coarse,medium,fine", help="which W+ groups the mapper moves")
    p.add_argument("--single", action="store_true", help="one MLP for all W+ entries (StyleCLIP's SingleMapper)")
    p.add_argument("--pixel-norm", choices=["rows", "features"], default="rows",
                   help="rows: over the W+ entries of a level, as StyleCLIP's code; features: over each w")
    p.add_argument("--psi", type=arg("psi"), default=0.7, help="truncation of the training latents")
    p.add_argument("--seed", type=arg("seed"), default=0)
    p.add_argument("--preview-every", type=arg("preview_every"), default=200,
                   help="write a before/after grid every N iterations")
    p.add_argument("--sample-dir", default=None, help="where sample grids go (default: next to --out)")
    p.add_argument("--save-every", type=arg("preview_every"), default=0,
                   help="also save the mapper every N iterations as OUT.stepNNNNNN.safetensors (0 = off)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output mapper .safetensors")
    return p


def train(argv) -> int:
    a = train_parser().parse_args(argv)
    from ..clip.ensemble import ClipEnsemble
    from ..clip.models import load_clip
    from ..nada.mapper import MapperConfig, MapperHandle, MapperSettings, save_mapper, train_mapper
    from ..nada.mapper.train import text_guidance
    from ..stylegan.io import load_generator
    from ..stylegan.sampling import save_image_grid
    from .adapt import _parse_clip
    from .common import ProgressPrinter, device_from_arg

    dev = device_from_arg(a.device)
    handle = load_generator(a.generator, device=dev)
    cfg = handle.cfg
    if a.single:
        config = MapperConfig.for_generator(cfg, (), kind="single", pixel_norm=a.pixel_norm)
    else:
        config = MapperConfig.for_generator(cfg, _levels(a.levels), pixel_norm=a.pixel_norm)
    weights = {}
    for s in a.clip_weights:
        name, _, path = s.partition("=")
        if not path:
            raise SystemExit(f"--clip-weights {s!r}: expected NAME=FILE")
        weights[name] = path
    specs = _parse_clip(a.clip or ["ViT-B-32:1.0", "ViT-B-16:1.0"])
    ens = ClipEnsemble([({"name": n, "pretrained": weights.get(n)}, w) for n, w in specs],
                       load_fn=load_clip, device=dev, search_dirs=a.clip_dir or None)
    guidance = text_guidance(list(ens), a.target, a.templates)
    settings = MapperSettings(iterations=a.iterations, batch_size=a.batch, optimizer=a.optimizer, lr=a.lr,
                              lambda_clip=a.lambda_clip, lambda_l2=a.lambda_l2, lambda_norm=a.lambda_norm,
                              norm_loss=a.norm_loss, truncation_psi=a.psi, seed=a.seed,
                              preview_every=a.preview_every).validate()
    stem = os.path.splitext(a.out)[0]
    sample_dir = a.sample_dir or stem + "_samples"
    base = MapperHandle(mapper=None, name=os.path.basename(stem), provenance={
        "generator": handle.name, "target": guidance.provenance})
    bar = ProgressPrinter("mapper")
    stop = {"flag": False}

    def on_sigint(signum, frame):
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        sys.stderr.write("\nstopping after this iteration (Ctrl-C again to abort without saving)\n")

    def progress(info):
        t = info.terms
        bar(info.step, info.total, f"loss {info.loss:.4f} (clip {t['clip']:.4f} l2 {t['l2']:.4f} "
                                   f"norm {t['norm']:.4f})")
        if info.preview is not None:
            os.makedirs(sample_dir, exist_ok=True)
            save_image_grid(info.preview, os.path.join(sample_dir, f"step{info.step:06d}.png"),
                            cols=info.preview.shape[0] // 2)
        if stop["flag"]:
            raise KeyboardInterrupt

    def snapshot(step, mapper, loss):
        entry = {"op": "latent_mapper", "target": guidance.provenance, "settings": settings.to_dict(),
                 "iterations_done": step, "final_loss": loss, "snapshot": True}
        save_mapper(base.derive(mapper, name=f"{base.name}-step{step}", history_entry=entry),
                    f"{stem}.step{step:06d}.safetensors")

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = train_mapper(handle.G, guidance, settings, config, progress=progress,
                              snapshot_every=a.save_every, on_snapshot=snapshot)
    finally:
        signal.signal(signal.SIGINT, old)
    out_handle = base.derive(result.mapper, history_entry=result.history_entry(settings, guidance, handle.name))
    out = a.out
    if result.stop_exception is not None:
        if result.steps_done == 0:
            print(f"error: {result.stop_exception}", file=sys.stderr)
            return 1
        out = f"{stem}.partial-step{result.steps_done}.safetensors"
    save_mapper(out_handle, out)
    if result.stop_exception is not None:
        why = "interrupted" if result.interrupted else f"stopped: {result.stop_exception}"
        print(f"{why}; the {result.steps_done} iterations trained so far were saved to {out}", file=sys.stderr)
        return 130 if result.interrupted else 1
    print(f"wrote {out} ({result.steps_done} iterations, {result.seconds:.1f}s, final loss {result.losses[-1]:.4f})"
          + (f"; samples in {sample_dir}" if settings.preview_every else ""))
    return 0


def apply_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nada_ops mapper apply",
                                description="Map latents with a latent mapper and render them before / after.")
    p.add_argument("--mapper", required=True, help="mapper file (.safetensors of this pack, or a StyleCLIP .pt)")
    p.add_argument("--generator", required=True, help="the generator the mapper was trained on")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--seeds", default=None, help="seeds, e.g. 0-7 (default)")
    src.add_argument("--latents", default=None, help="latents file (.pt / .npy, e.g. from 'invert')")
    p.add_argument("--psi", type=arg("psi"), default=0.7, help="truncation for --seeds")
    p.add_argument("--strength", type=arg("strength"), default=1.0, help="scales the mapper's step")
    p.add_argument("--batch", type=arg("batch"), default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="PNG grid: top row the latents, bottom row mapped")
    p.add_argument("--latents-out", default=None, help="write the mapped latents (.pt)")
    return p


def apply(argv) -> int:
    a = apply_parser().parse_args(argv)
    if a.out is None and a.latents_out is None:
        raise SystemExit("give --out (a before/after grid) and/or --latents-out (the mapped latents)")
    import torch

    from ..latent_tools import load_latents, save_latents
    from ..latents import WLatents, parse_seeds
    from ..limits import check_memory
    from ..nada.mapper import load_mapper
    from ..stylegan.io import load_generator
    from ..stylegan.sampling import sample_latents, save_image_grid, synthesize
    from .common import ProgressPrinter, device_from_arg
    dev = device_from_arg(a.device)
    h = load_generator(a.generator, device=dev)
    m = load_mapper(a.mapper, device=dev)
    if a.latents:
        lat = load_latents(a.latents, h.cfg.num_ws, h.cfg.w_dim)
    else:
        lat = sample_latents(h.G, parse_seeds(a.seeds or "0-7"), a.psi)
    m.cfg.check_latents(lat.ws, "the latents")
    with torch.no_grad():
        mapped = m.mapper.map(lat.ws.to(dev), a.strength)
    info = dict(lat.info)
    info["mapper"] = {"name": m.name, "strength": a.strength}
    out_lat = WLatents(ws=mapped.cpu(), is_wplus=True, info=info)
    if a.latents_out:
        save_latents(out_lat, a.latents_out)
        print(f"wrote {a.latents_out} ({out_lat.batch} mapped latents)")
    if a.out:
        n, res = lat.batch, h.cfg.img_resolution
        check_memory(4 * n * h.cfg.img_channels * res * res * 4, f"a grid of {2 * n} {res}px images",
                     "map fewer latents at once")
        bar = ProgressPrinter("render")
        before = synthesize(h.G, lat.ws.to(dev), "const", a.batch, progress=lambda d, t, _: bar(d, 2 * t))
        after = synthesize(h.G, mapped, "const", a.batch, progress=lambda d, t, _: bar(n + d, 2 * t))
        save_image_grid(torch.cat([before, after]).cpu(), a.out, cols=n)
        print(f"wrote {a.out} (top: latents, bottom: mapped with strength {a.strength:g})")
    return 0
