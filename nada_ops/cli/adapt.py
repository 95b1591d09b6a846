"""``python -m nada_ops adapt``: StyleGAN-NADA from the command line."""
from __future__ import annotations

import argparse
import glob
import os
import signal
import sys

from ..limits import arg


def _parse_clip(specs: list[str]) -> list[tuple[str, float]]:
    out = []
    for s in specs:
        name, _, w = s.partition(":")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise SystemExit(f"--clip {s!r}: expected NAME or NAME:WEIGHT, e.g. ViT-B-32:1.0") from None
        out.append((name, weight))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nada_ops adapt",
                                description="Adapt a StyleGAN2 or StyleGAN3 generator to a new domain with CLIP guidance.")
    p.add_argument("--generator", required=True, help="source generator (.pkl / .pt / .safetensors)")
    p.add_argument("--source", default="photo", help="source domain text")
    p.add_argument("--target", default=None, help="target domain text")
    p.add_argument("--target-images", default=None,
                   help="few-shot: folder or glob of target-domain images (instead of --target)")
    p.add_argument("--num-source-samples", type=arg("num_source_samples"), default=16,
                   help="generated source images (few-shot)")
    p.add_argument("--templates", choices=["nada", "imagenet", "single"], default="nada")
    p.add_argument("--clip", action="append", default=None,
                   help="CLIP model NAME[:WEIGHT], repeatable (default: ViT-B-32:1 ViT-B-16:1)")
    p.add_argument("--clip-weights", action="append", default=[],
                   help="NAME=FILE weights for a CLIP model (OpenAI .pt or open_clip .safetensors/.bin), "
                        "or NAME=random for benchmarks")
    p.add_argument("--clip-dir", action="append", default=[],
                   help="folder to search for CLIP weights (like ComfyUI's models/open_clip)")
    p.add_argument("--iterations", type=arg("iterations"), default=300)
    p.add_argument("--batch", type=arg("train_batch"), default=2)
    p.add_argument("--lr", type=arg("lr"), default=0.002)
    p.add_argument("--reference-lr-scale", action="store_true",
                   help="scale lr and Adam betas by 0.8 like the reference implementation")
    p.add_argument("--mixing", type=arg("mixing"), default=0.9,
                   help="style-mixing probability (0 for sketches/animals)")
    p.add_argument("--seed", type=arg("seed"), default=0)
    p.add_argument("--schedule", choices=["all", "adaptive", "manual"], default="all")
    p.add_argument("--k", type=arg("k"), default=None, help="adaptive: W+ indices per iteration")
    p.add_argument("--layers", default="", help="manual: groups coarse/middle/fine and/or W+ indices")
    p.add_argument("--n-w", type=arg("n_w"), default=8)
    p.add_argument("--n-i", type=arg("n_i"), default=1)
    p.add_argument("--lambda-global", type=arg("lambda_global"), default=0.0)
    p.add_argument("--preview-every", type=arg("preview_every"), default=50,
                   help="write a sample grid every N iterations")
    p.add_argument("--sample-dir", default=None, help="where sample grids go (default: next to --out)")
    p.add_argument("--save-every", type=int, default=0,
                   help="also save the generator every N iterations as OUT.stepNNNNNN.safetensors (0 = off)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output .safetensors")
    return p


def run(argv) -> int:
    a = build_parser().parse_args(argv)

    from ..clip.direction import image_direction, text_direction
    from ..clip.ensemble import ClipEnsemble
    from ..clip.models import load_clip
    from .common import ProgressPrinter, device_from_arg
    from ..stylegan.io import load_generator, save_generator
    from ..stylegan.sampling import sample_latents, save_image_grid, synthesize
    from ..nada.guidance import guidance_from
    from ..nada.schedule import FreezeSchedule, group_indices
    from ..nada.trainer import AdaptSettings, adapt

    if (a.target is None) == (a.target_images is None):
        raise SystemExit("give exactly one of --target TEXT or --target-images FOLDER/GLOB")
    dev = device_from_arg(a.device)
    handle = load_generator(a.generator, device=dev)
    cfg = handle.cfg

    weights = {}
    for s in a.clip_weights:
        name, _, path = s.partition("=")
        if not path:
            raise SystemExit(f"--clip-weights {s!r}: expected NAME=FILE")
        weights[name] = path
    clip_specs = _parse_clip(a.clip or ["ViT-B-32:1.0", "ViT-B-16:1.0"])
    ens = ClipEnsemble([({"name": n, "pretrained": weights.get(n)}, w) for n, w in clip_specs],
                       load_fn=load_clip, device=dev, search_dirs=a.clip_dir or None)

    if a.target is not None:
        direction = text_direction(ens, a.source, a.target, a.templates)
    else:
        from ..io.images import read_images
        files = _image_files(a.target_images)
        # decoded (bounded, reduced while decoding) only as large as the largest CLIP input
        side = max(max(m.input_size) if isinstance(m.input_size, (tuple, list)) else int(m.input_size)
                   for m in ens.models)
        imgs = read_images(files, max_side=side)
        lat = sample_latents(handle.G, range(a.num_source_samples), 1.0)
        src = synthesize(handle.G, lat.ws, "const", 8)
        direction = image_direction(ens, imgs, src, source_layout="generator")

    if a.schedule == "manual":
        parts = [s.strip() for s in a.layers.split(",") if s.strip()]
        idx = set(int(p) for p in parts if p.isdigit())
        idx |= set(group_indices(cfg, [p for p in parts if not p.isdigit()]))
        schedule = FreezeSchedule(mode="manual", indices=tuple(sorted(idx)))
    elif a.schedule == "adaptive":
        schedule = FreezeSchedule(mode="adaptive", k=a.k, k_fraction=None if a.k else 2 / 3, n_w=a.n_w, n_i=a.n_i)
    else:
        schedule = FreezeSchedule()
    settings = AdaptSettings(iterations=a.iterations, batch_size=a.batch, lr=a.lr,
                             reference_lr_scale=a.reference_lr_scale, mixing_prob=a.mixing, seed=a.seed,
                             preview_every=a.preview_every, lambda_global=a.lambda_global)
    guidance = guidance_from(ens, direction)

    sample_dir = a.sample_dir or os.path.splitext(a.out)[0] + "_samples"
    bar = ProgressPrinter("adapt")
    stop = {"flag": False}

    def on_sigint(signum, frame):
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        sys.stderr.write("\nstopping after this iteration (Ctrl-C again to abort without saving)\n")

    def progress(info):
        bar(info.step, info.total, f"loss {info.loss:.4f}")
        if info.preview is not None:
            os.makedirs(sample_dir, exist_ok=True)
            save_image_grid(info.preview, os.path.join(sample_dir, f"step{info.step:06d}.png"),
                            cols=info.preview.shape[0] // 2)
        if stop["flag"]:
            raise KeyboardInterrupt

    out_stem = os.path.splitext(a.out)[0]

    def snapshot(step, G_train, loss):
        entry = {"op": "nada_adapt", "direction": direction.provenance, "settings": settings.to_dict(),
                 "schedule": schedule.to_dict(), "iterations_done": step, "final_loss": loss, "snapshot": True}
        save_generator(handle.derive(G_train, name=f"{os.path.basename(out_stem)}-step{step}", history_entry=entry),
                       f"{out_stem}.step{step:06d}.safetensors")

    if a.save_every < 0:
        raise SystemExit("--save-every must be >= 0")
    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = adapt(handle.G, guidance, settings, schedule, progress=progress, snapshot_every=a.save_every,
                       on_snapshot=snapshot)
    finally:
        signal.signal(signal.SIGINT, old)
    entry = result.history_entry(direction.provenance, settings, schedule,
                                 [f"{k} (weight {w:g})" for _, w, k in guidance.models()])
    out_handle = handle.derive(result.G, name=os.path.splitext(os.path.basename(a.out))[0], history_entry=entry)
    out = a.out
    if result.stop_exception is not None:
        if result.steps_done == 0:
            print(f"error: {result.stop_exception}", file=sys.stderr)
            return 1
        out = os.path.splitext(a.out)[0] + f".partial-step{result.steps_done}.safetensors"
    save_generator(out_handle, out)
    if result.stop_exception is not None:
        why = "interrupted" if result.interrupted else f"stopped: {result.stop_exception}"
        print(f"{why}; the {result.steps_done} iterations trained so far were saved to {out}", file=sys.stderr)
        return 130 if result.interrupted else 1
    print(f"wrote {out} ({result.steps_done} iterations, {result.seconds:.1f}s, final loss {result.losses[-1]:.4f}); "
          f"samples in {sample_dir}" if settings.preview_every else f"wrote {out}")
    return 0


def _image_files(spec: str) -> list[str]:
    from ..io.images import IMAGE_SUFFIXES, MAX_IMAGE_FILES
    if os.path.isdir(spec):
        files = []
        with os.scandir(spec) as it:
            for e in it:
                if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file():
                    files.append(e.path)
                    if len(files) > MAX_IMAGE_FILES:
                        break
    else:
        files = []
        for f in glob.iglob(spec):
            if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(f):
                files.append(f)
                if len(files) > MAX_IMAGE_FILES:
                    break
    if not files:
        raise SystemExit(f"--target-images {spec!r}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) > MAX_IMAGE_FILES:
        raise SystemExit(f"--target-images {spec!r}: more than {MAX_IMAGE_FILES} images; use a smaller set")
    return sorted(files)
