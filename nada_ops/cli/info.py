"""``python -m nada_ops info FILE``: architecture and provenance of a generator file."""
from __future__ import annotations

import argparse



def run(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m nada_ops info")
    p.add_argument("generator", help="NVIDIA .pkl, rosinality/NADA .pt or .safetensors")
    a = p.parse_args(argv)
    from ..stylegan.io import load_generator
    h = load_generator(a.generator)
    print(h.describe())
    return 0
