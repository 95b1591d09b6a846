"""``python -m nada_ops info FILE``: architecture and provenance of a generator file (or of a
pSp / e4e / ReStyle encoder checkpoint)."""
from __future__ import annotations

import argparse


def run(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m nada_ops info")
    p.add_argument("generator", help="NVIDIA .pkl, rosinality/NADA .pt or .safetensors (or an encoder .pt)")
    a = p.parse_args(argv)
    from ..stylegan.formats import CheckpointError
    from ..stylegan.io import load_generator
    try:
        h = load_generator(a.generator)
    except CheckpointError as e:
        from ..invert.encoders import EncoderFileError, load_encoder
        try:
            enc = load_encoder(a.generator)
        except EncoderFileError:
            raise e from None
        print(enc.describe())
        for note in enc.notes:
            print(f"note: {note}")
        return 0
    print(h.describe())
    return 0
