"""Files for the batch tests: tiny generators and a tiny CLIP model written in real formats,
a job file with every kind of unit, and comparisons of two output folders."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from conftest import randomize, tiny_config


def write_inputs(folder: Path) -> Path:
    """a.safetensors, b.safetensors (tiny generators), tiny.safetensors + cfg/tiny-vit.json (CLIP)."""
    from safetensors.torch import save_file

    from nada_ops.clip.tiny import build_tiny_open_clip, register_tiny_config
    from nada_ops.stylegan.io import save_generator
    from nada_ops.stylegan.networks import Generator
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for i, n in enumerate("ab"):
            save_generator(randomize(Generator(tiny_config()).eval(), i), folder / f"{n}.safetensors")
    register_tiny_config(folder / "cfg")
    save_file({k: v.contiguous() for k, v in build_tiny_open_clip(seed=0).state_dict().items()},
              str(folder / "tiny.safetensors"))
    return folder


TINY_ADAPT = {"iterations": 1, "clip": ["tiny-vit:1"], "clip_weights": {"tiny-vit": "tiny.safetensors"},
              "clip_config": ["cfg/tiny-vit.json"], "templates": "single", "sample_seeds": "0-1", "mixing": 0}


def job_file(folder: Path, name: str = "jobs.json", **changes) -> Path:
    """A job file with a unit of every kind (small enough for CI)."""
    grid = {"kind": "sample-grid", "name": "grid_b", "generator": "b.safetensors", "seeds": "0-3"}
    grid.update(changes.get("grid", {}))
    data = {"defaults": {"frames": 3, "fps": 8, "seeds": "0-1", "format": "gif", "adapt": TINY_ADAPT},
            "jobs": [{"name": "ab", "generators": ["a.safetensors", "b.safetensors"]},
                     {"name": "ab_mp4", "generators": ["a.safetensors", "b.safetensors"], "format": "mp4", "seeds": "2"},
                     grid,
                     {"kind": "adapt", "name": "sketch", "generator": "a.safetensors", "target": "sketch",
                      "transition": {"frames": 2, "seeds": "0", "format": "webp"}}]}
    p = folder / name
    p.write_text(json.dumps(data))
    return p


def files_of(folder) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        out += [os.path.relpath(os.path.join(root, f), folder) for f in files]
        out += [os.path.relpath(os.path.join(root, d), folder) + "/" for d in dirs if d.startswith(".tmp")]
    return sorted(out)


def assert_same_outputs(a, b) -> None:
    """Same files; images, videos and models byte for byte (the pack writes safetensors
    deterministically); records: same outputs and fingerprints (the nested transition's record
    holds the time its input model was saved)."""
    fa, fb = files_of(a), files_of(b)
    assert fa == fb
    for f in fa:
        pa, pb = os.path.join(a, f), os.path.join(b, f)
        if f.endswith("job.json"):
            ra, rb = json.loads(Path(pa).read_text()), json.loads(Path(pb).read_text())
            assert sorted(ra["outputs"]) == sorted(rb["outputs"]), f
            if not f.startswith("sketch/transition"):
                assert ra == rb, f
        else:
            assert Path(pa).read_bytes() == Path(pb).read_bytes(), f
