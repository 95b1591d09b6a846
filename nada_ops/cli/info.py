"""``python -m nada_ops info FILE``: architecture and provenance of a generator file (or of a
pSp / e4e / ReStyle encoder checkpoint)."""
from __future__ import annotations

import argparse
import os

def run(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m nada_ops info")
    p.add_argument("generator", help="NVIDIA .pkl, rosinality/NADA .pt or .safetensors (or an encoder .pt); or a "
                                     "catalogue name (shows the catalogue entry; nothing is downloaded)")
    a = p.parse_args(argv)
    from ..catalogue import catalogue, local_path
    from ..stylegan.formats import CheckpointError
    from ..stylegan.io import load_generator
    path = a.generator
    entry = None if os.path.isfile(path) else catalogue().find(path)
    if entry is not None:
        here = local_path(entry)
        print(f"catalogue model {entry.name}: {entry.description}")
        print(f"  kind: {entry.kind}, format: {entry.format}, resolution: {entry.resolution}")
        print(f"  from: {entry.url} ({entry.size_text()})")
        print(f"  licence: {entry.licence} <{entry.licence_url}>")
        if not here.is_file() or entry.kind != "stylegan":
            print(f"  file: {here} ({'here' if here.is_file() else 'not downloaded yet: `python -m nada_ops download ' + entry.name + '`'})")
            return 0
        path = str(here)
    try:
        h = load_generator(path)
    except CheckpointError as e:
        from ..invert.encoders import EncoderFileError, load_encoder
        try:
            enc = load_encoder(path)
        except EncoderFileError:
            raise e from None
        print(enc.describe())
        for note in enc.notes:
            print(f"note: {note}")
        return 0
    print(h.describe())
    return 0
