"""``python -m nada_ops sample``: seeds to an image grid or to one image per seed."""
from __future__ import annotations

import argparse

from ..limits import arg
from .common import ProgressPrinter, device_from_arg, generator_path


def run(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m nada_ops sample")
    p.add_argument("--generator", required=True, help="generator file, or a catalogue name (e.g. ffhq; "
                                                           "downloaded once into $NADA_MODELS_DIR/stylegan)")
    p.add_argument("--seeds", default="0-15", help="e.g. 0-15 or 1,5,9")
    p.add_argument("--psi", type=arg("psi"), default=0.7, help="truncation psi (1 = none)")
    p.add_argument("--cutoff", type=arg("cutoff"), default=None, help="truncate only the first N W+ entries")
    p.add_argument("--class", dest="class_idx", type=arg("class_idx"), default=None,
                   help="class label (conditional models)")
    p.add_argument("--mix-seed", type=arg("seed"), default=None, help="style-mixing seed")
    p.add_argument("--crossover", type=arg("crossover"), default=8, help="first W+ index from the mixing seed")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--translate", default="0,0", help="StyleGAN3: move the image by X,Y (fractions of its size)")
    p.add_argument("--rotate", type=arg("rotate"), default=0.0, help="StyleGAN3: rotate the image (degrees)")
    p.add_argument("--batch", type=arg("batch"), default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "exact", "fast", "bf16"], default="auto",
                   help="exact = float32 (TF32 off); fast = TF32 and the top 4 resolutions in float16, as NVIDIA's "
                        "generate.py runs its networks; auto (default) = fast on a CUDA GPU, exact elsewhere")
    p.add_argument("--cols", type=arg("cols"), default=None)
    p.add_argument("--out", required=True, help="PNG grid path; with --separate, a folder")
    p.add_argument("--separate", action="store_true", help="write one PNG per seed into --out/")
    a = p.parse_args(argv)
    import os

    from ..latents import parse_seeds
    from ..stylegan.io import load_generator
    from ..stylegan.sampling import sample_latents, save_image_grid, synthesize
    seeds = parse_seeds(a.seeds)
    dev = device_from_arg(a.device)
    translate = _translate(a.translate)
    h = load_generator(generator_path(a.generator), device=dev)
    from ..stylegan.sampling import input_transform_for
    transform = input_transform_for(h.G, translate, a.rotate)     # ValueError for StyleGAN2: a message

    def render(chunk, progress=None):
        lat = sample_latents(h.G, chunk, a.psi, a.cutoff, a.class_idx,
                             [a.mix_seed] if a.mix_seed is not None else None,
                             a.crossover if a.mix_seed is not None else None)
        return synthesize(h.G, lat.ws, a.noise_mode, a.batch, progress=progress, transform=transform,
                          precision=a.precision)

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
        from ..limits import check_memory
        res = h.cfg.img_resolution
        check_memory(2 * len(seeds) * h.cfg.img_channels * res * res * 4, f"a grid of {len(seeds)} {res}px images",
                     "sample fewer seeds, or write them one by one with --separate")
        save_image_grid(render(seeds, ProgressPrinter("sample")), a.out, a.cols)
        print(f"wrote {a.out} ({len(seeds)} seeds, psi {a.psi})")
    return 0


def _translate(text: str) -> tuple[float, float]:
    from ..limits import arg
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2:
        raise SystemExit(f"--translate {text!r}: expected X,Y, e.g. 0.1,-0.05")
    conv = arg("translate")
    try:
        return conv(parts[0]), conv(parts[1])
    except Exception as e:   # argparse.ArgumentTypeError
        raise SystemExit(f"--translate {text!r}: {e}") from None
