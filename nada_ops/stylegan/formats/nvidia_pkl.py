"""Safe reader for NVIDIA's PyTorch StyleGAN2 and StyleGAN3 (T/R) pickles (stylegan2-ada-pytorch,
stylegan3 repo).

NVIDIA's network pickles store each network as a "persistent object": the pickle calls
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` carries the
class name, the full source code of the module that defined it (``module_src``) and the
object's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, ...).
NVIDIA's own loader ``exec``s ``module_src``, i.e. loading such a file runs code taken from
the file.  This reader never does: it unpickles with the pack's bounded unpickler
(:mod:`nada_ops.io.pickles`) and an explicit allow-list of globals (tensor/storage
rebuilds that validate every tensor against the bytes behind it, ``OrderedDict``, numpy
scalars/arrays built only from raw bytes in the file, ``set``) in which the persistence
hook is a stub that only *records* ``meta``, and everything else is refused.  The recorded state tree is then mapped onto our own
:class:`~nada_ops.stylegan.networks.Generator` (or, for StyleGAN3,
:class:`~nada_ops.stylegan.networks_sg3.StyleGAN3Generator`) by parameter name, and every tensor is
checked against the shapes our network expects.  For StyleGAN3 the configuration comes from the
generator's init arguments (NVIDIA's defaults where absent) and every layer attribute the file
records (sizes, sampling rates, cutoffs, transition bands, up/down factors, taps, margins,
channels) and every stored filter must equal what our design computes from it: a file that
differs anywhere is refused, never approximated.
"""
from __future__ import annotations

import math
import os
import pickle
import re

import numpy as np
import torch

from ...io.errors import UntrustedFileError, describe
from ...io.numpy_files import NumpyArray, numpy_allow_list
from ...io.pickles import AllowList, BoundedUnpickler, global_name, run_unpickler
from ...io.tensors import FLOAT_DTYPES, float32_copy
from ...io.torch_files import open_untrusted, read_legacy_storage_bytes, torch_allow_list
from ..config import MAX_MAPPING_LAYERS, ArchitectureError, StyleGAN2Config, StyleGAN3Config
from . import CheckpointError, ReadResult, check_weights_fit

__all__ = ["read_nvidia_pickle", "PersistentRecord", "SafeNvidiaUnpickler"]

FORMAT = "nvidia-pkl"
_MAX_DEPTH = 32          # module nesting depth accepted (a StyleGAN2 G has 4)


# ----------------------------------------------------------------------------- recording
class PersistentRecord:
    """What ``_reconstruct_persistent_obj(meta)`` would have rebuilt, kept as inert data.

    ``module_src`` is kept as text only (used to recognise the network family); it is
    never executed, compiled or imported.
    """

    __slots__ = ("class_name", "module_src", "state", "version", "kind")

    def __init__(self, meta):
        # Types are checked before anything looks at the values (a nested list here
        # would otherwise be str()'d in messages at exponential cost).
        if type(meta) is not dict:
            raise pickle.UnpicklingError(f"persistent object description is {describe(meta)}, expected a dict")
        kind, version, name = meta.get("type"), meta.get("version"), meta.get("class_name")
        self.kind = kind if type(kind) is str or kind is None else describe(kind)
        self.version = version if type(version) in (int, str) or version is None else describe(version)
        if name is not None and (type(name) is not str or len(name) > 200):
            raise pickle.UnpicklingError(f"persistent object class name is {describe(name)}, expected a short string")
        self.class_name = name
        src = meta.get("module_src")
        self.module_src = src if type(src) is str else ""
        state = meta.get("state")
        self.state = state if isinstance(state, dict) else {}

    def __setstate__(self, state):          # a BUILD after the call: keep it as data
        if isinstance(state, dict):
            self.state.update(state)

    def __repr__(self):
        return f"<PersistentRecord {describe(self.class_name)}>"


def _record_persistent_obj(meta):
    return PersistentRecord(meta)


class _PickledEasyDict(dict):
    """Stand-in for ``dnnlib.EasyDict``: a plain dict (instances keep a ``__dict__`` so
    that a BUILD opcode with an empty state is harmless). Only ever created empty: its
    items arrive through the unpickler's checked SETITEMS."""

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise pickle.UnpicklingError("dnnlib.EasyDict called with arguments")
        super().__init__()


def _build_allow_list() -> AllowList:
    a = torch_allow_list().merged(numpy_allow_list())
    # NVIDIA's persistence hook -> recorder; dnnlib.EasyDict -> dict.
    a.call("torch_utils.persistence", "_reconstruct_persistent_obj", _record_persistent_obj)
    a.setstate(PersistentRecord)
    for mod in ("dnnlib", "dnnlib.util"):
        a.call(mod, "EasyDict", _PickledEasyDict)
        a.new(mod, "EasyDict", _PickledEasyDict)
    return a


_ALLOWED = _build_allow_list()


class SafeNvidiaUnpickler(BoundedUnpickler):
    """The pack's bounded unpickler with NVIDIA's allow-list; tensor storages (legacy
    ``torch.save`` blobs in ``_load_from_bytes`` calls) are parsed by
    :func:`nada_ops.io.torch_files.read_legacy_storage_bytes`, never by ``torch.load``."""

    def __init__(self, file, path, budget, size: int):
        load_from_bytes = self._load_storage_from_bytes
        allow = _ALLOWED.merged(AllowList().call("torch.storage", "_load_from_bytes", load_from_bytes))
        super().__init__(file, path=path, budget=budget, size=size, what="the network pickle", allow=allow)

    def _load_storage_from_bytes(self, b, *rest):
        if rest:
            raise pickle.UnpicklingError("torch.storage._load_from_bytes called with extra arguments")
        return read_legacy_storage_bytes(b, self.path, self.budget)

    def refuse_global(self, module, name):
        full = global_name(module, name)
        if type(module) is str and module.startswith("dnnlib.tflib"):
            self.refuse(
                f"this is a TensorFlow-era StyleGAN pickle (it references '{full}'); it cannot "
                "be read directly. Convert it to a PyTorch pickle first with NVIDIA's legacy.py "
                "(stylegan2-ada-pytorch: python legacy.py --source=OLD.pkl --dest=NEW.pkl), "
                "then load the converted file")
        self.refuse(
            f"refuses to load global '{full}': only tensors, plain containers and NVIDIA's "
            "recorded network state are allowed in a model pickle (loading anything else "
            "could run code stored in the file)")

    def persistent_load(self, pid):
        self.refuse(
            "the pickle uses persistent ids (is this a torch.save file rather than an NVIDIA "
            "network pickle?)")


# ----------------------------------------------------------------------------- loading
def _short(e: BaseException, limit: int = 300) -> str:
    s = f"{type(e).__name__}: {str(e)[:limit]}"
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _unpickle(path) -> tuple[object, int]:
    """(unpickled object, file size)."""
    if os.path.isdir(os.fspath(path)):
        raise CheckpointError(path, "is a directory, expected an NVIDIA .pkl file")
    try:
        with open_untrusted(path) as (f, budget):
            head = f.read(4)
            if head.startswith(b"PK\x03\x04"):
                raise CheckpointError(
                    path, "is a zip archive (a torch.save .pt file?), not an NVIDIA network pickle")
            if not head.startswith(b"\x80"):
                raise CheckpointError(path, "is not a binary pickle file (no pickle protocol header)")
            f.seek(0)
            u = SafeNvidiaUnpickler(f, path, budget, budget.file_size)
            return run_unpickler(u), budget.file_size
    except CheckpointError:
        raise
    except UntrustedFileError as e:
        problem = e.problem
        if problem == "file does not exist":
            problem = "file not found"
        raise CheckpointError(path, problem) from None
    except OSError as e:
        raise CheckpointError(path, f"cannot read file ({_short(e)})") from None


# ------------------------------------------------------------------------ state handling
def _modules_of(rec: PersistentRecord, path, where: str) -> dict:
    mods = rec.state.get("_modules")
    if mods is None:
        return {}
    if not isinstance(mods, dict):
        raise CheckpointError(path, f"{where}: '_modules' is a {type(mods).__name__}, expected a dict")
    return mods


def _check_name(k, path, prefix):
    if type(k) is not str or not 0 < len(k) <= 200:
        raise CheckpointError(path, f"'{prefix or '<root>'}' holds an entry named {describe(k)}, expected a short "
                                    "attribute name")


def _flatten(rec: PersistentRecord, path, prefix: str, out: dict, records: dict, depth: int, seen: set):
    if depth > _MAX_DEPTH:
        raise CheckpointError(path, f"network nesting deeper than {_MAX_DEPTH} levels at '{prefix}'")
    if id(rec) in seen:
        raise CheckpointError(path, f"network object at '{prefix or '<root>'}' appears more than once "
                                    "(shared or cyclic structure)")
    seen.add(id(rec))
    records[prefix[:-1]] = rec
    for kind in ("_parameters", "_buffers"):
        d = rec.state.get(kind)
        if d is None:
            continue
        if not isinstance(d, dict):
            raise CheckpointError(path, f"'{prefix or '<root>'}' {kind} is a {type(d).__name__}, expected a dict")
        for k, v in d.items():
            _check_name(k, path, prefix)
            if v is None:
                continue
            if not isinstance(v, torch.Tensor):
                raise CheckpointError(path, f"'{prefix}{k}' is a {type(v).__name__}, expected a tensor")
            out[f"{prefix}{k}"] = v
    for name, sub in _modules_of(rec, path, prefix or "<root>").items():
        _check_name(name, path, prefix)
        if sub is None:
            continue
        if not isinstance(sub, PersistentRecord):
            raise CheckpointError(
                path, f"sub-module '{prefix}{name}' is a {type(sub).__name__}, not one of NVIDIA's "
                      "persistent network objects")
        _flatten(sub, path, f"{prefix}{name}.", out, records, depth + 1, seen)


def _is_stylegan3(rec: PersistentRecord) -> bool:
    src = rec.module_src
    if "class SynthesisInput" in src or "networks_stylegan3" in str(rec.class_name):
        return True
    mods = rec.state.get("_modules")
    synth = mods.get("synthesis") if isinstance(mods, dict) else None
    if isinstance(synth, PersistentRecord):
        if "class SynthesisInput" in synth.module_src:
            return True
        names = synth.state.get("_modules") or {}
        if isinstance(names, dict):
            if "input" in names or any(re.fullmatch(r"L\d+_\d+_\d+", str(n)) for n in names):
                return True
            if any(isinstance(m, PersistentRecord) and m.class_name == "SynthesisInput" for m in names.values()):
                return True
        if "layer_names" in synth.state:
            return True
    return False


def _as_int(v, path, what) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise CheckpointError(path, f"{what} is {describe(v)}, expected an integer")
    return int(v)


def _as_float_or_none(v, path, what):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise CheckpointError(path, f"{what} is {describe(v)}, expected a number or None")
    v = float(v)
    if not math.isfinite(v):
        raise CheckpointError(path, f"{what} is {v}, expected a finite number")
    return v


_G_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")
_G_TOP_KEYS = set(_G_POSITIONAL)


def _init_kwargs(rec: PersistentRecord, path) -> dict:
    st = rec.state
    kw = st.get("_init_kwargs", st.get("init_kwargs"))
    kw = dict(kw) if isinstance(kw, dict) else {}
    args = st.get("_init_args", st.get("init_args")) or ()
    if isinstance(args, (tuple, list)):
        for name, v in zip(_G_POSITIONAL, args):
            kw.setdefault(name, v)
    return kw


def _attr(rec: PersistentRecord | None, name, default=None):
    if rec is None:
        return default
    return rec.state.get(name, default)


def _consistent(path, values: dict, what: str):
    """All recorded values of one attribute must agree; returns the common value."""
    def norm(k, v):
        # only plain values are compared (attacker-built containers are never hashed or repr'd)
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            v = float(v)
            return ("num", v) if v == v else ("nan", None)
        if v is None or type(v) in (str, bool):
            return (type(v).__name__, v)
        raise CheckpointError(path, f"'{k}' records {what} as {describe(v)}, expected a plain value")
    distinct = {norm(k, v) for k, v in values.items()}
    if len(distinct) > 1:
        listing = ", ".join(f"{k}={describe(v)}" for k, v in list(values.items())[:6])
        raise CheckpointError(path, f"layers disagree on {what} ({listing}); this generator layout is not supported")
    return next(iter(values.values())) if values else None


def _top_fields(G: PersistentRecord, ik: dict, path) -> dict:
    def top(name):
        v = G.state.get(name, ik.get(name))
        if v is None:
            raise CheckpointError(path, f"generator records no '{name}' (neither as attribute nor in init_kwargs)")
        return _as_int(v, path, name)

    out = {k: top(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
    # Ranges first: the values below drive loops (layers, blocks) before the full check.
    if not 32 <= out["img_resolution"] <= 1024:
        raise CheckpointError(path, f"unsupported generator architecture: img_resolution {out['img_resolution']} "
                                    "is outside the supported range 32..1024")
    if out["z_dim"] == 0:
        raise CheckpointError(path, "generators without a z input (z_dim=0) are not supported")
    return out


def _mapping_fields(records: dict, tensors: dict, mk: dict, dims: dict, path, notes: dict) -> dict:
    """The mapping network's fields (shared by StyleGAN2 and StyleGAN3 generators)."""
    mapping = records.get("mapping")
    if mapping is None or records.get("synthesis") is None:
        raise CheckpointError(path, "generator has no 'mapping' and 'synthesis' sub-networks")
    num_layers = _attr(mapping, "num_layers", mk.get("num_layers", 8))
    num_layers = _as_int(num_layers, path, "mapping num_layers")
    if not 1 <= num_layers <= MAX_MAPPING_LAYERS:
        raise CheckpointError(path, f"mapping num_layers is {num_layers} (supported: 1..{MAX_MAPPING_LAYERS})")
    fcs = {f"mapping.fc{i}": records.get(f"mapping.fc{i}") for i in range(num_layers)}
    missing = [k for k, v in fcs.items() if v is None]
    if missing:
        raise CheckpointError(path, f"missing mapping layer '{missing[0]}'")
    acts = {k: _attr(r, "activation", "lrelu") for k, r in fcs.items()}
    act = _consistent(path, acts, "the mapping activation")
    if act != "lrelu":
        raise CheckpointError(path, f"mapping activation {act!r} is not supported (only 'lrelu')")
    lr_muls = {k: _attr(r, "bias_gain", mk.get("lr_multiplier", 0.01)) for k, r in fcs.items()}
    lr_mul = _as_float_or_none(_consistent(path, lr_muls, "the mapping lr_multiplier"), path, "lr_multiplier")
    if "mapping.w_avg" in tensors:
        w_avg_present = True
    else:
        w_avg_present = False
        notes["w_avg"] = "not in checkpoint (w_avg_beta=None); the caller must estimate it"
    notes["w_avg_present"] = w_avg_present
    embed_features = None
    if dims["c_dim"] > 0:
        t = tensors.get("mapping.embed.weight")
        if t is None:
            raise CheckpointError(path, f"class-conditional generator (c_dim={dims['c_dim']}) has no "
                                        "'mapping.embed.weight'")
        if t.ndim == 2 and t.shape[0] != dims["w_dim"]:
            embed_features = int(t.shape[0])
    layer_features = None
    if num_layers > 1:
        t = tensors.get("mapping.fc0.weight")
        if t is not None and t.ndim == 2 and t.shape[0] != dims["w_dim"]:
            layer_features = int(t.shape[0])
    return dict(num_mapping_layers=num_layers, mapping_lr_mul=lr_mul, embed_features=embed_features,
                layer_features=layer_features)


def _build_config(G: PersistentRecord, records: dict, tensors: dict, path) -> tuple[StyleGAN2Config, dict]:
    ik = _init_kwargs(G, path)
    notes: dict = {}
    dims = _top_fields(G, ik, path)
    img_resolution = dims["img_resolution"]

    mk = ik.get("mapping_kwargs") or {}
    if not isinstance(mk, dict):
        raise CheckpointError(path, f"init_kwargs.mapping_kwargs is a {type(mk).__name__}, expected a dict")
    # stylegan2-ada-pytorch nests synthesis options in 'synthesis_kwargs'; the stylegan3
    # repo's StyleGAN2 generator takes them as top-level keyword arguments.
    sk = ik.get("synthesis_kwargs") or {}
    if not isinstance(sk, dict):
        raise CheckpointError(path, f"init_kwargs.synthesis_kwargs is a {type(sk).__name__}, expected a dict")
    sk = dict(sk)
    for k, v in ik.items():
        if k not in _G_TOP_KEYS:
            sk.setdefault(k, v)
    mapping_fields = _mapping_fields(records, tensors, mk, dims, path, notes)

    # --- synthesis network
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise CheckpointError(path, f"img_resolution {img_resolution} is not a power of two")
    log2 = int(math.log2(img_resolution))
    block_res = [2 ** i for i in range(2, log2 + 1)]
    blocks = {f"synthesis.b{r}": records.get(f"synthesis.b{r}") for r in block_res}
    missing = [k for k, v in blocks.items() if v is None]
    if missing:
        raise CheckpointError(path, f"missing synthesis block '{missing[0]}'")
    archs = {k: _attr(r, "architecture", sk.get("architecture", "skip")) for k, r in blocks.items()}
    arch = _consistent(path, archs, "the synthesis architecture")
    if arch != "skip":
        raise CheckpointError(
            path, f"synthesis architecture {arch!r} is not supported; only the 'skip' generator "
                  "(NVIDIA's default for StyleGAN2 generators) can be read")
    layers = {}
    for r in block_res:
        for name in (("conv1",) if r == 4 else ("conv0", "conv1")):
            key = f"synthesis.b{r}.{name}"
            if records.get(key) is None:
                raise CheckpointError(path, f"missing synthesis layer '{key}'")
            layers[key] = records[key]
        key = f"synthesis.b{r}.torgb"
        if records.get(key) is None:
            raise CheckpointError(path, f"missing synthesis layer '{key}' (not a 'skip' generator?)")
    acts = {k: _attr(r, "activation", "lrelu") for k, r in layers.items()}
    act = _consistent(path, acts, "the synthesis activation")
    if act != "lrelu":
        raise CheckpointError(path, f"synthesis activation {act!r} is not supported (only 'lrelu')")
    clamp_sources = {k: r.state["conv_clamp"] for k, r in records.items()
                     if k.startswith("synthesis.b") and k.count(".") == 2 and "conv_clamp" in r.state}
    if clamp_sources:
        conv_clamp = _consistent(path, clamp_sources, "conv_clamp")
    else:
        conv_clamp = sk.get("conv_clamp")
        notes["conv_clamp"] = "taken from init_kwargs (layers record none)"
    conv_clamp = _as_float_or_none(conv_clamp, path, "conv_clamp")
    if conv_clamp is not None and conv_clamp == int(conv_clamp):
        conv_clamp = int(conv_clamp)
    use_noise = {k: bool(_attr(r, "use_noise", True)) for k, r in layers.items()}
    notes["layers_without_noise"] = sorted(k for k, v in use_noise.items() if not v)
    ups = {k: _attr(r, "up", 2 if k.endswith("conv0") else 1) for k, r in layers.items()}
    for k, up in ups.items():
        want = 2 if k.endswith("conv0") else 1
        if up != want:
            raise CheckpointError(path, f"'{k}' has up={up!r}, expected {want}")

    channel_base = sk.get("channel_base", 32768)
    channel_max = sk.get("channel_max", 512)
    notes["num_fp16_res"] = sk.get("num_fp16_res")
    try:
        cfg = StyleGAN2Config(
            **dims, channel_base=_as_int(channel_base, path, "channel_base"),
            channel_max=_as_int(channel_max, path, "channel_max"), **mapping_fields, conv_clamp=conv_clamp,
        ).validate("architecture")
    except ArchitectureError as e:
        raise CheckpointError(path, f"unsupported generator architecture: {e}") from None
    return cfg, notes


# ------------------------------------------------------------------------------ StyleGAN3
#: Generator init arguments of NVIDIA's StyleGAN3 (synthesis options at the top level) and the
#: config field each one sets; None = accepted and not part of the architecture (training /
#: runtime options).
_SG3_KWARGS = {
    "channel_base": "channel_base", "channel_max": "channel_max", "num_layers": "num_layers",
    "num_critical": "num_critical", "first_cutoff": "first_cutoff", "first_stopband": "first_stopband",
    "last_stopband_rel": "last_stopband_rel", "margin_size": "margin_size", "output_scale": "output_scale",
    "conv_kernel": "conv_kernel", "filter_size": "filter_size", "lrelu_upsampling": "lrelu_upsampling",
    "use_radial_filters": "use_radial_filters", "conv_clamp": "conv_clamp",
    "num_fp16_res": None, "magnitude_ema_beta": None,
}
_SG3_INT = {"channel_base", "channel_max", "num_layers", "num_critical", "margin_size", "conv_kernel", "filter_size",
            "lrelu_upsampling"}
_SG3_FLOAT = {"first_cutoff", "first_stopband", "last_stopband_rel", "output_scale"}


def _plain_scalar(v):
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if v is None or type(v) in (bool, int, float) or (type(v) is str and len(v) <= 200):
        return v
    return _NOT_PLAIN


_NOT_PLAIN = object()


def _plain(v):
    """A recorded scalar, or a flat list / small array of scalars, as plain Python (int, float,
    bool, str, None, tuple); anything else (nested or large containers from the file are never
    walked) as a bounded description."""
    if isinstance(v, NumpyArray):
        a = v.array
        if a is None or a.size > 16 or a.dtype.kind not in "biuf":
            return describe(v)
        return tuple(x.item() for x in a.reshape(-1))
    if type(v) in (list, tuple):
        if len(v) > 64:
            return describe(v)
        items = tuple(_plain_scalar(x) for x in v)
        return describe(v) if any(x is _NOT_PLAIN for x in items) else items
    x = _plain_scalar(v)
    return describe(v) if x is _NOT_PLAIN else x


def _same(got, want) -> bool:
    got, want = _plain(got), _plain(want)
    if isinstance(want, tuple):
        return isinstance(got, tuple) and len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want))
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is bool and got == want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-12)
    return got == want


def _sg3_value(name, v, path):
    if name in _SG3_INT:
        return _as_int(v, path, name)
    if name in _SG3_FLOAT:
        f = _as_float_or_none(v, path, name)
        if f is None:
            raise CheckpointError(path, f"{name} is None, expected a number")
        return f
    if name == "use_radial_filters":
        if not isinstance(v, (bool, np.bool_)):
            raise CheckpointError(path, f"use_radial_filters is {describe(v)}, expected true or false")
        return bool(v)
    if name == "conv_clamp":
        f = _as_float_or_none(v, path, name)
        return int(f) if f is not None and f == int(f) else f
    return v


def _build_config_sg3(G: PersistentRecord, records: dict, tensors: dict, path) -> tuple[StyleGAN3Config, dict]:
    ik = _init_kwargs(G, path)
    notes: dict = {}
    dims = _top_fields(G, ik, path)
    mk = ik.get("mapping_kwargs") or {}
    if not isinstance(mk, dict):
        raise CheckpointError(path, f"init_kwargs.mapping_kwargs is a {type(mk).__name__}, expected a dict")
    sk = {k: v for k, v in ik.items() if k not in _G_TOP_KEYS}
    unknown = sorted(str(k)[:60] for k in sk if k not in _SG3_KWARGS)
    if unknown:
        raise CheckpointError(path, f"StyleGAN3 generator with unknown options {unknown[:6]}: this variant of "
                                    "NVIDIA's code is not supported")
    synthesis = records.get("synthesis")
    fields = {}
    for name, field_name in _SG3_KWARGS.items():
        if field_name is None:
            continue
        v = sk.get(name)
        if name in ("num_layers", "num_critical", "margin_size", "output_scale") and name in synthesis.state:
            rec = synthesis.state[name]
            if name in sk and not _same(rec, v):
                raise CheckpointError(path, f"the synthesis network records {name}={describe(_plain(rec))} but the "
                                            f"generator's init arguments say {describe(_plain(v))}")
            v = rec
        if name in sk or v is not None:
            fields[field_name] = _sg3_value(name, v, path)
    notes["num_fp16_res"] = _plain(_attr(synthesis, "num_fp16_res", sk.get("num_fp16_res")))
    mapping_fields = _mapping_fields(records, tensors, mk, dims, path, notes)
    if mapping_fields.pop("embed_features") is not None or mapping_fields.pop("layer_features") is not None:
        raise CheckpointError(path, "StyleGAN3 mapping network with hidden/embedding sizes other than w_dim")
    # The layers' conv_clamp is what the forward pass uses.
    layer_recs = {k: r for k, r in records.items() if re.fullmatch(r"synthesis\.L\d+_\d+_\d+", k)}
    clamps = {k: r.state["conv_clamp"] for k, r in layer_recs.items() if "conv_clamp" in r.state}
    if clamps:
        fields["conv_clamp"] = _sg3_value("conv_clamp", _consistent(path, clamps, "conv_clamp"), path)
    try:
        cfg = StyleGAN3Config(**dims, **mapping_fields, **fields).validate("architecture")
    except ArchitectureError as e:
        raise CheckpointError(path, f"unsupported StyleGAN3 architecture: {e}") from None
    except TypeError as e:
        raise CheckpointError(path, f"unsupported StyleGAN3 architecture: {e}") from None
    _check_sg3_layers(cfg, records, path)
    return cfg, notes


def _check_sg3_layers(cfg: StyleGAN3Config, records: dict, path) -> None:
    """Every layer attribute the file records must be what our design computes."""
    names = cfg.layer_names()
    synthesis = records["synthesis"]
    recorded = synthesis.state.get("layer_names")
    if recorded is not None and _plain(recorded) != tuple(names):
        raise CheckpointError(path, f"the synthesis layers are {describe(recorded, 300)}; the configuration gives "
                                    f"{names} (a StyleGAN3 variant this pack does not support)")
    have = sorted(k.split(".")[1] for k in records if k.count(".") == 1 and k.startswith("synthesis."))
    extra = sorted(set(have) - set(names) - {"input"})
    if extra:
        raise CheckpointError(path, f"unexpected synthesis sub-network(s) {extra[:5]} for the configuration")
    inp = records.get("synthesis.input")
    if inp is None:
        raise CheckpointError(path, "missing synthesis layer 'synthesis.input' (the Fourier features)")
    spec = cfg.input_spec()
    checks = [("synthesis.input", inp, {"channels": spec["channels"], "size": (spec["size"], spec["size"]),
                                        "sampling_rate": spec["sampling_rate"], "bandwidth": spec["bandwidth"]})]
    for l in cfg.layers():
        rec = records.get(f"synthesis.{l.name}")
        if rec is None:
            raise CheckpointError(path, f"missing synthesis layer 'synthesis.{l.name}'")
        checks.append((f"synthesis.{l.name}", rec, {
            "is_torgb": l.is_torgb, "is_critically_sampled": l.is_critically_sampled,
            "in_channels": l.in_channels, "out_channels": l.out_channels,
            "in_size": (l.in_size, l.in_size), "out_size": (l.out_size, l.out_size),
            "in_sampling_rate": l.in_sampling_rate, "out_sampling_rate": l.out_sampling_rate,
            "tmp_sampling_rate": l.tmp_sampling_rate, "in_cutoff": l.in_cutoff, "out_cutoff": l.out_cutoff,
            "in_half_width": l.in_half_width, "out_half_width": l.out_half_width, "conv_kernel": l.conv_kernel,
            "up_factor": l.up, "down_factor": l.down, "up_taps": l.up_taps, "down_taps": l.down_taps,
            "down_radial": l.down_radial, "padding": l.padding}))
    for key, rec, want in checks:
        for attr, value in want.items():
            if attr in rec.state and not _same(rec.state[attr], value):
                raise CheckpointError(
                    path, f"'{key}' records {attr}={describe(_plain(rec.state[attr]))} but the configuration gives "
                          f"{value!r}: this StyleGAN3 variant is not supported")


def _sg3_filter_checker(cfg: StyleGAN3Config, path):
    """For ``_map_state``: the file's up/down filters must equal our designed ones."""
    from ..networks_sg3 import layer_filters
    designed = {}
    for l in cfg.layers():
        fu, fd = layer_filters(l)
        designed[f"synthesis.{l.name}.up_filter"] = fu
        designed[f"synthesis.{l.name}.down_filter"] = fd

    def check(key, t) -> bool:
        if key not in designed:
            return False
        want = designed[key]
        if want is None:
            raise CheckpointError(path, f"'{key}' is stored but this layer has no filter in the design")
        if tuple(t.shape) != tuple(want.shape) or t.dtype not in FLOAT_DTYPES:
            raise CheckpointError(path, f"'{key}' has shape {list(t.shape)}, the design gives {list(want.shape)}")
        got = float32_copy(t.detach())
        if not torch.isfinite(got).all() or not torch.allclose(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max())):
            raise CheckpointError(path, f"'{key}' differs from the low-pass filter NVIDIA's design gives for this "
                                        "layer; custom filters are not supported")
        return True
    return check


def _map_state(cfg, tensors: dict, notes: dict, path, expected: dict[str, tuple]) -> dict[str, torch.Tensor]:
    from ...ops import setup_filter

    sg3_filter = _sg3_filter_checker(cfg, path) if cfg.family == "stylegan3" else None
    ref_filter = None if sg3_filter else setup_filter(list(cfg.resample_filter))
    out: dict[str, torch.Tensor] = {}
    no_noise = set(notes.get("layers_without_noise") or ())
    for key, shape in expected.items():
        t = tensors.get(key)
        if t is None:
            layer = key.rsplit(".", 1)[0]
            if key == "mapping.w_avg" and not notes.get("w_avg_present"):
                t = torch.zeros(shape)
            elif layer in no_noise and key.endswith((".noise_strength", ".noise_const")):
                t = torch.zeros(shape)         # a layer without noise == zero noise strength
            else:
                raise CheckpointError(path, f"missing tensor '{key}' (expected shape {list(shape)})")
        if tuple(t.shape) != tuple(shape):
            raise CheckpointError(
                path, f"tensor '{key}' has shape {list(t.shape)}, expected {list(shape)} for "
                      f"{cfg.img_resolution}px, channel_base={cfg.channel_base}, channel_max={cfg.channel_max}")
        if t.dtype not in FLOAT_DTYPES:
            raise CheckpointError(path, f"tensor '{key}' has dtype {t.dtype}, expected a float tensor")
        out[key] = float32_copy(t.detach())     # the one copy; the file's buffers are dropped
    extra = sorted(set(tensors) - set(expected))
    for key in extra:
        if sg3_filter is not None:
            if sg3_filter(key, tensors[key]):
                continue
            raise CheckpointError(path, f"unexpected tensor '{key}' (not part of a StyleGAN3 generator)")
        if key.endswith(".resample_filter"):
            f = tensors[key]
            if tuple(f.shape) != tuple(ref_filter.shape) or not torch.allclose(f.float(), ref_filter, atol=1e-6):
                raise CheckpointError(path, f"'{key}' is not the standard [1,3,3,1] filter; custom "
                                            "resampling filters are not supported")
            continue
        raise CheckpointError(path, f"unexpected tensor '{key}' (not part of a StyleGAN2 skip generator)")
    return out


def _jsonable(v, depth=0):
    """A small JSON-able copy of a recorded value (bounded size; never calls repr on file data)."""
    if type(v) is str:
        return v if len(v) <= 500 else v[:500] + "..."
    if type(v) in (bool, int, float) or v is None:
        return v if type(v) is not int or v.bit_length() <= 64 else describe(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, NumpyArray) and v.array is not None and v.array.size <= 16:
        return v.array.tolist()
    if depth < 3 and type(v) in (list, tuple) and len(v) <= 64:
        return [_jsonable(x, depth + 1) for x in v]
    if depth < 3 and isinstance(v, dict) and len(v) <= 64:
        return {str(k)[:200]: _jsonable(x, depth + 1) for k, x in v.items()}
    return describe(v)


def _describe(top) -> str:
    if isinstance(top, PersistentRecord):
        return f"a single {describe(top.class_name)} network"
    return f"an object of type {type(top).__name__}"


# ----------------------------------------------------------------------------- public API
def read_nvidia_pickle(path, network: str = "G_ema") -> ReadResult:
    """Read one generator (default ``G_ema``) from an NVIDIA PyTorch network pickle.

    Never executes code from the file. Raises :class:`CheckpointError` (naming the file
    and the problem) for anything that is not a readable StyleGAN2 skip generator or
    StyleGAN3 (T/R) generator.
    """
    top, file_size = _unpickle(path)
    other_keys: list[str] = []
    if isinstance(top, dict):
        keys = [k for k in top if isinstance(k, str)]
        if network not in top:
            hint = ""
            if network == "G_ema" and "G" in top:
                hint = "; pass network='G' to read the non-averaged generator"
            held = sorted(k[:100] for k in keys[:50])
            raise CheckpointError(
                path, f"the pickle has no '{network}' network (it holds {held}{'...' if len(keys) > 50 else ''})"
                      f"{hint}")
        G = top[network]
        other_keys = sorted(k for k in keys if k != network)
        training_set = top.get("training_set_kwargs")
    elif isinstance(top, PersistentRecord):
        G = top
        training_set = None
    else:
        raise CheckpointError(path, f"the pickle holds {_describe(top)}, expected a dict with '{network}'")
    del top                                      # drop D, G, augment_pipe tensors early
    if not isinstance(G, PersistentRecord):
        raise CheckpointError(
            path, f"'{network}' is a {type(G).__name__}, not one of NVIDIA's persistent network objects")
    if G.kind not in (None, "class"):
        raise CheckpointError(path, f"'{network}' has persistent object type {describe(G.kind)}, expected 'class'")
    sg3 = _is_stylegan3(G)
    cname = str(G.class_name)             # a short str or None (checked when recorded)
    if cname.rsplit(".", 1)[-1] != "Generator":
        raise CheckpointError(path, f"'{network}' is a {describe(G.class_name)}, not a StyleGAN "
                                    f"{'3' if sg3 else '2'} Generator")

    tensors: dict[str, torch.Tensor] = {}
    records: dict[str, PersistentRecord] = {}
    try:
        _flatten(G, path, "", tensors, records, 0, set())
        cfg, notes = (_build_config_sg3 if sg3 else _build_config)(G, records, tensors, path)
        # The declared architecture must fit in the tensor data really present, before
        # any weight is copied or any network built.
        present = min(file_size, sum(t.numel() * t.element_size() for t in tensors.values()))
        expected = check_weights_fit(cfg, present, path, "the generator in the file")
        state = _map_state(cfg, tensors, notes, path, expected)
    except CheckpointError:
        raise
    except Exception as e:                       # noqa: BLE001 - malformed state tree
        raise CheckpointError(path, f"'{network}' has an unexpected structure ({_short(e)})") from None

    family = "stylegan2-ada-pytorch"
    if sg3:
        family = f"stylegan3 ({cfg.architecture})"
    elif "fused_modconv_default" in G.module_src or "networks_stylegan2" in G.module_src:
        family = "stylegan3 (StyleGAN2 config)"
    provenance = {
        "source_format": FORMAT,
        "network": network,
        "class_name": cname,
        "code_family": family,
        "persistence_version": _jsonable(G.version),
        "other_keys_in_file": other_keys,
        "num_fp16_res": _jsonable(notes.get("num_fp16_res")),
    }
    if notes.get("layers_without_noise"):
        provenance["layers_without_noise"] = notes["layers_without_noise"]
    if isinstance(training_set, dict):
        provenance["training_set_kwargs"] = {
            k: _jsonable(v) for k, v in training_set.items()
            if k in ("class_name", "path", "resolution", "use_labels", "max_size", "xflip")}
    return ReadResult(cfg=cfg, state_dict=state, format=FORMAT,
                      w_avg_in_checkpoint=bool(notes.get("w_avg_present")), provenance=provenance)
