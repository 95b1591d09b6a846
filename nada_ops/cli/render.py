"""``python -m nada_ops render-transition``: domain-transition videos, resumable; job files."""
from __future__ import annotations

import argparse
import os
import sys

from ..limits import arg
from .common import device_from_arg


def run(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nada_ops render-transition",
        description="Fixed latents rendered while the weights move A -> B (-> C ...). Outputs that already exist "
                    "are skipped, so an interrupted run continues where it stopped.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--generators", nargs="+", help="2 or more generator files of the same architecture")
    src.add_argument("--job", help="job file (JSON or YAML) listing transitions, and also adaptations and sample grids (see the README, *Batch jobs*)")
    p.add_argument("--out", required=True, help="output folder (a job file writes one sub-folder per job)")
    p.add_argument("--seeds", default=None, help="e.g. 0-15 (default 0-7 unless --latents)")
    p.add_argument("--latents", default=None, help="latents file (.pt from `invert`, or [N, num_ws, w_dim] tensor)")
    p.add_argument("--psi", type=arg("psi"), default=0.7, help="truncation psi for seeds")
    p.add_argument("--cutoff", type=arg("cutoff"), default=None, help="truncate only the first N W+ entries")
    p.add_argument("--class", dest="class_idx", type=arg("class_idx"), default=None,
                   help="class label (conditional models)")
    p.add_argument("--end-seeds", default=None, help="latents also move towards these seeds (one or one per seed)")
    p.add_argument("--latent-mode", choices=["lerp", "slerp"], default="lerp")
    p.add_argument("--direction", default=None, help="editing direction file (.npy/.pt) to move along")
    p.add_argument("--strength", type=arg("strength"), default=0.0, help="edit strength reached at the end")
    p.add_argument("--layers", default=None, help="W+ entries the edit applies to, e.g. 0-5")
    p.add_argument("--frames", type=arg("frames"), default=120)
    p.add_argument("--fps", type=arg("fps"), default=30.0)
    from ..video import EASING_NAMES
    p.add_argument("--easing", choices=list(EASING_NAMES), default="ease_in_out")
    p.add_argument("--loop", action="store_true", help="return to the first model (seamless loop)")
    p.add_argument("--format", choices=["mp4", "webp", "gif"], default="mp4")
    p.add_argument("--layout", choices=["separate", "grid"], default="separate",
                   help="one file per latent (default) or one grid video")
    p.add_argument("--cols", type=arg("cols"), default=None, help="grid columns")
    p.add_argument("--quality", type=arg("quality"), default=None,
                   help="MP4 CRF 0-51 (default 18) / WebP quality 0-100 (default 90)")
    p.add_argument("--batch", type=arg("batch"), default=8, help="latents rendered at once")
    p.add_argument("--max-writers", type=arg("max_writers"), default=16, help="files encoded at the same time")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--noise-seed", type=arg("noise_seed"), default=0)
    p.add_argument("--device", default="auto",
                   help="auto (a GPU where there is one), cpu, cuda, ...; with --ray: auto, cpu or cuda for the workers")
    p.add_argument("--overwrite", action="store_true", help="render again even if outputs exist")
    from ._batch import add_backend_options
    add_backend_options(p)
    a = p.parse_args(argv)
    from ..batch.jobs import load_batch_file, units_from_transition_jobs
    from ..batch.work import prepare_units
    from ..render_jobs import job_from_dict
    from ._batch import report_failures, run_units
    dev = a.device if a.ray else device_from_arg(a.device)
    if a.job:
        try:
            units = load_batch_file(a.job, a.out)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        single = False
    else:
        d = {"generators": a.generators, "seeds": a.seeds if a.seeds or a.latents else "0-7",
             "latents": a.latents, "psi": a.psi, "cutoff": a.cutoff, "class_idx": a.class_idx,
             "end_seeds": a.end_seeds, "latent_mode": a.latent_mode, "direction": a.direction,
             "strength": a.strength, "layers": a.layers, "frames": a.frames, "fps": a.fps, "easing": a.easing,
             "loop": a.loop, "format": a.format, "layout": a.layout, "cols": a.cols, "quality": a.quality,
             "batch": a.batch, "max_writers": a.max_writers, "noise_mode": a.noise_mode,
             "noise_seed": a.noise_seed}
        if a.seeds and a.latents:
            p.error("give --seeds or --latents, not both")
        try:
            jobs = [job_from_dict(d, None, "command line")]
        except ValueError as e:
            p.error(str(e))
        from .common import generator_path        # checked values first, then catalogue names -> files
        jobs[0].generators = [os.path.abspath(generator_path(g)) for g in jobs[0].generators]
        for k in ("latents", "direction"):
            if getattr(jobs[0], k) is not None:
                setattr(jobs[0], k, os.path.abspath(getattr(jobs[0], k)))
        units = units_from_transition_jobs(jobs, a.out, single=True)
        single = True
    from .common import ByteProgress, say
    prepare_units(units, log=say, progress_factory=ByteProgress)     # CLIP weights of adapt units, once
    report = run_units(units, a, dev, a.overwrite)
    print(f"{report.written} file(s) written, {report.skipped} already there (skipped) in {a.out}")
    return report_failures(report, single)
