"""This pack's own generator format: a flat safetensors file plus string metadata.

Metadata keys (all strings, values JSON where noted):
- ``format``: ``"nada-stylegan2"``; ``format_version``: ``"1"``
- ``architecture``: JSON of :class:`StyleGAN2Config` (resolution, channels, dims, ...)
- ``provenance``: JSON object: where the weights came from (source file/format, whether
  ``w_avg`` was estimated) and ``history``, a list of operations applied by this pack
  (adaptation prompts, CLIP models, settings, iterations; interpolations; ...).
Tensor keys are those of ``Generator(cfg).state_dict()``.
"""
from __future__ import annotations

import json
import os
import struct

import torch

from ...fileio import atomic_write
from ..config import ArchitectureError, StyleGAN2Config
from . import CheckpointError, ReadResult

FORMAT_NAME = "nada-stylegan2"
FORMAT_VERSION = "1"
_MAX_HEADER = 100 * 1024 * 1024


def read_header(path) -> tuple[dict, dict]:
    """Parse the safetensors JSON header without loading tensors: (tensor_infos, metadata)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(path, "file is too short to be a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise CheckpointError(path, f"safetensors header length {n} does not fit in a file of {size} bytes "
                                            "(truncated or not a safetensors file)")
            raw = fh.read(n)
    except OSError as e:
        raise CheckpointError(path, f"cannot read file: {e.strerror or e}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    end = 0
    for k, info in header.items():
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise CheckpointError(path, f"safetensors entry {k!r} has no valid data_offsets") from None
    if 8 + n + end > size:
        raise CheckpointError(path, f"file is truncated: tensors need {8 + n + end} bytes, file has {size}")
    return header, meta


def read_safetensors_generator(path) -> ReadResult:
    infos, meta = read_header(path)
    fmt = meta.get("format")
    if fmt != FORMAT_NAME:
        raise CheckpointError(path, f"safetensors metadata field 'format' is {fmt!r}, expected {FORMAT_NAME!r} "
                                    "(is this a StyleGAN generator saved by this pack?)")
    ver = meta.get("format_version")
    if ver != FORMAT_VERSION:
        raise CheckpointError(path, f"metadata field 'format_version' is {ver!r}; this version of the pack reads "
                                    f"{FORMAT_VERSION!r}")
    try:
        arch = json.loads(meta.get("architecture", ""))
    except json.JSONDecodeError as e:
        raise CheckpointError(path, f"metadata field 'architecture' is not valid JSON ({e})") from None
    try:
        cfg = StyleGAN2Config.from_dict(arch, where="metadata field 'architecture'")
    except ArchitectureError as e:
        raise CheckpointError(path, str(e)) from None
    try:
        prov = json.loads(meta.get("provenance", "{}"))
        if not isinstance(prov, dict):
            raise ValueError("not an object")
    except (ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"metadata field 'provenance' is not a JSON object ({e})") from None

    # Validate names and shapes against the architecture BEFORE loading any tensor data.
    from ..networks import Generator
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Generator(cfg).state_dict().items()}
    missing = sorted(set(expected) - set(infos))
    extra = sorted(set(infos) - set(expected))
    if missing:
        raise CheckpointError(path, f"tensor(s) missing for the declared architecture: {missing[:5]}"
                                    + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if extra:
        raise CheckpointError(path, f"unexpected tensor(s) for the declared architecture: {extra[:5]}")
    for k, shape in expected.items():
        got = tuple(infos[k].get("shape", ()))
        if got != shape:
            raise CheckpointError(path, f"tensor {k!r} has shape {list(got)}, the architecture in the metadata "
                                        f"expects {list(shape)}")
    from safetensors.torch import load_file
    try:
        sd = load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(path, f"cannot read tensors: {e}") from None
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    return ReadResult(cfg=cfg, state_dict=sd, format="safetensors", w_avg_in_checkpoint=True, provenance=prov)


def write_safetensors_generator(G, path, provenance: dict | None = None) -> None:
    """Save generator ``G`` (networks.Generator) atomically with architecture + provenance."""
    from safetensors.torch import save_file
    sd = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in G.state_dict().items()}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": G.cfg.to_json(),
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
    }
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=meta))
