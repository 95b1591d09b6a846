"""Architecture description of a StyleGAN2 generator, and the W+ index -> layer map.

This is the ONE place that knows which W+ entry drives which synthesis layer.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field


class ArchitectureError(ValueError):
    """An architecture description is invalid or does not match the weights."""


# Ranges accepted for an architecture. Real StyleGAN2 checkpoints use 512 for z/w dims and
# channel_max, 8 (sometimes 2) mapping layers, up to 1000 classes, 1-4 image channels and
# the 4-tap filter [1,3,3,1]. The limits leave headroom; an architecture is in any case only
# accepted from a file that holds its weights (see formats.check_weights_fit).
MAX_FEATURES = 2048          # z_dim, w_dim, channel_max, embed_features, layer_features
MAX_CHANNEL_BASE = 1 << 20
MAX_MAPPING_LAYERS = 16
MAX_C_DIM = 10000
MAX_IMG_CHANNELS = 4
MAX_FILTER_TAPS = 16
MAX_LR_MUL = 100.0


@dataclass(frozen=True)
class StyleGAN2Config:
    img_resolution: int
    img_channels: int = 3
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 0
    channel_base: int = 32768      # channels(res) = min(channel_base // res, channel_max)
    channel_max: int = 512
    num_mapping_layers: int = 8
    mapping_lr_mul: float = 0.01
    embed_features: int | None = None   # label embedding size (None = w_dim)
    layer_features: int | None = None   # mapping hidden size (None = w_dim)
    conv_clamp: float | None = None     # NVIDIA models clamp activations at +-256
    resample_filter: tuple = (1, 3, 3, 1)

    # ------------------------------------------------------------------ derived
    @property
    def log2_res(self) -> int:
        return int(math.log2(self.img_resolution))

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, self.log2_res + 1)]

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def num_ws(self) -> int:
        return 2 * self.log2_res - 2

    @property
    def channel_multiplier(self) -> float:
        """rosinality's channel multiplier (2 for config-f): channel_base = 16384 * cm."""
        return self.channel_base / 16384

    @property
    def mapping_embed_features(self) -> int:
        if self.c_dim == 0:
            return 0
        return self.embed_features if self.embed_features is not None else self.w_dim

    @property
    def mapping_layer_features(self) -> int:
        return self.layer_features if self.layer_features is not None else self.w_dim

    # --------------------------------------------------------------- validation
    def validate(self, where: str = "architecture") -> "StyleGAN2Config":
        """Check every field's type and range (values may come from an untrusted file:
        messages show them through a bounded description)."""
        from ..io.errors import describe

        def bad(msg):
            raise ArchitectureError(f"{where}: {msg}")

        def is_int(v):
            return type(v) is int

        def is_num(v):
            return type(v) in (int, float) and math.isfinite(v)

        r = self.img_resolution
        if not is_int(r) or r < 4 or r & (r - 1):
            bad(f"img_resolution must be a power of two, got {describe(r)}")
        if not 32 <= r <= 1024:
            bad(f"img_resolution {r} is outside the supported range 32..1024")
        for name, hi in (("img_channels", MAX_IMG_CHANNELS), ("z_dim", MAX_FEATURES), ("w_dim", MAX_FEATURES),
                         ("channel_base", MAX_CHANNEL_BASE), ("channel_max", MAX_FEATURES),
                         ("num_mapping_layers", MAX_MAPPING_LAYERS)):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                bad(f"{name} must be a positive integer, got {describe(v)}")
            if v > hi:
                bad(f"{name} {v} is larger than any supported model (at most {hi})")
        if not is_int(self.c_dim) or not 0 <= self.c_dim <= MAX_C_DIM:
            bad(f"c_dim must be an integer in 0..{MAX_C_DIM}, got {describe(self.c_dim)}")
        for name in ("embed_features", "layer_features"):
            v = getattr(self, name)
            if v is not None and (not is_int(v) or not 1 <= v <= MAX_FEATURES):
                bad(f"{name} must be None or an integer in 1..{MAX_FEATURES}, got {describe(v)}")
        if self.channels(r) < 1:
            bad(f"channel_base {self.channel_base} gives no channels at {r}px")
        if not is_num(self.mapping_lr_mul) or not 0 < self.mapping_lr_mul <= MAX_LR_MUL:
            bad(f"mapping_lr_mul must be a number in (0, {MAX_LR_MUL:g}], got {describe(self.mapping_lr_mul)}")
        if self.conv_clamp is not None and (not is_num(self.conv_clamp) or not self.conv_clamp > 0):
            bad(f"conv_clamp must be a finite number > 0 or None, got {describe(self.conv_clamp)}")
        f = self.resample_filter
        if type(f) not in (tuple, list) or not 1 <= len(f) <= MAX_FILTER_TAPS or not all(is_num(x) for x in f):
            bad(f"resample_filter must be 1..{MAX_FILTER_TAPS} finite numbers, got {describe(f)}")
        total = math.fsum(f)
        if not math.isfinite(total) or abs(total) <= 1e-6 * max(abs(x) for x in f):
            bad(f"resample_filter {describe(f)} sums to {total:g}; its taps must have a non-zero sum")
        return self

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["resample_filter"] = list(self.resample_filter)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, where: str = "architecture") -> "StyleGAN2Config":
        if not isinstance(d, dict):
            raise ArchitectureError(f"{where}: expected a JSON object, got {type(d).__name__}")
        from ..io.errors import describe
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in known)
        if unknown:
            raise ArchitectureError(f"{where}: unknown architecture field(s) {describe(unknown, 200)}")
        if "img_resolution" not in d:
            raise ArchitectureError(f"{where}: missing field 'img_resolution'")
        kw = dict(d)
        if "resample_filter" in kw:
            rf = kw["resample_filter"]
            if type(rf) not in (list, tuple) or len(rf) > MAX_FILTER_TAPS:
                raise ArchitectureError(f"{where}: resample_filter must be a list of at most {MAX_FILTER_TAPS} "
                                        f"numbers, got {describe(rf)}")
            kw["resample_filter"] = tuple(rf)
        try:
            cfg = cls(**kw)
        except TypeError as e:
            raise ArchitectureError(f"{where}: {e}") from None
        return cfg.validate(where)


def ws_layer_map(cfg: StyleGAN2Config) -> list[list[str]]:
    """For each W+ index, the synthesis layers it drives (module paths of our generator).

    Index 0 drives the 4x4 conv; index 2k-1 (k >= 1) drives ToRGB of resolution 2^(k+1)
    AND the upsampling conv of the next resolution; index 2k drives the second conv of
    resolution 2^(k+2); the last index drives only the final ToRGB.  This matches NVIDIA's
    and rosinality's generators (18 entries at 1024 px).
    """
    layers: list[list[str]] = [[] for _ in range(cfg.num_ws)]
    idx = 0
    for res in cfg.block_resolutions:
        if res == 4:
            layers[idx].append("synthesis.b4.conv1")
            idx += 1
        else:
            layers[idx].append(f"synthesis.b{res}.conv0")
            layers[idx + 1].append(f"synthesis.b{res}.conv1")
            idx += 2
        # ToRGB reads the w after this block's convs (shared with the next block's conv0).
        layers[idx].append(f"synthesis.b{res}.torgb")
    assert idx == cfg.num_ws - 1
    return layers


def layer_ws_index(cfg: StyleGAN2Config) -> dict[str, int]:
    """Inverse of :func:`ws_layer_map`: layer module path -> W+ index."""
    return {layer: i for i, names in enumerate(ws_layer_map(cfg)) for layer in names}
