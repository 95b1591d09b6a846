"""Child process: feed files to the pack's real loaders under a memory cap.

    python run_loaders.py SPEC.json

SPEC.json: ``{"root": repo root, "folder": ..., "clip_cfg_dir": ..., "headroom_mib": ...,
"cases": [{"name", "loader", "klass", "expect"}, ...]}``.

torch is imported once; after a warm-up the address space is capped at what the process
uses plus ``headroom_mib`` (``RLIMIT_AS``: a file that still made a loader allocate
gigabytes gets a MemoryError instead of taking the machine down). Before each file the
peak-RSS counter is reset (``/proc/self/clear_refs``), so each result line reports that
file's own peak. Output: one JSON line when a file starts (so a hang can be named by the
parent) and one with the outcome.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys
import time
import warnings


def _status() -> dict:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmSize:", "VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    sys.path.insert(0, spec["root"])
    sys.path.insert(0, os.path.join(spec["root"], "tests"))
    warnings.simplefilter("ignore")
    import torch
    torch.set_num_threads(1)
    from nada_ops.cli import main as cli_main
    from nada_ops.clip.models import load_clip
    from nada_ops.clip.tiny import TINY_NAME, register_tiny_config
    from nada_ops.latent_tools import load_direction, load_latents
    from nada_ops.stylegan.io import load_generator

    register_tiny_config(spec["clip_cfg_dir"])
    folder = spec["folder"]

    def info(path):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli_main(["info", path])
        if rc != 0:
            raise SystemExit(err.getvalue().strip())

    loaders = {
        "generator": [("load_generator", load_generator), ("info", info)],
        "direction": [("load_direction", load_direction)],
        "latents": [("load_latents", load_latents)],
        "clip_archive": [("load_clip", lambda p: load_clip("tiny-openai", pretrained=p))],
        "clip_state_dict": [("load_clip", lambda p: load_clip(TINY_NAME, pretrained=p))],
    }
    # Warm-up: every loader once on a valid file, so lazy imports and allocator pools are
    # not charged to the first hostile file.
    for case in spec["cases"]:
        if case["expect"] == "ok":
            for _, fn in loaders[case["loader"]]:
                fn(os.path.join(folder, case["name"]))
    base = _status().get("VmSize")
    if base and spec.get("headroom_mib"):
        limit = base + spec["headroom_mib"] * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    exact_peak = _reset_peak()
    print(json.dumps({"event": "ready", "vm_mib": (base or 0) >> 20, "exact_peak": exact_peak}), flush=True)

    for case in spec["cases"]:
        path = os.path.join(folder, case["name"])
        for lname, fn in loaders[case["loader"]]:
            print(json.dumps({"event": "start", "name": case["name"], "loader": lname}), flush=True)
            _reset_peak()
            before = _status().get("VmRSS", 0)
            t0 = time.perf_counter()
            try:
                fn(path)
                outcome, msg = "ok", ""
            except SystemExit as e:          # `info` printed an error and returned 1
                outcome, msg = "cli_error", str(e)
            except Exception as e:  # noqa: BLE001 - reported to the parent
                outcome, msg = type(e).__name__, str(e)
            except RecursionError as e:
                outcome, msg = "RecursionError", str(e)
            dt = time.perf_counter() - t0
            st = _status()
            peak = (st.get("VmHWM", 0) if exact_peak else st.get("VmRSS", 0)) - before
            print(json.dumps({"event": "done", "name": case["name"], "loader": lname, "outcome": outcome,
                              "message": msg[:1500], "seconds": round(dt, 3), "peak_mib": round(peak / 2**20, 1)}),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
