"""``python -m nada_ops interpolate-models``: blend two generators in weight space."""
from __future__ import annotations

import argparse
import sys

from ..limits import arg


def run(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m nada_ops interpolate-models")
    p.add_argument("--a", required=True, help="generator at t = 0")
    p.add_argument("--b", required=True, help="generator at t = 1 (same architecture)")
    p.add_argument("--t", type=arg("blend_t"), required=True)
    p.add_argument("--out", required=True, help=".safetensors to write")
    a = p.parse_args(argv)
    from ..interpolate import blend_generators
    from ..stylegan.config import ArchitectureError
    from ..stylegan.io import load_generator, save_generator
    from .common import generator_path
    ha, hb = load_generator(generator_path(a.a)), load_generator(generator_path(a.b))
    try:
        G = blend_generators(ha.G, hb.G, a.t, names=(f"A ({ha.name})", f"B ({hb.name})"))
    except (ArchitectureError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from ..provenance import blend_entry
    h = ha.derive(G, name=f"{ha.name}-{hb.name}-t{a.t:.2f}", history=[blend_entry(ha, hb, a.t)])
    save_generator(h, a.out)
    print(f"wrote {a.out} (t = {a.t})")
    return 0
