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
TorchScript source, never read here). ``data.pkl`` is read with the pack's bounded
unpickler (:mod:`nada_ops.io.pickles`, archive records via
:class:`nada_ops.io.torch_files.TorchArchive`): module objects become inert
placeholders, tensors are checked views of their storage records, any other global
aborts the read, and the module tree may be at most :data:`MAX_MODULE_DEPTH` deep.

Before open_clip builds a model from the tensors, the architecture they imply is
bounded (layers, widths, context length) and built on the meta device; its expected
state dict must match the archive's tensors exactly, so no model larger than the data
in the file is ever allocated. The result is a regular (non-JIT) open_clip ``CLIP``.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Dict

import torch

from ..io.errors import UntrustedFileError, describe
from ..io.pickles import AllowList
from ..io.tensors import FLOAT_DTYPES
from ..io.torch_files import TorchArchive, TorchUnpickler, open_untrusted, torch_allow_list

__all__ = ["is_torchscript_archive", "read_torchscript_state_dict", "build_openai_clip",
           "MAX_MODULE_DEPTH", "MAX_LAYERS", "MAX_WIDTH", "MAX_CONTEXT"]

#: Module nesting accepted in an archive (OpenAI's CLIP is 6 levels deep).
MAX_MODULE_DEPTH = 32
#: Script object classes / module objects one archive may define.
MAX_SCRIPT_CLASSES = 10000
MAX_SCRIPT_OBJECTS = 100000
#: Bounds of the architecture a CLIP state dict may imply (real: <= 48 layers, width <=
#: 1664, context 77).
MAX_LAYERS = 128
MAX_WIDTH = 16384
MAX_CONTEXT = 4096
MAX_IMAGE_SIZE = 2048

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
        with open(os.fspath(path), "rb") as fh:
            if fh.read(4) != b"PK\x03\x04":
                return False
            fh.seek(0)
            with zipfile.ZipFile(fh) as zf:
                return _archive_prefix(zf.namelist()) is not None
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False


class _ScriptObject:
    """Inert stand-in for a ``__torch__.*`` object (a scripted module)."""

    _qualname = "__torch__"

    def __setstate__(self, state):  # called by BUILD; stores, never interprets
        object.__setattr__(self, "_state", state)

    def __repr__(self):
        return f"<{self._qualname}>"


def _list_of(kind):
    def build(values, *rest):
        if rest or type(values) is not list or not all(isinstance(v, kind) for v in values):
            raise pickle.UnpicklingError(f"TorchScript list helper called with {describe(values)}")
        return values
    return build


def _restore_type_tag(value, type_str=None, *rest):
    if rest or (type_str is not None and type(type_str) is not str):
        raise pickle.UnpicklingError("TorchScript restore_type_tag called with unexpected arguments")
    return value


def _script_allow_list() -> AllowList:
    a = torch_allow_list()
    for name, fn in (("build_intlist", _list_of(int)), ("build_tensorlist", _list_of(torch.Tensor)),
                     ("build_doublelist", _list_of(float)), ("build_boollist", _list_of(bool)),
                     ("restore_type_tag", _restore_type_tag)):
        a.call("torch.jit._pickle", name, fn)
    return a


_SCRIPT_ALLOW = _script_allow_list()


class _ScriptUnpickler(TorchUnpickler):
    """``data.pkl`` of a TorchScript archive: ``__torch__.*`` classes become inert records."""

    def __init__(self, file, *, archive, size, charge_reads=True):
        super().__init__(file, archive=archive, size=size, allow=_SCRIPT_ALLOW.merged(AllowList()),
                         what="the TorchScript archive's data.pkl", charge_reads=charge_reads)
        self._classes: Dict[str, type] = {}

    def find_class(self, module, name):
        if type(module) is str and (module == "__torch__" or module.startswith("__torch__.")):
            if type(name) is not str or len(module) + len(name) > 400:
                self.refuse(f"{self.what} names a module class {describe(name)}")
            qual = f"{module}.{name}"
            cls = self._classes.get(qual)
            if cls is None:
                if len(self._classes) >= MAX_SCRIPT_CLASSES:
                    self.refuse(f"{self.what} defines more than {MAX_SCRIPT_CLASSES} module classes")
                self.budget.charge_memory(4096, "a module class")
                cls = type("ScriptObject", (_ScriptObject,), {"_qualname": qual, "__slots__": ()})
                self._classes[qual] = cls
                self.allow.new(module, name, cls)
                self.allow.setstate(cls)
            return cls
        return super().find_class(module, name)


def _collect_tensors(root, path) -> Dict[str, torch.Tensor]:
    """Tensors of the module tree (iterative, depth- and size-bounded), keyed like
    ``torch.jit.load(path).state_dict()``."""
    out: Dict[str, torch.Tensor] = {}
    seen = set()
    stack = [(root, "", 0)]
    while stack:
        obj, prefix, depth = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if len(seen) > MAX_SCRIPT_OBJECTS:
            raise UntrustedFileError(path, f"the archive's module tree has more than {MAX_SCRIPT_OBJECTS} objects")
        if depth > MAX_MODULE_DEPTH:
            raise UntrustedFileError(path, f"the archive's module tree is nested deeper than {MAX_MODULE_DEPTH} "
                                           f"levels (at '{prefix[:200]}')")
        state = getattr(obj, "_state", None)
        if not isinstance(state, dict):
            raise UntrustedFileError(path, f"a module object of the archive has state {describe(state)}, "
                                           "expected a dict of attributes")
        children = []
        for attr, value in state.items():
            if type(attr) is not str or not 0 < len(attr) <= 200:
                raise UntrustedFileError(path, f"a module attribute is named {describe(attr)}")
            if isinstance(value, torch.Tensor):
                out[prefix + attr] = value
            elif isinstance(value, _ScriptObject):
                children.append((value, f"{prefix}{attr}.", depth + 1))
        stack.extend(reversed(children))
    return out


def read_torchscript_state_dict(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """All tensors held by the module tree of a TorchScript archive, as a state dict.

    Keys follow the module hierarchy (``visual.conv1.weight``...), like
    ``torch.jit.load(path).state_dict()``. Tensors are checked views of the archive's
    storages (dtypes as stored). Tensor attributes that are neither parameters nor
    buffers in the original module are included too (they cannot be told apart without
    reading the code); the caller drops what it does not need. Raises
    :class:`~nada_ops.io.errors.UntrustedFileError` (a ``ValueError``) naming the file for
    anything that is not a readable archive, and
    :class:`~nada_ops.io.pickles.PickleRefusedError` (also a ``pickle.UnpicklingError``)
    when the archive's pickle refers to anything but modules and tensors.
    """
    with open_untrusted(path) as (fh, budget):
        if fh.read(4) != b"PK\x03\x04":
            raise UntrustedFileError(path, "is not a TorchScript archive (not a zip file)")
        fh.seek(0)
        archive = TorchArchive(fh, path, budget, what="the TorchScript archive")
        if not archive.has("constants.pkl"):
            raise UntrustedFileError(path, "is not a TorchScript archive (no constants.pkl)")
        root = archive.unpickle("data.pkl", unpickler_cls=_ScriptUnpickler)
    if not isinstance(root, _ScriptObject):
        raise UntrustedFileError(path, f"the archive's root object is {describe(root)}, not a module")
    return _collect_tensors(root, path)


# ----------------------------------------------------------------------- model building
_RESBLOCK = re.compile(r"^transformer\.resblocks\.(\d{1,4})\.")
_VISUAL_LAYER = re.compile(r"^visual\.layer([1-4])\.(\d{1,4})\.")


def _shape(sd, key, ndim, path):
    t = sd.get(key)
    if not isinstance(t, torch.Tensor) or t.ndim != ndim:
        raise UntrustedFileError(path, f"not an OpenAI CLIP state dict: {key!r} is "
                                       f"{describe(t)}, expected a {ndim}-D tensor")
    return tuple(t.shape)


def _check_implied_architecture(sd: Dict[str, torch.Tensor], path) -> None:
    """Bound what ``build_model_from_openai_state_dict`` would infer from ``sd``."""
    def bounded(what, v, hi, lo=1):
        if not lo <= v <= hi:
            raise UntrustedFileError(path, f"the archive implies a CLIP model with {what} {v} "
                                           f"(supported: {lo}..{hi})")
    for k in sd:
        if k.startswith("transformer.resblocks") and not _RESBLOCK.match(k):
            raise UntrustedFileError(path, f"unexpected tensor name {describe(k, 120)}")
        if re.match(r"^visual\.layer\d", k) and not _VISUAL_LAYER.match(k):
            raise UntrustedFileError(path, f"unexpected tensor name {describe(k, 120)}")
    bounded("text layers", len({_RESBLOCK.match(k).group(1) for k in sd if _RESBLOCK.match(k)}), MAX_LAYERS, 0)
    if "visual.proj" in sd:
        width, _, _, patch = _shape(sd, "visual.conv1.weight", 4, path)
        bounded("vision width", width, MAX_WIDTH)
        bounded("vision layers", sum(1 for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")),
                MAX_LAYERS)
        n_pos = _shape(sd, "visual.positional_embedding", 2, path)[0]
        grid = round(max(n_pos - 1, 0) ** 0.5)
        bounded("patch size", patch, 64)
        bounded("image size", patch * grid, MAX_IMAGE_SIZE)
    else:
        for b in "1234":
            bounded(f"ResNet stage {b} blocks",
                    len({m.group(2) for k in sd if (m := _VISUAL_LAYER.match(k)) and m.group(1) == b}), MAX_LAYERS)
        bounded("vision width", _shape(sd, "visual.layer1.0.conv1.weight", 4, path)[0], MAX_WIDTH)
        n_pos = _shape(sd, "visual.attnpool.positional_embedding", 2, path)[0]
        side = round(max(n_pos - 1, 0) ** 0.5)
        if side * side + 1 != n_pos:
            raise UntrustedFileError(path, "not an OpenAI CLIP state dict: the attention-pool positional embedding "
                                           "is not a square grid")
        bounded("image size", side * 32, MAX_IMAGE_SIZE)
    bounded("embedding size", _shape(sd, "text_projection", 2, path)[1], MAX_WIDTH)
    bounded("context length", _shape(sd, "positional_embedding", 2, path)[0], MAX_CONTEXT)
    width = _shape(sd, "ln_final.weight", 1, path)[0]
    bounded("text width", width, MAX_WIDTH, 64)
    _shape(sd, "token_embedding.weight", 2, path)


def build_openai_clip(state_dict: Dict[str, torch.Tensor], quick_gelu: bool = True, path=None):
    """A regular float32 open_clip ``CLIP`` from an OpenAI-layout state dict.

    The architecture (ViT or ModifiedResNet, widths, layers, resolution) is inferred from
    the tensor shapes by open_clip - first bounded, then built on the meta device and
    compared with the tensors (names, shapes, float dtypes), so a mismatch is a clear
    error naming ``path`` and nothing larger than the file's data is ever allocated.
    Metadata entries of OpenAI's archives and the causal attention mask (a constant, not
    a weight) are dropped first.
    """
    from open_clip.model import build_model_from_openai_state_dict

    where = path if path is not None else "state dict"
    sd = {k: v for k, v in state_dict.items()
          if k not in _METADATA_KEYS and not k.endswith("attn_mask")}
    for k, v in sd.items():
        if type(k) is not str or not isinstance(v, torch.Tensor):
            raise UntrustedFileError(where, f"entry {describe(k)} is {describe(v)}, expected a tensor")
        if v.dtype not in FLOAT_DTYPES:
            raise UntrustedFileError(where, f"tensor {describe(k, 120)} has dtype {v.dtype}; CLIP weights are "
                                            "floating point")
    _check_implied_architecture(sd, where)
    present = sum(v.numel() * v.element_size() for v in sd.values())
    meta_sd = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in sd.items()}
    try:
        with torch.device("meta"):
            meta_model = build_model_from_openai_state_dict(meta_sd, quick_gelu=quick_gelu, cast_dtype=None)
    except (KeyError, RuntimeError, ValueError, AssertionError, ZeroDivisionError, IndexError, TypeError) as e:
        raise UntrustedFileError(where, f"not an OpenAI CLIP state dict ({type(e).__name__}: {str(e)[:300]})") \
            from None
    # Parameters must all be in the file (strict load above); non-persistent buffers
    # (the text attention mask) must stay small next to the data really present.
    buffers = sum(b.numel() * 4 for _, b in meta_model.named_buffers())
    if buffers > 4 * present + (1 << 20):
        raise UntrustedFileError(where, f"the archive implies {buffers} bytes of buffers for {present} bytes of weights")
    try:
        model = build_model_from_openai_state_dict(dict(sd), quick_gelu=quick_gelu, cast_dtype=None)
    except (KeyError, RuntimeError) as e:
        raise UntrustedFileError(where, f"not an OpenAI CLIP state dict: {str(e)[:300]}") from None
    return model.float().eval()
