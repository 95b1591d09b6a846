"""This pack's own generator format: a flat safetensors file plus string metadata.

Metadata keys (all strings, values JSON where noted):
- ``format``: ``"nada-stylegan2"`` (StyleGAN2) or ``"nada-stylegan3"`` (StyleGAN3 T/R);
  ``format_version``: ``"1"``.  StyleGAN2 files are exactly what earlier versions wrote; an
  earlier version refuses a StyleGAN3 file by its format name.
- ``architecture``: JSON of :class:`StyleGAN2Config` (resolution, channels, dims, ...) or of
  :class:`StyleGAN3Config` (also the layer design: layers, cutoffs, margin, kernel, radial filters)
- ``provenance``: JSON object: where the weights came from (source file/format, whether
  ``w_avg`` was estimated) and ``history``, a list of operations applied by this pack
  (adaptation prompts, CLIP models, settings, iterations; interpolations; ...).
Tensor keys are those of ``build_generator(cfg).state_dict()`` (StyleGAN3's designed filters are
not stored: they follow from the architecture).
"""
from __future__ import annotations

import json

import torch

from ...fileio import atomic_write
from ...io.errors import UntrustedFileError, describe
from ...io.safetensors_files import (format_problem, loads_json, read_safetensors_data, read_safetensors_header,
                                     write_safetensors)
from ...io.tensors import FLOAT_DTYPES
from ...io.torch_files import open_untrusted
from ..config import ArchitectureError, StyleGAN2Config, config_from_dict
from . import CheckpointError, ReadResult, check_weights_fit

FORMAT_NAME = "nada-stylegan2"
#: format name per generator family (the architecture JSON is that family's config)
FORMAT_NAMES = {"stylegan2": FORMAT_NAME, "stylegan3": "nada-stylegan3"}
FORMAT_VERSION = "1"
#: Nesting accepted in the 'provenance' metadata (histories of settings are a few levels deep).
MAX_PROVENANCE_DEPTH = 16


def _meta_json(meta: dict, key: str, path, default: str, max_depth: int):
    text = meta.get(key, default)
    try:
        return loads_json(text, f"metadata field {key!r}", path, max_depth=max_depth)
    except UntrustedFileError as e:
        raise CheckpointError(path, e.problem) from None


def read_header(path):
    """The validated safetensors header of ``path`` (no tensor data is read)."""
    try:
        with open_untrusted(path) as (fh, budget):
            return read_safetensors_header(fh, path, budget)
    except UntrustedFileError as e:
        raise CheckpointError(path, e.problem) from None


def read_safetensors_generator(path) -> ReadResult:
    """Read this pack's generator format. The header, the metadata (JSON types, nesting)
    and the architecture are validated, every tensor's name, shape and dtype (float only)
    is compared with the architecture, and only then is the data read."""
    try:
        with open_untrusted(path) as (fh, budget):
            header = read_safetensors_header(fh, path, budget)
            cfg, prov = _validate(header, path)
            sd = read_safetensors_data(fh, header, budget)
    except UntrustedFileError as e:
        raise CheckpointError(path, e.problem) from None
    sd = {k: v.float() for k, v in sd.items()}        # float32 tensors are returned as they are
    return ReadResult(cfg=cfg, state_dict=sd, format="safetensors", w_avg_in_checkpoint=True, provenance=prov)


def _validate(header, path) -> tuple[StyleGAN2Config, dict]:
    meta = header.metadata
    problem = format_problem(meta, FORMAT_NAMES.values(), FORMAT_VERSION, "a StyleGAN generator")
    if problem:
        raise CheckpointError(path, problem)
    family = {v: k for k, v in FORMAT_NAMES.items()}[meta["format"]]
    arch = _meta_json(meta, "architecture", path, "", max_depth=2)
    try:
        cfg = config_from_dict(arch, family, where="metadata field 'architecture'")
    except ArchitectureError as e:
        raise CheckpointError(path, str(e)) from None
    prov = _meta_json(meta, "provenance", path, "{}", max_depth=MAX_PROVENANCE_DEPTH)
    if not isinstance(prov, dict):
        raise CheckpointError(path, f"metadata field 'provenance' is not a JSON object ({describe(prov)})")

    # Names, shapes and dtypes against the architecture BEFORE any tensor data is read.
    expected = check_weights_fit(cfg, header.data_size, path)
    infos = header.entries
    missing = sorted(k for k in expected if k not in infos)
    extra = sorted(k for k in infos if k not in expected)
    if missing:
        raise CheckpointError(path, f"tensor(s) missing for the declared architecture: {missing[:5]}"
                                    + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if extra:
        raise CheckpointError(path, f"unexpected tensor(s) for the declared architecture: "
                                    f"{describe(extra[:5], 200)}")
    for k, shape in expected.items():
        dtype, got, _, _ = infos[k]
        if got != shape:
            raise CheckpointError(path, f"tensor {k!r} has shape {list(got)}, the architecture in the metadata "
                                        f"expects {list(shape)}")
        if dtype not in FLOAT_DTYPES:
            raise CheckpointError(path, f"tensor {k!r} has dtype {dtype}; weights must be floating point")
    return cfg, prov


def write_safetensors_generator(G, path, provenance: dict | None = None) -> None:
    """Save generator ``G`` (StyleGAN2 or StyleGAN3) atomically with architecture + provenance."""
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in G.state_dict().items()}
    meta = {
        "format": FORMAT_NAMES[G.cfg.family],
        "format_version": FORMAT_VERSION,
        "architecture": G.cfg.to_json(),
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
    }
    atomic_write(path, lambda tmp: write_safetensors(tmp, sd, meta))
