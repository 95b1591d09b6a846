"""Encoder networks that map a photo to StyleGAN2 W+ codes: pSp, e4e and ReStyle.

Our own implementation of the architectures of the public checkpoints (read by
:mod:`nada_ops.invert.encoder_files`); one configurable code path serves the full-size
networks and the small random ones the tests build.

Backbones (input 256 x 256, four stages, the last at 16 x 16):

- IR / IR-SE 50 (ArcFace-style, used by pSp, e4e and ReStyle for faces): a 3x3 stem
  (conv, batch norm, PReLU) at full resolution, then "improved residual" units: batch norm,
  3x3 conv, PReLU, 3x3 conv (the stride), batch norm, optional squeeze-and-excitation; the
  shortcut is a strided 1x1 conv + batch norm where the width changes, else a plain
  subsampling. The first unit of every stage has stride 2. IR-SE 50 has 3, 4, 14, 3 units
  of 64, 128, 256, 512 channels.
- ResNet-34 (ReStyle's cars / churches / horses / AFHQ models): a 7x7 stride-2 stem with
  PReLU and no max-pool, then torchvision's basic blocks (3, 4, 6, 3 units); a unit strides
  where it has a projection shortcut.

Heads ("map2style" blocks): strided 3x3 convs with leaky ReLU (slope 0.01) down to 1 x 1,
then an equalized-learning-rate linear layer (weight scaled by 1/sqrt(fan_in)).

How the codes are assembled (``style_source``):

- ``fpn`` (pSp's GradualStyleEncoder, e4e's Encoder4Editing): W+ entries 0-2 read the
  16 x 16 map of the last stage, 3-6 a 32 x 32 map (last stage upsampled bilinearly with
  aligned corners + a 1x1 lateral conv of stage 3), 7.. a 64 x 64 map (the same again with
  stage 2);
- ``flat`` (ReStyle's BackboneEncoder / ProgressiveBackboneEncoder): every entry reads the
  16 x 16 map of the last stage;
- ``pooled`` (e4e's SingleStyleCodeEncoder, pSp's BackboneEncoderUsingLastLayerIntoW): one
  code from the globally averaged last stage, repeated over W+.

``progressive`` (e4e and ReStyle-e4e): entry 0 is a base w, every other entry is that w plus
its head's output (a delta); otherwise each head gives its entry directly (pSp).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: W+ entries < COARSE read the 16x16 map, < MIDDLE the 32x32 map, the rest the 64x64 map.
COARSE, MIDDLE = 3, 7
STYLE_SOURCES = ("fpn", "flat", "pooled")
BACKBONES = ("ir_se", "ir", "resnet34")


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of an encoder, inferred from a checkpoint's tensors (and its options)."""
    backbone: str                      # 'ir_se' | 'ir' | 'resnet34'
    style_source: str                  # 'fpn' | 'flat' | 'pooled'
    progressive: bool                  # e4e: w0 + deltas
    in_channels: int                   # 3 (pSp, e4e) or 6 (ReStyle: image + current reconstruction)
    stem_width: int
    stage_units: tuple                 # units per stage (4 stages)
    stage_widths: tuple                # output channels per stage
    se_hidden: tuple = ()              # SE bottleneck width per stage (IR-SE only)
    n_styles: int = 18                 # W+ entries predicted (heads); the generator's num_ws
    w_dim: int = 512
    head_convs: tuple = ()             # strided convs of each head
    input_size: tuple = (256, 256)     # (H, W) of the image the encoder reads

    @property
    def iterative(self) -> bool:
        """ReStyle: the input is the photo concatenated with the current reconstruction."""
        return self.in_channels == 6

    @property
    def unit_strides(self) -> list[int]:
        out = []
        for s, n in enumerate(self.stage_units):
            out += [1 if (self.backbone == "resnet34" and s == 0) else 2] + [1] * (n - 1)
        return out

    def unit_channels(self) -> list[tuple[int, int, int]]:
        """(stage, in, out) per unit."""
        out, cin = [], self.stem_width
        for s, (n, w) in enumerate(zip(self.stage_units, self.stage_widths)):
            for _ in range(n):
                out.append((s, cin, w))
                cin = w
        return out

    @property
    def stage_ends(self) -> list[int]:
        """Index of the last unit of each stage."""
        return [sum(self.stage_units[:i + 1]) - 1 for i in range(len(self.stage_units))]


# ------------------------------------------------------------------------- layers
class FrozenBatchNorm(nn.Module):
    """Batch norm with fixed statistics (inference only)."""

    def __init__(self, ch: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(ch))
        self.register_buffer("bias", torch.zeros(ch))
        self.register_buffer("running_mean", torch.zeros(ch))
        self.register_buffer("running_var", torch.ones(ch))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class SqueezeExcite(nn.Module):
    def __init__(self, ch: int, hidden: int):
        super().__init__()
        self.reduce = nn.Conv2d(ch, hidden, 1, bias=False)
        self.expand = nn.Conv2d(hidden, ch, 1, bias=False)

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))


class Projection(nn.Module):
    """Shortcut where the width changes: strided 1x1 conv + batch norm."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.norm = FrozenBatchNorm(cout)

    def forward(self, x):
        return self.norm(self.conv(x))


class IRUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, se_hidden: int = 0):
        super().__init__()
        self.stride = stride
        self.norm_in = FrozenBatchNorm(cin)
        self.conv_a = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.act = nn.PReLU(cout)
        self.conv_b = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.norm_out = FrozenBatchNorm(cout)
        self.se = SqueezeExcite(cout, se_hidden) if se_hidden else None
        self.project = Projection(cin, cout, stride) if cin != cout else None

    def forward(self, x):
        r = self.norm_out(self.conv_b(self.act(self.conv_a(self.norm_in(x)))))
        if self.se is not None:
            r = self.se(r)
        s = self.project(x) if self.project is not None else x[:, :, ::self.stride, ::self.stride]
        return r + s


class BasicUnit(nn.Module):
    """torchvision's ResNet basic block."""

    def __init__(self, cin: int, cout: int, stride: int, project: bool):
        super().__init__()
        self.conv_a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm_a = FrozenBatchNorm(cout)
        self.conv_b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm_b = FrozenBatchNorm(cout)
        self.project = Projection(cin, cout, stride) if project else None

    def forward(self, x):
        r = self.norm_b(self.conv_b(F.relu(self.norm_a(self.conv_a(x)))))
        return F.relu(r + (self.project(x) if self.project is not None else x))


class Stem(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.norm = FrozenBatchNorm(cout)
        self.act = nn.PReLU(cout)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class EqualLinear(nn.Module):
    """Linear layer with the weight scaled by 1/sqrt(fan_in) at run time."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = 1.0 / math.sqrt(cin)

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias)


class StyleHead(nn.Module):
    """Strided 3x3 convs with leaky ReLU down to 1x1, then an equalized linear layer."""

    def __init__(self, cin: int, cout: int, n_convs: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(cin if i == 0 else cout, cout, 3, 2, 1) for i in range(n_convs)])
        self.linear = EqualLinear(cout, cout)
        self.cout = cout

    def forward(self, x):
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.01)
        return self.linear(x.reshape(-1, self.cout))


def _upsample_add(x, y):
    return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=True) + y


# ------------------------------------------------------------------------- encoder
class StyleEncoder(nn.Module):
    """Photo (NCHW in [-1, 1] at ``cfg.input_size``; ReStyle: 6 channels) -> codes
    [N, n_styles, w_dim] (offsets: the caller adds the average latent or the previous code)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.backbone == "resnet34":
            self.stem = Stem(cfg.in_channels, cfg.stem_width, 7, 2)
            units = [BasicUnit(cin, cout, st, project=(cin != cout or st != 1))
                     for (s, cin, cout), st in zip(cfg.unit_channels(), cfg.unit_strides)]
        else:
            self.stem = Stem(cfg.in_channels, cfg.stem_width, 3, 1)
            se = cfg.se_hidden if cfg.backbone == "ir_se" else (0,) * len(cfg.stage_units)
            units = [IRUnit(cin, cout, st, se[s]) for (s, cin, cout), st in zip(cfg.unit_channels(), cfg.unit_strides)]
        self.units = nn.ModuleList(units)
        top = cfg.stage_widths[-1]
        if cfg.style_source == "pooled":
            self.w_linear = EqualLinear(top, cfg.w_dim)
        else:
            self.heads = nn.ModuleList([StyleHead(top, cfg.w_dim, cfg.head_convs[i]) for i in range(cfg.n_styles)])
        if cfg.style_source == "fpn":
            self.lateral_mid = nn.Conv2d(cfg.stage_widths[2], top, 1)
            self.lateral_fine = nn.Conv2d(cfg.stage_widths[1], top, 1)

    def forward(self, x):
        cfg = self.cfg
        x = self.stem(x)
        taps = {}
        ends = cfg.stage_ends
        for i, unit in enumerate(self.units):
            x = unit(x)
            if i in ends:
                taps[ends.index(i)] = x
        c3 = taps[3]
        if cfg.style_source == "pooled":
            w = self.w_linear(c3.mean(dim=(2, 3)))
            return w[:, None].expand(-1, cfg.n_styles, -1).contiguous()
        feats = [c3] * cfg.n_styles
        if cfg.style_source == "fpn":
            p2 = _upsample_add(c3, self.lateral_mid(taps[2])) if cfg.n_styles > COARSE else None
            p1 = _upsample_add(p2, self.lateral_fine(taps[1])) if cfg.n_styles > MIDDLE else None
            feats = [c3 if i < COARSE else p2 if i < MIDDLE else p1 for i in range(cfg.n_styles)]
        if cfg.progressive:
            w0 = self.heads[0](feats[0])
            out = [w0] + [w0 + self.heads[i](feats[i]) for i in range(1, cfg.n_styles)]
        else:
            out = [self.heads[i](feats[i]) for i in range(cfg.n_styles)]
        return torch.stack(out, dim=1)

