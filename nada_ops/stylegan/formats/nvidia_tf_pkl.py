"""Safe reader for NVIDIA's TensorFlow-era StyleGAN2 pickles.

The original StyleGAN2 release (NVlabs/stylegan2: FFHQ, LSUN car / cat / church / horse, all
config-f) and the TensorFlow stylegan2-ada publish ``pickle.dump((G, D, Gs))`` of three
``dnnlib.tflib.network.Network`` objects. Each is restored by ``Network.__setstate__(state)``
with ``state`` = version, name, ``static_kwargs`` (the build function's keyword arguments),
``components`` (``mapping`` / ``synthesis`` sub-networks), ``build_module_src`` (the SOURCE of
the module that builds the graph: TensorFlow's loader executes it) and ``variables``, a list of
(TensorFlow variable name, numpy array).

This reader never imports TensorFlow or runs that source: it unpickles with the pack's bounded
unpickler (:mod:`nada_ops.io.pickles`), whose allow-list here holds only numpy arrays built
from raw bytes in the file, plain containers and a recorder for the Network objects, and maps
the variables of ``Gs`` (the averaged generator) onto our
:class:`~nada_ops.stylegan.networks.Generator`:

- dense weights are stored [in, out] (ours [out, in]); conv weights [kh, kw, in, out] (ours
  [out, in, kh, kw]); the up-sampling convs' kernels are stored flipped (TensorFlow's transposed
  convolution), so they are flipped back;
- the style biases (``mod_bias``) are stored minus one (TensorFlow adds 1 in the graph);
- the constant noise maps are ``synthesis/noise<i>`` [1, 1, R, R], in layer order: index 0 for
  the 4x4 conv, then 2 per resolution (``2 log2(R) - 5`` and ``2 log2(R) - 4``);
- ``dlatent_avg`` is the average latent (w_avg); channel widths come from ``fmap_base`` (the
  channel base is twice TensorFlow's ``fmap_base``) and ``fmap_max``.

Architectures other than StyleGAN2's 'skip' generator (the 'orig' ToRGB_lod layout, resnet),
the original release's conditional ``LabelConcat`` mapping and unknown build arguments are
refused with a message naming the file and the problem.
"""
from __future__ import annotations

import math
import os
import pickle

import numpy as np
import torch

from ...io.errors import UntrustedFileError, describe
from ...io.numpy_files import NumpyArray, numpy_allow_list
from ...io.pickles import AllowList, BoundedUnpickler, global_name, latin1_bytes, run_unpickler
from ...io.torch_files import open_untrusted
from ..config import MAX_MAPPING_LAYERS, ArchitectureError, StyleGAN2Config
from . import CheckpointError, ReadResult, check_weights_fit

__all__ = ["read_nvidia_tf_pickle", "TFNetworkRecord", "FORMAT"]

FORMAT = "nvidia-tf-pkl"
_MAX_DEPTH = 8                      # G -> mapping / synthesis: 2 levels in real files
_MAX_VARIABLES = 10_000

#: static_kwargs of G_main (and of its build functions) that this reader understands, with the
#: values that our generator implements (None: any value, read below).
_KWARGS_ANY = {"num_channels", "resolution", "label_size", "latent_size", "dlatent_size", "mapping_layers",
               "fmap_base", "fmap_max", "mapping_lrmul", "mapping_fmaps", "label_fmaps", "resample_kernel",
               "conv_clamp", "num_fp16_res", "w_avg_beta", "truncation_psi", "truncation_cutoff",
               "truncation_psi_val", "truncation_cutoff_val", "style_mixing_prob", "dlatent_avg_beta",
               "is_template_graph", "components", "fused_modconv", "randomize_noise", "dtype"}
_KWARGS_FIXED = {"architecture": "skip", "nonlinearity": "lrelu", "mapping_nonlinearity": "lrelu",
                 "use_noise": True, "structure": ("auto", "fixed"), "fmap_decay": 1.0, "fmap_min": 1,
                 "normalize_latents": True, "use_pixelnorm": True}


class TFNetworkRecord:
    """What ``dnnlib.tflib.network.Network`` would have become, kept as inert data (its
    ``build_module_src`` is kept as text only: never executed, compiled or imported)."""

    state: dict = {}          # until BUILD sets this instance's own (NEWOBJ creates it empty)

    def __init__(self, *args):
        if args:
            raise pickle.UnpicklingError("dnnlib.tflib.network.Network called with arguments")
        self.state = {}

    def __setstate__(self, state):
        if type(state) is not dict:
            raise pickle.UnpicklingError(f"TensorFlow network state is {describe(state)}, expected a dict")
        self.state = state

    def __repr__(self):
        return f"<TFNetworkRecord {describe(self.state.get('name'))}>"


def _easydict(*args, **kwargs):
    if args or kwargs:
        raise pickle.UnpicklingError("dnnlib.EasyDict called with arguments")
    return {}


def _build_allow_list() -> AllowList:
    a = numpy_allow_list()
    a.call("dnnlib.tflib.network", "Network", TFNetworkRecord)
    a.new("dnnlib.tflib.network", "Network", TFNetworkRecord)
    a.setstate(TFNetworkRecord)
    a.call("_codecs", "encode", latin1_bytes)          # how protocol 2 stores bytes
    for mod in ("dnnlib", "dnnlib.util"):
        a.call(mod, "EasyDict", _easydict)
    return a


_ALLOWED = _build_allow_list()


class SafeTFUnpickler(BoundedUnpickler):
    def __init__(self, file, path, budget, size: int):
        super().__init__(file, path=path, budget=budget, size=size, what="the TensorFlow network pickle",
                         allow=_ALLOWED)

    def refuse_global(self, module, name):
        self.refuse(f"refuses to load global '{global_name(module, name)}': only numpy arrays, plain "
                    "containers and TensorFlow network records are allowed in a TensorFlow StyleGAN pickle "
                    "(loading anything else could run code stored in the file)")

    def persistent_load(self, pid):
        self.refuse("the pickle uses persistent ids, which TensorFlow network pickles never do")


def _unpickle(path):
    try:
        with open_untrusted(path) as (f, budget):
            if not f.read(1).startswith(b"\x80"):
                raise CheckpointError(path, "is not a binary pickle file (no pickle protocol header)")
            f.seek(0)
            return run_unpickler(SafeTFUnpickler(f, path, budget, budget.file_size)), budget.file_size
    except CheckpointError:
        raise
    except UntrustedFileError as e:
        raise CheckpointError(path, e.problem) from None
    except OSError as e:
        raise CheckpointError(path, f"cannot read file ({type(e).__name__}: {str(e)[:200]})") from None


def _collect(rec: TFNetworkRecord, path, prefix: str, out: dict, depth: int, seen: set) -> None:
    if depth > _MAX_DEPTH:
        raise CheckpointError(path, f"TensorFlow networks nested deeper than {_MAX_DEPTH} levels at '{prefix}'")
    if id(rec) in seen:
        raise CheckpointError(path, f"the network at '{prefix or '<root>'}' appears twice (shared or cyclic)")
    seen.add(id(rec))
    variables = rec.state.get("variables", [])
    if not isinstance(variables, (list, tuple)) or len(variables) > _MAX_VARIABLES:
        raise CheckpointError(path, f"'{prefix or '<root>'}' variables are {describe(variables)}, expected a list "
                                    "of (name, array) pairs")
    for item in variables:
        if not (isinstance(item, tuple) and len(item) == 2 and type(item[0]) is str and 0 < len(item[0]) <= 200):
            raise CheckpointError(path, f"'{prefix or '<root>'}' holds the variable {describe(item)}, expected a "
                                        "(name, array) pair")
        name, value = item
        if isinstance(value, NumpyArray):
            value = value.array
        elif isinstance(value, (np.floating, np.integer)):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            raise CheckpointError(path, f"variable '{prefix}{name}' is {describe(value)}, expected a numeric array")
        out[prefix + name] = value
    comps = rec.state.get("components", {})
    if not isinstance(comps, dict):
        raise CheckpointError(path, f"'{prefix or '<root>'}' components are {describe(comps)}, expected a dict")
    for name, sub in comps.items():
        if type(name) is not str or not 0 < len(name) <= 200 or "/" in name:
            raise CheckpointError(path, f"'{prefix or '<root>'}' has a component named {describe(name)}")
        if not isinstance(sub, TFNetworkRecord):
            raise CheckpointError(path, f"component '{prefix}{name}' is {describe(sub)}, not a TensorFlow network")
        _collect(sub, path, f"{prefix}{name}/", out, depth + 1, seen)


def _int(kw, key, default, path, lo=0, hi=1 << 20) -> int:
    v = kw.get(key, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
        raise CheckpointError(path, f"build argument {key}={describe(v)} is not an integer in {lo}..{hi}")
    return int(v)


def _config(kw: dict, path) -> StyleGAN2Config:
    for k in kw:
        if type(k) is not str:
            raise CheckpointError(path, f"build argument name {describe(k)} is not a string")
    unknown = sorted(k for k in kw if k not in _KWARGS_ANY and k not in _KWARGS_FIXED)
    if unknown:
        raise CheckpointError(path, f"unknown TensorFlow build argument(s) {unknown[:5]}: this reader knows the "
                                    "StyleGAN2 generator (G_main / G_synthesis_stylegan2) only")
    for k, want in _KWARGS_FIXED.items():
        if k in kw and kw[k] is not None:
            ok = kw[k] in want if isinstance(want, tuple) else kw[k] == want
            if not ok:
                raise CheckpointError(path, f"{k}={describe(kw[k])} is not supported (only {want!r}: the "
                                            "StyleGAN2 'skip' generator, config e/f)")
    rk = kw.get("resample_kernel") or [1, 3, 3, 1]
    if not isinstance(rk, (list, tuple)) or not 1 <= len(rk) <= 16 or \
            any(isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) for x in rk):
        raise CheckpointError(path, f"resample_kernel={describe(rk)} is not a short list of numbers")
    lrmul = kw.get("mapping_lrmul", 0.01)
    lrmul = 0.01 if lrmul is None else lrmul
    if isinstance(lrmul, bool) or not isinstance(lrmul, (int, float, np.floating)) or \
            not (math.isfinite(float(lrmul)) and 0 < float(lrmul) <= 100):
        raise CheckpointError(path, f"mapping_lrmul={describe(lrmul)} is not a positive number")
    clamp = kw.get("conv_clamp")
    if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, (int, float, np.number))
                              or not math.isfinite(float(clamp)) or float(clamp) <= 0):
        raise CheckpointError(path, f"conv_clamp={describe(clamp)} is not a positive number")
    w_dim = _int(kw, "dlatent_size", 512, path, 1, 1 << 16)
    c_dim = _int(kw, "label_size", 0, path, 0, 1 << 20)
    try:
        return StyleGAN2Config(
            img_resolution=_int(kw, "resolution", 1024, path, 4, 1 << 16),
            img_channels=_int(kw, "num_channels", 3, path, 1, 16),
            z_dim=_int(kw, "latent_size", 512, path, 1, 1 << 16), w_dim=w_dim, c_dim=c_dim,
            channel_base=2 * _int(kw, "fmap_base", 16384, path, 1, 1 << 24),
            channel_max=_int(kw, "fmap_max", 512, path, 1, 1 << 16),
            num_mapping_layers=_int(kw, "mapping_layers", 8, path, 1, MAX_MAPPING_LAYERS),
            mapping_lr_mul=float(lrmul),
            embed_features=(_int(kw, "label_fmaps", 0, path, 1, 1 << 16) if kw.get("label_fmaps") is not None
                            else None),
            layer_features=(_int(kw, "mapping_fmaps", 0, path, 1, 1 << 16) if kw.get("mapping_fmaps") is not None
                            else None),
            conv_clamp=None if clamp is None else float(clamp),
            resample_filter=tuple(float(x) for x in rk))
    except (ArchitectureError, ValueError, TypeError) as e:
        raise CheckpointError(path, f"unsupported architecture: {e}") from None


def _tf_layout(cfg: StyleGAN2Config) -> dict:
    """our state-dict key -> (TensorFlow variable name, conversion)."""
    dense = ("T",)
    conv = ("conv",)
    out = {"mapping.w_avg": ("dlatent_avg", None)}
    if cfg.c_dim:
        out["mapping.embed.weight"] = ("mapping/LabelEmbed/weight", dense)
        out["mapping.embed.bias"] = ("mapping/LabelEmbed/bias", None)
    for i in range(cfg.num_mapping_layers):
        out[f"mapping.fc{i}.weight"] = (f"mapping/Dense{i}/weight", dense)
        out[f"mapping.fc{i}.bias"] = (f"mapping/Dense{i}/bias", None)

    def layer(ours, tf, noise, up=False):
        out[f"{ours}.weight"] = (f"{tf}/weight", ("conv_up",) if up else conv)
        out[f"{ours}.bias"] = (f"{tf}/bias", None)
        out[f"{ours}.noise_strength"] = (f"{tf}/noise_strength", None)
        out[f"{ours}.noise_const"] = (f"synthesis/noise{noise}", ("noise",))
        out[f"{ours}.affine.weight"] = (f"{tf}/mod_weight", dense)
        out[f"{ours}.affine.bias"] = (f"{tf}/mod_bias", ("plus1",))
    for res in cfg.block_resolutions:
        b, s = f"synthesis.b{res}", f"synthesis/{res}x{res}"
        k = int(math.log2(res))
        if res == 4:
            out[f"{b}.const"] = ("synthesis/4x4/Const/const", ("const",))
            layer(f"{b}.conv1", f"{s}/Conv", 0)
        else:
            layer(f"{b}.conv0", f"{s}/Conv0_up", 2 * k - 5, up=True)
            layer(f"{b}.conv1", f"{s}/Conv1", 2 * k - 4)
        out[f"{b}.torgb.weight"] = (f"{s}/ToRGB/weight", conv)
        out[f"{b}.torgb.bias"] = (f"{s}/ToRGB/bias", None)
        out[f"{b}.torgb.affine.weight"] = (f"{s}/ToRGB/mod_weight", dense)
        out[f"{b}.torgb.affine.bias"] = (f"{s}/ToRGB/mod_bias", ("plus1",))
    return out


def _convert(a: np.ndarray, how, name: str, path) -> np.ndarray:
    if how is None:
        return a
    op = how[0]
    if op == "T":
        if a.ndim != 2:
            raise CheckpointError(path, f"variable '{name}' has shape {list(a.shape)}, expected a 2-d weight")
        return a.T
    if op in ("conv", "conv_up"):
        if a.ndim != 4:
            raise CheckpointError(path, f"variable '{name}' has shape {list(a.shape)}, expected a 4-d kernel")
        if op == "conv_up":
            a = a[::-1, ::-1]
        return a.transpose(3, 2, 0, 1)
    if op == "plus1":
        return a + np.asarray(1, dtype=a.dtype)
    if op in ("noise", "const"):
        if a.ndim != 4 or a.shape[0] != 1 or (op == "noise" and a.shape[1] != 1):
            raise CheckpointError(path, f"variable '{name}' has shape {list(a.shape)}, expected "
                                        f"{'[1, 1, R, R]' if op == 'noise' else '[1, C, 4, 4]'}")
        return a[0, 0] if op == "noise" else a[0]
    raise AssertionError(op)


def read_nvidia_tf_pickle(path) -> ReadResult:
    """Read ``Gs`` (the averaged generator) of a TensorFlow-era StyleGAN2 pickle. Never imports
    TensorFlow or executes code from the file; CheckpointError naming the file and the problem."""
    if os.path.isdir(os.fspath(path)):
        raise CheckpointError(path, "is a directory, expected a .pkl file")
    data, file_size = _unpickle(path)
    if not (isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetworkRecord) for n in data)):
        raise CheckpointError(path, f"holds {describe(data)}, expected the TensorFlow StyleGAN tuple (G, D, Gs)")
    Gs = data[2]
    del data
    version = Gs.state.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 4:
        raise CheckpointError(path, f"TensorFlow network pickle version {describe(version)} is too old (4 or newer "
                                    "is needed: the StyleGAN2 releases)")
    func = Gs.state.get("build_func_name")
    comps = Gs.state.get("components") if isinstance(Gs.state.get("components"), dict) else {}
    synth = comps.get("synthesis")
    synth_func = synth.state.get("build_func_name") if isinstance(synth, TFNetworkRecord) else None
    if func != "G_main" or synth_func not in (None, "G_synthesis_stylegan2"):
        raise CheckpointError(path, f"the generator is built by {describe(func)} / {describe(synth_func)}; only "
                                    "StyleGAN2's G_main with G_synthesis_stylegan2 is supported (StyleGAN 1 and the "
                                    "StyleGAN2 paper's configs a-d are not)")
    kw = Gs.state.get("static_kwargs") or {}
    if not isinstance(kw, dict):
        raise CheckpointError(path, f"static_kwargs is {describe(kw)}, expected a dict")
    cfg = _config(kw, path)
    params: dict[str, np.ndarray] = {}
    _collect(Gs, path, "", params, 0, set())
    if any(n.startswith("synthesis/ToRGB_lod") for n in params):
        raise CheckpointError(path, "this generator uses the 'orig' output layout (ToRGB_lod layers); only the "
                                    "StyleGAN2 'skip' generator is supported")
    if "mapping/LabelConcat/weight" in params:
        raise CheckpointError(path, "a conditional generator of the original StyleGAN2 release (LabelConcat) is "
                                    "not supported; stylegan2-ada's conditional models (LabelEmbed) are")
    present = sum(int(a.nbytes) for a in params.values())
    shapes = check_weights_fit(cfg, present, path, "the TensorFlow variables")
    sd: dict[str, torch.Tensor] = {}
    w_avg_known = True
    for ours, (tf, how) in _tf_layout(cfg).items():
        if tf not in params:
            if ours == "mapping.w_avg":
                w_avg_known = False
                continue
            raise CheckpointError(path, f"TensorFlow variable '{tf}' (for {ours}) is missing; the file does not "
                                        f"fit a {cfg.img_resolution}px StyleGAN2 generator")
        a = params[tf]
        if a.dtype.kind != "f":
            raise CheckpointError(path, f"variable '{tf}' has dtype {a.dtype}; weights must be floating point")
        a = _convert(a, how, tf, path)
        want = tuple(shapes[ours])
        if tuple(a.shape) != want:
            raise CheckpointError(path, f"variable '{tf}' gives {ours} the shape {list(a.shape)}, the architecture "
                                        f"in the file's build arguments expects {list(want)}")
        sd[ours] = torch.from_numpy(np.array(a, dtype=np.float32, order="C"))
    missing = [k for k in shapes if k not in sd and k != "mapping.w_avg"]
    if missing:
        raise CheckpointError(path, f"no TensorFlow variables for {missing[:5]}")
    if not w_avg_known:
        sd["mapping.w_avg"] = torch.zeros(shapes["mapping.w_avg"])
    prov = {"source_format": FORMAT, "tf_network": str(Gs.state.get("name"))[:100],
            "tf_build_func": str(Gs.state.get("build_func_name"))[:100], "file_bytes": file_size}
    return ReadResult(cfg=cfg, state_dict=sd, format=FORMAT, w_avg_in_checkpoint=w_avg_known, provenance=prov)
