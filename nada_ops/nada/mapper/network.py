"""The StyleCLIP latent mapper (Patashnik et al. 2021, used by StyleGAN-NADA sec. 4.3).

A mapper M takes W+ latents ``w`` [N, num_ws, w_dim] and returns a step ``M(w)`` of the same
shape; the mapped latents are ``w + step_scale * strength * M(w)`` (StyleCLIP's step scale is
0.1). The "levels" mapper has one MLP per group of W+ entries (StyleCLIP's LevelsMapper):

    coarse = entries 0-3, medium = entries 4-7, fine = entries 8 and up

(StyleCLIP splits by W+ index, not by resolution; a level that is switched off leaves its
entries unchanged). The "single" mapper (SingleMapper) has one MLP for all entries. Each MLP is
PixelNorm followed by ``num_layers`` (4) fully connected layers with equalized learning rate
(lr multiplier 0.01), leaky ReLU 0.2 and gain sqrt(2), the same layer as the StyleGAN2 mapping
network (:class:`nada_ops.stylegan.networks.FullyConnected`).

PixelNorm: StyleCLIP's PixelNorm normalizes over dim 1 of the tensor it is given, and the
mappers give it the level's block [N, rows, w_dim]: the normalization runs over the W+ ENTRIES
of the level, per feature, not over the features of each w. (For a plain W code repeated to
W+, every feature becomes its sign.) Their published checkpoints were trained that way, so
``pixel_norm='rows'`` (the default) reproduces it exactly; ``pixel_norm='features'`` normalizes
each w over its features, as StyleGAN's own PixelNorm does.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from ...stylegan.networks import FullyConnected

#: W+ entries of each level: [start, stop) (stop None = to the last entry).
LEVEL_BOUNDS = {"coarse": (0, 4), "medium": (4, 8), "fine": (8, None)}
LEVELS = tuple(LEVEL_BOUNDS)
KINDS = ("levels", "single")
PIXEL_NORMS = ("rows", "features")
#: Name of the one MLP of a "single" mapper.
SINGLE = "all"

MAX_NUM_WS = 64
MAX_W_DIM = 2048
MAX_LAYERS = 16
PIXEL_NORM_EPS = 1e-8


class MapperConfigError(ValueError):
    """A mapper description is invalid or does not fit a generator."""


@dataclass(frozen=True)
class MapperConfig:
    """Architecture of a latent mapper.

    ``levels``: the level MLPs that exist (kind 'levels'); entries of the other levels are
    left unchanged. ``step_scale``: the factor of the residual step (StyleCLIP: 0.1)."""
    num_ws: int
    w_dim: int
    kind: str = "levels"
    levels: tuple = LEVELS
    num_layers: int = 4
    lr_mul: float = 0.01
    step_scale: float = 0.1
    pixel_norm: str = "rows"

    @classmethod
    def for_generator(cls, gen_cfg, levels=LEVELS, **kw) -> "MapperConfig":
        """A mapper for generator config ``gen_cfg``; levels without W+ entries at its
        resolution (fine below 64 px) are dropped."""
        kind = kw.get("kind", "levels")
        levels = tuple(levels)
        if kind == "levels":
            kept = tuple(l for l in LEVELS if l in levels and _count(level_rows(l, gen_cfg.num_ws)))
            if not kept:
                raise MapperConfigError(f"levels {list(levels)} have no W+ entries in a {gen_cfg.img_resolution}px "
                                        f"generator ({gen_cfg.num_ws} entries): choose coarse and/or medium")
            levels = kept
        else:
            levels = ()
        return cls(num_ws=gen_cfg.num_ws, w_dim=gen_cfg.w_dim, levels=levels, **kw).validate()

    @property
    def mlps(self) -> tuple:
        """Names of the MLPs (module names and tensor-key prefixes)."""
        return (SINGLE,) if self.kind == "single" else tuple(self.levels)

    def rows(self, name: str) -> slice:
        """W+ entries an MLP maps."""
        if name == SINGLE:
            return slice(0, self.num_ws)
        return level_rows(name, self.num_ws)

    def validate(self, where: str = "mapper") -> "MapperConfig":
        def bad(msg):
            raise MapperConfigError(f"{where}: {msg}")

        def is_int(v):
            return type(v) is int

        def is_num(v):
            return type(v) in (int, float) and math.isfinite(v)

        if not is_int(self.num_ws) or not 1 <= self.num_ws <= MAX_NUM_WS:
            bad(f"num_ws must be an integer in 1..{MAX_NUM_WS}, got {self.num_ws!r:.40}")
        if not is_int(self.w_dim) or not 1 <= self.w_dim <= MAX_W_DIM:
            bad(f"w_dim must be an integer in 1..{MAX_W_DIM}, got {self.w_dim!r:.40}")
        if self.kind not in KINDS:
            bad(f"kind must be one of {KINDS}, got {self.kind!r:.40}")
        if type(self.levels) is not tuple or any(l not in LEVELS for l in self.levels) \
                or len(set(self.levels)) != len(self.levels):
            bad(f"levels must be distinct names from {LEVELS}, got {self.levels!r:.80}")
        if self.kind == "levels":
            if not self.levels:
                bad("a levels mapper needs at least one of coarse, medium, fine")
            if list(self.levels) != [l for l in LEVELS if l in self.levels]:
                bad(f"levels must be listed coarse -> fine, got {list(self.levels)}")
            empty = [l for l in self.levels if not _count(level_rows(l, self.num_ws))]
            if empty:
                bad(f"level(s) {empty} have no W+ entries when num_ws is {self.num_ws}")
        elif self.levels:
            bad("a single mapper has no levels")
        if not is_int(self.num_layers) or not 1 <= self.num_layers <= MAX_LAYERS:
            bad(f"num_layers must be an integer in 1..{MAX_LAYERS}, got {self.num_layers!r:.40}")
        if not is_num(self.lr_mul) or not 0 < self.lr_mul <= 100:
            bad(f"lr_mul must be a number in (0, 100], got {self.lr_mul!r:.40}")
        if not is_num(self.step_scale) or not abs(self.step_scale) <= 100:
            bad(f"step_scale must be a finite number in [-100, 100], got {self.step_scale!r:.40}")
        if self.pixel_norm not in PIXEL_NORMS:
            bad(f"pixel_norm must be one of {PIXEL_NORMS}, got {self.pixel_norm!r:.40}")
        return self

    def check_latents(self, ws: torch.Tensor, what: str = "latents") -> None:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise MapperConfigError(f"{what} have shape {list(ws.shape)}; this mapper was made for W+ latents "
                                    f"[N, {self.num_ws}, {self.w_dim}] (a generator with {self.num_ws} W+ entries "
                                    f"and w_dim {self.w_dim})")

    def parameter_shapes(self) -> dict[str, tuple]:
        out = {}
        for name in self.mlps:
            for i in range(self.num_layers):
                out[f"{name}.fc{i}.weight"] = (self.w_dim, self.w_dim)
                out[f"{name}.fc{i}.bias"] = (self.w_dim,)
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["levels"] = list(self.levels)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d, where: str = "mapper") -> "MapperConfig":
        if not isinstance(d, dict):
            raise MapperConfigError(f"{where}: expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k)[:40] for k in d if k not in known)
        if unknown:
            raise MapperConfigError(f"{where}: unknown field(s) {unknown[:5]}")
        for k in ("num_ws", "w_dim"):
            if k not in d:
                raise MapperConfigError(f"{where}: missing field {k!r}")
        kw = dict(d)
        if "levels" in kw:
            lv = kw["levels"]
            if type(lv) not in (list, tuple) or len(lv) > len(LEVELS):
                raise MapperConfigError(f"{where}: levels must be a list of at most {len(LEVELS)} names")
            kw["levels"] = tuple(lv)
        return cls(**kw).validate(where)


def level_rows(level: str, num_ws: int) -> slice:
    """W+ entries of a level for a generator with ``num_ws`` entries (may be empty)."""
    start, stop = LEVEL_BOUNDS[level]
    stop = num_ws if stop is None else min(stop, num_ws)
    return slice(min(start, num_ws), stop)


def _count(rows: slice) -> int:
    return max(0, rows.stop - rows.start)


def pixel_norm(x: torch.Tensor, mode: str) -> torch.Tensor:
    """x [N, rows, F]: 'rows' normalizes over the rows (StyleCLIP's code), 'features' over F."""
    dim = 1 if mode == "rows" else -1
    return x * torch.rsqrt(x.square().mean(dim=dim, keepdim=True) + PIXEL_NORM_EPS)


class MapperMLP(nn.Module):
    def __init__(self, w_dim: int, num_layers: int, lr_mul: float):
        super().__init__()
        self.num_layers = num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnected(w_dim, w_dim, activation="lrelu", lr_mul=lr_mul))

    def forward(self, x: torch.Tensor, norm: str) -> torch.Tensor:
        n, rows, f = x.shape
        y = pixel_norm(x, norm).reshape(n * rows, f)
        for i in range(self.num_layers):
            y = getattr(self, f"fc{i}")(y)
        return y.reshape(n, rows, f)


class LatentMapper(nn.Module):
    """``forward(ws)`` -> the step M(w) [N, num_ws, w_dim] (zero outside the mapped levels);
    :meth:`map` -> ``ws + step_scale * strength * M(ws)``."""

    def __init__(self, cfg: MapperConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        for name in cfg.mlps:
            setattr(self, name, MapperMLP(cfg.w_dim, cfg.num_layers, cfg.lr_mul))

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        cfg.check_latents(ws)
        x = ws.to(torch.float32)
        parts = []
        pos = 0
        for name in cfg.mlps:
            rows = cfg.rows(name)
            if rows.start > pos:
                parts.append(torch.zeros_like(x[:, pos:rows.start]))
            parts.append(getattr(self, name)(x[:, rows], cfg.pixel_norm))
            pos = rows.stop
        if pos < cfg.num_ws:
            parts.append(torch.zeros_like(x[:, pos:]))
        return torch.cat(parts, dim=1)

    def map(self, ws: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """The mapped latents ``w + step_scale * strength * M(w)`` (float32)."""
        return ws.to(torch.float32) + (self.cfg.step_scale * float(strength)) * self(ws)


def copy_mapper(mapper: LatentMapper, device=None) -> LatentMapper:
    """A fresh copy with ordinary tensors (call outside ``torch.inference_mode()``)."""
    m = LatentMapper(mapper.cfg)
    m.load_state_dict({k: v.detach().clone() for k, v in mapper.state_dict().items()})
    dev = device if device is not None else next(mapper.parameters()).device
    return m.to(dev).eval()


def new_mapper(cfg: MapperConfig, seed: int = 0, device=None) -> LatentMapper:
    """A mapper with StyleCLIP's initialisation (weights N(0, 1) / lr_mul, biases 0), drawn
    from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        m = LatentMapper(cfg)
    return m.to(device) if device is not None else m
