"""Read the weights of OpenAI's CLIP TorchScript archives without running TorchScript.

OpenAI distributes CLIP as TorchScript archives (``ViT-B-32.pt``, ``ViT-B-16.pt``,
``RN50.pt``...). ``torch.load(weights_only=True)`` refuses them, and the usual way in,
``torch.jit.load`` (what ``open_clip.load_openai_model`` does), compiles the code stored
in the archive and may run it while loading (TorchScript ``__setstate__`` methods).
TorchScript is a restricted, statically typed subset of Python - it cannot import
modules or call arbitrary Python - but it is still code taken from a file, and we only
need the tensors.

So this module reads the archive as data: a TorchScript archive is a zip file holding
``<name>/data.pkl`` (a pickle of the module tree: one object per module whose state
dict lists its attributes, tensors referenced by key), ``<name>/data/<key>`` (raw
little-endian tensor storages), ``<name>/constants.pkl`` and ``<name>/code/`` (the
TorchScript source, never read here). ``data.pkl`` is unpickled with an allow-list:
module objects become inert placeholders, tensors are rebuilt from their storage
records, and any other global in the pickle aborts the read. Nothing from the archive
is compiled or executed; the result is a plain ``{name: tensor}`` state dict that
open_clip turns into a regular (non-JIT) model with
``open_clip.model.build_model_from_openai_state_dict``.
"""
from __future__ import annotations

import collections
import os
import pickle
import sys
import zipfile
from typing import Any, Callable, Dict, Tuple

import torch

__all__ = ["is_torchscript_archive", "read_torchscript_state_dict", "build_openai_clip"]

# Legacy typed-storage names used by TorchScript's pickler ('torch', '<Name>Storage').
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

# Entries of OpenAI's archives that are metadata, not weights (open_clip drops them too).
_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _archive_prefix(names) -> str | None:
    """The top folder of a TorchScript zip (``<prefix>/constants.pkl`` present), or None."""
    for n in names:
        parts = n.split("/")
        if len(parts) == 2 and parts[1] == "constants.pkl":
            return parts[0]
    return None


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True when ``path`` is a TorchScript zip archive (decided by content, not extension).

    A ``torch.save`` zip holds ``<prefix>/data.pkl`` and ``<prefix>/data/*``; TorchScript
    archives additionally hold ``<prefix>/constants.pkl`` and ``<prefix>/code/``, which is
    the same test torch itself uses.
    """
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return _archive_prefix(zf.namelist()) is not None
    except OSError:
        return False


class _ScriptObject:
    """Inert stand-in for a ``__torch__.*`` object (a scripted module)."""

    _qualname = "__torch__"

    def __setstate__(self, state):  # called by pickle's BUILD; stores, never interprets
        object.__setattr__(self, "_state", state)

    def __repr__(self):
        return f"<{self._qualname}>"


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _identity(x, *_args):
    return x


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, *_extra):
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("tensor record without a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    return torch.as_strided(storage, size, stride, int(offset))


_JIT_PICKLE_HELPERS: Dict[str, Callable] = {
    "build_intlist": _identity,
    "build_tensorlist": _identity,
    "build_doublelist": _identity,
    "build_boollist": _identity,
    "restore_type_tag": _identity,
}


class _WeightsOnlyUnpickler(pickle.Unpickler):
    """Unpickler for TorchScript ``data.pkl`` that only knows how to build data."""

    def __init__(self, file, read_storage: Callable[[str, torch.dtype, int], torch.Tensor]):
        super().__init__(file)
        self._read_storage = read_storage
        self._classes: Dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch.jit._pickle" and name in _JIT_PICKLE_HELPERS:
            return _JIT_PICKLE_HELPERS[name]
        if module == "__torch__" or module.startswith("__torch__."):
            qual = f"{module}.{name}"
            cls = self._classes.get(qual)
            if cls is None:
                cls = type("ScriptObject", (_ScriptObject,), {"_qualname": qual})
                self._classes[qual] = cls
            return cls
        raise pickle.UnpicklingError(
            f"refusing to load global '{module}.{name}': not part of a TorchScript weights "
            "archive")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        return self._read_storage(str(key), storage_type.dtype, int(numel))


def _collect_tensors(obj: _ScriptObject, prefix: str, out: Dict[str, torch.Tensor], seen: set):
    if id(obj) in seen:
        return
    seen.add(id(obj))
    state = getattr(obj, "_state", None)
    if not isinstance(state, dict):
        raise ValueError(f"unsupported object state for {obj!r} in TorchScript archive")
    for attr, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + attr] = value
        elif isinstance(value, _ScriptObject):
            _collect_tensors(value, f"{prefix}{attr}.", out, seen)


def read_torchscript_state_dict(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """All tensors held by the module tree of a TorchScript archive, as a state dict.

    Keys follow the module hierarchy (``visual.conv1.weight``...), like
    ``torch.jit.load(path).state_dict()``. Tensors are CPU copies with the archive's
    dtypes. Tensor attributes that are neither parameters nor buffers in the original
    module are included too (they cannot be told apart without reading the code); the
    caller drops what it does not need. Raises ``ValueError`` for a file that is not a
    TorchScript archive and ``pickle.UnpicklingError`` when the archive's pickle refers
    to anything but modules and tensors.
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a TorchScript archive (not a zip file)")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        prefix = _archive_prefix(names)
        if prefix is None or f"{prefix}/data.pkl" not in names:
            raise ValueError(f"{path} is not a TorchScript archive (no constants.pkl/data.pkl)")
        byteorder_rec = f"{prefix}/byteorder"
        if byteorder_rec in names:
            order = zf.read(byteorder_rec).decode().strip()
            if order != sys.byteorder:
                raise ValueError(f"{path}: {order}-endian archive on a {sys.byteorder}-endian machine")
        storages: Dict[Tuple[str, torch.dtype], torch.Tensor] = {}

        def read_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            cached = storages.get((key, dtype))
            if cached is not None:
                return cached
            rec = f"{prefix}/data/{key}"
            if rec not in names:
                raise ValueError(f"{path}: missing tensor record {rec}")
            raw = zf.read(rec)
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(raw) < numel * itemsize:
                raise ValueError(f"{path}: tensor record {rec} is truncated")
            flat = torch.frombuffer(bytearray(raw[:numel * itemsize]), dtype=dtype) if numel else \
                torch.empty(0, dtype=dtype)
            storages[(key, dtype)] = flat
            return flat

        with zf.open(f"{prefix}/data.pkl") as f:
            root = _WeightsOnlyUnpickler(f, read_storage).load()
    if not isinstance(root, _ScriptObject):
        raise ValueError(f"{path}: the archive's root object is not a module")
    out: Dict[str, torch.Tensor] = {}
    _collect_tensors(root, "", out, set())
    return out


def build_openai_clip(state_dict: Dict[str, torch.Tensor], quick_gelu: bool = True):
    """A regular float32 open_clip ``CLIP`` from an OpenAI-layout state dict.

    The architecture (ViT or ModifiedResNet, widths, layers, resolution) is inferred from
    the tensor shapes by open_clip. Metadata entries of OpenAI's archives and the causal
    attention mask (a constant, not a weight) are dropped first.
    """
    from open_clip.model import build_model_from_openai_state_dict

    sd = {k: v for k, v in state_dict.items()
          if k not in _METADATA_KEYS and not k.endswith("attn_mask")}
    try:
        model = build_model_from_openai_state_dict(sd, quick_gelu=quick_gelu, cast_dtype=None)
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"not an OpenAI CLIP state dict: {e}") from e
    return model.float().eval()
