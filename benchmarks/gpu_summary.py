"""The short table benchmarks/gpu_session.sh prints last: this pack against the official
StyleGAN-NADA loop (same GPU, same run) and against the figures of issue 11.

    python benchmarks/gpu_summary.py WORK_DIR       # the folder gpu_session.sh wrote its JSON files to
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys

#: Issue 11's figures (H200, torch 2.11, CUDA 13.0): (this pack then, official).
ISSUE = {("all", 1024): (0.162, 0.142), ("adaptive", 1024): (0.307, 0.299), ("all", 256): (0.117, 0.110)}
ISSUE_MEM_GB = {("all", 1024): (5.4, 4.0), ("adaptive", 1024): (17.1, 10.7)}


def _fmt(v, spec):
    return spec.format(v) if v is not None else "-"


def _load(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None, []
    if isinstance(d, list):
        return None, d
    return d.get("device"), d.get("rows", [])


def main(work):
    dev, ours = None, []
    for p in sorted(glob.glob(os.path.join(work, "adapt_*.json"))):
        d, rows = _load(p)
        dev = dev or d
        for r in rows:
            r["_file"] = os.path.basename(p)
        ours += rows
    _, official = _load(os.path.join(work, "official.json"))
    _, samples = _load(os.path.join(work, "sample.json"))
    out = [f"## Issue 11 on {dev or 'unknown device'}", ""]
    tests = os.path.join(work, "tests_gpu.log")
    if os.path.exists(tests):
        txt = open(tests, errors="replace").read()
        m = re.findall(r"^=+ (.*(?:passed|failed|error).*) =+$", txt, re.M)
        out.append(f"GPU tests: {m[-1] if m else 'no pytest summary (see tests_gpu.log)'}")
        out += [f"  {l.strip()}" for l in txt.splitlines() if " vs exact on " in l]
        out.append("")
    off = {(r["mode"], r["res"]): r for r in official if "mode" in r and "median_s_per_iter" in r}
    out.append("| config | precision / path | ours s/it | official s/it | speed-up | ours peak alloc GB | official GB |"
               " issue then (ours / official) |")
    out.append("|---|---|---|---|---|---|---|---|")
    main_rows = [r for r in ours if r.get("_file") == "adapt_main.json"]
    for r in main_rows:
        key = (r["mode"], r["res"])
        if "error" in r:
            out.append(f"| {r['mode']} {r['res']} | {r.get('precision')} | error: {r['error'][:60]} | | | | | |")
            continue
        o = off.get(key)
        os_ = o["median_s_per_iter"] if o else None
        ratio = f"{os_ / r['median_s_per_iter']:.2f}x" if os_ else "-"
        issue = ISSUE.get(key)
        mem = ISSUE_MEM_GB.get(key)
        o_s = _fmt(os_, "{:.4f}")
        o_mem = _fmt(o.get("peak_alloc_mb") / 1024 if o and o.get("peak_alloc_mb") else None, "{:.2f}")
        then = (f"{issue[0]} / {issue[1]} s" if issue else "") + (f", {mem[0]} / {mem[1]} GB" if mem else "")
        out.append(f"| {r['mode']} {r['res']} | {r['precision']}: {r.get('path')} | {r['median_s_per_iter']:.4f} | "
                   f"{o_s} | {ratio} | {r['peak_alloc_mb'] / 1024:.2f} | {o_mem} | {then} |")
    out.append("")
    lev = [r for r in ours if r.get("_file") in ("adapt_eager.json", "adapt_ops.json", "adapt_modconv.json")]
    if lev:
        out.append("Levers (top resolution, batch 2, one change at a time):")
        out.append("| config | precision | path | ops | modconv | s/it | peak alloc GB |")
        out.append("|---|---|---|---|---|---|---|")
        for r in lev:
            if "error" in r:
                out.append(f"| {r['mode']} | {r.get('precision')} | error: {r['error'][:80]} | | | | |")
                continue
            out.append(f"| {r['mode']} {r['res']} | {r['precision']} | {r['path']} | {r['ops']} | {r['modconv']}"
                       f"{' +cl' if r.get('channels_last') else ''} | {r['median_s_per_iter']:.4f} | "
                       f"{r['peak_alloc_mb'] / 1024:.2f} |")
        out.append("")
    if samples:
        offs = {(r["res"], r["batch"]): r["img_per_s"] for r in official if r.get("what") == "sampling"}
        out.append("Sampling, images/s (official: its generator, float32, its ops):")
        out.append("| res | batch | precision | modconv | img/s | official img/s | ratio |")
        out.append("|---|---|---|---|---|---|---|")
        for r in samples:
            if "error" in r:
                continue
            o = offs.get((r["res"], r["batch"]))
            ratio = _fmt(r["img_per_s"] / o if o else None, "{:.2f}x")
            out.append(f"| {r['res']} | {r['batch']} | {r['policy']} | {r['modconv']} | {r['img_per_s']:.1f} | "
                       f"{_fmt(o, '{:.1f}')} | {ratio} |")
        out.append("")
    prof = os.path.join(work, "adapt_profile.log")
    if os.path.exists(prof):
        lines = [l for l in open(prof, errors="replace").read().splitlines() if "launches per iteration" in l]
        out += [f"Profile (fast, 1024 all): {lines[-1]}" if lines else "Profile: see adapt_profile.log"]
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
