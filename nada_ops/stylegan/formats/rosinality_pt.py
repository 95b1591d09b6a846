"""rosinality stylegan2-pytorch ``.pt`` checkpoints (the format StyleGAN-NADA trains and saves).

A file is a ``torch.save`` dict.  The generator lives under ``g_ema`` (rosinality's
train.py also stores ``g``, ``d``, optimizer states, ``args`` (an argparse Namespace) and
``ada_aug_p``; StyleGAN-NADA's train.py stores only ``g_ema`` and ``g_optim``; converted
NVIDIA models carry ``latent_avg``).  Files are read with the pack's bounded torch-file
reader (:func:`nada_ops.io.torch_files.read_torch_file`: what ``weights_only`` allows, with
every tensor checked against the bytes behind it and bounded unpickling cost): no code from
the file is ever run.  The only extra global allowed is ``argparse.Namespace``.

Key layout of a rosinality generator state dict and what it becomes here:

=====================================  =======================================  ==============
rosinality                              ours                                      reshape
=====================================  =======================================  ==============
style.{i}.weight / bias  (i = 1..n)     mapping.fc{i-1}.weight / bias              --
input.input [1,C,4,4]                   synthesis.b4.const [C,4,4]                 drop dim 0
conv1.*                                 synthesis.b4.conv1.*                       (see layers)
to_rgb1.*                               synthesis.b4.torgb.*
convs.{2k} / convs.{2k+1}               synthesis.b{2^(k+3)}.conv0 / conv1
to_rgbs.{k}                             synthesis.b{2^(k+3)}.torgb
noises.noise_{i} [1,1,r,r]              i-th noise layer (b4.conv1, b8.conv0,      drop dims 0,1
                                        b8.conv1, b16.conv0, ...).noise_const
latent_avg (top level, optional)        mapping.w_avg
=====================================  =======================================  ==============

Per styled conv: ``conv.weight [1,O,I,k,k] -> weight [O,I,k,k]``,
``conv.modulation.weight/bias -> affine.weight/bias``, ``noise.weight [1] -> noise_strength []``,
``activate.bias -> bias``.  Per ToRGB: ``conv.weight [1,3,I,1,1] -> weight [3,I,1,1]``,
``conv.modulation.* -> affine.*``, ``bias [1,3,1,1] -> bias [3]``.  The blur kernels
(``convs.{2k}.conv.blur.kernel``, ``to_rgbs.{k}.upsample.kernel``) are derived from the
resampling filter; they are checked, not stored.

Both networks keep weights unscaled (equalized learning rate) with the same runtime gains,
so every tensor maps by a pure reshape.  The mapping learning-rate multiplier is not stored
in the state dict: rosinality's default 0.01 is assumed unless ``args.lr_mlp`` says otherwise.
"""
from __future__ import annotations

import argparse
import math
import os
import re

import torch

from ...fileio import atomic_write
from ...io.errors import UntrustedFileError, describe
from ...io.pickles import AllowList
from ...io.tensors import FLOAT_DTYPES, float32_copy
from ...io.torch_files import read_torch_file
from ..config import ArchitectureError, StyleGAN2Config
from ..networks import Generator
from ...ops import setup_filter
from . import CheckpointError, ReadResult, check_weights_fit

FORMAT = "rosinality-pt"
ROSINALITY_DEFAULT_LR_MLP = 0.01

# Globals a real file may contain beyond what weights_only allows by default.
ALLOWED_EXTRA_GLOBALS = (argparse.Namespace,)

_STYLE_RE = re.compile(r"^style\.(\d{1,6})\.(weight|bias)$")
_TORGB_RE = re.compile(r"^to_rgbs\.(\d{1,6})\.")
_CONVS_RE = re.compile(r"^convs\.(\d{1,6})\.")
_NOISE_RE = re.compile(r"^noises\.noise_(\d{1,6})$")
#: to_rgbs.0 .. to_rgbs.7: 8 upsampling blocks = 1024 px, the largest supported resolution
_MAX_UP_BLOCKS = 8
_DERIVED_RE = re.compile(r"^(convs\.(\d+)\.conv\.blur\.kernel|to_rgbs\.(\d+)\.upsample\.kernel)$")


# --------------------------------------------------------------------------- key table
def _layer_pairs(cfg: StyleGAN2Config) -> list[tuple[str, str, str]]:
    """(our module prefix, rosinality module prefix, kind) for every synthesis layer."""
    out = [("synthesis.b4.conv1", "conv1", "conv"), ("synthesis.b4.torgb", "to_rgb1", "torgb")]
    for k, res in enumerate(cfg.block_resolutions[1:]):
        out.append((f"synthesis.b{res}.conv0", f"convs.{2 * k}", "conv"))
        out.append((f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}", "conv"))
        out.append((f"synthesis.b{res}.torgb", f"to_rgbs.{k}", "torgb"))
    return out


def _noise_layer_names(cfg: StyleGAN2Config) -> list[str]:
    """Our noise layers in rosinality's ``noises.noise_{i}`` order (= forward order)."""
    names = ["synthesis.b4.conv1"]
    for res in cfg.block_resolutions[1:]:
        names += [f"synthesis.b{res}.conv0", f"synthesis.b{res}.conv1"]
    return names


def _reference_shapes(cfg: StyleGAN2Config) -> dict[str, tuple]:
    """Shapes of ``Generator(cfg).state_dict()`` (built on the meta device: no memory)."""
    try:
        with torch.device("meta"):
            G = Generator(cfg)
    except Exception:  # pragma: no cover - meta device unsupported by some op
        G = Generator(cfg)
    return {k: tuple(v.shape) for k, v in G.state_dict().items()}


def key_table(cfg: StyleGAN2Config) -> list[tuple[str, str, tuple, tuple]]:
    """[(our key, rosinality key, our shape, rosinality shape)] for every tensor of
    ``Generator(cfg).state_dict()`` except ``mapping.w_avg``; each entry converts by reshape."""
    ours = _reference_shapes(cfg)
    table: list[tuple[str, str, tuple, tuple]] = []

    def add(our_key, rosi_key, rosi_shape):
        table.append((our_key, rosi_key, ours[our_key], tuple(rosi_shape)))

    for i in range(cfg.num_mapping_layers):
        for p in ("weight", "bias"):
            k = f"mapping.fc{i}.{p}"
            add(k, f"style.{i + 1}.{p}", ours[k])
    add("synthesis.b4.const", "input.input", (1,) + ours["synthesis.b4.const"])
    for our, rosi, kind in _layer_pairs(cfg):
        add(f"{our}.weight", f"{rosi}.conv.weight", (1,) + ours[f"{our}.weight"])
        add(f"{our}.affine.weight", f"{rosi}.conv.modulation.weight", ours[f"{our}.affine.weight"])
        add(f"{our}.affine.bias", f"{rosi}.conv.modulation.bias", ours[f"{our}.affine.bias"])
        if kind == "conv":
            add(f"{our}.noise_strength", f"{rosi}.noise.weight", (1,))
            add(f"{our}.bias", f"{rosi}.activate.bias", ours[f"{our}.bias"])
        else:
            add(f"{our}.bias", f"{rosi}.bias", (1,) + ours[f"{our}.bias"] + (1, 1))
    for i, our in enumerate(_noise_layer_names(cfg)):
        add(f"{our}.noise_const", f"noises.noise_{i}", (1, 1) + ours[f"{our}.noise_const"])

    covered = {t[0] for t in table} | {"mapping.w_avg"}
    missing = sorted(set(ours) - covered)
    extra = sorted(covered - set(ours))
    if missing or extra:  # pragma: no cover - guards against networks.py drifting
        raise RuntimeError(f"rosinality key table out of date: uncovered {missing}, unknown {extra}")
    for our_key, _, our_shape, rosi_shape in table:
        if math.prod(rosi_shape) != math.prod(our_shape):  # pragma: no cover
            raise RuntimeError(f"rosinality key table: size mismatch for {our_key}")
    return table


def _derived_kernels(cfg: StyleGAN2Config) -> dict[str, torch.Tensor]:
    """rosinality's persistent blur-kernel buffers (2D filter times up^2 = 4)."""
    f = setup_filter(list(cfg.resample_filter))
    if f.ndim == 1:
        f = f.ger(f)
    kern = (f * 4).contiguous()
    out = {}
    for k in range(len(cfg.block_resolutions) - 1):
        out[f"convs.{2 * k}.conv.blur.kernel"] = kern.clone()
        out[f"to_rgbs.{k}.upsample.kernel"] = kern.clone()
    return out


# --------------------------------------------------------------------------- loading
_ALLOW = AllowList()
for _cls in ALLOWED_EXTRA_GLOBALS:     # created empty (NEWOBJ), attributes filled by BUILD
    _ALLOW.new(_cls.__module__, _cls.__qualname__, _cls)


def _safe_load(path: str):
    try:
        return read_torch_file(path, allow=_ALLOW, what="the checkpoint")
    except UntrustedFileError as e:
        problem = e.problem
        if "refusing to load global" in problem:
            problem += "; only tensors, plain containers and argparse.Namespace are accepted, nothing from " \
                       "the file is executed"
        raise CheckpointError(path, problem) from None


def _looks_like_generator(d) -> bool:
    return isinstance(d, dict) and "input.input" in d and any(
        isinstance(k, str) and k.startswith("style.") for k in d)


def _strip_module_prefix(sd: dict) -> dict:
    keys = list(sd)
    if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _args_summary(args) -> dict:
    """JSON-serialisable subset of a saved argparse Namespace."""
    out = {}
    for k, v in sorted(vars(args).items())[:200]:
        if type(v) is str:
            out[k] = v[:500]
        elif type(v) in (bool, float) or v is None or (type(v) is int and v.bit_length() <= 64):
            out[k] = v
    return out


def _get(sd, path, key):
    if key not in sd:
        raise CheckpointError(path, f"generator state dict has no {key!r}")
    t = sd[key]
    if not isinstance(t, torch.Tensor):
        raise CheckpointError(path, f"{key!r} is a {type(t).__name__}, expected a tensor")
    return t


def _infer_config(sd: dict, path: str, lr_mul: float, notes: list) -> StyleGAN2Config:
    # Mapping network.
    style_idx = sorted({int(m.group(1)) for k in sd if isinstance(k, str) and (m := _STYLE_RE.match(k))})
    if not style_idx:
        raise CheckpointError(path, "generator state dict has no mapping layers ('style.1.weight', ...)")
    n_mlp = len(style_idx)
    if style_idx != list(range(1, n_mlp + 1)):
        raise CheckpointError(path, f"mapping layers are not numbered style.1..style.{n_mlp}: found {style_idx}")
    first = _get(sd, path, "style.1.weight")
    last = _get(sd, path, f"style.{n_mlp}.weight")
    if first.ndim != 2 or last.ndim != 2:
        raise CheckpointError(path, "'style.N.weight' tensors must be 2-D")
    z_dim, hidden, w_dim = int(first.shape[1]), int(first.shape[0]), int(last.shape[0])

    # Synthesis: resolution from the number of ToRGB layers (one per resolution above 4).
    rgb_idx = sorted({int(m.group(1)) for k in sd if isinstance(k, str) and (m := _TORGB_RE.match(k))})
    conv_idx = sorted({int(m.group(1)) for k in sd if isinstance(k, str) and (m := _CONVS_RE.match(k))})
    n_up = len(rgb_idx)
    if n_up > _MAX_UP_BLOCKS:
        raise CheckpointError(path, f"{n_up} ToRGB layers imply a resolution of 2^{n_up + 2} px; at most 1024 px "
                                    "is supported")
    if rgb_idx != list(range(n_up)):
        raise CheckpointError(path, f"ToRGB layers are not numbered to_rgbs.0..to_rgbs.{n_up - 1}: found {rgb_idx}")
    if conv_idx != list(range(2 * n_up)):
        raise CheckpointError(path, f"expected convs.0..convs.{2 * n_up - 1} for {n_up} ToRGB layers, "
                                    f"found conv indices {conv_idx}")
    resolution = 2 ** (n_up + 2)

    const = _get(sd, path, "input.input")
    if const.ndim != 4 or const.shape[0] != 1 or tuple(const.shape[2:]) != (4, 4):
        raise CheckpointError(path, f"'input.input' has shape {tuple(const.shape)}, expected [1, C, 4, 4]")
    rgb = _get(sd, path, "to_rgb1.conv.weight")
    if rgb.ndim != 5:
        raise CheckpointError(path, f"'to_rgb1.conv.weight' has shape {tuple(rgb.shape)}, expected [1, 3, C, 1, 1]")
    img_channels = int(rgb.shape[1])

    # Channels per resolution -> channel_base / channel_max.
    chans = {4: (int(const.shape[1]), "input.input")}
    for k in range(n_up):
        key = f"convs.{2 * k}.conv.weight"
        w = _get(sd, path, key)
        if w.ndim != 5:
            raise CheckpointError(path, f"{key!r} has shape {tuple(w.shape)}, expected [1, O, I, 3, 3]")
        chans[2 ** (k + 3)] = (int(w.shape[1]), key)
    channel_max = chans[4][0]
    channel_base = chans[resolution][0] * resolution
    for res, (c, key) in chans.items():
        if min(channel_base // res, channel_max) != c:
            layout = ", ".join(f"{r}:{cc}" for r, (cc, _) in sorted(chans.items()))
            raise CheckpointError(
                path, f"{key!r}: {c} channels at {res}px do not follow the layout "
                      f"min(channel_base/res, channel_max) (channels found: {layout}); "
                      "this channel layout is not supported")
    if all(c == channel_max for c, _ in chans.values()) and resolution > 4:
        notes.append(f"every resolution has {channel_max} channels: channel_base={channel_base} is the "
                     "smallest value consistent with the weights (the architecture is the same for any larger one)")

    try:
        cfg = StyleGAN2Config(
            img_resolution=resolution, img_channels=img_channels, z_dim=z_dim, w_dim=w_dim,
            channel_base=channel_base, channel_max=channel_max, num_mapping_layers=n_mlp,
            mapping_lr_mul=lr_mul, layer_features=None if hidden == w_dim else hidden, conv_clamp=None,
        ).validate(f"{path}: inferred architecture")
    except ArchitectureError as e:
        raise CheckpointError(path, str(e).split(": ", 1)[-1]) from None
    return cfg


def read_rosinality(path, key: str = "g_ema") -> ReadResult:
    """Read a rosinality / StyleGAN-NADA ``.pt`` file (or a bare generator state dict)."""
    path = os.fspath(path)
    obj = _safe_load(path)
    notes: list[str] = []
    prov: dict = {"source_format": FORMAT}

    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict saved with torch.save, found a {type(obj).__name__}")
    if _looks_like_generator(obj):
        sd, used_key, top = obj, None, None
        notes.append("the file is a bare generator state dict (no 'g_ema' wrapper)")
    else:
        top = obj
        used_key = key
        if key not in obj and key == "g_ema" and _looks_like_generator(obj.get("g")):
            used_key = "g"
            notes.append("the file has no 'g_ema' (EMA generator); the non-averaged training "
                         "generator 'g' was used instead")
        if used_key not in obj:
            found = ", ".join(describe(k, 60) for k in list(obj)[:12])
            raise CheckpointError(path, f"no generator {key!r} in the file (top-level keys: {found or 'none'}); "
                                        "expected a rosinality/StyleGAN-NADA checkpoint")
        sd = obj[used_key]
        if not isinstance(sd, dict):
            raise CheckpointError(path, f"{used_key!r} is a {type(sd).__name__}, expected a state dict")
    sd = _strip_module_prefix(sd)
    prov["source_key"] = used_key

    # Mapping learning-rate multiplier: not stored in the weights.
    lr_mul = ROSINALITY_DEFAULT_LR_MLP
    lr_src = "assumed rosinality default (not stored in the checkpoint)"
    args = top.get("args") if top is not None else None
    if isinstance(args, argparse.Namespace):
        prov["args"] = _args_summary(args)
        v = getattr(args, "lr_mlp", None)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            lr_mul, lr_src = float(v), "args.lr_mlp"
    prov["mapping_lr_mul"] = lr_mul
    prov["mapping_lr_mul_source"] = lr_src

    cfg = _infer_config(sd, path, lr_mul, notes)
    # The inferred architecture must fit in the tensor data really present.
    present = sum(t.numel() * t.element_size() for t in sd.values() if isinstance(t, torch.Tensor))
    check_weights_fit(cfg, min(present, os.path.getsize(path)), path, "the generator in the file")

    # Map every tensor, checking names and shapes.
    table = key_table(cfg)
    expected_rosi = {t[1] for t in table}
    derived = _derived_kernels(cfg)
    for k in sd:
        if not isinstance(k, str):
            raise CheckpointError(path, f"unexpected non-string key {describe(k)} in the generator state dict")
        if k not in expected_rosi and k not in derived:
            raise CheckpointError(path, f"unexpected tensor {describe(k, 120)} for the inferred architecture "
                                        f"({cfg.img_resolution}px, {cfg.num_mapping_layers} mapping layers)")
    for k, ref in derived.items():
        if k not in sd:
            continue  # derived buffer: its absence is harmless
        t = sd[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(ref.shape) or \
                not torch.allclose(t.float(), ref, atol=1e-6):
            raise CheckpointError(path, f"{k!r} is not the [1,3,3,1] resampling filter; models with "
                                        "another blur kernel are not supported")
    out: dict[str, torch.Tensor] = {}
    for our_key, rosi_key, our_shape, rosi_shape in table:
        if rosi_key not in sd:
            raise CheckpointError(path, f"missing tensor {rosi_key!r} (needed for {our_key})")
        t = sd[rosi_key]
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(path, f"{rosi_key!r} is a {type(t).__name__}, expected a tensor")
        if tuple(t.shape) != rosi_shape:
            raise CheckpointError(path, f"{rosi_key!r} has shape {list(t.shape)}, expected {list(rosi_shape)} "
                                        "for the inferred architecture")
        if t.dtype not in FLOAT_DTYPES:
            raise CheckpointError(path, f"{rosi_key!r} has dtype {t.dtype}, expected a floating-point tensor")
        out[our_key] = float32_copy(t.detach()).reshape(our_shape)

    # Average latent.
    w_avg_found = False
    la = top.get("latent_avg") if top is not None else None
    if la is not None:
        if not isinstance(la, torch.Tensor) or la.dtype not in FLOAT_DTYPES or la.numel() != cfg.w_dim:
            desc = list(la.shape) if isinstance(la, torch.Tensor) else type(la).__name__
            raise CheckpointError(path, f"'latent_avg' is {desc}, expected {cfg.w_dim} values")
        out["mapping.w_avg"] = float32_copy(la.detach()).reshape(cfg.w_dim)
        w_avg_found = True
        prov["w_avg"] = "from the checkpoint's 'latent_avg'"
    else:
        out["mapping.w_avg"] = torch.zeros(cfg.w_dim)
        notes.append("the checkpoint stores no 'latent_avg': w_avg must be estimated")

    _check_lr_mul_plausible(out, cfg, notes)
    prov["channel_multiplier"] = cfg.channel_multiplier
    if notes:
        prov["notes"] = notes
    return ReadResult(cfg=cfg, state_dict=out, format=FORMAT, w_avg_in_checkpoint=w_avg_found, provenance=prov)


def _check_lr_mul_plausible(sd: dict, cfg: StyleGAN2Config, notes: list) -> None:
    """Raw mapping weights are initialised with std 1/lr_mul and stay near that scale; a
    very different scale suggests the model was trained with another lr multiplier."""
    w = sd["mapping.fc0.weight"]
    if w.numel() < 16:
        return
    std = float(w.std())
    expected = 1.0 / cfg.mapping_lr_mul
    if std > 0 and not (expected / 20 <= std <= expected * 20):
        notes.append(f"mapping weights have std {std:.3g}, far from 1/lr_mul = {expected:.3g}: the model may "
                     f"have been trained with a mapping lr multiplier other than {cfg.mapping_lr_mul}")


# --------------------------------------------------------------------------- writing
def to_rosinality_state_dict(G: Generator) -> dict[str, torch.Tensor]:
    """Our generator -> a state dict that rosinality's / StyleGAN-NADA's Generator loads
    (``load_state_dict(strict=True)``, blur-kernel buffers included)."""
    cfg = G.cfg
    if cfg.c_dim:
        raise ValueError("rosinality generators are unconditional: cannot export a class-conditional model "
                         f"(c_dim={cfg.c_dim})")
    if tuple(cfg.resample_filter) != (1, 3, 3, 1):
        raise ValueError(f"rosinality export supports the [1,3,3,1] filter only, not {cfg.resample_filter}")
    ours = G.state_dict()
    sd: dict[str, torch.Tensor] = {}
    for our_key, rosi_key, _, rosi_shape in key_table(cfg):
        sd[rosi_key] = ours[our_key].detach().to("cpu", torch.float32).reshape(rosi_shape).contiguous().clone()
    sd.update(_derived_kernels(cfg))
    return sd


def write_rosinality(G: Generator, path, with_latent_avg: bool = True) -> None:
    """Save ``{'g_ema': state dict, 'latent_avg': w_avg}`` (atomically)."""
    path = os.fspath(path)
    obj = {"g_ema": to_rosinality_state_dict(G)}
    if with_latent_avg:
        obj["latent_avg"] = G.mapping.w_avg.detach().to("cpu", torch.float32).clone()
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
