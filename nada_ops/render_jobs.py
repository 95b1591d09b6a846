"""Batch rendering of domain transitions for render farms (``python -m nada_ops render-transition``).

A job = a sequence of generator files + latents (seeds or a latents file) + video settings.
Jobs come from the command line or from a JSON job file::

    {
      "defaults": {"frames": 120, "fps": 30, "seeds": "0-15", "psi": 0.7, "format": "mp4"},
      "jobs": [
        {"name": "ffhq_to_sketch", "generators": ["ffhq.pkl", "sketch.safetensors"]},
        {"name": "tour", "generators": ["ffhq.pkl", "pixar.pt", "sketch.safetensors"],
         "latents": "inverted.pt", "loop": true, "layout": "grid", "format": "gif"}
      ]
    }

Relative paths in a job file are relative to the job file's folder.  Each job writes into
``OUT/<name>/`` (a single command-line job writes into ``OUT/`` itself): one file per latent
(``seed0007.mp4`` / ``latent0003.mp4``, layout ``separate``, the default) or one grid video
(``grid.mp4``).  Resumable: outputs that already exist are skipped (writers rename complete
files into place, so an existing file is a finished one); only missing latents are rendered.
``overwrite`` renders everything again.  Each job folder also gets ``job.json`` (the
settings used).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

from .video import EASING_NAMES, VIDEO_FORMATS

@dataclass
class TransitionJob:
    generators: list
    name: str = ""
    seeds: object = None              # '0-15' | [0, 1, ...] | None
    latents: str | None = None        # .pt/.npy latents file (instead of seeds)
    psi: float = 0.7
    cutoff: int | None = None
    class_idx: int | None = None
    end_seeds: object = None          # latents also move towards these seeds' latents
    latent_mode: str = "lerp"
    direction: str | None = None      # .npy/.pt editing direction
    strength: float = 0.0
    layers: str | None = None
    frames: int = 120
    fps: float = 30.0
    easing: str = "ease_in_out"
    loop: bool = False
    format: str = "mp4"
    layout: str = "separate"          # 'separate' (one file per latent) | 'grid'
    cols: int | None = None
    quality: int | None = None
    batch: int = 8
    noise_mode: str = "const"
    noise_seed: int = 0
    max_writers: int = 16             # files encoded at the same time (separate layout)

    def validate(self, where: str = "job") -> "TransitionJob":
        def bad(msg):
            raise ValueError(f"{where}: {msg}")
        if not isinstance(self.generators, (list, tuple)) or len(self.generators) < 2:
            bad(f"'generators' must list at least 2 generator files, got {self.generators!r}")
        if (self.seeds is None) == (self.latents is None):
            bad("give exactly one of 'seeds' or 'latents'")
        if self.format not in VIDEO_FORMATS:
            bad(f"format must be one of {list(VIDEO_FORMATS)}, got {self.format!r}")
        if self.layout not in ("separate", "grid"):
            bad(f"layout must be 'separate' or 'grid', got {self.layout!r}")
        if self.easing not in EASING_NAMES:
            bad(f"easing must be one of {list(EASING_NAMES)}, got {self.easing!r}")
        if int(self.frames) < 1:
            bad(f"frames must be >= 1, got {self.frames}")
        if not float(self.fps) > 0:
            bad(f"fps must be > 0, got {self.fps}")
        if self.latent_mode not in ("lerp", "slerp"):
            bad(f"latent_mode must be lerp or slerp, got {self.latent_mode!r}")
        if self.name and (os.sep in self.name or self.name in (".", "..") or "/" in self.name):
            bad(f"name {self.name!r} must be a plain folder name")
        return self


JOB_KEYS = {f.name for f in fields(TransitionJob)}


def job_from_dict(d: dict, base_dir: str | None = None, where: str = "job") -> TransitionJob:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - JOB_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(JOB_KEYS)}")
    if "generators" not in d:
        raise ValueError(f"{where}: missing 'generators'")
    kw = dict(d)

    def resolve(p):
        if p is None or base_dir is None or os.path.isabs(os.path.expanduser(str(p))):
            return os.path.expanduser(str(p)) if p is not None else None
        return os.path.join(base_dir, str(p))
    kw["generators"] = [resolve(g) for g in kw["generators"]]
    for k in ("latents", "direction"):
        if kw.get(k) is not None:
            kw[k] = resolve(kw[k])
    try:
        job = TransitionJob(**kw)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None
    return job.validate(where)


def load_job_file(path) -> list[TransitionJob]:
    """Jobs from a JSON job file ({"defaults": {...}, "jobs": [...]}, or a plain list)."""
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    defaults = {}
    if isinstance(data, dict):
        defaults = data.get("defaults", {}) or {}
        jobs = data.get("jobs")
        extra = sorted(set(data) - {"defaults", "jobs"})
        if extra:
            raise ValueError(f"{p}: unknown top-level key(s) {extra}; expected 'defaults' and 'jobs'")
    else:
        jobs = data
    if not isinstance(jobs, list) or not jobs:
        raise ValueError(f"{p}: expected a non-empty list of jobs")
    base = os.path.dirname(os.path.abspath(p))
    out, names = [], set()
    for i, j in enumerate(jobs):
        if not isinstance(j, dict):
            raise ValueError(f"{p}: job {i} is not a JSON object")
        merged = {**defaults, **j}
        # a job's own latent source replaces the one from the defaults
        if "latents" in j and "seeds" not in j:
            merged.pop("seeds", None)
        if "seeds" in j and "latents" not in j:
            merged.pop("latents", None)
        merged.setdefault("name", f"job{i:03d}")
        job = job_from_dict(merged, base, where=f"{p}: job {i} ({merged['name']})")
        if job.name in names:
            raise ValueError(f"{p}: two jobs are named {job.name!r} (they would share an output folder)")
        names.add(job.name)
        out.append(job)
    return out


def planned_outputs(job: TransitionJob, n_latents: int, labels: list[str]) -> list[str]:
    """Output file names of a job (relative to its folder)."""
    if job.layout == "grid":
        return [f"grid.{job.format}"]
    return [f"{lab}.{job.format}" for lab in labels[:n_latents]]


@dataclass
class JobReport:
    name: str
    folder: str
    written: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


def _labels_for(job: TransitionJob, n: int) -> list[str]:
    from .latents import parse_seeds
    if job.seeds is not None:
        return [f"seed{s:04d}" for s in parse_seeds(job.seeds)]
    return [f"latent{i:04d}" for i in range(n)]


def run_job(job: TransitionJob, folder: str, device="cpu", overwrite: bool = False, progress=None,
            generator_cache: dict | None = None, log=None) -> JobReport:
    """Render one job into ``folder``; finished outputs are skipped unless ``overwrite``.

    ``progress(done, total, None)`` counts frames over every pass of this job."""
    import torch

    from .latent_tools import direction_offsets, load_direction, load_latents
    from .latents import parse_seeds
    from .fileio import atomic_write
    from .stylegan.io import load_generator
    from .stylegan.sampling import sample_latents
    from .video import open_writer, render_transition

    report = JobReport(job.name, folder)
    # Which outputs are missing?  (Cheap: needs the number of latents only.)
    if job.seeds is not None:
        n = len(parse_seeds(job.seeds))
    else:
        n = None
    labels = _labels_for(job, n) if n is not None else None
    if labels is not None:
        outs = planned_outputs(job, n, labels)
        missing = [o for o in outs if overwrite or not os.path.exists(os.path.join(folder, o))]
        if not missing:
            report.skipped = outs
            return report

    cache = generator_cache if generator_cache is not None else {}
    handles = []
    for g in job.generators:
        key = (os.path.abspath(g), str(device))
        if key not in cache:
            cache[key] = load_generator(g, device=device)
        handles.append(cache[key])
    G0 = handles[0].G
    cfg = G0.cfg
    if job.seeds is not None:
        lat = sample_latents(G0, parse_seeds(job.seeds), job.psi, job.cutoff, job.class_idx)
    else:
        lat = load_latents(job.latents, cfg.num_ws, cfg.w_dim)
        n = lat.batch
        labels = _labels_for(job, n)
    outs = planned_outputs(job, n, labels)
    todo = [i for i, o in enumerate(outs) if overwrite or not os.path.exists(os.path.join(folder, o))]
    report.skipped = [outs[i] for i in range(len(outs)) if i not in todo]
    if not todo:
        return report
    os.makedirs(folder, exist_ok=True)
    settings = asdict(job)
    settings["generator_names"] = [h.name for h in handles]
    text = json.dumps(settings, indent=2, sort_keys=True, default=str)
    def write_json(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    atomic_write(os.path.join(folder, "job.json"), write_json)

    keyframes = None
    if job.end_seeds is not None:
        end = sample_latents(G0, parse_seeds(job.end_seeds), job.psi, job.cutoff, job.class_idx)
        if end.batch not in (1, n):
            raise ValueError(f"job {job.name!r}: {end.batch} end seeds for {n} latents: give one or one per latent")
        keyframes = end.ws[None]
    offset = None
    if job.direction is not None and job.strength != 0:
        offset = direction_offsets(load_direction(job.direction), cfg.num_ws, job.layers)

    if job.layout == "grid":
        passes = [list(range(n))]
    else:
        step = max(int(job.max_writers), 1)
        passes = [todo[i:i + step] for i in range(0, len(todo), step)]
    total = len(passes) * int(job.frames)
    done_before = [0]

    def prog(d, t, p):
        if progress is not None:
            progress(done_before[0] + d, total, None)

    for rows in passes:
        idx = torch.tensor(rows)
        ws = lat.ws[idx]
        kf = None
        if keyframes is not None:
            kf = keyframes if keyframes.shape[1] == 1 else keyframes[:, idx]
        if job.layout == "grid":
            writers = [open_writer(os.path.join(folder, outs[0]), job.fps, job.quality)]
        else:
            writers = [open_writer(os.path.join(folder, outs[i]), job.fps, job.quality) for i in rows]
        render_transition([h.G for h in handles], ws, int(job.frames), easing=job.easing, loop=job.loop,
                          keyframes=kf, latent_mode=job.latent_mode, direction_offset=offset,
                          direction_strength=job.strength, batch_size=job.batch, noise_mode=job.noise_mode,
                          noise_seed=job.noise_seed, dtype=handles[0].dtype, device=device,
                          names=[h.name for h in handles], layout=job.layout, cols=job.cols, writers=writers,
                          progress=prog)
        done_before[0] += int(job.frames)
        report.written += [outs[0]] if job.layout == "grid" else [outs[i] for i in rows]
        if log is not None:
            log(f"{job.name or 'job'}: wrote {len(writers)} file(s) into {folder}")
    return report


def run_jobs(jobs: list[TransitionJob], out_dir: str, device="cpu", overwrite: bool = False,
             progress_factory=None, log=None, single: bool = False) -> list[JobReport]:
    """Run jobs one after another (``single``: one job written directly into ``out_dir``).
    Generators are loaded once and reused while consecutive jobs share them."""
    reports = []
    cache: dict = {}
    for i, job in enumerate(jobs):
        folder = out_dir if single else os.path.join(out_dir, job.name)
        needed = {(os.path.abspath(g), str(device)) for g in job.generators}
        for k in list(cache):
            if k not in needed:
                del cache[k]
        label = job.name or "render"
        prog = progress_factory(f"[{i + 1}/{len(jobs)}] {label}") if progress_factory else None
        r = run_job(job, folder, device, overwrite, prog, cache, log)
        if r.skipped and not r.written and log is not None:
            log(f"[{i + 1}/{len(jobs)}] {label}: all {len(r.skipped)} output(s) exist, skipped")
        reports.append(r)
    return reports
