"""Running one unit: what every backend's worker does (in the command's process or in a Ray actor).

A worker keeps a :class:`ModelCache`: generators and CLIP models stay loaded across the units it
runs (keyed by the file's identity, so a file saved again is loaded again), bounded in number.
"""
from __future__ import annotations

import os
import time
import traceback
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

from .jobs import Unit, parse_clip_list, unit_settings


@dataclass
class UnitResult:
    name: str
    kind: str
    folder: str
    written: list = field(default_factory=list)      # paths relative to ``folder``
    skipped: list = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None                         # "ValueError: ..." when the unit failed
    details: str | None = None                       # traceback of an unexpected error
    messages: list = field(default_factory=list)     # what the unit logged
    attempts: int = 1
    worker: str | None = None                        # host:pid of the worker that ran it


class ModelCache:
    """Loaded generators and CLIP models, least recently used dropped first."""

    def __init__(self, max_generators: int = 4, max_clip: int = 4):
        self.max = {"g": max_generators, "c": max_clip}
        self.items: dict[str, OrderedDict] = {"g": OrderedDict(), "c": OrderedDict()}
        self.loads = {"g": 0, "c": 0}

    def _get(self, kind, key, load):
        d = self.items[kind]
        if key in d:
            d.move_to_end(key)
            return d[key]
        value = load()
        self.loads[kind] += 1
        d[key] = value
        while len(d) > self.max[kind]:
            d.popitem(last=False)
        return value

    def generator(self, path, device):
        from ..stylegan.io import load_generator
        from .jobs import file_id
        key = (os.path.abspath(path), str(device), repr(sorted(file_id(path).items())))
        return self._get("g", key, lambda: load_generator(path, device=device))

    def clip(self, arch, path, device, search_dirs):
        from ..clip.models import load_clip
        from .jobs import file_id
        ident = repr(sorted(file_id(path).items())) if path and path != "random" else path
        key = (arch, path, ident, str(device))
        return self._get("c", key, lambda: load_clip(arch, path, device=device, search_dirs=search_dirs or None))


# ------------------------------------------------------------------------ driver side
def prepare_units(units: list[Unit], log=None, progress_factory=None) -> None:
    """Before dispatch, in the command's process: find (and download once, where the catalogue
    has them) the CLIP weights of adapt units, so that workers never download."""
    from ..catalogue import clip_weights_for, default_folder
    from ..clip.models import find_local_weights
    for u in units:
        if u.kind != "adapt":
            continue
        s = u.spec
        dirs = s.clip_dirs or [str(default_folder("clip"))]
        files = []
        for name, w in parse_clip_list(s.clip, u.name):
            if w == 0:
                continue
            if name in s.clip_weights:
                files.append([name, s.clip_weights[name], w])
                continue
            progress = progress_factory(f"download CLIP {name}") if progress_factory else None
            arch, path = clip_weights_for(name, dirs, progress=progress, log=log)
            if path is None:
                found = find_local_weights(name, dirs)
                path = str(found) if found is not None else None
            files.append([arch, path, w])
        s.clip_files = files


# ------------------------------------------------------------------------ worker side
def run_unit(unit: Unit, device="cpu", cache: ModelCache | None = None, progress=None, log=None,
             overwrite: bool = False) -> UnitResult:
    """Run one unit; never raises for a failing unit (the result carries ``error``), except for
    KeyboardInterrupt.  ``progress(done, total, extra)``; ``log(message)``."""
    import socket
    cache = cache if cache is not None else ModelCache()
    res = UnitResult(unit.name, unit.kind, unit.folder, worker=f"{socket.gethostname()}:{os.getpid()}")

    def say(m):
        res.messages.append(m)
        if log is not None:
            log(m)
    t0 = time.time()
    try:
        if unit.kind == "transition":
            _run_transition(unit.spec, unit.folder, device, cache, progress, say, overwrite, res)
        elif unit.kind == "adapt":
            _run_adapt(unit, device, cache, progress, say, overwrite, res)
        elif unit.kind == "sample-grid":
            _run_grid(unit, device, cache, progress, say, overwrite, res)
        else:
            raise ValueError(f"unknown kind of unit {unit.kind!r}")
    except KeyboardInterrupt:
        raise
    except (ValueError, FileNotFoundError, OSError) as e:
        res.error = _error_text(e)
    except Exception as e:       # noqa: BLE001 - reported for this unit; the batch goes on
        res.error = _error_text(e)
        res.details = traceback.format_exc(limit=20)
    res.seconds = time.time() - t0
    return res


def _error_text(e: BaseException) -> str:
    from ..stylegan.formats import CheckpointError
    text = str(e) or type(e).__name__
    if isinstance(e, (ValueError, CheckpointError, FileNotFoundError)):
        return text
    return f"{type(e).__name__}: {text}"


def _run_transition(job, folder, device, cache, progress, say, overwrite, res, prefix=""):
    from ..render_jobs import run_job
    gens = {(os.path.abspath(g), str(device)): cache.generator(g, device) for g in _existing(job.generators)}
    r = run_job(job, folder, device, overwrite, progress, gens, say)
    res.written += [prefix + f for f in r.written]
    res.skipped += [prefix + f for f in r.skipped]


def _existing(paths):
    for p in paths:
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p}: generator file not found")
    return paths


def _record_state(folder, fp_by_output: dict, overwrite: bool):
    """(record, names of outputs that are up to date)."""
    from ..render_jobs import read_job_record
    record = read_job_record(folder)
    made = record.get("outputs") if isinstance(record.get("outputs"), dict) else {}
    done = {o for o, fp in fp_by_output.items()
            if not overwrite and made.get(o) == fp and os.path.exists(os.path.join(folder, o))}
    return record, made, done


def _say_redo(say, unit, folder, stale, made):
    if stale:
        why = "the settings changed since they were made" if made else "there is no record of the settings that made them"
        say(f"{unit.name}: making {', '.join(sorted(stale))} again: {why}")


def _write_unit_record(unit, folder, settings, outputs):
    from ..render_jobs import _write_record
    spec = asdict(unit.spec)
    _write_record(folder, {"kind": unit.kind, **spec, "output_settings": settings, "outputs": dict(outputs)})


def _run_grid(unit, device, cache, progress, say, overwrite, res):
    from ..latents import parse_seeds
    from ..render_jobs import fingerprint
    from ..stylegan.sampling import input_transform_for, sample_latents, save_image_grid, synthesize
    s, folder = unit.spec, unit.folder
    settings = unit_settings(unit)
    out = "grid.png"
    fp = fingerprint(settings)
    record, made, done = _record_state(folder, {out: fp}, overwrite)
    if out in done:
        res.skipped.append(out)
        return
    _say_redo(say, unit, folder, [out] if os.path.exists(os.path.join(folder, out)) and not overwrite else [], made)
    h = cache.generator(_existing([s.generator])[0], device)
    seeds = parse_seeds(s.seeds)
    from ..limits import check_memory
    res_px = h.cfg.img_resolution
    check_memory(2 * len(seeds) * h.cfg.img_channels * res_px * res_px * 4, f"{unit.name}: a grid of {len(seeds)} "
                 f"{res_px}px images", "sample fewer seeds")
    transform = input_transform_for(h.G, s.translate, s.rotate)
    lat = sample_latents(h.G, seeds, s.psi, s.cutoff, s.class_idx)
    img = synthesize(h.G, lat.ws, s.noise_mode, s.batch, progress=progress, transform=transform)
    os.makedirs(folder, exist_ok=True)
    save_image_grid(img, os.path.join(folder, out), s.cols)
    _write_unit_record(unit, folder, settings, {out: fp})
    res.written.append(out)


def _adapt_outputs(unit, settings):
    """{output file: fingerprint}: the model depends on the training settings, the grid also on
    its seeds and psi."""
    from ..render_jobs import fingerprint
    model_settings = {k: v for k, v in settings.items() if k not in ("sample_seeds", "psi")}
    outs = {f"{unit.name}.safetensors": fingerprint(model_settings)}
    if unit.spec.sample_seeds is not None:
        outs[f"{unit.name}.png"] = fingerprint(settings)
    return outs


def _run_adapt(unit, device, cache, progress, say, overwrite, res):
    from ..latents import parse_seeds
    from ..render_jobs import job_from_dict
    from ..stylegan.io import load_generator
    from ..stylegan.sampling import sample_latents, save_image_grid, synthesize
    s, folder = unit.spec, unit.folder
    settings = unit_settings(unit)
    fps = _adapt_outputs(unit, settings)
    model_file, grid_file = f"{unit.name}.safetensors", f"{unit.name}.png"
    record, made, done = _record_state(folder, fps, overwrite)
    outputs = {o: fp for o, fp in fps.items() if o in done}
    todo = [o for o in fps if o not in done]
    _say_redo(say, unit, folder, [o for o in todo if os.path.exists(os.path.join(folder, o)) and not overwrite], made)
    model_path = os.path.join(folder, model_file)
    result_handle = None
    if model_file in todo:
        result_handle = _train(unit, device, cache, progress, say, model_path)
        outputs[model_file] = fps[model_file]
        _write_unit_record(unit, folder, settings, outputs)
        res.written.append(model_file)
    else:
        res.skipped.append(model_file)
    if grid_file in fps:
        if grid_file in todo:
            h = result_handle or load_generator(model_path, device=device)
            lat = sample_latents(h.G, parse_seeds(s.sample_seeds), s.psi)
            save_image_grid(synthesize(h.G, lat.ws, "const", 8), os.path.join(folder, grid_file))
            outputs[grid_file] = fps[grid_file]
            _write_unit_record(unit, folder, settings, outputs)
            res.written.append(grid_file)
        else:
            res.skipped.append(grid_file)
    if s.transition is not None:
        job = job_from_dict({**s.transition, "generators": [s.generator, model_path], "name": "transition"}, None,
                            where=f"{unit.name}: transition")
        _run_transition(job, os.path.join(folder, "transition"), device, cache, None, say, overwrite, res,
                        prefix="transition/")


def _train(unit, device, cache, progress, say, model_path):
    """Adapt the unit's generator (the CLI ``adapt`` without its console): returns the result's handle."""
    from ..clip.direction import text_direction
    from ..clip.ensemble import ClipEnsemble
    from ..nada.guidance import few_shot_direction, guidance_from
    from ..nada.schedule import schedule_from_options
    from ..nada.trainer import AdaptSettings, adapt
    from ..stylegan.io import save_generator
    s = unit.spec
    handle = cache.generator(_existing([s.generator])[0], device)
    cfg = handle.cfg
    if s.clip_config:
        import open_clip
        for c in s.clip_config:
            open_clip.add_model_config(c)
    files = s.clip_files
    if files is None:        # not prepared by the driver: the files the user named, else open_clip's search
        files = [[n, s.clip_weights.get(n), w] for n, w in parse_clip_list(s.clip, unit.name) if w > 0]
    ens = ClipEnsemble([(cache.clip(a, f, device, s.clip_dirs), w) for a, f, w in files])
    if s.target is not None:
        direction = text_direction(ens, s.source, s.target, s.templates)
    else:
        direction = few_shot_direction(ens, s.target_images, handle.G, s.num_source_samples)
    schedule = schedule_from_options(cfg, s.schedule, s.train_layers, s.k, s.n_w, s.n_i)
    settings = AdaptSettings(iterations=s.iterations, batch_size=s.train_batch, lr=s.lr,
                             reference_lr_scale=s.reference_lr_scale, mixing_prob=s.mixing, seed=s.seed,
                             preview_every=0, lambda_global=s.lambda_global, precision=s.precision)
    guidance = guidance_from(ens, direction)

    def prog(info):
        if progress is not None:
            progress(info.step, info.total, f"loss {info.loss:.4f}")
    result = adapt(handle.G, guidance, settings, schedule, progress=prog)
    if result.stop_exception is not None:
        raise result.stop_exception
    entry = result.history_entry(direction.provenance, settings, schedule,
                                 [f"{k} (weight {w:g})" for _, w, k in guidance.models()])
    out = handle.derive(result.G, name=unit.name, history_entry=entry)
    os.makedirs(os.path.dirname(model_path), exist_ok=True)
    save_generator(out, model_path)
    say(f"{unit.name}: adapted in {result.seconds:.1f} s ({result.steps_done} iterations, final loss "
        f"{result.losses[-1]:.4f})")
    return out


# ------------------------------------------------------------------ cheap up-to-date check
def up_to_date(unit: Unit) -> UnitResult | None:
    """A result listing the unit's outputs as skipped when every one of them is up to date,
    told from the records and the files' identity alone (no model is loaded); None when
    something is to be made, or cannot be told without loading (a latents file's count)."""
    try:
        return _up_to_date(unit)
    except (ValueError, OSError):     # the worker will say what is wrong
        return None


def _up_to_date(unit: Unit) -> UnitResult | None:
    if unit.kind == "transition":
        outs = _transition_done(unit.spec, unit.folder)
    elif unit.kind == "sample-grid":
        from ..render_jobs import fingerprint
        fps = {"grid.png": fingerprint(unit_settings(unit))}
        outs = list(fps) if len(_record_state(unit.folder, fps, False)[2]) == len(fps) else None
    else:
        fps = _adapt_outputs(unit, unit_settings(unit))
        outs = list(fps) if len(_record_state(unit.folder, fps, False)[2]) == len(fps) else None
        if outs is not None and unit.spec.transition is not None:
            from ..render_jobs import job_from_dict
            model = os.path.join(unit.folder, f"{unit.name}.safetensors")
            job = job_from_dict({**unit.spec.transition, "generators": [unit.spec.generator, model],
                                 "name": "transition"}, None, where=f"{unit.name}: transition")
            t = _transition_done(job, os.path.join(unit.folder, "transition"))
            outs = None if t is None else outs + ["transition/" + f for f in t]
    if outs is None:
        return None
    return UnitResult(unit.name, unit.kind, unit.folder, skipped=outs)


def _transition_done(job, folder) -> list | None:
    from ..latents import parse_seeds
    from ..render_jobs import _labels_for, fingerprint, output_settings, planned_outputs
    if job.seeds is None:
        return None
    n = len(parse_seeds(job.seeds))
    outs = planned_outputs(job, n, _labels_for(job, n))
    fp = fingerprint(output_settings(job))
    done = _record_state(folder, {o: fp for o in outs}, False)[2]
    return outs if len(done) == len(outs) else None
