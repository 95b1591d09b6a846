"""``python -m nada_ops models``: the catalogue, and which of its models are in the models folder."""
from __future__ import annotations

import argparse
import json


def run(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nada_ops models",
        description="List the published models the pack can download by name (`python -m nada_ops download NAME`, "
                    "or `--generator NAME` in any command), with their licences and whether they are here. "
                    "Models folder: $NADA_MODELS_DIR (default ./models), generators in stylegan/, CLIP in open_clip/.")
    p.add_argument("--kind", choices=["stylegan", "clip"], default=None, help="only generators or only CLIP models")
    p.add_argument("--here", action="store_true", help="only the models already downloaded")
    p.add_argument("-v", "--verbose", action="store_true", help="also the address, licence and source of each")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--models-dir", default=None, help="models folder (default: $NADA_MODELS_DIR or ./models)")
    a = p.parse_args(argv)
    import os

    from ..catalogue import FOLDER_OF_KIND, catalogue, human_bytes, models_root, status
    if a.models_dir:
        os.environ["NADA_MODELS_DIR"] = a.models_dir
    root = models_root()
    rows = []
    for e in catalogue():
        if a.kind and e.kind != a.kind:
            continue
        folder = root / FOLDER_OF_KIND[e.kind]
        st, n = status(e, folder)
        if a.here and st != "present":
            continue
        rows.append((e, st, n, folder))
    if a.json:
        print(json.dumps([{"name": e.name, "kind": e.kind, "format": e.format, "resolution": e.resolution,
                           "file": str(folder / e.file), "status": st, "bytes": n, "size": e.size,
                           "sha256": e.sha256, "url": e.url, "licence": e.licence, "description": e.description}
                          for e, st, n, folder in rows], indent=1))
        return 0
    print(f"models folder: {root.resolve()}  (generators in {FOLDER_OF_KIND['stylegan']}/, "
          f"CLIP in {FOLDER_OF_KIND['clip']}/; set NADA_MODELS_DIR to change it)")
    print(f"{'name':17s} {'kind':8s} {'res':>5s}  {'here':22s} {'size':18s} description")
    for e, st, n, folder in rows:
        here = {"present": f"yes ({human_bytes(n)})", "absent": "-",
                "partial": f"partial {human_bytes(n)}"}[st]
        res = str(e.resolution or "")
        print(f"{e.name:17s} {e.kind:8s} {res:>5s}  {here:22s} {e.size_text():18s} {e.description}")
        if a.verbose:
            print(f"{'':19s}file: {folder / e.file}")
            print(f"{'':19s}from: {e.url}")
            if e.sha256:
                print(f"{'':19s}sha256: {e.sha256}")
            print(f"{'':19s}licence: {e.licence} <{e.licence_url}>")
            print(f"{'':19s}published at: {e.source.get('published_at', '')}")
    n_here = sum(1 for r in rows if r[1] == "present")
    print(f"\n{len(rows)} model(s), {n_here} here. `python -m nada_ops download NAME` fetches one; "
          "`--generator NAME` in any command fetches it on first use. Licences: `models -v` "
          "(most are non-commercial).")
    return 0
