"""Test-side writer of TensorFlow-era StyleGAN2 network pickles (the original NVlabs/stylegan2
release: stylegan2-ffhq-config-f.pkl, stylegan2-church-config-f.pkl, ...), without TensorFlow.

Such a file is ``pickle.dump((G, D, Gs))`` of three ``dnnlib.tflib.network.Network`` objects.
Each pickles as ``Network.__new__(Network)`` + BUILD with its ``__getstate__`` dict:
``version`` (4), ``name``, ``static_kwargs`` (the keyword arguments of the build function),
``components`` (name -> Network: ``mapping``, ``synthesis``), ``build_module_src`` (the SOURCE
CODE of the module defining the network, which TensorFlow's loader executes) and
``build_func_name``, and ``variables``: a list of (TF variable name, numpy array).

The variables are laid out the TensorFlow way (dense weights [in, out], conv weights
[kh, kw, in, out], up-sampling conv kernels flipped, style biases stored minus 1, noise maps
``noise<i>`` of shape [1, 1, R, R]); :func:`tf_variables` derives them from one of our
generators. ``build_module_src`` creates a marker file when executed, so a test can prove a
reader never executes it.
"""
from __future__ import annotations

import math
import pickle

import numpy as np

from writers.nvidia_pickle import Global, _Pickler as _NvidiaPickler, marker_module_src

NETWORK = Global("dnnlib.tflib.network", "Network")


class TFNetwork:
    def __init__(self, name: str, build_func_name: str, static_kwargs: dict, variables: list,
                 components: dict | None = None, module_src: str = "", version: int = 4):
        self.state = {"version": version, "name": name, "static_kwargs": dict(static_kwargs),
                      "components": dict(components or {}), "build_module_src": module_src,
                      "build_func_name": build_func_name, "variables": list(variables)}


class _Pickler(_NvidiaPickler):           # + raw globals and calls (Global, Call) for hostile variants
    dispatch = dict(_NvidiaPickler.dispatch)

    def _save_network(self, obj: TFNetwork):
        # what copyreg.__reduce_ex__ gives for a plain class at protocol >= 2: cls.__new__(cls) + BUILD
        self.save(NETWORK)
        self.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
        self.memoize(obj)
        self.save(obj.state)
        self.write(pickle.BUILD)

    dispatch[TFNetwork] = _save_network


def _np(t, transform=None):
    a = t.detach().cpu().double().numpy().astype(np.float32)
    return np.array(transform(a) if transform is not None else a, dtype=np.float32, order="C")   # 0-d stays 0-d


def tf_variables(G) -> tuple[list, list, list]:
    """(top-level, mapping, synthesis) variables of ``G`` in TensorFlow's names and layouts."""
    cfg, sd = G.cfg, G.state_dict()
    conv = lambda w: w.transpose(2, 3, 1, 0)                      # [out, in, kh, kw] -> [kh, kw, in, out]
    conv_up = lambda w: w.transpose(2, 3, 1, 0)[::-1, ::-1]        # and flipped (TF's transposed conv)
    dense = lambda w: w.T
    top = [("lod", np.float32(0.0).reshape(())), ("dlatent_avg", _np(sd["mapping.w_avg"]))]
    mapping = []
    if cfg.c_dim:
        mapping += [("LabelEmbed/weight", _np(sd["mapping.embed.weight"], dense)),
                    ("LabelEmbed/bias", _np(sd["mapping.embed.bias"]))]
    for i in range(cfg.num_mapping_layers):
        mapping += [(f"Dense{i}/weight", _np(sd[f"mapping.fc{i}.weight"], dense)),
                    (f"Dense{i}/bias", _np(sd[f"mapping.fc{i}.bias"]))]
    synthesis = []

    def layer(tf, ours, up=False):
        return [(f"{tf}/weight", _np(sd[f"{ours}.weight"], conv_up if up else conv)),
                (f"{tf}/mod_weight", _np(sd[f"{ours}.affine.weight"], dense)),
                (f"{tf}/mod_bias", _np(sd[f"{ours}.affine.bias"] - 1)),
                (f"{tf}/noise_strength", _np(sd[f"{ours}.noise_strength"])),
                (f"{tf}/bias", _np(sd[f"{ours}.bias"]))]

    def torgb(tf, ours):
        return [(f"{tf}/weight", _np(sd[f"{ours}.weight"], conv)),
                (f"{tf}/mod_weight", _np(sd[f"{ours}.affine.weight"], dense)),
                (f"{tf}/mod_bias", _np(sd[f"{ours}.affine.bias"] - 1)),
                (f"{tf}/bias", _np(sd[f"{ours}.bias"]))]
    for res in cfg.block_resolutions:
        b = f"synthesis.b{res}"
        k = int(math.log2(res))
        if res == 4:
            synthesis.append(("noise0", _np(sd[f"{b}.conv1.noise_const"]).reshape(1, 1, 4, 4)))
            synthesis.append(("4x4/Const/const", _np(sd[f"{b}.const"])[None]))
            synthesis += layer("4x4/Conv", f"{b}.conv1")
        else:
            synthesis.append((f"noise{2 * k - 5}", _np(sd[f"{b}.conv0.noise_const"]).reshape(1, 1, res, res)))
            synthesis.append((f"noise{2 * k - 4}", _np(sd[f"{b}.conv1.noise_const"]).reshape(1, 1, res, res)))
            synthesis += layer(f"{res}x{res}/Conv0_up", f"{b}.conv0", up=True)
            synthesis += layer(f"{res}x{res}/Conv1", f"{b}.conv1")
        synthesis += torgb(f"{res}x{res}/ToRGB", f"{b}.torgb")
    return top, mapping, synthesis


def tf_static_kwargs(cfg, **extra) -> dict:
    kw = dict(num_channels=cfg.img_channels, resolution=cfg.img_resolution, label_size=cfg.c_dim,
              latent_size=cfg.z_dim, dlatent_size=cfg.w_dim, mapping_layers=cfg.num_mapping_layers,
              fmap_base=cfg.channel_base // 2, fmap_max=cfg.channel_max)
    kw.update(extra)
    return kw


def write_tf_stylegan2_pickle(G, path, marker_path, *, protocol: int = 4, static_kwargs: dict | None = None,
                              drop: tuple = (), extra_variables: tuple = (), version: int = 4,
                              build_func: str = "G_main") -> str:
    """Write ``G`` as a TensorFlow-era StyleGAN2 pickle: the tuple (G, D, Gs) (G and Gs hold the
    same weights here; a tiny stand-in D). ``drop`` removes TF variables by full name
    (``synthesis/8x8/Conv1/bias``); ``extra_variables`` adds (full name, array) pairs."""
    src = marker_module_src(marker_path)
    top, mapping, synthesis = tf_variables(G)
    groups = {"": top, "mapping/": mapping, "synthesis/": synthesis}
    for prefix in groups:
        groups[prefix] = [(n, v) for n, v in groups[prefix] if prefix + n not in drop]
    for full, value in extra_variables:
        prefix = full.split("/")[0] + "/" if full.split("/")[0] in ("mapping", "synthesis") else ""
        groups[prefix].append((full[len(prefix):], value))
    kw = static_kwargs if static_kwargs is not None else tf_static_kwargs(G.cfg)

    def generator(name):
        comps = {"mapping": TFNetwork(f"{name}_mapping", "G_mapping", {}, groups["mapping/"], module_src=src,
                                      version=version),
                 "synthesis": TFNetwork(f"{name}_synthesis", "G_synthesis_stylegan2", {}, groups["synthesis/"],
                                        module_src=src, version=version)}
        return TFNetwork(name, build_func, kw, groups[""], comps, module_src=src, version=version)
    D = TFNetwork("D", "D_stylegan2", {"resolution": G.cfg.img_resolution},
                  [("Output/weight", np.zeros((4, 1), np.float32))], module_src=src, version=version)
    with open(path, "wb") as f:
        _Pickler(f, protocol=protocol).dump((generator("G"), D, generator("Gs")))
    return str(path)
