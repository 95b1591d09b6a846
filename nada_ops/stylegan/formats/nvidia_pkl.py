"""Safe reader for NVIDIA's PyTorch StyleGAN2 pickles (stylegan2-ada-pytorch, stylegan3 repo).

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
:class:`~nada_ops.stylegan.networks.Generator` by parameter name, and every tensor is
checked against the shapes our network expects.
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
from ..config import MAX_MAPPING_LAYERS, ArchitectureError, StyleGAN2Config
from . import CheckpointError, ReadResult, check_weights_fit

__all__ = ["read_nvidia_pickle", "PersistentRecord", "SafeNvidiaUnpickler"]

FORMAT = "nvidia-pkl"
_MAX_DEPTH = 32          # module nesting depth accepted (a StyleGAN2 G has 4)
_SG3_MESSAGE = ("StyleGAN3 (T/R) generators are not supported yet; only StyleGAN2 generators "
                "(stylegan2-ada-pytorch, or stylegan3's --cfg=stylegan2) can be read")


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


def _build_config(G: PersistentRecord, records: dict, tensors: dict, path) -> tuple[StyleGAN2Config, dict]:
    ik = _init_kwargs(G, path)
    notes: dict = {}

    def top(name):
        v = G.state.get(name, ik.get(name))
        if v is None:
            raise CheckpointError(path, f"generator records no '{name}' (neither as attribute nor in init_kwargs)")
        return _as_int(v, path, name)

    z_dim, c_dim, w_dim = top("z_dim"), top("c_dim"), top("w_dim")
    img_resolution, img_channels = top("img_resolution"), top("img_channels")
    # Ranges first: the values below drive loops (layers, blocks) before the full check.
    if not 32 <= img_resolution <= 1024:
        raise CheckpointError(path, f"unsupported generator architecture: img_resolution {img_resolution} is "
                                    "outside the supported range 32..1024")
    if z_dim == 0:
        raise CheckpointError(path, "generators without a z input (z_dim=0) are not supported")

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

    mapping = records.get("mapping")
    synthesis = records.get("synthesis")
    if mapping is None or synthesis is None:
        raise CheckpointError(path, "generator has no 'mapping' and 'synthesis' sub-networks")

    # --- mapping network
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
    embed_features = None
    if c_dim > 0:
        t = tensors.get("mapping.embed.weight")
        if t is None:
            raise CheckpointError(path, f"class-conditional generator (c_dim={c_dim}) has no 'mapping.embed.weight'")
        if t.ndim == 2 and t.shape[0] != w_dim:
            embed_features = int(t.shape[0])
    layer_features = None
    if num_layers > 1:
        t = tensors.get("mapping.fc0.weight")
        if t is not None and t.ndim == 2 and t.shape[0] != w_dim:
            layer_features = int(t.shape[0])

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
            img_resolution=img_resolution, img_channels=img_channels, z_dim=z_dim, w_dim=w_dim,
            c_dim=c_dim, channel_base=_as_int(channel_base, path, "channel_base"),
            channel_max=_as_int(channel_max, path, "channel_max"), num_mapping_layers=num_layers,
            mapping_lr_mul=lr_mul, embed_features=embed_features, layer_features=layer_features,
            conv_clamp=conv_clamp,
        ).validate("architecture")
    except ArchitectureError as e:
        raise CheckpointError(path, f"unsupported generator architecture: {e}") from None
    notes["w_avg_present"] = w_avg_present
    return cfg, notes


def _map_state(cfg: StyleGAN2Config, tensors: dict, notes: dict, path,
               expected: dict[str, tuple]) -> dict[str, torch.Tensor]:
    from ...ops import setup_filter

    ref_filter = setup_filter(list(cfg.resample_filter))
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
    and the problem) for anything that is not a readable StyleGAN2 skip generator.
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
    if _is_stylegan3(G):
        raise CheckpointError(path, _SG3_MESSAGE)
    cname = str(G.class_name)             # a short str or None (checked when recorded)
    if cname.rsplit(".", 1)[-1] != "Generator":
        raise CheckpointError(path, f"'{network}' is a {describe(G.class_name)}, not a StyleGAN2 Generator")

    tensors: dict[str, torch.Tensor] = {}
    records: dict[str, PersistentRecord] = {}
    try:
        _flatten(G, path, "", tensors, records, 0, set())
        cfg, notes = _build_config(G, records, tensors, path)
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
    if "fused_modconv_default" in G.module_src or "networks_stylegan2" in G.module_src:
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
