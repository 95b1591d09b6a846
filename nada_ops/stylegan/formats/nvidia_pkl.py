"""Safe reader for NVIDIA's PyTorch StyleGAN2 pickles (stylegan2-ada-pytorch, stylegan3 repo).

NVIDIA's network pickles store each network as a "persistent object": the pickle calls
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` carries the
class name, the full source code of the module that defined it (``module_src``) and the
object's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, ...).
NVIDIA's own loader ``exec``s ``module_src``, i.e. loading such a file runs code taken from
the file.  This reader never does: it unpickles with an explicit allow-list of globals
(tensor/storage rebuilds, ``OrderedDict``, numpy scalar/array reconstruction, ``set``) in
which the persistence hook is a stub that only *records* ``meta``, and everything else is
refused.  The recorded state tree is then mapped onto our own
:class:`~nada_ops.stylegan.networks.Generator` by parameter name, and every tensor is
checked against the shapes our network expects.
"""
from __future__ import annotations

import collections
import io
import math
import os
import pickle
import re
import warnings

import numpy as np
import torch

from ..config import ArchitectureError, StyleGAN2Config
from . import CheckpointError, ReadResult

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
        if not isinstance(meta, dict):
            raise pickle.UnpicklingError(
                f"persistent object description is a {type(meta).__name__}, expected a dict")
        self.kind = meta.get("type")
        self.version = meta.get("version")
        self.class_name = meta.get("class_name")
        src = meta.get("module_src")
        self.module_src = src if isinstance(src, str) else ""
        state = meta.get("state")
        self.state = state if isinstance(state, dict) else {}

    def __setstate__(self, state):          # a BUILD after the call: keep it as data
        if isinstance(state, dict):
            self.state.update(state)

    def __repr__(self):
        return f"<PersistentRecord {self.class_name!r}>"


def _record_persistent_obj(meta):
    return PersistentRecord(meta)


class _PickledEasyDict(dict):
    """Stand-in for ``dnnlib.EasyDict``: a plain dict (instances keep a ``__dict__`` so
    that a BUILD opcode with an empty state is harmless)."""


def _load_storage_from_bytes(b):
    """Stand-in for ``torch.storage._load_from_bytes``: the bytes are a legacy
    ``torch.save`` of one storage; read them with torch's weights-only unpickler."""
    if not isinstance(b, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"tensor storage payload is a {type(b).__name__}, expected bytes")
    with warnings.catch_warnings():       # torch's notes about odd protocols in corrupt files
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")


def _latin1_bytes(text, encoding="latin1"):
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use to store bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unexpected _codecs.encode call in the pickle")
    return text.encode("latin1")


def _build_allow_list() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {}
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
                 "_rebuild_parameter", "_rebuild_parameter_with_state"):
        fn = getattr(torch._utils, name, None)
        if fn is not None:
            allowed[("torch._utils", name)] = fn
    allowed[("torch.storage", "_load_from_bytes")] = _load_storage_from_bytes
    allowed[("torch", "Size")] = torch.Size
    for name in ("float32", "float", "float64", "double", "float16", "half", "bfloat16", "uint8",
                 "int8", "int16", "short", "int32", "int", "int64", "long", "bool",
                 "complex64", "cfloat", "complex128", "cdouble"):
        obj = getattr(torch, name, None)
        if isinstance(obj, torch.dtype):
            allowed[("torch", name)] = obj
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed[("_codecs", "encode")] = _latin1_bytes
    for mod in ("builtins", "__builtin__"):
        allowed[(mod, "set")] = set
        allowed[(mod, "frozenset")] = frozenset
    # numpy scalar / array / dtype reconstruction (numpy 1.x and 2.x module names).
    try:
        from numpy._core import multiarray as _ma     # numpy >= 2
    except ImportError:                                # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as _ma
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _ma._reconstruct
        allowed[(mod, "scalar")] = _ma.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # NVIDIA's persistence hook -> recorder; dnnlib.EasyDict -> dict.
    allowed[("torch_utils.persistence", "_reconstruct_persistent_obj")] = _record_persistent_obj
    allowed[("dnnlib", "EasyDict")] = _PickledEasyDict
    allowed[("dnnlib.util", "EasyDict")] = _PickledEasyDict
    return allowed


_ALLOWED = None


def _allowed() -> dict:
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = _build_allow_list()
    return _ALLOWED


class SafeNvidiaUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and never imports anything
    named in the file."""

    def __init__(self, file, path):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        obj = _allowed().get((module, name))
        if obj is not None:
            return obj
        full = f"{module}.{name}"
        if module.startswith("dnnlib.tflib") or module == "dnnlib.tflib":
            raise CheckpointError(
                self._path,
                f"this is a TensorFlow-era StyleGAN pickle (it references '{full}'); it cannot "
                "be read directly. Convert it to a PyTorch pickle first with NVIDIA's legacy.py "
                "(stylegan2-ada-pytorch: python legacy.py --source=OLD.pkl --dest=NEW.pkl), "
                "then load the converted file")
        raise CheckpointError(
            self._path,
            f"refuses to load global '{full}': only tensors, plain containers and NVIDIA's "
            "recorded network state are allowed in a model pickle (loading anything else "
            "could run code stored in the file)")

    def persistent_load(self, pid):
        raise CheckpointError(
            self._path,
            "the pickle uses persistent ids (is this a torch.save file rather than an NVIDIA "
            "network pickle?)")


# ----------------------------------------------------------------------------- loading
def _short(e: BaseException, limit: int = 300) -> str:
    s = f"{type(e).__name__}: {e}"
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _unpickle(path) -> object:
    name = os.fspath(path)
    try:
        size = os.path.getsize(name)
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    except OSError as e:
        raise CheckpointError(path, f"cannot access file ({_short(e)})") from None
    if os.path.isdir(name):
        raise CheckpointError(path, "is a directory, expected an NVIDIA .pkl file")
    if size == 0:
        raise CheckpointError(path, "file is empty")
    try:
        with open(name, "rb") as f:
            head = f.read(4)
            if head.startswith(b"PK\x03\x04"):
                raise CheckpointError(
                    path, "is a zip archive (a torch.save .pt file?), not an NVIDIA network pickle")
            if not head.startswith(b"\x80"):
                raise CheckpointError(path, "is not a binary pickle file (no pickle protocol header)")
            f.seek(0)
            return SafeNvidiaUnpickler(f, path).load()
    except CheckpointError:
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        text = str(e)
        if isinstance(e, EOFError) or "truncated" in text:
            raise CheckpointError(path, f"file is truncated or corrupt ({_short(e)})") from None
        raise CheckpointError(path, f"not a readable NVIDIA pickle ({_short(e)})") from None
    except OSError as e:
        raise CheckpointError(path, f"cannot read file ({_short(e)})") from None
    except Exception as e:                       # noqa: BLE001 - any decoder failure
        raise CheckpointError(path, f"corrupt or unsupported pickle ({_short(e)})") from None


# ------------------------------------------------------------------------ state handling
def _modules_of(rec: PersistentRecord, path, where: str) -> dict:
    mods = rec.state.get("_modules") or {}
    if not isinstance(mods, dict):
        raise CheckpointError(path, f"{where}: '_modules' is a {type(mods).__name__}, expected a dict")
    return mods


def _flatten(rec: PersistentRecord, path, prefix: str, out: dict, records: dict, depth: int, seen: set):
    if depth > _MAX_DEPTH:
        raise CheckpointError(path, f"network nesting deeper than {_MAX_DEPTH} levels at '{prefix}'")
    if id(rec) in seen:
        raise CheckpointError(path, f"network object at '{prefix or '<root>'}' appears more than once "
                                    "(shared or cyclic structure)")
    seen.add(id(rec))
    records[prefix[:-1]] = rec
    for kind in ("_parameters", "_buffers"):
        d = rec.state.get(kind) or {}
        if not isinstance(d, dict):
            raise CheckpointError(path, f"'{prefix or '<root>'}' {kind} is a {type(d).__name__}, expected a dict")
        for k, v in d.items():
            if v is None:
                continue
            if not isinstance(v, torch.Tensor):
                raise CheckpointError(path, f"'{prefix}{k}' is a {type(v).__name__}, expected a tensor")
            out[f"{prefix}{k}"] = v
    for name, sub in _modules_of(rec, path, prefix or "<root>").items():
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
        raise CheckpointError(path, f"{what} is {v!r}, expected an integer")
    return int(v)


def _as_float_or_none(v, path, what):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise CheckpointError(path, f"{what} is {v!r}, expected a number or None")
    return float(v)


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
    def norm(v):
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            return float(v)
        return repr(v)
    distinct = {norm(v) for v in values.values()}
    if len(distinct) > 1:
        listing = ", ".join(f"{k}={v!r}" for k, v in list(values.items())[:6])
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
    if num_layers < 1:
        raise CheckpointError(path, f"mapping num_layers is {num_layers}")
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


def _map_state(cfg: StyleGAN2Config, tensors: dict, notes: dict, path) -> dict[str, torch.Tensor]:
    from ..networks import Generator
    from ...ops import setup_filter

    with torch.device("meta"):
        expected = Generator(cfg).state_dict()
    ref_filter = setup_filter(list(cfg.resample_filter))
    out: dict[str, torch.Tensor] = {}
    no_noise = set(notes.get("layers_without_noise") or ())
    for key, ref in expected.items():
        t = tensors.get(key)
        if t is None:
            layer = key.rsplit(".", 1)[0]
            if key == "mapping.w_avg" and not notes.get("w_avg_present"):
                t = torch.zeros(ref.shape)
            elif layer in no_noise and key.endswith((".noise_strength", ".noise_const")):
                t = torch.zeros(ref.shape)     # a layer without noise == zero noise strength
            else:
                raise CheckpointError(path, f"missing tensor '{key}' (expected shape {list(ref.shape)})")
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(
                path, f"tensor '{key}' has shape {list(t.shape)}, expected {list(ref.shape)} for "
                      f"{cfg.img_resolution}px, channel_base={cfg.channel_base}, channel_max={cfg.channel_max}")
        if not t.is_floating_point():
            raise CheckpointError(path, f"tensor '{key}' has dtype {t.dtype}, expected a float tensor")
        out[key] = t.detach().to(dtype=torch.float32, memory_format=torch.contiguous_format).clone()
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
    if isinstance(v, (str, bool, int, float)) or v is None:
        return v
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if depth < 3 and isinstance(v, (list, tuple)):
        return [_jsonable(x, depth + 1) for x in v]
    if depth < 3 and isinstance(v, dict):
        return {str(k): _jsonable(x, depth + 1) for k, x in v.items()}
    return repr(v)[:80]


def _describe(top) -> str:
    if isinstance(top, PersistentRecord):
        return f"a single {top.class_name!r} network"
    return f"an object of type {type(top).__name__}"


# ----------------------------------------------------------------------------- public API
def read_nvidia_pickle(path, network: str = "G_ema") -> ReadResult:
    """Read one generator (default ``G_ema``) from an NVIDIA PyTorch network pickle.

    Never executes code from the file. Raises :class:`CheckpointError` (naming the file
    and the problem) for anything that is not a readable StyleGAN2 skip generator.
    """
    top = _unpickle(path)
    other_keys: list[str] = []
    if isinstance(top, dict):
        keys = [k for k in top if isinstance(k, str)]
        if network not in top:
            hint = ""
            if network == "G_ema" and "G" in top:
                hint = "; pass network='G' to read the non-averaged generator"
            raise CheckpointError(
                path, f"the pickle has no '{network}' network (it holds {sorted(keys)}){hint}")
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
        raise CheckpointError(path, f"'{network}' has persistent object type {G.kind!r}, expected 'class'")
    if _is_stylegan3(G):
        raise CheckpointError(path, _SG3_MESSAGE)
    cname = str(G.class_name)
    if cname.rsplit(".", 1)[-1] != "Generator":
        raise CheckpointError(path, f"'{network}' is a {cname!r}, not a StyleGAN2 Generator")

    tensors: dict[str, torch.Tensor] = {}
    records: dict[str, PersistentRecord] = {}
    try:
        _flatten(G, path, "", tensors, records, 0, set())
        cfg, notes = _build_config(G, records, tensors, path)
        state = _map_state(cfg, tensors, notes, path)
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
