"""Command line: ``python -m nada_ops <command> ...`` (same work as the nodes, outside ComfyUI)."""
from __future__ import annotations

import argparse
import sys
import time

from .limits import arg

COMMANDS = {}


def command(name, help_):
    def deco(fn):
        COMMANDS[name] = (fn, help_)
        return fn
    return deco


def _device(arg: str):
    import torch
    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(arg)


class ProgressPrinter:
    """Minimal text progress bar on stderr (no extra dependency)."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.t0 = time.time()

    def __call__(self, done, total, extra=None):
        frac = done / max(total, 1)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        el = time.time() - self.t0
        eta = el / frac - el if frac > 0 else 0
        msg = f"\r{self.label} [{bar}] {done}/{total} {el:6.1f}s eta {eta:6.1f}s"
        if extra:
            msg += f" {extra}"
        self.stream.write(msg)
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


@command("info", "print the architecture and provenance of a generator file")
def cmd_info(argv):
    p = argparse.ArgumentParser(prog="python -m nada_ops info")
    p.add_argument("generator", help="NVIDIA .pkl, rosinality/NADA .pt or .safetensors")
    a = p.parse_args(argv)
    from .stylegan.io import load_generator
    h = load_generator(a.generator)
    print(h.describe())
    return 0


@command("sample", "render seeds to an image grid (and/or separate images)")
def cmd_sample(argv):
    p = argparse.ArgumentParser(prog="python -m nada_ops sample")
    p.add_argument("--generator", required=True)
    p.add_argument("--seeds", default="0-15", help="e.g. 0-15 or 1,5,9")
    p.add_argument("--psi", type=arg("psi"), default=0.7, help="truncation psi (1 = none)")
    p.add_argument("--cutoff", type=arg("cutoff"), default=None, help="truncate only the first N W+ entries")
    p.add_argument("--class", dest="class_idx", type=arg("class_idx"), default=None,
                   help="class label (conditional models)")
    p.add_argument("--mix-seed", type=arg("seed"), default=None, help="style-mixing seed")
    p.add_argument("--crossover", type=arg("crossover"), default=8, help="first W+ index from the mixing seed")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--batch", type=arg("batch"), default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--cols", type=arg("cols"), default=None)
    p.add_argument("--out", required=True, help="PNG grid path; with --separate, a folder")
    p.add_argument("--separate", action="store_true", help="write one PNG per seed into --out/")
    a = p.parse_args(argv)
    import os

    from .latents import parse_seeds
    from .stylegan.io import load_generator
    from .stylegan.sampling import sample_latents, save_image_grid, synthesize
    seeds = parse_seeds(a.seeds)
    h = load_generator(a.generator, device=_device(a.device))

    def render(chunk, progress=None):
        lat = sample_latents(h.G, chunk, a.psi, a.cutoff, a.class_idx,
                             [a.mix_seed] if a.mix_seed is not None else None,
                             a.crossover if a.mix_seed is not None else None)
        return synthesize(h.G, lat.ws, a.noise_mode, a.batch, progress=progress)

    if a.separate:   # streamed: one batch in memory at a time, whatever the number of seeds
        os.makedirs(a.out, exist_ok=True)
        bar = ProgressPrinter("sample")
        for i in range(0, len(seeds), a.batch):
            chunk = seeds[i:i + a.batch]
            for s, im in zip(chunk, render(chunk)):
                save_image_grid(im[None], os.path.join(a.out, f"seed{s:04d}.png"))
            bar(i + len(chunk), len(seeds))
        print(f"wrote {len(seeds)} images to {a.out}")
    else:
        from .limits import check_memory
        res = h.cfg.img_resolution
        check_memory(2 * len(seeds) * h.cfg.img_channels * res * res * 4, f"a grid of {len(seeds)} {res}px images",
                     "sample fewer seeds, or write them one by one with --separate")
        save_image_grid(render(seeds, ProgressPrinter("sample")), a.out, a.cols)
        print(f"wrote {a.out} ({len(seeds)} seeds, psi {a.psi})")
    return 0


@command("render-transition", "render domain-transition videos (generators A -> B -> ...), resumable; or a job file")
def cmd_render_transition(argv):
    p = argparse.ArgumentParser(
        prog="python -m nada_ops render-transition",
        description="Fixed latents rendered while the weights move A -> B (-> C ...). Outputs that already exist "
                    "are skipped, so an interrupted run continues where it stopped.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--generators", nargs="+", help="2 or more generator files of the same architecture")
    src.add_argument("--job", help="JSON job file listing many generator sets / latents (see nada_ops.render_jobs)")
    p.add_argument("--out", required=True, help="output folder (a job file writes one sub-folder per job)")
    p.add_argument("--seeds", default=None, help="e.g. 0-15 (default 0-7 unless --latents)")
    p.add_argument("--latents", default=None, help="latents file (.pt from `invert`, or [N, num_ws, w_dim] tensor)")
    p.add_argument("--psi", type=arg("psi"), default=0.7, help="truncation psi for seeds")
    p.add_argument("--cutoff", type=arg("cutoff"), default=None, help="truncate only the first N W+ entries")
    p.add_argument("--class", dest="class_idx", type=arg("class_idx"), default=None,
                   help="class label (conditional models)")
    p.add_argument("--end-seeds", default=None, help="latents also move towards these seeds (one or one per seed)")
    p.add_argument("--latent-mode", choices=["lerp", "slerp"], default="lerp")
    p.add_argument("--direction", default=None, help="editing direction file (.npy/.pt) to move along")
    p.add_argument("--strength", type=arg("strength"), default=0.0, help="edit strength reached at the end")
    p.add_argument("--layers", default=None, help="W+ entries the edit applies to, e.g. 0-5")
    p.add_argument("--frames", type=arg("frames"), default=120)
    p.add_argument("--fps", type=arg("fps"), default=30.0)
    from .video import EASING_NAMES
    p.add_argument("--easing", choices=list(EASING_NAMES), default="ease_in_out")
    p.add_argument("--loop", action="store_true", help="return to the first model (seamless loop)")
    p.add_argument("--format", choices=["mp4", "webp", "gif"], default="mp4")
    p.add_argument("--layout", choices=["separate", "grid"], default="separate",
                   help="one file per latent (default) or one grid video")
    p.add_argument("--cols", type=arg("cols"), default=None, help="grid columns")
    p.add_argument("--quality", type=arg("quality"), default=None,
                   help="MP4 CRF 0-51 (default 18) / WebP quality 0-100 (default 90)")
    p.add_argument("--batch", type=arg("batch"), default=8, help="latents rendered at once")
    p.add_argument("--max-writers", type=arg("max_writers"), default=16, help="files encoded at the same time")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--noise-seed", type=arg("noise_seed"), default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="render again even if outputs exist")
    a = p.parse_args(argv)
    from .render_jobs import job_from_dict, load_job_file, run_jobs
    dev = _device(a.device)
    if a.job:
        try:
            jobs = load_job_file(a.job)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        single = False
    else:
        d = {"generators": a.generators, "seeds": a.seeds if a.seeds or a.latents else "0-7",
             "latents": a.latents, "psi": a.psi, "cutoff": a.cutoff, "class_idx": a.class_idx,
             "end_seeds": a.end_seeds, "latent_mode": a.latent_mode, "direction": a.direction,
             "strength": a.strength, "layers": a.layers, "frames": a.frames, "fps": a.fps, "easing": a.easing,
             "loop": a.loop, "format": a.format, "layout": a.layout, "cols": a.cols, "quality": a.quality,
             "batch": a.batch, "max_writers": a.max_writers, "noise_mode": a.noise_mode,
             "noise_seed": a.noise_seed}
        if a.seeds and a.latents:
            p.error("give --seeds or --latents, not both")
        try:
            jobs = [job_from_dict(d, None, "command line")]
        except ValueError as e:
            p.error(str(e))
        single = True
    try:
        reports = run_jobs(jobs, a.out, dev, a.overwrite, progress_factory=ProgressPrinter,
                           log=lambda m: print(m, file=sys.stderr), single=single)
    except ValueError as e:   # architecture mismatch, bad latents/direction file, ...
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    written = sum(len(r.written) for r in reports)
    skipped = sum(len(r.skipped) for r in reports)
    print(f"{written} file(s) written, {skipped} already there (skipped) in {a.out}")
    return 0


def _load_images(paths, resolution: int):
    """Image files -> one [N, 3, R, R] tensor in [-1, 1] at the generator's resolution
    (centre-cropped; decoded through the bounded reader, reduced before any float copy)."""
    import torch

    from .io.images import read_image_batch
    arr = read_image_batch(paths, resolution, crop=True)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


@command("invert", "invert photos into W/W+ latents (optimization); writes latents .pt + reconstruction PNG")
def cmd_invert(argv):
    p = argparse.ArgumentParser(prog="python -m nada_ops invert")
    p.add_argument("--generator", required=True)
    p.add_argument("--image", nargs="+", required=True, help="photo(s); non-square ones are center-cropped")
    p.add_argument("--out", required=True, help="latents file to write (.pt)")
    p.add_argument("--recon", default=None, help="PNG of target | reconstruction pairs (default: next to --out)")
    p.add_argument("--steps", type=arg("steps"), default=500)
    p.add_argument("--mode", choices=["w", "w+"], default="w")
    p.add_argument("--lr", type=arg("lr"), default=0.1)
    p.add_argument("--optimize-noise", action="store_true")
    p.add_argument("--noise-regularize", type=arg("noise_regularize"), default=1e5)
    p.add_argument("--clip", default=None, help="CLIP architecture for the perceptual loss, e.g. ViT-B-32")
    p.add_argument("--clip-weights", default=None, help="local CLIP weights file or folder (no download)")
    p.add_argument("--perceptual-weight", type=arg("perceptual_weight"), default=1.0)
    p.add_argument("--seed", type=arg("seed"), default=0)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    import os

    import torch

    from .inversion import InversionSettings, invert, prepare_target
    from .latent_tools import save_latents
    from .stylegan.io import load_generator
    from .stylegan.sampling import save_image_grid
    dev = _device(a.device)
    h = load_generator(a.generator, device=dev)
    res = h.cfg.img_resolution
    target = prepare_target(_load_images(a.image, res), res)
    clip = None
    if a.clip:
        from .clip import load_clip
        clip = load_clip(a.clip, a.clip_weights, device=dev)
    s = InversionSettings(steps=a.steps, mode=a.mode, lr=a.lr, optimize_noise=a.optimize_noise,
                          noise_regularize=a.noise_regularize,
                          perceptual_weight=a.perceptual_weight if clip is not None else 0.0, seed=a.seed)
    bar = ProgressPrinter("invert")
    r = invert(h.G, target, s, perceptual=clip, progress=lambda d, t, _p: bar(d, t))
    r.latents.info["generator"] = h.name
    r.latents.info["images"] = [os.path.basename(x) for x in a.image]
    save_latents(r.latents, a.out)
    recon = a.recon or os.path.splitext(a.out)[0] + "_recon.png"
    pairs = torch.stack([r.target.cpu(), r.images.cpu().clamp(-1, 1)], dim=1).reshape(-1, *r.images.shape[1:])
    save_image_grid(pairs, recon, cols=2)
    mse0 = ", ".join(f"{float(v):.4f}" for v in r.mse_start)
    mse1 = ", ".join(f"{float(v):.4f}" for v in r.mse_final)
    if r.stopped_early:
        print(f"\nstopped after {r.steps_done} steps: saving the best latents so far", file=sys.stderr)
    print(f"wrote {a.out} and {recon}; pixel MSE start [{mse0}] -> final [{mse1}]")
    return 130 if r.stopped_early else 0


@command("interpolate-models", "blend two generators in weight space: (1 - t) A + t B -> .safetensors")
def cmd_interpolate_models(argv):
    p = argparse.ArgumentParser(prog="python -m nada_ops interpolate-models")
    p.add_argument("--a", required=True, help="generator at t = 0")
    p.add_argument("--b", required=True, help="generator at t = 1 (same architecture)")
    p.add_argument("--t", type=arg("blend_t"), required=True)
    p.add_argument("--out", required=True, help=".safetensors to write")
    a = p.parse_args(argv)
    from .interpolate import blend_generators
    from .stylegan.config import ArchitectureError
    from .stylegan.io import load_generator, save_generator
    ha, hb = load_generator(a.a), load_generator(a.b)
    try:
        G = blend_generators(ha.G, hb.G, a.t, names=(f"A ({ha.name})", f"B ({hb.name})"))
    except (ArchitectureError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    h = ha.derive(G, name=f"{ha.name}-{hb.name}-t{a.t:.2f}",
                  history_entry={"op": "interpolate", "t": a.t, "a": ha.name, "b": hb.name})
    save_generator(h, a.out)
    print(f"wrote {a.out} (t = {a.t})")
    return 0


@command("adapt", "StyleGAN-NADA: adapt a generator to a new domain with CLIP guidance (text or images)")
def cmd_adapt(argv):
    from .nada.cli_adapt import run
    return run(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m nada_ops <command> [options]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:20s} {help_}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}; try --help", file=sys.stderr)
        return 2
    from .stylegan.formats import CheckpointError
    try:
        return COMMANDS[name][0](rest) or 0
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        # bad model files, missing CLIP weights, invalid settings: a clear message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
