"""Latent-mapper files: this pack's safetensors format and StyleCLIP / StyleGAN-NADA checkpoints.

Our format: a safetensors file with string metadata
- ``format``: ``"nada-latent-mapper"``, ``format_version``: ``"1"``
- ``mapper``: JSON of :class:`~.network.MapperConfig` (W+ entries, w_dim, kind, levels, layers,
  lr multiplier, step scale, PixelNorm mode)
- ``provenance``: JSON object (target text, CLIP models, training settings, generator, ...)
Tensor keys: ``{coarse|medium|fine|all}.fc{i}.{weight|bias}``.

StyleCLIP checkpoints (``mapper/training/coach.py`` of StyleCLIP and of StyleGAN-NADA, and the
mappers StyleCLIP publishes) are ``torch.save({'state_dict': StyleCLIPMapper.state_dict(),
'opts': vars(opts)})``: ``opts`` is a plain dict (older files may hold an argparse.Namespace),
the state dict holds the mapper (``mapper.course_mapping.mapping.{1..4}.*`` etc.; index 0 is
the PixelNorm) and the whole StyleGAN decoder (``decoder.*``, ignored here). They are read with
the pack's bounded torch-file reader and an allow-list of one extra global
(``argparse.Namespace``): nothing in the file is executed. Tensors are checked (names,
shapes, float dtype, finite values) before a network is built.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field, replace

import torch

from ...fileio import atomic_write
from ...io.errors import UntrustedFileError, describe, path_text
from ...io.pickles import AllowList
from ...io.safetensors_files import (format_problem, loads_json, read_safetensors_data, read_safetensors_header,
                                     write_safetensors)
from ...io.tensors import FLOAT_DTYPES
from ...io.torch_files import open_untrusted, read_torch_file
from .network import LEVELS, SINGLE, LatentMapper, MapperConfig, MapperConfigError

FORMAT_NAME = "nada-latent-mapper"
FORMAT_VERSION = "1"
STYLECLIP_FORMAT = "styleclip-pt"
MAX_PROVENANCE_DEPTH = 16
#: StyleCLIP's module names of the level mappers (sic: "course").
_STYLECLIP_LEVELS = {"course_mapping": "coarse", "medium_mapping": "medium", "fine_mapping": "fine"}
_STYLECLIP_KEY = re.compile(r"^mapper\.(course_mapping|medium_mapping|fine_mapping)\.mapping\.(\d{1,3})\.(weight|bias)$")
_STYLECLIP_SINGLE_KEY = re.compile(r"^mapper\.mapping\.mapping\.(\d{1,3})\.(weight|bias)$")
#: StyleCLIP's Mapper: 4 EqualLinear layers (lr_mul 0.01) after PixelNorm; step 0.1 in the coach.
STYLECLIP_LR_MUL = 0.01
STYLECLIP_STEP = 0.1
STYLECLIP_DEFAULT_SIZE = 1024


class MapperFileError(ValueError):
    """A mapper file cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = path_text(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class MapperHandle:
    """A loaded (or trained) mapper with where it came from. Immutable by convention:
    consumers never modify ``mapper``."""
    mapper: LatentMapper
    name: str
    source_format: str = "safetensors"
    provenance: dict = field(default_factory=dict)

    @property
    def cfg(self) -> MapperConfig:
        return self.mapper.cfg

    @property
    def device(self) -> torch.device:
        return next(self.mapper.parameters()).device

    def derive(self, mapper: LatentMapper, name: str | None = None, history_entry: dict | None = None):
        prov = json.loads(json.dumps(self.provenance, default=str))
        if history_entry is not None:
            prov.setdefault("history", []).append(history_entry)
        return replace(self, mapper=mapper, name=name or self.name, provenance=prov)

    def describe(self) -> str:
        c = self.cfg
        lines = [f"name: {self.name}", f"format: {self.source_format}",
                 f"kind: {c.kind}" + (f" ({', '.join(c.levels)})" if c.kind == "levels" else ""),
                 f"W+ entries: {c.num_ws}, w_dim {c.w_dim}, {c.num_layers} layers per MLP, "
                 f"step scale {c.step_scale:g}, PixelNorm over {c.pixel_norm}",
                 f"parameters: {sum(p.numel() for p in self.mapper.parameters()):,}"]
        target = self.provenance.get("target")
        if target:
            lines.append(f"target: {target}")
        for h in self.provenance.get("history", []):
            if isinstance(h, dict):
                lines.append(f"history: {h.get('op', '?')}: " + ", ".join(
                    f"{k}={v}" for k, v in h.items() if k not in ("op", "settings")))
        return "\n".join(lines)


# ------------------------------------------------------------------------------ saving
def save_mapper(handle_or_mapper, path, provenance: dict | None = None) -> None:
    """Save as this pack's .safetensors (atomic), with the architecture and provenance."""
    if isinstance(handle_or_mapper, MapperHandle):
        mapper, prov = handle_or_mapper.mapper, dict(handle_or_mapper.provenance)
        prov.setdefault("name", handle_or_mapper.name)
    else:
        mapper, prov = handle_or_mapper, {}
    prov.update(provenance or {})
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in mapper.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "mapper": mapper.cfg.to_json(),
            "provenance": json.dumps(prov, sort_keys=True, default=str)}
    atomic_write(path, lambda tmp: write_safetensors(tmp, sd, meta))


# ------------------------------------------------------------------------------ loading
def _kind_of_file(path) -> str:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise MapperFileError(path, "file does not exist")
    if os.path.isdir(p):
        raise MapperFileError(path, "is a folder, expected a mapper file")
    size = os.path.getsize(p)
    if size == 0:
        raise MapperFileError(path, "file is empty")
    with open(p, "rb") as fh:
        head = fh.read(16)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    raise MapperFileError(path, "not a latent mapper file: expected this pack's .safetensors or a StyleCLIP / "
                                f"StyleGAN-NADA mapper checkpoint (.pt) (first bytes: {head[:8].hex()})")


def load_mapper(path, device="cpu") -> MapperHandle:
    """Load a mapper from our .safetensors or a StyleCLIP / StyleGAN-NADA ``.pt`` checkpoint."""
    if _kind_of_file(path) == "safetensors":
        cfg, sd, prov, fmt = _read_safetensors(path)
    else:
        cfg, sd, prov, fmt = _read_styleclip(path)
    for k, t in sd.items():
        if not torch.isfinite(t).all():
            raise MapperFileError(path, f"tensor {k!r} contains NaN or Inf values")
    mapper = LatentMapper(cfg)
    try:
        mapper.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise MapperFileError(path, f"weights do not fit the mapper: {str(e)[:300]}") from None
    mapper.eval().requires_grad_(False)
    prov = dict(prov)
    prov.setdefault("source_file", os.path.basename(os.fspath(path)))
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return MapperHandle(mapper=mapper.to(device), name=name, source_format=fmt, provenance=prov)


def _read_safetensors(path):
    try:
        with open_untrusted(path) as (fh, budget):
            header = read_safetensors_header(fh, path, budget)
            meta = header.metadata
            problem = format_problem(meta, FORMAT_NAME, FORMAT_VERSION, "a latent mapper")
            if problem:
                raise MapperFileError(path, problem)
            arch = loads_json(meta.get("mapper", ""), "metadata field 'mapper'", path, max_depth=2)
            try:
                cfg = MapperConfig.from_dict(arch, "metadata field 'mapper'")
            except (MapperConfigError, TypeError) as e:
                raise MapperFileError(path, str(e)) from None
            prov = loads_json(meta.get("provenance", "{}"), "metadata field 'provenance'", path,
                              max_depth=MAX_PROVENANCE_DEPTH)
            if not isinstance(prov, dict):
                raise MapperFileError(path, f"metadata field 'provenance' is not a JSON object ({describe(prov)})")
            expected = cfg.parameter_shapes()
            _check_entries(path, {k: (v[1], v[0]) for k, v in header.entries.items()}, expected)
            sd = read_safetensors_data(fh, header, budget)
    except UntrustedFileError as e:
        raise MapperFileError(path, e.problem) from None
    return cfg, {k: v.float() for k, v in sd.items()}, prov, "safetensors"


def _check_entries(path, got: dict, expected: dict) -> None:
    """``got``: {name: (shape, dtype)}; names, shapes and dtypes against the architecture."""
    missing = sorted(k for k in expected if k not in got)
    extra = sorted(k for k in got if k not in expected)
    if missing:
        raise MapperFileError(path, f"tensor(s) missing for the declared mapper: {missing[:4]}"
                                    + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
    if extra:
        raise MapperFileError(path, f"unexpected tensor(s) for the declared mapper: {describe(extra[:4], 200)}")
    for k, shape in expected.items():
        s, dtype = got[k]
        if tuple(s) != tuple(shape):
            raise MapperFileError(path, f"tensor {k!r} has shape {list(s)}, the mapper expects {list(shape)}")
        if dtype not in FLOAT_DTYPES:
            raise MapperFileError(path, f"tensor {k!r} has dtype {dtype}; weights must be floating point")


# ------------------------------------------------------------------ StyleCLIP checkpoints
_ALLOW = AllowList().new(argparse.Namespace.__module__, argparse.Namespace.__qualname__, argparse.Namespace)


def _opts_dict(opts, path) -> dict:
    if opts is None:
        return {}
    if isinstance(opts, argparse.Namespace):
        opts = vars(opts)
    if type(opts) is not dict:
        raise MapperFileError(path, f"'opts' is {describe(opts)}, expected a dict of training options")
    out = {}
    for k, v in list(opts.items())[:500]:
        if type(k) is not str:
            continue
        if type(v) is str:
            out[k] = v[:500]
        elif type(v) in (bool, float) or v is None or (type(v) is int and v.bit_length() <= 64):
            out[k] = v
    return out


def _read_styleclip(path):
    try:
        obj = read_torch_file(path, allow=_ALLOW, what="the mapper checkpoint")
    except UntrustedFileError as e:
        problem = e.problem
        if "refusing to load global" in problem:
            problem += "; a mapper checkpoint may hold only tensors, plain containers and argparse.Namespace, " \
                       "nothing from the file is executed"
        raise MapperFileError(path, problem) from None
    if type(obj) is not dict:
        raise MapperFileError(path, f"holds {describe(obj)}, expected StyleCLIP's {{'state_dict', 'opts'}} dict")
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, dict):
        raise MapperFileError(path, f"'state_dict' is {describe(sd)}, expected a dict of tensors")
    opts = _opts_dict(obj.get("opts"), path)
    if opts.get("work_in_stylespace"):
        raise MapperFileError(path, "is a StyleSpace mapper (work_in_stylespace): only W+ latent mappers are "
                                    "supported")
    found: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for k, v in sd.items():
        if type(k) is not str or not k.startswith("mapper."):
            continue
        m = _STYLECLIP_KEY.match(k)
        single = _STYLECLIP_SINGLE_KEY.match(k)
        if m:
            name, idx, what = _STYLECLIP_LEVELS[m.group(1)], int(m.group(2)), m.group(3)
        elif single:
            name, idx, what = SINGLE, int(single.group(1)), single.group(2)
        elif k.startswith("mapper.mapper_"):
            raise MapperFileError(path, "is a StyleSpace mapper: only W+ latent mappers are supported")
        else:
            raise MapperFileError(path, f"unexpected mapper tensor {describe(k)} (not StyleCLIP's LevelsMapper or "
                                        "SingleMapper layout)")
        if not isinstance(v, torch.Tensor):
            raise MapperFileError(path, f"{k!r} is {describe(v)}, expected a tensor")
        if v.dtype not in FLOAT_DTYPES:
            raise MapperFileError(path, f"tensor {k!r} has dtype {v.dtype}; weights must be floating point")
        found.setdefault(name, {}).setdefault(idx, {})[what] = v
    if not found:
        raise MapperFileError(path, "holds no mapper weights ('mapper.*' in its state dict): is this a StyleCLIP "
                                    "latent mapper checkpoint?")
    if SINGLE in found and len(found) > 1:
        raise MapperFileError(path, "mixes SingleMapper and LevelsMapper weights")
    kind = "single" if SINGLE in found else "levels"
    want_type = {"single": "SingleMapper", "levels": "LevelsMapper"}[kind]
    if "mapper_type" in opts and opts["mapper_type"] != want_type:
        raise MapperFileError(path, f"its options say mapper_type {describe(opts['mapper_type'])} but the weights "
                                    f"are a {want_type}")
    levels = tuple(l for l in LEVELS if l in found)
    if kind == "levels":
        for flag, level in (("no_coarse_mapper", "coarse"), ("no_medium_mapper", "medium"),
                            ("no_fine_mapper", "fine")):
            if flag in opts and bool(opts[flag]) == (level in found):
                raise MapperFileError(path, f"its options say {flag}={opts[flag]} but the file "
                                            f"{'has' if level in found else 'has no'} {level} mapper weights")
    # layers 1..n in each MLP (0 is StyleCLIP's PixelNorm), every MLP alike
    layer_sets = {name: sorted(layers) for name, layers in found.items()}
    first = next(iter(layer_sets.values()))
    n = len(first)
    if first != list(range(1, n + 1)) or any(v != first for v in layer_sets.values()):
        raise MapperFileError(path, f"mapper layers {describe(layer_sets)} are not numbered 1..n alike in every "
                                    "level")
    w = found[next(iter(found))][1].get("weight")
    if w is None or w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise MapperFileError(path, f"first mapper layer weight is {describe(w)}, expected a square matrix")
    w_dim = int(w.shape[0])
    size = opts.get("stylegan_size")
    notes = {}
    if size is None:
        size = _decoder_size(sd)
        if size is None:
            size = STYLECLIP_DEFAULT_SIZE
            notes["num_ws"] = f"the checkpoint does not say its StyleGAN size: {size} px assumed"
    if type(size) is not int or size < 4 or size & (size - 1) or size > 4096:
        raise MapperFileError(path, f"stylegan_size {describe(size)} is not a power of two in 4..4096")
    num_ws = 2 * int(math.log2(size)) - 2
    try:
        cfg = MapperConfig(num_ws=num_ws, w_dim=w_dim, kind=kind, levels=levels if kind == "levels" else (),
                           num_layers=n, lr_mul=STYLECLIP_LR_MUL, step_scale=STYLECLIP_STEP,
                           pixel_norm="rows").validate("the checkpoint's mapper")
    except MapperConfigError as e:
        raise MapperFileError(path, str(e)) from None
    ours = {}
    got = {}
    for name, layers in found.items():
        for idx, parts in layers.items():
            for what, t in parts.items():
                key = f"{name}.fc{idx - 1}.{what}"
                ours[key] = t
                got[key] = (tuple(t.shape), t.dtype)
    _check_entries(path, got, cfg.parameter_shapes())
    sd_ours = {k: v.to(torch.float32).contiguous().clone() for k, v in ours.items()}
    prov = {"source_format": STYLECLIP_FORMAT, "styleclip_opts": opts}
    if isinstance(opts.get("description"), str):
        prov["target"] = {"kind": "text", "target": opts["description"], "templates": "single"}
    if notes:
        prov["notes"] = notes
    return cfg, sd_ours, prov, STYLECLIP_FORMAT


def _decoder_size(sd: dict):
    """Resolution of the rosinality decoder stored next to the mapper (to_rgbs.k count)."""
    ks = [int(m.group(1)) for k in sd if type(k) is str
          for m in [re.match(r"^decoder\.to_rgbs\.(\d{1,2})\.", k)] if m]
    return 2 ** (max(ks) + 3) if ks else None
