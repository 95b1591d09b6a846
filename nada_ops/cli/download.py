"""``python -m nada_ops download NAME ...``: fetch catalogue models into the models folder."""
from __future__ import annotations

import argparse


def run(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nada_ops download",
        description="Download catalogue models (see `python -m nada_ops models`) into the models folder: "
                    "$NADA_MODELS_DIR (default ./models), generators in stylegan/, CLIP weights in open_clip/. "
                    "An interrupted download continues where it stopped. NADA_MODEL_MIRROR=URL fetches "
                    "<URL>/<file name> instead of the published address.")
    p.add_argument("names", nargs="+", help="catalogue names, e.g. ffhq afhqdog nada-sketch ViT-B-32")
    p.add_argument("--models-dir", default=None, help="models folder (default: $NADA_MODELS_DIR or ./models)")
    a = p.parse_args(argv)
    import os

    from ..catalogue import ModelUnavailableError, catalogue, default_folder, ensure, local_path
    from .common import ByteProgress, UsageError, note_interrupted_download, say
    if a.models_dir:
        os.environ["NADA_MODELS_DIR"] = a.models_dir
    entries = []
    for name in a.names:
        e = catalogue().find(name)
        if e is None:
            close = catalogue().suggest(name)
            raise UsageError(f"{name!r} is not in the catalogue" + (f" (did you mean {', '.join(close)}?)" if close
                                                                    else "") + "; `python -m nada_ops models` lists it")
        entries.append(e)
    failed = 0
    for e in entries:
        path = local_path(e, default_folder(e.kind))
        if path.is_file():
            say(f"{e.name}: already here ({path})")
            continue
        try:
            with note_interrupted_download():
                ensure(e, default_folder(e.kind), progress=ByteProgress(f"download {e.name}"), log=say)
        except ModelUnavailableError as err:
            say(f"error: {err}")
            failed += 1
            continue
        say(f"{e.name}: saved {path}  (licence: {e.licence})")
    return 1 if failed else 0
