"""Command line: ``python -m nada_ops <command> ...`` (same work as the nodes, outside ComfyUI)."""
from __future__ import annotations

import argparse
import sys
import time

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
    p.add_argument("--psi", type=float, default=0.7, help="truncation psi (1 = none)")
    p.add_argument("--cutoff", type=int, default=None, help="truncate only the first N W+ entries")
    p.add_argument("--class", dest="class_idx", type=int, default=None, help="class label (conditional models)")
    p.add_argument("--mix-seed", type=int, default=None, help="style-mixing seed")
    p.add_argument("--crossover", type=int, default=8, help="first W+ index from the mixing seed")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--cols", type=int, default=None)
    p.add_argument("--out", required=True, help="PNG grid path; with --separate, a folder")
    p.add_argument("--separate", action="store_true", help="write one PNG per seed into --out/")
    a = p.parse_args(argv)
    import os

    from .latents import parse_seeds
    from .stylegan.io import load_generator
    from .stylegan.sampling import sample_latents, save_image_grid, synthesize
    h = load_generator(a.generator, device=_device(a.device))
    seeds = parse_seeds(a.seeds)
    lat = sample_latents(h.G, seeds, a.psi, a.cutoff, a.class_idx,
                         [a.mix_seed] if a.mix_seed is not None else None,
                         a.crossover if a.mix_seed is not None else None)
    img = synthesize(h.G, lat.ws, a.noise_mode, a.batch, progress=ProgressPrinter("sample"))
    if a.separate:
        os.makedirs(a.out, exist_ok=True)
        for s, im in zip(seeds, img):
            save_image_grid(im[None], os.path.join(a.out, f"seed{s:04d}.png"))
        print(f"wrote {len(seeds)} images to {a.out}")
    else:
        save_image_grid(img, a.out, a.cols)
        print(f"wrote {a.out} ({len(seeds)} seeds, psi {a.psi})")
    return 0


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
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
