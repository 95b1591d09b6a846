"""pSp / e4e / ReStyle encoder checkpoints: read safely, recognise, check against a
generator, and encode photos to W+ codes.

The files (``torch.save`` by the authors' training code, pixel2style2pixel, encoder4editing
and restyle-encoder) hold a dict:

- ``state_dict``: ``encoder.*`` (the encoder network) and ``decoder.*`` (the rosinality
  StyleGAN2 generator the encoder was trained with), plus e.g. ``discriminator.*``;
- ``opts``: the training options as a plain dict (``vars(argparse.Namespace)``: strings,
  numbers, booleans, None, lists of them): ``encoder_type``, ``output_size`` (pSp, ReStyle)
  or ``stylegan_size`` (e4e), ``input_nc``, ``start_from_latent_avg``, ``learn_in_w``,
  ``dataset_type``, ...;
- ``latent_avg``: the generator's average w, repeated over W+ ([n_styles, 512]);
- optionally training state (``optimizer``, ``global_step``, ``best_val_loss``, ...).

They are read with the pack's bounded torch-file reader (nothing from the file runs; only
tensors and plain containers; ``argparse.Namespace`` is accepted for ``opts``). The
architecture comes from the TENSORS (backbone, units, widths, heads, input channels);
``opts['encoder_type']`` only decides what the tensors cannot show (e4e's progressive
deltas and pSp's independent codes have the same weights) and must agree with them.

Inference, as in the authors' code:

- the photo is resized to 256 x 256 (cars: 192 x 256) in [-1, 1];
- pSp: ``codes = E(x) (+ latent_avg if opts.start_from_latent_avg)``; e4e likewise (its
  ``E`` adds per-entry deltas to a base w);
- ReStyle: ``y_0`` = the generator's image of ``latent_avg`` (const noise) pooled to 256;
  step t: ``codes_t = E(cat(x, y_t)) + codes_{t-1}`` (``latent_avg`` for t = 0),
  ``y_{t+1}`` = the image of ``codes_t`` pooled to 256 (not clamped).
"""
from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import re
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F

from ..io.errors import UntrustedFileError, describe
from ..io.pickles import AllowList
from ..io.tensors import FLOAT_DTYPES, float32_copy
from ..io.torch_files import read_torch_file
from .networks import COARSE, MIDDLE, EncoderConfig, StyleEncoder

ProgressFn = Callable[[int, int, object], None]

#: encoder_type in opts -> (backbone family, style source, progressive, repository)
ENCODER_TYPES = {
    "GradualStyleEncoder": ("ir", "fpn", False, "pSp"),
    "Encoder4Editing": ("ir", "fpn", True, "e4e"),
    "SingleStyleCodeEncoder": ("ir", "pooled", False, "e4e"),
    "BackboneEncoderUsingLastLayerIntoW": ("ir", "pooled", False, "pSp"),
    "BackboneEncoder": ("ir", "flat", False, "ReStyle"),
    "ProgressiveBackboneEncoder": ("ir", "flat", True, "ReStyle"),
    "ResNetGradualStyleEncoder": ("resnet34", "fpn", False, "ReStyle"),
    "ResNetBackboneEncoder": ("resnet34", "flat", False, "ReStyle"),
    "ResNetProgressiveBackboneEncoder": ("resnet34", "flat", True, "ReStyle"),
}
#: Known but not supported (no public checkpoint uses them).
UNSUPPORTED_TYPES = {"BackboneEncoderUsingLastLayerIntoWPlus"}
METHODS = ("pSp", "e4e", "ReStyle")
#: Largest values accepted from a file (far above the real IR-SE 152 / 1024 px ones).
MAX_UNITS, MAX_STYLES, MAX_WIDTH, MAX_HEAD_CONVS = 200, 64, 4096, 8
ENCODER_INPUT = 256


class EncoderFileError(ValueError):
    """An encoder file cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        from ..io.errors import path_text
        self.path = path_text(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class EncoderMismatchError(ValueError):
    """An encoder and a generator do not belong together."""


# ----------------------------------------------------------------------- key table
# (the authors' name, ours); {u} unit, {i} head, {k} head conv, {bn} batch-norm tensor, {p} weight/bias.
_IR_RULES = [
    ("input_layer.0.weight", "stem.conv.weight"),
    ("input_layer.1.{bn}", "stem.norm.{bn}"),
    ("input_layer.2.weight", "stem.act.weight"),
    ("body.{u}.res_layer.0.{bn}", "units.{u}.norm_in.{bn}"),
    ("body.{u}.res_layer.1.weight", "units.{u}.conv_a.weight"),
    ("body.{u}.res_layer.2.weight", "units.{u}.act.weight"),
    ("body.{u}.res_layer.3.weight", "units.{u}.conv_b.weight"),
    ("body.{u}.res_layer.4.{bn}", "units.{u}.norm_out.{bn}"),
    ("body.{u}.res_layer.5.fc1.weight", "units.{u}.se.reduce.weight"),
    ("body.{u}.res_layer.5.fc2.weight", "units.{u}.se.expand.weight"),
    ("body.{u}.shortcut_layer.0.weight", "units.{u}.project.conv.weight"),
    ("body.{u}.shortcut_layer.1.{bn}", "units.{u}.project.norm.{bn}"),
]
_RESNET_RULES = [
    ("conv1.weight", "stem.conv.weight"),
    ("bn1.{bn}", "stem.norm.{bn}"),
    ("relu.weight", "stem.act.weight"),
    ("body.{u}.conv1.weight", "units.{u}.conv_a.weight"),
    ("body.{u}.bn1.{bn}", "units.{u}.norm_a.{bn}"),
    ("body.{u}.conv2.weight", "units.{u}.conv_b.weight"),
    ("body.{u}.bn2.{bn}", "units.{u}.norm_b.{bn}"),
    ("body.{u}.downsample.0.weight", "units.{u}.project.conv.weight"),
    ("body.{u}.downsample.1.{bn}", "units.{u}.project.norm.{bn}"),
]
# Head convs sit in a Sequential(conv, leaky ReLU, conv, ...): the authors' index is 2k.
_HEAD_RULES = [
    ("styles.{i}.convs.{k2}.{p}", "heads.{i}.convs.{k}.{p}"),
    ("styles.{i}.linear.{p}", "heads.{i}.linear.{p}"),
    ("latlayer1.{p}", "lateral_mid.{p}"),
    ("latlayer2.{p}", "lateral_fine.{p}"),
    ("linear.{p}", "w_linear.{p}"),
]
_FIELDS = {"u": r"\d{1,6}", "i": r"\d{1,6}", "k": r"\d{1,2}", "k2": r"\d{1,2}",
           "bn": "weight|bias|running_mean|running_var", "p": "weight|bias"}
_IGNORED = re.compile(r"(.*\.)?num_batches_tracked$")


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    rx = "".join(re.escape(x) if j % 2 == 0 else f"(?P<{x}>{_FIELDS[x]})" for j, x in enumerate(parts))
    return re.compile(rx)


@functools.lru_cache(maxsize=4)
def _rules(backbone: str):
    rules = (_RESNET_RULES if backbone == "resnet34" else _IR_RULES) + _HEAD_RULES
    return [(_pattern(a), a, _pattern(b), b) for a, b in rules]


def _convert(key: str, backbone: str, to_ours: bool) -> str | None:
    for rx_file, t_file, rx_ours, t_ours in _rules(backbone):
        m = (rx_file if to_ours else rx_ours).fullmatch(key)
        if m is None:
            continue
        g = {k: (int(v) if v.isdigit() else v) for k, v in m.groupdict().items()}
        if "k2" in g:
            if g["k2"] % 2:
                return None
            g["k"] = g["k2"] // 2
        elif "k" in g:
            g["k2"] = 2 * g["k"]
        return (t_ours if to_ours else t_file).format(**g)
    return None


def our_key(file_key: str, backbone: str) -> str | None:
    """Our name of an ``encoder.*`` tensor of the authors' file (without the prefix)."""
    return _convert(file_key, backbone, True)


def file_key(key: str, backbone: str) -> str:
    """The authors' name (without ``encoder.``) of one of our encoder tensors."""
    out = _convert(key, backbone, False)
    if out is None:
        raise KeyError(key)
    return out


# ------------------------------------------------------------------------ loading
_ALLOW = AllowList().new(argparse.Namespace.__module__, argparse.Namespace.__qualname__, argparse.Namespace)


def _load(path):
    try:
        return read_torch_file(path, allow=_ALLOW, what="the encoder file")
    except UntrustedFileError as e:
        problem = e.problem
        if "refusing to load global" in problem:
            problem += "; an encoder file may hold only tensors, plain containers and its options"
        raise EncoderFileError(path, problem) from None


def _plain_opts(opts, path) -> dict:
    if isinstance(opts, argparse.Namespace):
        opts = vars(opts)
    if not isinstance(opts, dict):
        raise EncoderFileError(path, f"'opts' is {describe(opts)}, expected the training options (a dict)")
    out = {}
    for k, v in list(opts.items())[:500]:
        if type(k) is not str:
            continue
        if type(v) in (str, bool, float) or v is None or (type(v) is int and v.bit_length() <= 64):
            out[k] = v[:500] if type(v) is str else v
        else:       # lists etc.: kept as a description (never used as a value)
            out[k] = OptsValue(describe(v, 60))
    return out


class OptsValue(str):
    """An option of a type the pack does not use (e.g. a list), shown by its description."""


def _tensor(sd, key, path, ndim=None) -> torch.Tensor:
    t = sd.get(key)
    if not isinstance(t, torch.Tensor):
        raise EncoderFileError(path, f"the encoder has no tensor {key!r}" if t is None else
                               f"{key!r} is {describe(t)}, expected a tensor")
    if ndim is not None and t.ndim != ndim:
        raise EncoderFileError(path, f"{key!r} has shape {list(t.shape)}, expected {ndim} dimensions")
    return t


def _indices(keys, pattern) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k)) and len(m.group(1)) <= 6})


def _infer_config(enc: dict, opts: dict, path) -> tuple[EncoderConfig, str, str]:
    """(config, repository name, encoder_type) from the encoder tensors and the options."""
    keys = list(enc)
    if "input_layer.0.weight" in enc:
        family = "ir"
        stem = _tensor(enc, "input_layer.0.weight", path, 4)
    elif "conv1.weight" in enc:
        family = "resnet34"
        stem = _tensor(enc, "conv1.weight", path, 4)
    else:
        raise EncoderFileError(path, "the encoder has neither an IR-SE stem ('encoder.input_layer.0.weight') nor a "
                                     "ResNet stem ('encoder.conv1.weight'): not a pSp / e4e / ReStyle encoder")
    stem_w, in_ch, k = int(stem.shape[0]), int(stem.shape[1]), int(stem.shape[2])
    if k != (3 if family == "ir" else 7):
        raise EncoderFileError(path, f"the stem conv is {k}x{k}; expected {3 if family == 'ir' else 7}x"
                                     f"{3 if family == 'ir' else 7}")
    etype = opts.get("encoder_type")
    if "encoder_type" not in opts and family == "ir" and in_ch == 3 and "latlayer1.weight" in enc:
        etype = "GradualStyleEncoder"     # pSp's first releases saved no encoder_type (e4e always does)
    if etype in UNSUPPORTED_TYPES:
        raise EncoderFileError(path, f"encoder_type {etype!r} is not supported (no public checkpoint uses it)")
    if etype not in ENCODER_TYPES:
        raise EncoderFileError(path, f"opts['encoder_type'] is {describe(etype)}; supported: "
                                     f"{', '.join(sorted(ENCODER_TYPES))}")
    want_family, source, progressive, repo = ENCODER_TYPES[etype]
    if want_family != family:
        raise EncoderFileError(path, f"opts say {etype} but the tensors are those of a "
                                     f"{'ResNet-34' if family == 'resnet34' else 'IR-SE'} backbone")
    if in_ch == 6:
        repo = "ReStyle"
    elif in_ch != 3:
        raise EncoderFileError(path, f"the encoder reads {in_ch}-channel inputs (a pSp model for sketches or "
                                     "segmentation maps, not photos); only photo encoders (3 channels, ReStyle 6) "
                                     "are supported")
    elif repo == "ReStyle":
        raise EncoderFileError(path, f"{etype} is a ReStyle encoder but reads 3 channels, not 6 (image + "
                                     "reconstruction)")
    if "input_nc" in opts and opts["input_nc"] != in_ch:
        raise EncoderFileError(path, f"opts['input_nc'] is {describe(opts['input_nc'])} but the stem reads "
                                     f"{in_ch} channels")

    # Units and stages.
    units = _indices(keys, r"^body\.(\d+)\.")
    if not units or units != list(range(len(units))) or len(units) > MAX_UNITS:
        raise EncoderFileError(path, f"backbone units are not numbered body.0..body.N (found {units[:8]}...)")
    widths, starts, se = [], [], []
    cin = stem_w
    for u in units:
        if family == "ir":
            w = _tensor(enc, f"body.{u}.res_layer.1.weight", path, 4)
            proj = f"body.{u}.shortcut_layer.0.weight" in enc
            fc1 = enc.get(f"body.{u}.res_layer.5.fc1.weight")
            se.append(int(fc1.shape[0]) if isinstance(fc1, torch.Tensor) and fc1.ndim == 4 else 0)
        else:
            w = _tensor(enc, f"body.{u}.conv1.weight", path, 4)
            proj = f"body.{u}.downsample.0.weight" in enc
        cout = int(w.shape[0])
        if int(w.shape[1]) != cin:
            raise EncoderFileError(path, f"backbone unit {u} reads {int(w.shape[1])} channels, the previous layer "
                                         f"gives {cin}")
        if (cout != cin) and not proj:
            raise EncoderFileError(path, f"backbone unit {u} changes the width {cin} -> {cout} without a shortcut "
                                         "projection")
        if u == 0 or proj:
            starts.append(u)
        widths.append(cout)
        cin = cout
    if len(starts) != 4:
        raise EncoderFileError(path, f"the backbone has {len(starts)} stages; pSp / e4e / ReStyle backbones have 4")
    bounds = starts + [len(units)]
    stage_units = tuple(bounds[i + 1] - bounds[i] for i in range(4))
    stage_widths = tuple(widths[bounds[i + 1] - 1] for i in range(4))
    backbone = "resnet34"
    se_hidden: tuple = ()
    if family == "ir":
        per_stage = [sorted(set(se[bounds[i]:bounds[i + 1]])) for i in range(4)]
        if all(p == [0] for p in per_stage):
            backbone = "ir"
        elif all(len(p) == 1 and p[0] > 0 for p in per_stage):
            backbone, se_hidden = "ir_se", tuple(p[0] for p in per_stage)
        else:
            raise EncoderFileError(path, "squeeze-excitation blocks are missing in some units")
    if max(stage_widths + (stem_w,)) > MAX_WIDTH:
        raise EncoderFileError(path, f"backbone widths {stage_widths} exceed {MAX_WIDTH}")

    # Heads.
    heads = _indices(keys, r"^styles\.(\d+)\.")
    top = stage_widths[-1]
    head_convs: list[int] = []
    if source == "pooled":
        if heads:
            raise EncoderFileError(path, f"opts say {etype} (one code) but the file has {len(heads)} style heads")
        lw = _tensor(enc, "linear.weight", path, 2)
        w_dim = int(lw.shape[0])
        if int(lw.shape[1]) != top:
            raise EncoderFileError(path, f"'linear.weight' reads {int(lw.shape[1])} features, the backbone gives {top}")
        n_styles = None
    else:
        if not heads or heads != list(range(len(heads))) or len(heads) > MAX_STYLES:
            raise EncoderFileError(path, f"style heads are not numbered styles.0..styles.N (found {heads[:8]})")
        n_styles = len(heads)
        w_dim = int(_tensor(enc, "styles.0.linear.weight", path, 2).shape[0])
        for i in heads:
            convs = _indices(keys, rf"^styles\.{i}\.convs\.(\d+)\.weight$")
            if not convs or convs != list(range(0, 2 * len(convs), 2)) or len(convs) > MAX_HEAD_CONVS:
                raise EncoderFileError(path, f"style head {i} has convs {convs}; expected convs.0, convs.2, ...")
            head_convs.append(len(convs))
        if (source == "fpn") != ("latlayer1.weight" in enc):
            raise EncoderFileError(path, f"opts say {etype} but the file "
                                         f"{'lacks' if source == 'fpn' else 'has'} the FPN lateral layers")
        side = ENCODER_INPUT // 16
        for i, n in enumerate(head_convs):
            want = side if source != "fpn" or i < COARSE else side * 2 if i < MIDDLE else side * 4
            if 2 ** n != want:
                raise EncoderFileError(path, f"style head {i} has {n} strided convs; a {want}x{want} feature map "
                                             f"needs {int(math.log2(want))}")
    if w_dim > MAX_WIDTH:
        raise EncoderFileError(path, f"w_dim {w_dim} exceeds {MAX_WIDTH}")

    # Resolution: options, heads and decoder must agree.
    res = opts.get("output_size", opts.get("stylegan_size"))
    if res is not None and (type(res) is not int or res < 4 or res > 4096 or res & (res - 1)):
        raise EncoderFileError(path, f"the options give a generator resolution of {describe(res)}")
    if n_styles is None:
        if res is None:
            raise EncoderFileError(path, "the options give no generator resolution ('output_size' / 'stylegan_size')")
        n_styles = 2 * int(math.log2(res)) - 2
    elif res is not None and 2 * int(math.log2(res)) - 2 != n_styles:
        raise EncoderFileError(path, f"{n_styles} style heads do not fit the {res} px generator of the options "
                                     f"({2 * int(math.log2(res)) - 2} W+ entries)")
    input_size = (192, 256) if str(opts.get("dataset_type", "")).startswith("cars") else (256, 256)
    cfg = EncoderConfig(backbone=backbone, style_source=source, progressive=progressive, in_channels=in_ch,
                        stem_width=stem_w, stage_units=stage_units, stage_widths=stage_widths, se_hidden=se_hidden,
                        n_styles=n_styles, w_dim=w_dim, head_convs=tuple(head_convs), input_size=input_size)
    return cfg, repo, etype


def _reference_state(cfg: EncoderConfig) -> dict[str, tuple]:
    with torch.device("meta"):
        net = StyleEncoder(cfg)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _decoder_info(sd: dict, path) -> tuple[int | None, dict]:
    """(resolution, mapping weights) of the rosinality generator stored under ``decoder.*``."""
    dec = {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}
    if not dec:
        return None, {}
    rgb = _indices(dec, r"^to_rgbs\.(\d+)\.")
    res = 2 ** (len(rgb) + 2) if rgb else None
    mapping = {k: v for k, v in dec.items() if re.fullmatch(r"style\.\d{1,2}\.(weight|bias)", k)
               and isinstance(v, torch.Tensor) and v.dtype in FLOAT_DTYPES and v.ndim <= 2}
    return res, mapping


@dataclass
class StyleEncoderModel:
    """A loaded encoder: network, what it is, and what it needs from the generator."""
    net: StyleEncoder
    cfg: EncoderConfig
    method: str                          # 'pSp' | 'e4e' | 'ReStyle'
    encoder_type: str
    resolution: int                      # generator resolution it was trained for
    latent_avg: torch.Tensor | None      # [n_styles, w_dim] (or None: use the generator's w_avg)
    add_latent_avg: bool                 # pSp/e4e: opts.start_from_latent_avg; ReStyle: always
    name: str = ""
    opts: dict = field(default_factory=dict)
    decoder_mapping: dict = field(default_factory=dict)   # the trained-with generator's mapping weights
    notes: list = field(default_factory=list)

    @property
    def kind(self) -> str:
        if self.method == "ReStyle":
            return "ReStyle-e4e" if self.cfg.progressive else "ReStyle-pSp"
        return self.method

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> "StyleEncoderModel":
        """This model on ``device``: itself when it is there, else a copy (the original stays)."""
        device = torch.device(device)
        if self.device == device or (device.type == "cuda" and device.index is None and self.device.type == "cuda"):
            return self
        with torch.inference_mode(False):
            net = copy.deepcopy(self.net).to(device)
        la = self.latent_avg.to(device) if self.latent_avg is not None else None
        return replace(self, net=net, latent_avg=la)

    def describe(self) -> str:
        c = self.cfg
        bb = {"ir_se": "IR-SE", "ir": "IR", "resnet34": "ResNet-"}[c.backbone]
        depth = 34 if c.backbone == "resnet34" else 2 + 2 * sum(c.stage_units)
        return (f"{self.kind} encoder ({self.encoder_type}, {bb}{depth} backbone, "
                f"{'ReStyle iterations' if c.iterative else 'single pass'}), for a {self.resolution} px generator "
                f"with {c.n_styles} W+ entries of {c.w_dim}")

    # ------------------------------------------------------------ generator checks
    def check_generator(self, gcfg, gname: str = "the generator") -> None:
        """Refuse a generator whose W+ space the codes cannot address."""
        c = self.cfg
        if gcfg.num_ws != c.n_styles or gcfg.w_dim != c.w_dim or gcfg.img_resolution != self.resolution:
            raise EncoderMismatchError(
                f"the encoder {self.name or ''} ({self.kind}) was trained for a {self.resolution} px generator with "
                f"{c.n_styles} W+ entries of {c.w_dim}; {gname} is {gcfg.img_resolution} px with {gcfg.num_ws} "
                f"entries of {gcfg.w_dim}: they do not belong together (use the encoder of that generator's "
                "domain, e.g. e4e_ffhq_encode.pt for FFHQ 1024 px)")

    def compare_generator(self, G) -> list[str]:
        """Notes when ``G`` is not the generator the encoder was trained with (its mapping
        network or average latent differ): the codes then land in the wrong place."""
        notes = []
        fc = [m for m in G.mapping.modules() if m.__class__.__name__ == "FullyConnected"]
        theirs = [self.decoder_mapping.get(f"style.{i + 1}.weight") for i in range(len(fc))]
        if self.decoder_mapping and all(t is not None for t in theirs) and \
                len([k for k in self.decoder_mapping if k.endswith("weight")]) == len(fc):
            diffs = []
            for layer, t in zip(fc, theirs):
                ours = layer.weight.detach().float().cpu()
                if tuple(ours.shape) != tuple(t.shape):
                    diffs.append(float("inf"))
                    break
                diffs.append(float((ours - t.float()).abs().max()) / max(float(t.float().abs().max()), 1e-8))
            if max(diffs) > 1e-3:
                notes.append("the generator's mapping network differs from the one the encoder was trained with: "
                             "the encoder expects the generator stored in its checkpoint (e.g. StyleGAN2 FFHQ "
                             "config-f); codes may not fit this one")
        elif self.latent_avg is not None:
            d = float((G.w_avg.detach().float().cpu() - self.latent_avg[0].float().cpu()).norm())
            if d > 0.05 * max(float(self.latent_avg[0].float().norm()), 1e-8):
                notes.append(f"the generator's average w differs from the encoder's latent_avg (distance {d:.3g}): "
                             "it may not be the generator the encoder was trained with")
        return notes


def load_encoder(path, device="cpu") -> StyleEncoderModel:
    """Read a pSp / e4e / ReStyle ``.pt`` checkpoint (any torch.save format) safely."""
    path = os.fspath(path)
    obj = _load(path)
    if not isinstance(obj, dict):
        raise EncoderFileError(path, f"holds {describe(obj)}, expected a dict saved by the pSp / e4e / ReStyle "
                                     "training code")
    if "g_ema" in obj or "G_ema" in obj:
        raise EncoderFileError(path, "is a generator checkpoint, not an encoder: load it with Load StyleGAN")
    sd = obj.get("state_dict")
    if not isinstance(sd, dict):
        keys = ", ".join(describe(k, 40) for k in list(obj)[:10])
        raise EncoderFileError(path, f"has no 'state_dict' (top-level keys: {keys or 'none'}); expected a pSp / e4e / "
                                     "ReStyle checkpoint")
    if any(type(k) is not str for k in sd):
        raise EncoderFileError(path, "the state dict has non-string keys")
    enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    if not enc:
        raise EncoderFileError(path, "the state dict has no 'encoder.*' tensors: not a pSp / e4e / ReStyle encoder")
    if "opts" not in obj:
        raise EncoderFileError(path, "has no 'opts' (the training options say which encoder it is)")
    opts = _plain_opts(obj["opts"], path)
    cfg, repo, etype = _infer_config(enc, opts, path)

    # Every tensor: a known name, the expected shape, floating point, finite.
    shapes = _reference_state(cfg)
    state: dict[str, torch.Tensor] = {}
    for k, t in enc.items():
        if _IGNORED.fullmatch(k):
            continue
        ours = our_key(k, cfg.backbone)
        if ours is None or ours not in shapes:
            raise EncoderFileError(path, f"unexpected encoder tensor {describe('encoder.' + k, 100)} for the "
                                         f"recognised architecture ({etype})")
        if not isinstance(t, torch.Tensor) or t.dtype not in FLOAT_DTYPES:
            raise EncoderFileError(path, f"'encoder.{k}' is {describe(t)}, expected a floating-point tensor")
        if tuple(t.shape) != shapes[ours]:
            raise EncoderFileError(path, f"'encoder.{k}' has shape {list(t.shape)}, expected {list(shapes[ours])}")
        state[ours] = float32_copy(t.detach())
    missing = sorted(set(shapes) - set(state))
    if missing:
        raise EncoderFileError(path, f"the encoder is incomplete: {len(missing)} tensors missing, e.g. {missing[0]} "
                                     "(truncated or not this architecture)")
    for k, t in state.items():
        if not torch.isfinite(t).all():
            raise EncoderFileError(path, f"encoder tensor {k} holds NaN or Inf values")

    dec_res, dec_map = _decoder_info(sd, path)
    res = opts.get("output_size", opts.get("stylegan_size")) or 2 ** ((cfg.n_styles + 2) // 2)
    notes = []
    if dec_res is not None and dec_res != res:
        raise EncoderFileError(path, f"its decoder is a {dec_res} px generator but the encoder is for {res} px")
    if dec_res is None:
        notes.append("the file holds no decoder: the generator cannot be checked against the one it was trained with")

    # The average latent.
    add_avg = True if repo == "ReStyle" else bool(opts.get("start_from_latent_avg", False))
    la = obj.get("latent_avg")
    latent_avg = None
    if la is not None:
        if not isinstance(la, torch.Tensor) or la.dtype not in FLOAT_DTYPES or \
                la.numel() not in (cfg.w_dim, cfg.n_styles * cfg.w_dim):
            raise EncoderFileError(path, f"'latent_avg' is {describe(la)}, expected {cfg.w_dim} or "
                                         f"{cfg.n_styles}x{cfg.w_dim} values")
        latent_avg = float32_copy(la.detach()).reshape(-1, cfg.w_dim).expand(cfg.n_styles, -1).clone() \
            if la.numel() == cfg.w_dim else float32_copy(la.detach()).reshape(cfg.n_styles, cfg.w_dim)
        if not torch.isfinite(latent_avg).all():
            raise EncoderFileError(path, "'latent_avg' holds NaN or Inf values")
    elif add_avg:
        notes.append("the file stores no latent_avg: the generator's average w is used")

    with torch.inference_mode(False):
        net = StyleEncoder(cfg)
        net.load_state_dict(state, strict=True)
        net.eval().requires_grad_(False)
    dec_map = {k: float32_copy(v.detach()) for k, v in dec_map.items()}
    m = StyleEncoderModel(net=net, cfg=cfg, method=repo, encoder_type=etype, resolution=int(res),
                          latent_avg=latent_avg, add_latent_avg=add_avg,
                          name=os.path.splitext(os.path.basename(path))[0], opts=opts, decoder_mapping=dec_map,
                          notes=notes)
    return m.to(device)


# ------------------------------------------------------------------------ encoding
@dataclass
class EncodeResult:
    ws: torch.Tensor                     # [N, num_ws, w_dim] final codes
    steps: list                          # ReStyle: codes after each iteration (pSp/e4e: one entry)
    is_wplus: bool = True


def encoder_input(images: torch.Tensor, size: tuple) -> torch.Tensor:
    """NCHW in [-1, 1], any size -> the encoder's input size (antialiased bilinear resize,
    as the authors' PIL Resize)."""
    x = images[:, :3].float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x


def _feedback(img: torch.Tensor, size: tuple) -> torch.Tensor:
    """A generator image -> the ReStyle feedback input: average-pooled to 256 x 256
    (the authors' face_pool), then centre-cropped in height to ``size`` (cars)."""
    y = F.adaptive_avg_pool2d(img.float(), (ENCODER_INPUT, ENCODER_INPUT))
    if size[0] != ENCODER_INPUT:
        top = (ENCODER_INPUT - size[0]) // 2
        y = y[:, :, top:top + size[0]]
    return y


def encode(enc: StyleEncoderModel, G, images: torch.Tensor, iterations: int = 5,
           progress: ProgressFn | None = None, batch_size: int = 8) -> EncodeResult:
    """Photos (NCHW in [-1, 1], any size, already aligned) -> W+ codes for ``G``'s latent space.

    ReStyle runs ``iterations`` refinement steps from the average image (the authors use 5);
    pSp / e4e run once. ``G`` (the generator the encoder was trained with, e.g. FFHQ) renders
    ReStyle's intermediate reconstructions. ``progress(done, total, None)`` after each
    batch-iteration; it may raise to stop."""
    enc.check_generator(G.cfg)
    dev = enc.device
    cfg = enc.cfg
    n_iter = max(1, int(iterations)) if cfg.iterative else 1
    avg = enc.latent_avg if enc.latent_avg is not None else G.w_avg.detach().float()[None].expand(cfg.n_styles, -1)
    avg = avg.to(dev)
    steps_all: list[list[torch.Tensor]] = [[] for _ in range(n_iter)]
    n = images.shape[0]
    total = n_iter * math.ceil(n / batch_size)
    done = 0
    with torch.no_grad():
        avg_image = None
        if cfg.iterative:
            avg_image = _feedback(G.synthesis(avg[None].to(G.w_avg.device), noise_mode="const"), cfg.input_size).to(dev)
        for i in range(0, n, batch_size):
            x = encoder_input(images[i:i + batch_size].to(dev), cfg.input_size)
            b = x.shape[0]
            if not cfg.iterative:
                codes = enc.net(x)
                if enc.add_latent_avg:
                    codes = codes + avg[None]
                steps_all[0].append(codes)
                done += 1
                if progress is not None:
                    progress(done, total, None)
                continue
            y, codes = avg_image.expand(b, -1, -1, -1), None
            for t in range(n_iter):
                delta = enc.net(torch.cat([x, y], dim=1))
                codes = delta + (avg[None] if codes is None else codes)
                steps_all[t].append(codes)
                if t + 1 < n_iter:
                    img = G.synthesis(codes.to(G.w_avg.device), noise_mode="const")
                    y = _feedback(img, cfg.input_size).to(dev)
                done += 1
                if progress is not None:
                    progress(done, total, None)
    steps = [torch.cat(s, dim=0) for s in steps_all]
    is_wplus = cfg.style_source != "pooled"
    return EncodeResult(ws=steps[-1], steps=steps, is_wplus=is_wplus)
