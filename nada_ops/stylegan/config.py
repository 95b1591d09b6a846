"""Architecture descriptions of StyleGAN2 and StyleGAN3 (T/R) generators, and the W+ index ->
layer map of both.

This is the ONE place that knows which W+ entry drives which synthesis layer
(:func:`ws_layer_map`), which layers are never trained (:func:`frozen_layers`) and, for
StyleGAN3, every layer's sizes, sampling rates, cutoffs, filters' taps and margins
(:meth:`StyleGAN3Config.layers`, NVIDIA's design of "Alias-Free GANs", sec. 3 and app. F).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass


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
    family = "stylegan2"           # class constant (not a field): which network family

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


# ============================================================================ StyleGAN3
MAX_SG3_LAYERS = 64          # synthesis layers (NVIDIA: 14)
MAX_SG3_TAPS = 64            # FIR taps of one filter (NVIDIA: 6 x up/down factor = 12 or 24)
MAX_SG3_MARGIN = 256         # extra pixels around the image (NVIDIA: 10)
MAX_SG3_FACTOR = 16          # up/down factor of one layer (NVIDIA: 1, 2 or 4)


@dataclass(frozen=True)
class SG3Layer:
    """One StyleGAN3 synthesis layer, as NVIDIA's design computes it (all sizes square)."""
    index: int
    name: str                     # module name: L{index}_{out_size}_{out_channels}
    is_torgb: bool
    is_critically_sampled: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    tmp_sampling_rate: int        # where the leaky ReLU runs
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up: int
    down: int
    up_taps: int                  # 1 = no filter
    down_taps: int
    down_radial: bool             # radially symmetric (2D) downsampling filter (config R)
    padding: tuple                # (x0, x1, y0, y1) of filtered_lrelu
    use_fp16: bool                # NVIDIA's fp16 layers (num_fp16_res = 4)


@dataclass(frozen=True)
class StyleGAN3Config:
    """A StyleGAN3 generator (NVIDIA's ``training/networks_stylegan3.py``): configuration T
    (``conv_kernel=3``, separable filters) or R (``conv_kernel=1``, radial downsampling filters,
    twice the channels).  The mapping network is StyleGAN2's (default 2 layers)."""
    family = "stylegan3"           # class constant (not a field)
    NUM_FP16_RES = 4               # NVIDIA's default: fp16 (when asked for) in the top 4 resolutions

    img_resolution: int
    img_channels: int = 3
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 0
    channel_base: int = 32768      # channels(layer) = rint(min(channel_base / 2 / cutoff, channel_max))
    channel_max: int = 512
    num_mapping_layers: int = 2
    mapping_lr_mul: float = 0.01
    num_layers: int = 14           # synthesis layers, excluding the Fourier input and ToRGB
    num_critical: int = 2          # critically sampled layers at the end
    first_cutoff: float = 2.0      # f_c of the first layer
    first_stopband: float = 2 ** 2.1
    last_stopband_rel: float = 2 ** 0.3
    margin_size: int = 10          # extra pixels around the image in the intermediate layers
    output_scale: float = 0.25
    conv_kernel: int = 3           # 3 = config T, 1 = config R
    filter_size: int = 6           # low-pass taps per unit of up/down factor
    lrelu_upsampling: int = 2      # relative sampling rate of the leaky ReLU
    use_radial_filters: bool = False   # config R
    conv_clamp: float | None = 256

    # ------------------------------------------------------------------ derived
    @property
    def num_ws(self) -> int:
        return self.num_layers + 2

    @property
    def architecture(self) -> str:
        if self.conv_kernel == 3 and not self.use_radial_filters:
            return "stylegan3-t"
        if self.conv_kernel == 1 and self.use_radial_filters:
            return "stylegan3-r"
        return f"stylegan3 (conv_kernel {self.conv_kernel}, radial filters {self.use_radial_filters})"

    @property
    def mapping_embed_features(self) -> int:
        return self.w_dim if self.c_dim > 0 else 0

    @property
    def mapping_layer_features(self) -> int:
        return self.w_dim

    @property
    def embed_features(self):          # StyleGAN3's mapping has no separate sizes
        return None

    @property
    def layer_features(self):
        return None

    def _design(self):
        """NVIDIA's geometric progression of cutoffs and stopbands (float64, as their code)."""
        import numpy as np
        n = self.num_layers
        last_cutoff = self.img_resolution / 2
        last_stopband = last_cutoff * self.last_stopband_rel
        exponents = np.minimum(np.arange(n + 1) / (n - self.num_critical), 1)
        cutoffs = self.first_cutoff * (last_cutoff / self.first_cutoff) ** exponents
        stopbands = self.first_stopband * (last_stopband / self.first_stopband) ** exponents
        rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, self.img_resolution))))
        half_widths = np.maximum(stopbands, rates / 2) - cutoffs
        sizes = rates + self.margin_size * 2
        sizes[-2:] = self.img_resolution
        channels = np.rint(np.minimum((self.channel_base / 2) / cutoffs, self.channel_max))
        channels[-1] = self.img_channels
        return cutoffs, rates, half_widths, sizes, channels

    def input_spec(self) -> dict:
        """The Fourier-feature input: channels, size, sampling rate, bandwidth."""
        cutoffs, rates, _, sizes, channels = self._design()
        return dict(channels=int(channels[0]), size=int(sizes[0]), sampling_rate=float(rates[0]),
                    bandwidth=float(cutoffs[0]))

    def layers(self) -> list[SG3Layer]:
        """Every synthesis layer (the last one is ToRGB), computed from the configuration."""
        import numpy as np
        cutoffs, rates, half_widths, sizes, channels = self._design()
        out = []
        n = self.num_layers
        for idx in range(n + 1):
            prev = max(idx - 1, 0)
            is_torgb = idx == n
            critical = idx >= n - self.num_critical
            in_sr, out_sr = int(rates[prev]), int(rates[idx])
            tmp_sr = max(in_sr, out_sr) * (1 if is_torgb else self.lrelu_upsampling)
            up = int(np.rint(tmp_sr / in_sr))
            down = int(np.rint(tmp_sr / out_sr))
            if in_sr * up != tmp_sr or out_sr * down != tmp_sr:
                raise ArchitectureError(f"layer {idx}: sampling rates {in_sr} -> {tmp_sr} -> {out_sr} are not "
                                        "integer multiples of each other")
            up_taps = self.filter_size * up if up > 1 and not is_torgb else 1
            down_taps = self.filter_size * down if down > 1 and not is_torgb else 1
            kernel = 1 if is_torgb else self.conv_kernel
            in_size, out_size = int(sizes[prev]), int(sizes[idx])
            pad_total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
            pad_lo = (pad_total + up) // 2        # the symmetric interpretation (app. C.3)
            pad_hi = pad_total - pad_lo
            out_ch = int(channels[idx])
            out.append(SG3Layer(
                index=idx, name=f"L{idx}_{out_size}_{out_ch}", is_torgb=is_torgb, is_critically_sampled=critical,
                in_channels=int(channels[prev]), out_channels=out_ch, in_size=in_size, out_size=out_size,
                in_sampling_rate=in_sr, out_sampling_rate=out_sr, tmp_sampling_rate=tmp_sr,
                in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]),
                conv_kernel=kernel, up=up, down=down, up_taps=up_taps, down_taps=down_taps,
                down_radial=self.use_radial_filters and not critical,
                padding=(pad_lo, pad_hi, pad_lo, pad_hi),
                use_fp16=out_sr * 2 ** self.NUM_FP16_RES > self.img_resolution))
        return out

    def layer_names(self) -> list[str]:
        return [l.name for l in self.layers()]

    # --------------------------------------------------------------- validation
    def validate(self, where: str = "architecture") -> "StyleGAN3Config":
        """Types and ranges of every field (values may come from an untrusted file), then the
        layer design itself (integer sampling-rate ratios, positive sizes and widths)."""
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
        for name, lo, hi in (("img_channels", 1, MAX_IMG_CHANNELS), ("z_dim", 1, MAX_FEATURES),
                             ("w_dim", 1, MAX_FEATURES), ("channel_base", 1, MAX_CHANNEL_BASE),
                             ("channel_max", 1, MAX_FEATURES), ("num_mapping_layers", 1, MAX_MAPPING_LAYERS),
                             ("num_layers", 1, MAX_SG3_LAYERS), ("num_critical", 0, MAX_SG3_LAYERS),
                             ("margin_size", 0, MAX_SG3_MARGIN), ("filter_size", 1, MAX_SG3_TAPS),
                             ("lrelu_upsampling", 1, MAX_SG3_FACTOR)):
            v = getattr(self, name)
            if not is_int(v) or not lo <= v <= hi:
                bad(f"{name} must be an integer in {lo}..{hi}, got {describe(v)}")
        if not is_int(self.c_dim) or not 0 <= self.c_dim <= MAX_C_DIM:
            bad(f"c_dim must be an integer in 0..{MAX_C_DIM}, got {describe(self.c_dim)}")
        if self.num_critical >= self.num_layers:
            bad(f"num_critical {self.num_critical} must be smaller than num_layers {self.num_layers}")
        if self.conv_kernel not in (1, 3, 5, 7):
            bad(f"conv_kernel must be 1, 3, 5 or 7, got {describe(self.conv_kernel)}")
        if type(self.use_radial_filters) is not bool:
            bad(f"use_radial_filters must be true or false, got {describe(self.use_radial_filters)}")
        if not is_num(self.mapping_lr_mul) or not 0 < self.mapping_lr_mul <= MAX_LR_MUL:
            bad(f"mapping_lr_mul must be a number in (0, {MAX_LR_MUL:g}], got {describe(self.mapping_lr_mul)}")
        for name in ("first_cutoff", "first_stopband", "last_stopband_rel"):
            v = getattr(self, name)
            if not is_num(v) or not 0 < v <= 4096:
                bad(f"{name} must be a number in (0, 4096], got {describe(v)}")
        if not is_num(self.output_scale) or not 0 < abs(self.output_scale) <= 1e6:
            bad(f"output_scale must be a finite non-zero number, got {describe(self.output_scale)}")
        if self.conv_clamp is not None and (not is_num(self.conv_clamp) or not self.conv_clamp > 0):
            bad(f"conv_clamp must be a finite number > 0 or None, got {describe(self.conv_clamp)}")
        import numpy as np
        with np.errstate(all="ignore"):
            try:
                layers = self.layers()
            except ArchitectureError as e:
                bad(str(e))
            cutoffs, rates, half_widths, sizes, channels = self._design()
        if not (np.isfinite(cutoffs).all() and np.isfinite(half_widths).all() and np.isfinite(rates).all()):
            bad("the layer design gives non-finite cutoffs or sampling rates")
        if (half_widths <= 0).any():
            bad("the layer design gives a transition band of zero width (first_stopband must exceed first_cutoff)")
        if (channels < 1).any():
            bad(f"channel_base {self.channel_base} gives layers without channels")
        for l in layers:
            if max(l.up, l.down) > MAX_SG3_FACTOR or max(l.up_taps, l.down_taps) > MAX_SG3_TAPS:
                bad(f"layer {l.name}: up/down factors {l.up}/{l.down} with {l.up_taps}/{l.down_taps} taps "
                    f"exceed what the pack supports ({MAX_SG3_FACTOR}, {MAX_SG3_TAPS} taps)")
            if not 1 <= l.in_size <= 4 * 1024 + 2 * MAX_SG3_MARGIN:
                bad(f"layer {l.name}: size {l.in_size} is out of range")
        return self

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, where: str = "architecture") -> "StyleGAN3Config":
        if not isinstance(d, dict):
            raise ArchitectureError(f"{where}: expected a JSON object, got {type(d).__name__}")
        from ..io.errors import describe
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in known)
        if unknown:
            raise ArchitectureError(f"{where}: unknown architecture field(s) {describe(unknown, 200)}")
        if "img_resolution" not in d:
            raise ArchitectureError(f"{where}: missing field 'img_resolution'")
        try:
            cfg = cls(**d)
        except TypeError as e:
            raise ArchitectureError(f"{where}: {e}") from None
        return cfg.validate(where)


AnyConfig = "StyleGAN2Config | StyleGAN3Config"


def is_stylegan3(cfg) -> bool:
    return getattr(cfg, "family", "stylegan2") == "stylegan3"


# ====================================================================== W+ index -> layer
def ws_layer_map(cfg) -> list[list[str]]:
    """For each W+ index, the synthesis layers it drives (module paths of our generator).

    StyleGAN2: index 0 drives the 4x4 conv; index 2k-1 (k >= 1) drives ToRGB of resolution
    2^(k+1) AND the upsampling conv of the next resolution; index 2k drives the second conv of
    resolution 2^(k+2); the last index drives only the final ToRGB.  This matches NVIDIA's
    and rosinality's generators (18 entries at 1024 px).

    StyleGAN3: index 0 drives the Fourier-feature input (its learned rotation/translation),
    index i (1..num_layers) drives synthesis layer L{i-1}, the last index the ToRGB layer
    (16 entries at every resolution with NVIDIA's 14 layers).
    """
    if is_stylegan3(cfg):
        return [["synthesis.input"]] + [[f"synthesis.{name}"] for name in cfg.layer_names()]
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


def frozen_layers(cfg) -> set[str]:
    """Layers of :func:`ws_layer_map` that NADA never trains: StyleGAN2's ToRGB layers;
    StyleGAN3's Fourier input (the counterpart of StyleGAN2's frozen 4x4 constant) and ToRGB."""
    if is_stylegan3(cfg):
        m = ws_layer_map(cfg)
        return {m[0][0], m[-1][0]}
    return {l for names in ws_layer_map(cfg) for l in names if l.endswith("torgb")}


def ws_index_resolution(cfg) -> list[float]:
    """For each W+ index, the resolution of the detail its trainable layer works on:
    StyleGAN2, the block resolution of its conv (the final one for the ToRGB-only last
    index); StyleGAN3, twice the layer's cutoff frequency (the input's bandwidth for index 0,
    the image resolution for ToRGB).  Used to group indices into coarse / middle / fine."""
    if is_stylegan3(cfg):
        layers = cfg.layers()
        return [2 * cfg.input_spec()["bandwidth"]] + [2 * l.out_cutoff for l in layers]
    out = []
    frozen = frozen_layers(cfg)
    for layers in ws_layer_map(cfg):
        convs = [l for l in layers if l not in frozen] or layers
        out.append(float(convs[0].split(".")[1][1:]))
    return out


def layer_ws_index(cfg) -> dict[str, int]:
    """Inverse of :func:`ws_layer_map`: layer module path -> W+ index."""
    return {layer: i for i, names in enumerate(ws_layer_map(cfg)) for layer in names}


def config_from_dict(d: dict, family: str = "stylegan2", where: str = "architecture"):
    """The config class of ``family`` ('stylegan2' | 'stylegan3') from its JSON fields."""
    if family == "stylegan3":
        return StyleGAN3Config.from_dict(d, where)
    if family == "stylegan2":
        return StyleGAN2Config.from_dict(d, where)
    raise ArchitectureError(f"{where}: unknown generator family {family!r}")
