"""The job model: units of batch work, read from a job file (JSON or YAML) or built by a command.

A unit is one independent piece of work with a deterministic output folder
(``OUT/<name>/``) and a record of the settings that made its outputs (``job.json`` in that
folder: per output file, a fingerprint of the settings and of the input files' identity).
A re-run skips outputs whose fingerprint matches and redoes those whose settings changed.

Kinds of unit:

``transition``  a domain-transition video job, exactly the job of :mod:`nada_ops.render_jobs`
                (its fields, validation and resume rules; the default kind).
``adapt``       StyleGAN-NADA: adapt ``generator`` from ``source`` to ``target`` text (or to
                ``target_images``), save ``<name>.safetensors``, a sample grid ``<name>.png``
                of the result (``sample_seeds``) and, with a ``transition`` block, a
                transition video source -> result into ``<name>/transition/``.
``sample-grid`` a PNG grid of seeds of one generator (``grid.png``).

Job file (the format of ``render-transition --job``, extended by ``kind``)::

    {
      "defaults": {"frames": 120, "seeds": "0-7",            # transition defaults (as before)
                   "adapt": {"iterations": 300, "mixing": 0},  # per-kind defaults
                   "sample-grid": {"seeds": "0-15"}},
      "jobs": [
        {"name": "ffhq_to_sketch", "generators": ["ffhq.pkl", "sketch.safetensors"]},
        {"kind": "adapt", "name": "zombie", "generator": "ffhq.pkl", "target": "zombie",
         "transition": {"seeds": "0-3", "frames": 60}},
        {"kind": "sample-grid", "name": "pixar_grid", "generator": "pixar.pt"}
      ]
    }

A ``.yaml`` / ``.yml`` file holds the same structure (needs PyYAML, which Ray installs; YAML
anchors and aliases are refused).  Job files are untrusted input: bounded size and job count,
every field type- and range-checked (:mod:`nada_ops.limits`), every error names the file,
the job and the field.  Relative paths are relative to the job file's folder.
"""
from __future__ import annotations

import glob
import json
import os
import stat
from dataclasses import asdict, dataclass, field, fields

from ..render_jobs import JOB_KEYS as TRANSITION_KEYS
from ..render_jobs import TransitionJob, job_from_dict

KINDS = ("transition", "adapt", "sample-grid")
TEMPLATE_MODES = ("nada", "imagenet", "single")
SCHEDULES = ("all", "adaptive", "manual")
DEFAULT_CLIP = ("ViT-B-32:1", "ViT-B-16:1")


@dataclass
class Unit:
    """One unit of batch work: ``spec`` is a TransitionJob, AdaptSpec or GridSpec; every output
    goes into ``folder`` (absolute)."""
    kind: str
    name: str
    folder: str
    spec: object

    def folders(self) -> list[str]:
        """Every folder the unit writes into (where a dead writer's temporaries can be)."""
        out = [self.folder]
        if self.kind == "adapt" and self.spec.transition is not None:
            out.append(os.path.join(self.folder, "transition"))
        return out


# ------------------------------------------------------------------------------ specs
def _bad(where, msg):
    raise ValueError(f"{where}: {msg}")


def _choice(where, name, value, options):
    if not isinstance(value, str) or value not in options:
        _bad(where, f"'{name}' must be one of {list(options)}, got {value!r:.60}")
    return value


def _seeds(where, name, value, optional=False):
    from ..latents import parse_seeds
    from ..limits import check_text
    if value is None and optional:
        return None
    if isinstance(value, str):
        check_text(value, where, name, max_chars=100_000)
    try:
        parse_seeds(value)
    except ValueError as e:
        _bad(where, f"'{name}': {e}")
    return value


def _plain_name(where, name):
    from ..limits import check_text
    name = check_text(name, where, "name", max_chars=200)
    if not name or name in (".", "..") or any(c in name for c in "/\\:") or name != name.strip() \
            or name.startswith("."):
        _bad(where, f"'name' {name!r} must be a plain folder name")
    return name


@dataclass
class AdaptSpec:
    generator: str
    name: str = ""
    source: str = "photo"
    target: str | None = None
    target_images: object = None        # folder, glob or list of image files (few-shot)
    templates: str = "nada"
    clip: list = field(default_factory=lambda: list(DEFAULT_CLIP))   # "NAME[:WEIGHT]"
    clip_weights: dict = field(default_factory=dict)                 # NAME -> weights file
    clip_dirs: list = field(default_factory=list)                    # folders searched for CLIP weights
    clip_config: list = field(default_factory=list)                  # open_clip model configs (.json)
    iterations: int = 300
    train_batch: int = 2
    lr: float = 0.002
    reference_lr_scale: bool = False
    mixing: float = 0.9
    seed: int = 0
    schedule: str = "all"
    k: int | None = None
    train_layers: str = ""              # manual schedule: coarse/middle/fine and/or W+ indices
    n_w: int = 8
    n_i: int = 1
    lambda_global: float = 0.0
    precision: str = "auto"             # nada_ops.precision policy of the training (auto: fast on CUDA)
    num_source_samples: int = 16
    sample_seeds: object = "0-7"        # grid of the result (None: no grid)
    psi: float = 0.7
    transition: dict | None = None      # TransitionJob fields (not generators / name): source -> result
    #: set by :func:`nada_ops.batch.work.prepare_units` (not a job-file key): [[arch, file or None, weight]]
    clip_files: list | None = None

    def validate(self, where: str = "job") -> "AdaptSpec":
        from ..limits import check, check_text
        self.generator = check_text(self.generator, where, "generator")
        self.name = _plain_name(where, self.name)
        self.source = check_text(self.source, where, "source", max_chars=1000)
        self.target = check_text(self.target, where, "target", optional=True, max_chars=1000)
        if (self.target is None) == (self.target_images is None):
            _bad(where, "give exactly one of 'target' (text) or 'target_images'")
        if self.target is not None and self.target.strip() == self.source.strip():
            _bad(where, f"'source' and 'target' are the same text ({self.source!r})")
        if self.target_images is not None:
            ti = self.target_images
            if isinstance(ti, str):
                check_text(ti, where, "target_images")
            elif isinstance(ti, list) and ti and len(ti) <= 1000:
                self.target_images = [check_text(x, where, f"target_images[{i}]") for i, x in enumerate(ti)]
            else:
                _bad(where, "'target_images' must be a folder, a glob or a list of image files")
        _choice(where, "templates", self.templates, TEMPLATE_MODES)
        if not isinstance(self.clip, list) or not 1 <= len(self.clip) <= 8:
            _bad(where, "'clip' must list 1 to 8 CLIP models as \"NAME\" or \"NAME:WEIGHT\"")
        self.clip = [check_text(c, where, f"clip[{i}]", max_chars=200) for i, c in enumerate(self.clip)]
        parse_clip_list(self.clip, where)
        if not isinstance(self.clip_weights, dict) or len(self.clip_weights) > 8:
            _bad(where, "'clip_weights' must map CLIP model names to weights files")
        self.clip_weights = {check_text(k, where, "clip_weights", max_chars=200): check_text(v, where, f"clip_weights.{k}")
                             for k, v in self.clip_weights.items()}
        for key in ("clip_dirs", "clip_config"):
            v = getattr(self, key)
            if not isinstance(v, list) or len(v) > 16:
                _bad(where, f"'{key}' must be a list of paths")
            setattr(self, key, [check_text(x, where, f"{key}[{i}]") for i, x in enumerate(v)])
        self.iterations = check("iterations", self.iterations, where)
        self.train_batch = check("train_batch", self.train_batch, where)
        self.lr = check("lr", self.lr, where)
        if not isinstance(self.reference_lr_scale, bool):
            _bad(where, "'reference_lr_scale' must be true or false")
        self.mixing = check("mixing", self.mixing, where)
        self.seed = check("seed", self.seed, where)
        _choice(where, "schedule", self.schedule, SCHEDULES)
        self.k = check("k", self.k, where, optional=True)
        self.train_layers = check_text(self.train_layers, where, "train_layers", max_chars=1000)
        if self.schedule == "manual" and not self.train_layers.strip():
            _bad(where, "schedule 'manual' needs 'train_layers' (coarse/middle/fine and/or W+ indices)")
        self.n_w = check("n_w", self.n_w, where)
        self.n_i = check("n_i", self.n_i, where)
        self.lambda_global = check("lambda_global", self.lambda_global, where)
        from ..precision import POLICIES
        if self.precision not in POLICIES:
            _bad(where, f"'precision' must be one of {list(POLICIES)}, got {str(self.precision)[:40]!r}")
        self.num_source_samples = check("num_source_samples", self.num_source_samples, where)
        self.sample_seeds = _seeds(where, "sample_seeds", self.sample_seeds, optional=True)
        self.psi = check("psi", self.psi, where)
        if self.transition is not None:
            if not isinstance(self.transition, dict):
                _bad(where, "'transition' must be an object of transition settings")
            extra = sorted(set(self.transition) & {"generators", "name", "kind"})
            if extra:
                _bad(where, f"'transition' must not set {extra}: it goes from the source generator to the result")
            t = dict(self.transition)
            if "seeds" not in t and "latents" not in t:
                t["seeds"] = "0-7"
            # validated as a job (paths are resolved by the caller)
            job_from_dict({**t, "generators": ["source", "result"], "name": "transition"}, None,
                          where=f"{where}: transition")
            self.transition = t
        return self


@dataclass
class GridSpec:
    generator: str
    name: str = ""
    seeds: object = "0-15"
    psi: float = 0.7
    cutoff: int | None = None
    class_idx: int | None = None
    noise_mode: str = "const"
    cols: int | None = None
    batch: int = 8
    translate: list = field(default_factory=lambda: [0.0, 0.0])
    rotate: float = 0.0

    def validate(self, where: str = "job") -> "GridSpec":
        from ..limits import check, check_text
        self.generator = check_text(self.generator, where, "generator")
        self.name = _plain_name(where, self.name)
        self.seeds = _seeds(where, "seeds", self.seeds)
        self.psi = check("psi", self.psi, where)
        self.cutoff = check("cutoff", self.cutoff, where, optional=True)
        self.class_idx = check("class_idx", self.class_idx, where, optional=True)
        _choice(where, "noise_mode", self.noise_mode, ("const", "random", "none"))
        self.cols = check("cols", self.cols, where, optional=True)
        self.batch = check("batch", self.batch, where)
        if not isinstance(self.translate, list) or len(self.translate) != 2:
            _bad(where, "'translate' must be [x, y]")
        self.translate = [check("translate", v, where) for v in self.translate]
        self.rotate = check("rotate", self.rotate, where)
        return self


ADAPT_KEYS = {f.name for f in fields(AdaptSpec)} - {"clip_files"}
GRID_KEYS = {f.name for f in fields(GridSpec)}
KEYS = {"transition": TRANSITION_KEYS, "adapt": ADAPT_KEYS, "sample-grid": GRID_KEYS}
SPECS = {"adapt": AdaptSpec, "sample-grid": GridSpec}


def parse_clip_list(specs, where="clip") -> list[tuple[str, float]]:
    """["ViT-B-32:1", "ViT-B-16"] -> [("ViT-B-32", 1.0), ("ViT-B-16", 1.0)]."""
    import math
    out = []
    for s in specs:
        name, _, w = s.partition(":")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"{where}: CLIP model {s!r}: expected NAME or NAME:WEIGHT, e.g. ViT-B-32:1.0") from None
        if not name.strip() or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{where}: CLIP model {s!r}: expected a name and a finite weight >= 0")
        out.append((name.strip(), weight))
    if not any(w > 0 for _, w in out):
        raise ValueError(f"{where}: give at least one CLIP model with a non-zero weight")
    return out


# ------------------------------------------------------------------------ building units
def _resolve(p, base_dir):
    p = os.path.expanduser(p)
    if base_dir is None or os.path.isabs(p):
        return p
    return os.path.join(base_dir, p)


def image_files(spec, where="target_images") -> list[str]:
    """A folder, glob or list of image files -> sorted list of image files (at most 1000)."""
    from ..io.images import IMAGE_SUFFIXES, MAX_IMAGE_FILES
    if isinstance(spec, list):
        files = list(spec)
    elif os.path.isdir(spec):
        files = []
        with os.scandir(spec) as it:
            for e in it:
                if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file():
                    files.append(e.path)
                    if len(files) > MAX_IMAGE_FILES:
                        break
    else:
        files = []
        for f in glob.iglob(spec):
            if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(f):
                files.append(f)
                if len(files) > MAX_IMAGE_FILES:
                    break
    if not files:
        raise ValueError(f"{where}: no images found in {spec!r:.200} ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) > MAX_IMAGE_FILES:
        raise ValueError(f"{where}: more than {MAX_IMAGE_FILES} images; use a smaller set")
    return sorted(files)


def unit_from_dict(d: dict, out_dir: str, base_dir: str | None = None, where: str = "job",
                   folder: str | None = None) -> Unit:
    """A validated unit from a JSON object (``kind`` defaults to 'transition'); relative paths are
    taken relative to ``base_dir``; outputs go into ``folder`` (default ``out_dir/<name>``)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
    d = dict(d)
    kind = d.pop("kind", "transition")
    if kind not in KINDS:
        raise ValueError(f"{where}: 'kind' must be one of {list(KINDS)}, got {kind!r:.60}")
    if kind == "transition":
        job = job_from_dict(d, base_dir, where)
        return Unit(kind, job.name, os.path.abspath(folder or os.path.join(out_dir, job.name)), job)
    cls = SPECS[kind]
    unknown = sorted(map(str, set(d) - KEYS[kind]))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown[:10]} for a {kind} job; known: {sorted(KEYS[kind])}")
    if "generator" not in d:
        raise ValueError(f"{where}: missing 'generator'")
    spec = cls(**d).validate(where)
    spec.generator = _resolve(spec.generator, base_dir)
    if kind == "adapt":
        if spec.target_images is not None:
            ti = spec.target_images
            ti = [_resolve(x, base_dir) for x in ti] if isinstance(ti, list) else _resolve(ti, base_dir)
            spec.target_images = image_files(ti, f"{where}: 'target_images'")
        spec.clip_weights = {k: (v if v == "random" else _resolve(v, base_dir)) for k, v in spec.clip_weights.items()}
        spec.clip_dirs = [_resolve(x, base_dir) for x in spec.clip_dirs]
        spec.clip_config = [_resolve(x, base_dir) for x in spec.clip_config]
        if spec.transition is not None:
            for k in ("latents", "direction"):
                if spec.transition.get(k) is not None:
                    spec.transition[k] = _resolve(spec.transition[k], base_dir)
    return Unit(kind, spec.name, os.path.abspath(folder or os.path.join(out_dir, spec.name)), spec)


def units_from_transition_jobs(jobs: list[TransitionJob], out_dir: str, single: bool = False) -> list[Unit]:
    """Units for jobs of :mod:`nada_ops.render_jobs` (``single``: one job written into ``out_dir``)."""
    return [Unit("transition", j.name, os.path.abspath(out_dir if single else os.path.join(out_dir, j.name)), j)
            for j in jobs]


# --------------------------------------------------------------------------- job files
def read_structured_file(path) -> object:
    """The JSON (or YAML, by extension) content of a job file: a regular file of at most
    ``limits.MAX_JOB_FILE_BYTES``; YAML through ``yaml.safe_load`` with anchors/aliases refused."""
    from ..limits import MAX_JOB_FILE_BYTES
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ValueError(f"{p}: job file does not exist") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot read the job file ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{p}: the job file is not a regular file")
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_JOB_FILE_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{p}: cannot read the job file ({e.strerror or e})") from None
    if len(raw) > MAX_JOB_FILE_BYTES:
        raise ValueError(f"{p}: the job file is larger than {MAX_JOB_FILE_BYTES // 2 ** 20} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: the job file is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if p.lower().endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{p}: reading YAML job files needs PyYAML (pip install pyyaml; Ray installs it), "
                             "or write the job file as JSON") from None
        try:
            for ev in yaml.parse(text, Loader=yaml.SafeLoader):
                if isinstance(ev, yaml.AliasEvent):
                    raise ValueError(f"{p}: YAML aliases (*name) are not accepted in job files")
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML ({str(e)[:300]})") from None
        except RecursionError:
            raise ValueError(f"{p}: the YAML is nested too deeply") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    except (ValueError, RecursionError) as e:   # e.g. a 10,000-digit number, nesting too deep
        raise ValueError(f"{p}: cannot read the JSON ({type(e).__name__}: {str(e)[:120]})") from None


def read_job_list(path) -> tuple[dict, list]:
    """``(defaults, jobs)`` of a job file: ``{"defaults": {...}, "jobs": [...]}`` or a plain list
    of jobs, read by :func:`read_structured_file`; at most ``limits.MAX_JOBS`` jobs."""
    from ..limits import MAX_JOBS
    p = os.fspath(path)
    data = read_structured_file(p)
    defaults = {}
    if isinstance(data, dict):
        extra = sorted(map(str, set(data) - {"defaults", "jobs"}))
        if extra:
            raise ValueError(f"{p}: unknown top-level key(s) {extra[:10]}; expected 'defaults' and 'jobs'")
        defaults = data.get("defaults")
        if defaults is None:
            defaults = {}
        if not isinstance(defaults, dict):
            raise ValueError(f"{p}: 'defaults' must be a JSON object, got {type(defaults).__name__}")
        jobs = data.get("jobs")
    else:
        jobs = data
    if not isinstance(jobs, list) or not jobs:
        raise ValueError(f"{p}: expected a non-empty list of jobs")
    if len(jobs) > MAX_JOBS:
        raise ValueError(f"{p}: {len(jobs)} jobs, at most {MAX_JOBS} in one file")
    return defaults, jobs


def load_batch_file(path, out_dir: str) -> list[Unit]:
    """Units from a job file ({"defaults": {...}, "jobs": [...]}, or a plain list of jobs).

    ``defaults``: its plain keys are defaults of transition jobs (as in
    :func:`nada_ops.render_jobs.load_job_file`); ``defaults["adapt"]`` and
    ``defaults["sample-grid"]`` hold the defaults of those kinds."""
    p = os.fspath(path)
    defaults, jobs = read_job_list(p)
    per_kind = {"transition": {k: v for k, v in defaults.items() if k not in KINDS}}
    for kind in ("adapt", "sample-grid"):
        d = defaults.get(kind)
        if d is None:
            d = {}
        if not isinstance(d, dict) or "kind" in d:
            raise ValueError(f"{p}: 'defaults.{kind}' must be an object of {kind} settings")
        per_kind[kind] = d
    if "transition" in defaults:
        raise ValueError(f"{p}: put transition defaults directly in 'defaults'")
    base = os.path.dirname(os.path.abspath(p))
    out, names = [], set()
    for i, j in enumerate(jobs):
        if not isinstance(j, dict):
            raise ValueError(f"{p}: job {i} is not a JSON object")
        kind = j.get("kind", "transition")
        if kind not in KINDS:
            raise ValueError(f"{p}: job {i}: 'kind' must be one of {list(KINDS)}, got {kind!r:.60}")
        merged = {**per_kind[kind], **j}
        if kind == "transition":
            # a job's own latent source replaces the one from the defaults
            if "latents" in j and "seeds" not in j:
                merged.pop("seeds", None)
            if "seeds" in j and "latents" not in j:
                merged.pop("latents", None)
        if kind == "adapt":
            if "target_images" in j and "target" not in j:
                merged.pop("target", None)
            if "target" in j and "target_images" not in j:
                merged.pop("target_images", None)
        if merged.get("name") is None:
            merged["name"] = f"job{i:03d}"
        label = merged["name"] if isinstance(merged["name"], str) else repr(merged["name"])
        unit = unit_from_dict(merged, out_dir, base, where=f"{p}: job {i} ({label[:80]})")
        if unit.name in names:
            raise ValueError(f"{p}: two jobs are named {unit.name!r} (they would share an output folder)")
        names.add(unit.name)
        out.append(unit)
    return out


# ---------------------------------------------------------------- settings fingerprints
def file_id(path) -> dict:
    from ..render_jobs import _file_id
    return _file_id(path)


def unit_settings(unit: Unit) -> dict:
    """What the outputs of an adapt / sample-grid unit depend on: its settings (not its name)
    and the identity (name, size, modification time) of every input file."""
    d = {k: v for k, v in asdict(unit.spec).items() if k != "name"}
    d["kind"] = unit.kind
    d["generator"] = file_id(unit.spec.generator)
    if unit.kind == "adapt":
        if isinstance(unit.spec.target_images, list):
            d["target_images"] = [file_id(f) for f in unit.spec.target_images]
        # the CLIP weights that were found (not where they were looked for)
        d["clip_files"] = [[a, file_id(f) if f else None, w] for a, f, w in (unit.spec.clip_files or [])]
        d["clip_config"] = [file_id(f) for f in unit.spec.clip_config]
        for k in ("transition", "clip_dirs", "clip_weights", "clip"):
            d.pop(k, None)                # transition: own record (transition/job.json); the rest: in clip_files
    return d
