"""``python -m nada_ops sweep``: adapt one generator to many prompts and/or a grid of settings.

One adapt unit per (prompt, settings) combination (:mod:`nada_ops.batch`): each writes
``OUT/<name>/<name>.safetensors``, a sample grid ``<name>.png`` and, with ``--transition``, a
transition video source -> result in ``OUT/<name>/transition/``.  Re-runs skip what is done and
redo what changed; with ``--ray`` the adaptations run in parallel on a Ray cluster's GPUs.
"""
from __future__ import annotations

import argparse
import itertools
import re

from ..limits import arg
from .common import UsageError

#: --grid KEY -> (adapt spec field, value parser: a limits range name, or a tuple of choices)
GRID_KEYS = {
    "lr": ("lr", "lr"), "iterations": ("iterations", "iterations"), "mixing": ("mixing", "mixing"),
    "seed": ("seed", "seed"), "batch": ("train_batch", "train_batch"), "k": ("k", "k"),
    "lambda_global": ("lambda_global", "lambda_global"), "n_w": ("n_w", "n_w"), "n_i": ("n_i", "n_i"),
    "schedule": ("schedule", ("all", "adaptive", "manual")),
    "templates": ("templates", ("nada", "imagenet", "single")),
}
MAX_SWEEP_UNITS = 1000


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nada_ops sweep",
        description="Adapt one generator to a list of prompts and/or a grid of settings (one adaptation per "
                    "combination), optionally rendering a transition through each result. Resumable; with --ray the "
                    "adaptations run in parallel across GPUs.")
    p.add_argument("--generator", required=True, help="source generator file, or a catalogue name (e.g. ffhq)")
    p.add_argument("--source", default="photo", help="source domain text")
    p.add_argument("--prompt", action="append", required=True, metavar="TEXT",
                   help="target domain text; repeat for several (--prompt sketch --prompt zombie)")
    p.add_argument("--grid", nargs="+", action="extend", default=[], metavar="KEY=V1,V2",
                   help=f"settings to sweep, e.g. lr=0.002,0.004 iterations=200,300 (keys: {', '.join(GRID_KEYS)})")
    p.add_argument("--templates", choices=["nada", "imagenet", "single"], default="nada")
    p.add_argument("--clip", action="append", default=None,
                   help="CLIP model NAME[:WEIGHT], repeatable (default: ViT-B-32:1 ViT-B-16:1)")
    p.add_argument("--clip-weights", action="append", default=[], help="NAME=FILE weights for a CLIP model")
    p.add_argument("--clip-dir", action="append", default=[], help="folder to search for CLIP weights")
    p.add_argument("--clip-config", action="append", default=[],
                   help="open_clip model config (.json) for an architecture open_clip does not ship")
    p.add_argument("--iterations", type=arg("iterations"), default=300)
    p.add_argument("--batch", type=arg("train_batch"), default=2, help="images per training step")
    p.add_argument("--lr", type=arg("lr"), default=0.002)
    p.add_argument("--reference-lr-scale", action="store_true")
    p.add_argument("--mixing", type=arg("mixing"), default=0.9, help="style-mixing probability (0 for sketches)")
    p.add_argument("--seed", type=arg("seed"), default=0)
    p.add_argument("--schedule", choices=["all", "adaptive", "manual"], default="all")
    p.add_argument("--k", type=arg("k"), default=None)
    p.add_argument("--layers", default="", help="manual schedule: coarse/middle/fine and/or W+ indices")
    p.add_argument("--n-w", type=arg("n_w"), default=8)
    p.add_argument("--n-i", type=arg("n_i"), default=1)
    p.add_argument("--lambda-global", type=arg("lambda_global"), default=0.0)
    p.add_argument("--precision", choices=["auto", "exact", "fast", "bf16"], default="auto",
                   help="training arithmetic (nada_ops.precision): auto = fast on a GPU, exact elsewhere")
    p.add_argument("--sample-seeds", default="0-7", help="seeds of each result's sample grid ('none': no grid)")
    p.add_argument("--psi", type=arg("psi"), default=0.7, help="truncation of the sample grid and the transition")
    t = p.add_argument_group("transition through each result (source -> adapted)")
    t.add_argument("--transition", action="store_true", help="render a transition video through each result")
    t.add_argument("--seeds", default="0-7")
    t.add_argument("--frames", type=arg("frames"), default=120)
    t.add_argument("--fps", type=arg("fps"), default=30.0)
    t.add_argument("--format", choices=["mp4", "webp", "gif"], default="mp4")
    t.add_argument("--layout", choices=["separate", "grid"], default="grid")
    t.add_argument("--loop", action="store_true")
    p.add_argument("--out", required=True, help="output folder: one sub-folder per adaptation")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="make everything again")
    from ._batch import add_backend_options
    add_backend_options(p)
    return p


def slug(text: str, n: int = 48) -> str:
    s = re.sub(r"[^A-Za-z0-9.+-]+", "_", text.strip().lower()).strip("_.")
    return s[:n].rstrip("_.") or "prompt"


def parse_grid(items) -> list[tuple[str, str, list]]:
    """['lr=0.002,0.004', 'schedule=all,adaptive'] -> [(key, field, [values])]."""
    out, seen = [], set()
    for item in items:
        key, eq, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in GRID_KEYS:
            raise UsageError(f"--grid {item!r}: expected KEY=V1,V2,... with KEY one of {', '.join(GRID_KEYS)}")
        if key in seen:
            raise UsageError(f"--grid: {key} is given twice")
        seen.add(key)
        field, kind = GRID_KEYS[key]
        vals = []
        for v in (x.strip() for x in values.split(",")):
            if isinstance(kind, tuple):
                if v not in kind:
                    raise UsageError(f"--grid {key}: {v!r} is not one of {', '.join(kind)}")
                vals.append(v)
            else:
                try:
                    vals.append(arg(kind)(v))
                except argparse.ArgumentTypeError as e:
                    raise UsageError(f"--grid {key}: {e}") from None
        if not vals or len(set(vals)) != len(vals):
            raise UsageError(f"--grid {key}: give distinct values, e.g. {key}=1,2")
        out.append((key, field, vals))
    return out


def sweep_units(a, generator: str, out_dir: str):
    """The adapt units of a sweep (validated), named after the prompt and the grid values."""
    import os

    from ..batch.jobs import unit_from_dict
    grid = parse_grid(a.grid)
    weights = {}
    for s in a.clip_weights:
        name, _, path = s.partition("=")
        if not path:
            raise UsageError(f"--clip-weights {s!r}: expected NAME=FILE")
        weights[name] = path if path == "random" else os.path.abspath(path)
    base = {
        "kind": "adapt", "generator": os.path.abspath(generator), "source": a.source, "templates": a.templates,
        "clip": a.clip or ["ViT-B-32:1", "ViT-B-16:1"], "clip_weights": weights,
        "clip_dirs": [os.path.abspath(d) for d in a.clip_dir],
        "clip_config": [os.path.abspath(c) for c in a.clip_config],
        "iterations": a.iterations, "train_batch": a.batch, "lr": a.lr, "reference_lr_scale": a.reference_lr_scale,
        "mixing": a.mixing, "seed": a.seed, "schedule": a.schedule, "k": a.k, "train_layers": a.layers,
        "n_w": a.n_w, "n_i": a.n_i, "lambda_global": a.lambda_global, "psi": a.psi,
        "precision": a.precision,
        "sample_seeds": None if a.sample_seeds.strip().lower() == "none" else a.sample_seeds,
    }
    if a.transition:
        base["transition"] = {"seeds": a.seeds, "psi": a.psi, "frames": a.frames, "fps": a.fps, "format": a.format,
                              "layout": a.layout, "loop": a.loop}
    prompts = list(dict.fromkeys(a.prompt))
    combos = list(itertools.product(*[vals for _, _, vals in grid])) or [()]
    if len(prompts) * len(combos) > MAX_SWEEP_UNITS:
        raise UsageError(f"the sweep has {len(prompts) * len(combos)} combinations, at most {MAX_SWEEP_UNITS}")
    units, names = [], set()
    for prompt in prompts:
        for combo in combos:
            d = dict(base, target=prompt)
            parts = [slug(prompt)]
            for (key, field, _), v in zip(grid, combo):
                d[field] = v
                parts.append(f"{key}{v:g}" if isinstance(v, float) else f"{key}{v}")
            name = "_".join(parts)
            i = 2
            while name in names:
                name = f"{'_'.join(parts)}_{i}"
                i += 1
            names.add(name)
            d["name"] = name
            units.append(unit_from_dict(d, out_dir, None, where=f"sweep ({prompt!r}{', ' if combo else ''}"
                                        f"{', '.join(f'{k}={v}' for (k, _, _), v in zip(grid, combo))})"))
    return units


def run(argv) -> int:
    import os
    a = build_parser().parse_args(argv)
    from ..batch.work import prepare_units
    from ._batch import report_failures, run_units
    from .common import ByteProgress, device_from_arg, generator_path, say
    dev = a.device if a.ray else device_from_arg(a.device)
    try:
        units = sweep_units(a, a.generator, a.out)       # every option checked before any download
    except ValueError as e:
        raise UsageError(str(e)) from None
    gen = os.path.abspath(generator_path(a.generator))
    for u in units:
        u.spec.generator = gen
    prepare_units(units, log=say, progress_factory=ByteProgress)
    say(f"sweep: {len(units)} adaptation(s) of {gen}: {', '.join(u.name for u in units[:6])}"
        f"{', ...' if len(units) > 6 else ''}")
    report = run_units(units, a, dev, a.overwrite)
    for r in report.results:
        if r.error is None:
            print(f"{r.name}: {len(r.written)} written, {len(r.skipped)} up to date in {r.folder}")
    return report_failures(report)
