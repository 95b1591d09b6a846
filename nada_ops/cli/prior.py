"""``python -m nada_ops prior make-pairs | train | sample | info``: clip2latent priors.

    make-pairs  (CLIP image embedding, w) pairs from a generator, streamed to shards on disk
                (resumable: run it again to finish or to extend the set)
    train       train a prior on a pair set; checkpoints in the work folder, resumed automatically
    sample      prompt(s) -> latents -> images, with the source generator and any adapted ones
    info        what a prior file holds (ours or a clip2latent .ckpt)
"""
from __future__ import annotations

import argparse
import os
import sys

from ..limits import arg
from .common import ProgressPrinter, device_from_arg

SUBCOMMANDS = ("make-pairs", "train", "sample", "info")


def _clip_args(p, default="ViT-B-32"):
    p.add_argument("--clip", default=default, help=f"CLIP architecture (default {default}, the paper's)")
    p.add_argument("--clip-weights", default=None,
                   help="CLIP weights: a file (OpenAI .pt or open_clip .safetensors/.bin), a folder, a tag, "
                        "or 'random' for benchmarks")
    p.add_argument("--clip-dir", action="append", default=[], help="folder to search for CLIP weights "
                                                                    "(like ComfyUI's models/open_clip)")


def _load_clip(a, dev):
    from ..clip.models import load_clip
    return load_clip(a.clip, a.clip_weights, device=dev, search_dirs=a.clip_dir or None)


def _make_pairs(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m nada_ops prior make-pairs",
                                description="Sample w ~ mapping(z) (no truncation), render, embed with CLIP; pairs "
                                            "go to shards in --out (resumable).")
    p.add_argument("--generator", required=True, help="source generator (.pkl / .pt / .safetensors)")
    p.add_argument("--out", required=True, help="folder of the pair set")
    p.add_argument("--count", type=arg("pairs"), default=1_000_000, help="pairs wanted in total (paper: 1M)")
    p.add_argument("--shard-size", type=arg("shard_size"), default=10_000)
    p.add_argument("--batch", type=arg("batch"), default=32, help="images rendered at once")
    p.add_argument("--seed", type=arg("seed"), default=0)
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const",
                   help="per-pixel noise of the renders (const: as the pack renders by default)")
    p.add_argument("--device", default="auto")
    _clip_args(p)
    a = p.parse_args(argv)
    from ..prior.pairs import generator_info, make_pairs
    from ..stylegan.io import load_generator
    dev = device_from_arg(a.device)
    h = load_generator(a.generator, device=dev)
    clip = _load_clip(a, dev)
    bar = ProgressPrinter("pairs")
    m = make_pairs(h.G, clip, a.out, a.count, a.shard_size, a.batch, a.seed, a.noise_mode, generator_info(h),
                   progress=lambda d, t: bar(d, t), log=lambda s: print(s, file=sys.stderr))
    print(f"{m['count']} pairs in {a.out} ({h.name}, CLIP {clip.key})")
    return 0


def _train(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m nada_ops prior train",
                                description="Train a clip2latent prior on a pair set. Run the same command again "
                                            "to resume (from WORK/train_state.safetensors).")
    p.add_argument("--pairs", required=True, help="pair-set folder (make-pairs --out)")
    p.add_argument("--work", required=True, help="work folder: checkpoints, prior.safetensors, best.safetensors")
    p.add_argument("--out", default=None, help="also write the final prior here (.safetensors)")
    p.add_argument("--size", choices=["mid", "small", "tiny"], default="mid", help="mid = the paper's 48.8M model")
    p.add_argument("--steps", type=arg("train_steps"), default=500_000, help="paper: 1M, best near 500k")
    p.add_argument("--batch", type=arg("prior_batch"), default=512)
    p.add_argument("--lr", type=arg("lr"), default=1e-4)
    p.add_argument("--weight-decay", type=arg("weight_decay"), default=0.01)
    p.add_argument("--ema-beta", type=arg("ema_beta"), default=0.9999)
    p.add_argument("--ema-every", type=arg("ema_every"), default=10)
    p.add_argument("--ema-start", type=arg("ema_start"), default=1000)
    p.add_argument("--cond-noise", type=arg("cond_noise"), default=1.0, help="LAFITE noise scale (paper: 1.0)")
    p.add_argument("--cond-drop", type=arg("cond_drop"), default=0.2, help="condition dropout (guidance)")
    p.add_argument("--cond-norm", choices=["l2", "raw"], default="l2",
                   help="l2: unit CLIP embeddings (x sqrt(dim)); raw: as CLIP gives them (the released models)")
    p.add_argument("--seed", type=arg("seed"), default=0)
    p.add_argument("--checkpoint-every", type=arg("checkpoint_every"), default=5000)
    p.add_argument("--val-every", type=arg("val_every"), default=10_000)
    p.add_argument("--val-prompt", action="append", default=[], help="validation prompt (repeatable)")
    p.add_argument("--val-prompts", default=None, help="file with one validation prompt per line")
    p.add_argument("--val-images", type=arg("val_images"), default=64,
                   help="held-out generated images whose embeddings are validation conditions (0 = none)")
    p.add_argument("--generator", default=None, help="the source generator, for validation renders")
    p.add_argument("--mix-shards", type=arg("mix_shards"), default=4, help="shards shuffled together")
    p.add_argument("--no-resume", action="store_true", help="start over even if WORK holds a checkpoint")
    p.add_argument("--device", default="auto")
    _clip_args(p)
    a = p.parse_args(argv)
    from ..prior.config import PriorConfig
    from ..prior.formats import write_prior
    from ..prior.pairs import ShardedPairs, pairs_in_memory
    from ..prior.trainer import PriorTrainSettings, train_prior
    dev = device_from_arg(a.device)
    data = ShardedPairs(a.pairs, mix=a.mix_shards)
    m = data.manifest
    cfg = PriorConfig.preset(a.size, latent_dim=data.w_dim, cond_dim=data.embed_dim, cond_drop_prob=a.cond_drop,
                             cond_norm=a.cond_norm)
    s = PriorTrainSettings(steps=a.steps, batch=a.batch, lr=a.lr, weight_decay=a.weight_decay, ema_beta=a.ema_beta,
                           ema_every=a.ema_every, ema_start=a.ema_start, cond_noise=a.cond_noise, seed=a.seed,
                           checkpoint_every=a.checkpoint_every, val_every=a.val_every)
    prompts = list(a.val_prompt)
    if a.val_prompts:
        from ..limits import MAX_TEXT_CHARS
        with open(a.val_prompts, encoding="utf-8") as fh:
            text = fh.read(64 * MAX_TEXT_CHARS)
        prompts += [ln.strip() for ln in text.splitlines() if ln.strip()][:256]
    validate = None
    if a.generator and (prompts or a.val_images):
        from ..prior.sampler import ClipValidator
        from ..stylegan.io import load_generator
        h = load_generator(a.generator, device=dev)
        clip = _load_clip(a, dev)
        if clip.key != (m.get("clip") or {}).get("key"):
            print(f"warning: the pairs were embedded with CLIP {m['clip'].get('key')}, validation uses {clip.key}",
                  file=sys.stderr)
        held = pairs_in_memory(h.G, clip, a.val_images, seed=a.seed + 7919, batch=16) if a.val_images else None
        validate = ClipValidator(h.G, clip, prompts, held.embed if held is not None else None, guidance=1.0,
                                 steps=25, seed=a.seed)
    elif prompts or a.val_images != 64:
        print("note: validation needs --generator (and the CLIP model): skipped", file=sys.stderr)
    prov = {"generator": m.get("generator"), "clip": m.get("clip"), "pairs_folder": os.path.abspath(a.pairs)}
    bar = ProgressPrinter("train")

    def progress(info):
        extra = f"loss {info.loss:.4f}"
        if info.validation:
            extra += f" val {info.validation.get('score', 0):.4f}"
        bar(info.step, info.total, extra)

    name = os.path.basename(os.path.normpath(a.work)) or "prior"
    try:
        res = train_prior(data, cfg, s, work_dir=a.work, resume=not a.no_resume, device=dev, provenance=prov,
                          name=name, progress=progress, validate=validate,
                          log=lambda t: print("\n" + t, file=sys.stderr))
    except KeyboardInterrupt:
        print(f"\ninterrupted: the state is in {os.path.join(a.work, 'train_state.safetensors')}; run the same "
              "command to resume", file=sys.stderr)
        return 130
    if a.out:
        write_prior(res.prior, a.out)
    best = res.prior.provenance.get("training", {}).get("best")
    print(f"trained {res.steps_done} steps; prior in {os.path.join(a.work, 'prior.safetensors')}"
          + (f", best (step {best['step']}, score {best['score']:.4f}) in {os.path.join(a.work, 'best.safetensors')}"
             if best else "") + (f", and {a.out}" if a.out else ""))
    return 0


def _sample(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m nada_ops prior sample",
                                description="Prompt(s) -> latents with a prior -> images; one row per generator "
                                            "(the source, then --also generators of the same latent space).")
    p.add_argument("--prior", required=True, help="prior file (.safetensors of this pack, or a clip2latent .ckpt)")
    p.add_argument("--generator", required=True, help="the source generator the prior was trained on")
    p.add_argument("--also", nargs="*", default=[], help="adapted generators to render the same latents with")
    p.add_argument("--prompt", action="append", required=True, help="text prompt (repeatable)")
    p.add_argument("--per-prompt", type=arg("per_prompt"), default=4, help="images per prompt")
    p.add_argument("--candidates", type=arg("candidates"), default=16,
                   help="latents drawn per image; the best by CLIP similarity is kept (paper: 16)")
    p.add_argument("--guidance", type=arg("guidance"), default=2.0, help="classifier-free guidance scale")
    p.add_argument("--steps", type=arg("prior_steps"), default=25)
    p.add_argument("--respacing", choices=["reference", "even"], default="reference")
    p.add_argument("--truncation", type=arg("psi"), default=1.0, help="towards the mean w (1 = none)")
    p.add_argument("--mix-crossover", type=arg("crossover"), default=None,
                   help="style-mix W+ entries from this index on with a random latent")
    p.add_argument("--seed", type=arg("seed"), default=0)
    p.add_argument("--out", required=True, help="PNG grid")
    p.add_argument("--latents-out", default=None, help="also save the latents (.pt, for 'invert'-style reuse)")
    p.add_argument("--device", default="auto")
    _clip_args(p, default=None)
    a = p.parse_args(argv)
    import torch

    from ..prior.formats import load_prior
    from ..prior.sampler import text_to_latents
    from ..stylegan.io import load_generator
    from ..stylegan.sampling import save_image_grid, synthesize
    dev = device_from_arg(a.device)
    prior = load_prior(a.prior, device=dev)
    if a.clip is None:
        a.clip = prior.clip_name or "ViT-B-32"
    h = load_generator(a.generator, device=dev)
    clip = _load_clip(a, dev)
    bar = ProgressPrinter("sample")
    res = text_to_latents(prior, clip, a.prompt, h.G, a.per_prompt, a.candidates, a.guidance, a.steps, a.respacing,
                          a.truncation, a.mix_crossover, seed=a.seed, score=True,
                          progress=lambda what, i, n: bar(i, n, what))
    rows = [synthesize(h.G, res.latents.ws, "const", 8)]
    for f in a.also:
        g = load_generator(f, device=dev)
        res.latents.check_compatible(g.cfg, f"latents for {os.path.basename(f)}")
        rows.append(synthesize(g.G, res.latents.ws.to(g.device), "const", 8).to(rows[0].device))
    save_image_grid(torch.cat(rows), a.out, cols=res.latents.batch)
    if a.latents_out:
        from ..latent_tools import save_latents
        save_latents(res.latents, a.latents_out)
    print(res.describe())
    print(f"wrote {a.out} ({len(rows)} row(s): {', '.join([h.name] + [os.path.basename(f) for f in a.also])})")
    return 0


def _info(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m nada_ops prior info")
    p.add_argument("file")
    a = p.parse_args(argv)
    from ..prior.formats import load_prior
    print(load_prior(a.file).describe())
    return 0


def run(argv) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        print(__doc__.strip().split("\n", 1)[1].rstrip() if argv and argv[0] in ("-h", "--help") else
              f"usage: python -m nada_ops prior {{{' | '.join(SUBCOMMANDS)}}} [options]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    # file and value errors are ValueErrors: the command line prints them without a traceback
    return {"make-pairs": _make_pairs, "train": _train, "sample": _sample, "info": _info}[argv[0]](argv[1:])
