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
``overwrite`` renders everything again.  Each job folder also gets ``job.json``: the settings
used and, per output file, a fingerprint of the settings and input files (size and time of the
generator, latents and direction files) that made it. An output whose fingerprint differs from
this run's (``--frames 12`` after ``--frames 24``, a generator saved again, ...) or that has no
record is rendered again; the log says what changed.

Job files are untrusted input: every field is checked for its type and range (the ranges
in :mod:`nada_ops.limits`, shared with the command line), a file over 4 MiB or with over
1000 jobs is refused, and every error names the file, the job and the field.  Frame plans
are computed per frame, so nothing grows with ``frames`` before frames are rendered.
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
        """Check every field's type and range (:mod:`nada_ops.limits`) and normalise it in
        place; ValueError naming ``where`` and the field otherwise."""
        from .latents import parse_seeds
        from .limits import MAX_GENERATORS, check, check_text

        def bad(msg):
            raise ValueError(f"{where}: {msg}")

        def choice(field, options):
            v = getattr(self, field)
            if not isinstance(v, str) or v not in options:
                bad(f"'{field}' must be one of {list(options)}, got {v!r:.60}")

        g = self.generators
        if not isinstance(g, (list, tuple)) or not 2 <= len(g) <= MAX_GENERATORS:
            n = f"{len(g)} entries" if isinstance(g, (list, tuple)) else f"{type(g).__name__} {g!r:.60}"
            bad(f"'generators' must list at least 2 generator files (at most {MAX_GENERATORS}), got {n}")
        self.generators = [check_text(x, where, f"generators[{i}]") for i, x in enumerate(g)]
        if any(not x.strip() for x in self.generators):
            bad("'generators' contains an empty file name")
        self.name = check_text(self.name, where, "name", max_chars=200)
        if self.name and (self.name in (".", "..") or any(c in self.name for c in "/\\:")
                          or self.name != self.name.strip()):
            bad(f"'name' {self.name!r} must be a plain folder name")
        if (self.seeds is None) == (self.latents is None):
            bad("give exactly one of 'seeds' or 'latents'")
        for field in ("seeds", "end_seeds"):
            v = getattr(self, field)
            if v is None:
                continue
            if isinstance(v, str):
                check_text(v, where, field, max_chars=100_000)
            try:
                parse_seeds(v)
            except ValueError as e:
                bad(f"'{field}': {e}")
        self.latents = check_text(self.latents, where, "latents", optional=True)
        self.direction = check_text(self.direction, where, "direction", optional=True)
        self.layers = check_text(self.layers, where, "layers", optional=True, max_chars=1000)
        self.psi = check("psi", self.psi, where)
        self.cutoff = check("cutoff", self.cutoff, where, optional=True)
        self.class_idx = check("class_idx", self.class_idx, where, optional=True)
        choice("latent_mode", ("lerp", "slerp"))
        self.strength = check("strength", self.strength, where)
        self.frames = check("frames", self.frames, where)
        self.fps = check("fps", self.fps, where)
        choice("easing", EASING_NAMES)
        if not isinstance(self.loop, bool):
            bad(f"'loop' must be true or false, got {self.loop!r:.60}")
        choice("format", VIDEO_FORMATS)
        choice("layout", ("separate", "grid"))
        self.cols = check("cols", self.cols, where, optional=True)
        self.quality = check({"mp4": "crf", "webp": "webp_quality"}.get(self.format, "quality"), self.quality,
                             where, optional=True, field="quality")
        self.batch = check("batch", self.batch, where)
        choice("noise_mode", NOISE_MODES)
        self.noise_seed = check("noise_seed", self.noise_seed, where)
        self.max_writers = check("max_writers", self.max_writers, where)
        return self


JOB_KEYS = {f.name for f in fields(TransitionJob)}
NOISE_MODES = ("const", "random", "none")
_PATH_FIELDS = ("latents", "direction")


def job_from_dict(d: dict, base_dir: str | None = None, where: str = "job") -> TransitionJob:
    """A validated job from a JSON object; relative paths are taken relative to ``base_dir``."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
    unknown = sorted(map(str, set(d) - JOB_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown[:10]}; known: {sorted(JOB_KEYS)}")
    if "generators" not in d:
        raise ValueError(f"{where}: missing 'generators'")
    kw = dict(d)
    if kw.get("name") is None:
        kw["name"] = ""
    job = TransitionJob(**kw).validate(where)

    def resolve(p):
        p = os.path.expanduser(p)
        if base_dir is None or os.path.isabs(p):
            return p
        return os.path.join(base_dir, p)
    job.generators = [resolve(g) for g in job.generators]
    for k in _PATH_FIELDS:
        if getattr(job, k) is not None:
            setattr(job, k, resolve(getattr(job, k)))
    return job


def load_job_file(path) -> list[TransitionJob]:
    """Jobs from a JSON job file ({"defaults": {...}, "jobs": [...]}, or a plain list).

    Bounded: at most ``limits.MAX_JOB_FILE_BYTES`` are read (a regular file only: not a
    pipe or a device) and ``limits.MAX_JOBS`` jobs accepted; every field of every job is
    type- and range-checked, and every error names the file, the job and the field."""
    from .batch.jobs import read_job_list   # the one bounded reader of job files
    p = os.fspath(path)
    defaults, jobs = read_job_list(p)
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
        if merged.get("name") is None:
            merged["name"] = f"job{i:03d}"
        label = merged["name"] if isinstance(merged["name"], str) else repr(merged["name"])
        job = job_from_dict(merged, base, where=f"{p}: job {i} ({label[:80]})")
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


#: Fields that do not change what is rendered (names, batching, how many files are open at once).
_NOT_IN_FINGERPRINT = ("name", "batch", "max_writers")


def _file_id(path) -> dict:
    try:
        st = os.stat(path)
        return {"file": os.path.basename(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    except OSError:
        return {"file": os.path.basename(path), "missing": True}


def output_settings(job: TransitionJob) -> dict:
    """What an output of ``job`` depends on: the job's rendering settings and the identity (name,
    size, modification time) of the generator, latents and direction files."""
    d = {k: v for k, v in asdict(job).items() if k not in _NOT_IN_FINGERPRINT}
    d["generators"] = [_file_id(g) for g in job.generators]
    for k in _PATH_FIELDS:
        if d.get(k) is not None:
            d[k] = _file_id(d[k])
    return d


def fingerprint(settings: dict) -> str:
    import hashlib
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_job_record(folder: str) -> dict:
    """The ``job.json`` of a job folder (empty when absent or unreadable; at most 4 MiB read)."""
    from .limits import MAX_JOB_FILE_BYTES
    try:
        with open(os.path.join(folder, "job.json"), "rb") as fh:
            raw = fh.read(MAX_JOB_FILE_BYTES + 1)
        d = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_JOB_FILE_BYTES else {}
    except (OSError, ValueError, RecursionError):
        return {}
    return d if isinstance(d, dict) else {}


def _changes(old: dict, new: dict) -> str:
    """'frames 24 -> 12, generators' for the message that says why outputs are rendered again."""
    old_s = old.get("output_settings") if isinstance(old.get("output_settings"), dict) else {}
    keys = sorted(set(old_s) | set(new))
    out = []
    for k in keys:
        if old_s.get(k) != new.get(k):
            a, b = old_s.get(k), new.get(k)
            short = isinstance(a, (int, float, str, bool, type(None))) and isinstance(b, (int, float, str, bool, type(None)))
            out.append(f"{k} {a!r} -> {b!r}" if short else (f"{k} (files changed)" if k in ("generators", *_PATH_FIELDS)
                                                             else k))
    return ", ".join(out[:6]) or "settings"


def _write_record(folder: str, record: dict) -> None:
    from .fileio import atomic_write
    text = json.dumps(record, indent=2, sort_keys=True, default=str)

    def write_json(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    atomic_write(os.path.join(folder, "job.json"), write_json)


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
    from .stylegan.io import load_generator
    from .stylegan.sampling import sample_latents
    from .video import open_writer, render_transition

    report = JobReport(job.name, folder)
    settings_now = output_settings(job)
    fp = fingerprint(settings_now)
    record = read_job_record(folder)
    made = record.get("outputs") if isinstance(record.get("outputs"), dict) else {}

    def up_to_date(o):
        return not overwrite and made.get(o) == fp and os.path.exists(os.path.join(folder, o))

    # Which outputs are missing or stale?  (Cheap: needs the number of latents only.)
    if job.seeds is not None:
        n = len(parse_seeds(job.seeds))
    else:
        n = None
    labels = _labels_for(job, n) if n is not None else None
    if labels is not None:
        outs = planned_outputs(job, n, labels)
        if all(up_to_date(o) for o in outs):
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
    todo = [i for i, o in enumerate(outs) if not up_to_date(o)]
    report.skipped = [outs[i] for i in range(len(outs)) if i not in todo]
    if not todo:
        return report
    stale = [outs[i] for i in todo if os.path.exists(os.path.join(folder, outs[i]))]
    if stale and not overwrite and log is not None:
        why = (f"the settings changed since they were rendered ({_changes(record, settings_now)})"
               if made else "there is no record of the settings that made them")
        log(f"{job.name or 'job'}: rendering {len(stale)} existing output(s) again ({', '.join(stale[:3])}"
            f"{', ...' if len(stale) > 3 else ''}): {why}")
    os.makedirs(folder, exist_ok=True)
    settings = asdict(job)
    settings["generator_names"] = [h.name for h in handles]
    # what is recorded before rendering: only outputs still valid for these settings
    outputs = {o: fp for o in outs if up_to_date(o)}
    record = {**settings, "output_settings": settings_now, "fingerprint": fp, "outputs": outputs}
    _write_record(folder, record)

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
        new = [outs[0]] if job.layout == "grid" else [outs[i] for i in rows]
        report.written += new
        outputs.update({o: fp for o in new})
        _write_record(folder, record)
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
