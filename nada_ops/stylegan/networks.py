"""Our StyleGAN2 generator (mapping + skip synthesis) in plain PyTorch.

Parameter names follow the structure of NVIDIA's generator (``mapping.fc0.weight``,
``synthesis.b64.conv0.affine.bias``, ...), which is also the key layout of this pack's
safetensors format.  Weights are stored unscaled ("equalized learning rate"); the
runtime gains are applied in ``forward``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import bias_act, setup_filter, upfirdn2d, upsample2d
from .config import StyleGAN2Config, ws_layer_map

NOISE_MODES = ("const", "random", "none")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnected(nn.Module):
    def __init__(self, in_features, out_features, activation="linear", lr_mul=1.0, bias_init=0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class MappingNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.cfg = cfg
        emb = cfg.mapping_embed_features
        feats = [cfg.z_dim + emb] + [cfg.mapping_layer_features] * (cfg.num_mapping_layers - 1) + [cfg.w_dim]
        if cfg.c_dim > 0:
            self.embed = FullyConnected(cfg.c_dim, emb)
        for i in range(cfg.num_mapping_layers):
            setattr(self, f"fc{i}", FullyConnected(feats[i], feats[i + 1], activation="lrelu",
                                                   lr_mul=cfg.mapping_lr_mul))
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))

    def forward(self, z, c=None):
        cfg = self.cfg
        x = normalize_2nd_moment(z.to(torch.float32))
        if cfg.c_dim > 0:
            if c is None:
                raise ValueError(f"this generator is class-conditional (c_dim={cfg.c_dim}): a class label is required")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1)
        for i in range(cfg.num_mapping_layers):
            x = getattr(self, f"fc{i}")(x)
        return x


def modulated_conv2d(x, weight, styles, demodulate=True, up=1, resample_filter=None, fused=False):
    """Modulated convolution, x [N, I, H, W], weight [O, I, k, k], styles [N, I] -> [N, O, H*up, W*up].

    Two forms with the same value:
    - ``fused=False`` (default): scale the activations before and after ONE shared-weight
      convolution (batch-friendly, and the form every result of this pack was checked with);
    - ``fused=True``: NVIDIA's per-sample weights, a grouped convolution with ``groups=N``
      (modulate and demodulate the weights, not the activations: fewer passes over the
      activations and fewer of them kept for the backward pass).
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalise to stay inside fp16 range (demodulation removes the scale again).
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    if fused:
        return _modulated_conv2d_grouped(x, weight, styles, demodulate, up, resample_filter)
    dcoefs = None
    if demodulate:
        # sum_{i,k} (w_oik * s_ni)^2 = sum_i s_ni^2 * sum_k w_oik^2
        wsq = weight.float().square().sum(dim=[2, 3])            # [O, I]
        dcoefs = (styles.float().square() @ wsq.t() + 1e-8).rsqrt()  # [N, O]
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    w = weight.to(x.dtype)
    if up == 1:
        x = F.conv2d(x, w, padding=kh // 2)
    else:
        x = _upsample_conv(x, w.transpose(0, 1), up, kh, kw, resample_filter)
    if demodulate:
        x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
    return x


def _upsample_conv(x, w_t, up, kh, kw, resample_filter, groups=1):
    """Transposed conv (stride ``up``) with weight ``w_t`` [I, O/groups, k, k], then the low-pass FIR filter."""
    x = F.conv_transpose2d(x, w_t, stride=up, groups=groups)
    fw = resample_filter.shape[-1]
    p0 = (fw + up - 1) // 2 + kh // 2 - (kw - 1)
    p1 = (fw - up) // 2 + kh // 2 - (kw - up)
    return upfirdn2d(x, resample_filter, padding=[p0, p1, p0, p1], gain=up * up)


def _modulated_conv2d_grouped(x, weight, styles, demodulate, up, resample_filter):
    n, _, h, w_ = x.shape
    out_ch, in_ch, kh, kw = weight.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    wts = weight.to(acc)[None] * styles.to(acc).reshape(n, 1, -1, 1, 1)         # [N, O, I, k, k]
    if demodulate:
        wts = wts * (wts.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, -1, 1, 1, 1)
    wts = wts.to(x.dtype)
    xg = x.reshape(1, n * in_ch, h, w_)
    if up == 1:
        y = F.conv2d(xg, wts.reshape(n * out_ch, in_ch, kh, kw), padding=kh // 2, groups=n)
    else:
        y = _upsample_conv(xg, wts.transpose(1, 2).reshape(n * in_ch, out_ch, kh, kw), up, kh, kw,
                           resample_filter, groups=n)
    return y.reshape(n, out_ch, y.shape[2], y.shape[3])


class SynthesisLayer(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim, resolution, up=1, conv_clamp=None, resample_filter=None):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_ch, in_ch, 3, 3]))
        self.bias = nn.Parameter(torch.zeros([out_ch]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        if up > 1:
            self.register_buffer("resample_filter", resample_filter.clone(), persistent=False)
        else:
            self.resample_filter = None

    def forward(self, x, w, noise_mode="const", noise=None, clamp=None, fused=False):
        """``clamp`` (reduced-precision layers): used when the layer has no conv_clamp of its own."""
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, resample_filter=self.resample_filter, fused=fused)
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        elif noise_mode == "random":
            x = x + torch.randn([x.shape[0], 1, self.resolution, self.resolution],
                                device=x.device, dtype=x.dtype) * self.noise_strength.to(x.dtype)
        clamp = self.conv_clamp if self.conv_clamp is not None else clamp
        return bias_act(x, self.bias.to(x.dtype), act="lrelu", clamp=clamp)


class ToRGB(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_ch, in_ch, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_ch]))
        self.weight_gain = 1 / math.sqrt(in_ch)

    def forward(self, x, w, clamp=None):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp if self.conv_clamp is not None else clamp)


class SynthesisBlock(nn.Module):
    def __init__(self, cfg: StyleGAN2Config, res: int, resample_filter):
        super().__init__()
        self.res = res
        out_ch = cfg.channels(res)
        if res == 4:
            self.const = nn.Parameter(torch.randn([out_ch, 4, 4]))
        else:
            in_ch = cfg.channels(res // 2)
            self.conv0 = SynthesisLayer(in_ch, out_ch, cfg.w_dim, res, up=2, conv_clamp=cfg.conv_clamp,
                                        resample_filter=resample_filter)
        self.conv1 = SynthesisLayer(out_ch, out_ch, cfg.w_dim, res, conv_clamp=cfg.conv_clamp)
        self.torgb = ToRGB(out_ch, cfg.img_channels, cfg.w_dim, conv_clamp=cfg.conv_clamp)
        self.register_buffer("resample_filter", resample_filter.clone(), persistent=False)

    @property
    def num_conv(self):
        return 1 if self.res == 4 else 2

    def forward(self, x, img, ws, noise_mode, noises, dtype, clamp=None, fused=False, channels_last=False):
        """ws: [N, num_conv + 1, w_dim]; noises: list of per-layer noise tensors or Nones.
        ``clamp``: activation clamp of reduced-precision blocks (NVIDIA: 256) where the layers have
        none of their own; ``fused``: grouped modulated convolutions; ``channels_last``: memory format."""
        fmt = torch.channels_last if channels_last else torch.preserve_format
        if self.res == 4:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x = self.conv1(x, ws[:, 0], noise_mode, noises[0], clamp, fused)
        else:
            x = self.conv0(x.to(dtype=dtype, memory_format=fmt), ws[:, 0], noise_mode, noises[0], clamp, fused)
            x = self.conv1(x, ws[:, 1], noise_mode, noises[1], clamp, fused)
        y = self.torgb(x, ws[:, self.num_conv], clamp).to(torch.float32)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
            img = img + y
        else:
            img = y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.cfg = cfg
        f = setup_filter(list(cfg.resample_filter))
        for res in cfg.block_resolutions:
            setattr(self, f"b{res}", SynthesisBlock(cfg, res, f))

    def blocks(self):
        return [getattr(self, f"b{res}") for res in self.cfg.block_resolutions]

    def noise_layers(self) -> list[SynthesisLayer]:
        """Synthesis layers that take a noise input, in forward order."""
        out = []
        for b in self.blocks():
            if b.res > 4:
                out.append(b.conv0)
            out.append(b.conv1)
        return out

    def forward(self, ws, noise_mode="const", noises=None, dtype=torch.float32, num_fp16_res=None, fp16_clamp=None,
                fused_modconv=False, channels_last=False):
        """W+ -> image (float32).  ``dtype`` (float16 / bfloat16) runs the blocks in reduced
        precision: all of them (``num_fp16_res=None``) or, as NVIDIA's networks do, only the top
        ``num_fp16_res`` resolutions, whose activations are then clamped to +-``fp16_clamp`` where
        the layers have no clamp of their own.  ``fused_modconv`` / ``channels_last``: see
        :func:`modulated_conv2d` and the precision policy (``nada_ops.precision``)."""
        cfg = self.cfg
        if ws.ndim != 3 or ws.shape[1] != cfg.num_ws or ws.shape[2] != cfg.w_dim:
            raise ValueError(f"synthesis expects W+ of shape [N, {cfg.num_ws}, {cfg.w_dim}], got {tuple(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        n_noise = len(self.noise_layers())
        if noises is None:
            noises = [None] * n_noise
        elif len(noises) != n_noise:
            raise ValueError(f"expected {n_noise} noise tensors, got {len(noises)}")
        ws = ws.to(torch.float32)
        low_res = 0
        if dtype != torch.float32 and num_fp16_res is not None:
            low_res = max(2 ** (int(math.log2(cfg.img_resolution)) + 1 - int(num_fp16_res)), 8) \
                if num_fp16_res > 0 else cfg.img_resolution * 2
        x = img = None
        w_idx = n_idx = 0
        for b in self.blocks():
            k = b.num_conv
            low = dtype != torch.float32 and b.res >= low_res
            x, img = b(x, img, ws[:, w_idx: w_idx + k + 1], noise_mode, noises[n_idx: n_idx + k],
                       dtype if low else torch.float32, fp16_clamp if low else None, fused_modconv,
                       channels_last and low)
            w_idx += k
            n_idx += k
        return img


class GeneratorBase(nn.Module):
    """The latent side StyleGAN2 and StyleGAN3 generators share: ``cfg``, a ``mapping`` network
    with its ``w_avg`` and a ``synthesis`` network (set by the subclass), W+ entries, truncation."""

    cfg: StyleGAN2Config

    @property
    def num_ws(self) -> int:
        return self.cfg.num_ws

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def ws_layer_map(self) -> list[list[str]]:
        return ws_layer_map(self.cfg)

    def map(self, z, c=None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None):
        """z [N, z_dim] (+ one-hot c [N, c_dim]) -> W+ [N, num_ws, w_dim], truncated."""
        w = self.mapping(z, c)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        return truncate(ws, self.w_avg, truncation_psi, truncation_cutoff)


class Generator(GeneratorBase):
    """StyleGAN2 generator: ``G(z, c) -> image in [-1, 1]`` (NCHW)."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const", noises=None):
        ws = self.map(z, c, truncation_psi, truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, noises=noises)

    def make_noises(self, batch: int, generator: torch.Generator | None = None, device=None) -> list[torch.Tensor]:
        """Per-layer random noise, so that two generators can be fed the SAME noise."""
        device = device or self.w_avg.device
        return [torch.randn([batch, 1, l.resolution, l.resolution], generator=generator, device=device)
                for l in self.synthesis.noise_layers()]


def build_generator(cfg) -> nn.Module:
    """A new generator for ``cfg``: :class:`Generator` (StyleGAN2) or, for a
    :class:`~nada_ops.stylegan.config.StyleGAN3Config`, the StyleGAN3 generator (same interface)."""
    if getattr(cfg, "family", "stylegan2") == "stylegan3":
        from .networks_sg3 import StyleGAN3Generator
        return StyleGAN3Generator(cfg)
    return Generator(cfg)


def copy_generator(G: Generator, device=None) -> Generator:
    """A fresh copy with its own ordinary tensors (not views, not inference tensors: call it
    outside ``torch.inference_mode()``), in eval mode, on ``device`` (default: G's)."""
    G2 = build_generator(G.cfg)
    G2.load_state_dict({k: v.detach().clone() for k, v in G.state_dict().items()})
    return G2.to(device if device is not None else G.w_avg.device).eval()


def truncate(ws, w_avg, psi: float = 1.0, cutoff: int | None = None):
    """w' = w_avg + psi (w - w_avg), for the first ``cutoff`` W+ entries (all if None)."""
    if psi == 1:
        return ws
    if ws.ndim == 2:
        return w_avg.lerp(ws, psi)
    if cutoff is None:
        return w_avg.lerp(ws, psi)
    out = ws.clone()
    out[:, :cutoff] = w_avg.lerp(ws[:, :cutoff], psi)
    return out


def style_mix(ws_a, ws_b, crossover: int | torch.Tensor):
    """W+ that uses ``ws_a`` for indices < crossover and ``ws_b`` from crossover on.

    ``crossover`` may be an int or a per-sample LongTensor [N]."""
    num_ws = ws_a.shape[1]
    idx = torch.arange(num_ws, device=ws_a.device)
    if isinstance(crossover, torch.Tensor):
        mask = idx[None, :] < crossover.to(ws_a.device)[:, None]
    else:
        if not 0 <= int(crossover) <= num_ws:
            raise ValueError(f"style-mixing crossover must be in 0..{num_ws}, got {crossover}")
        mask = (idx < int(crossover))[None, :].expand(ws_a.shape[0], -1)
    return torch.where(mask[:, :, None], ws_a, ws_b)


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """NVIDIA's generate.py convention: z = RandomState(seed).randn(z_dim)."""
    if not 0 <= int(seed) < 2 ** 32:
        raise ValueError(f"seed must be in 0..2^32-1, got {seed}")
    return torch.from_numpy(np.random.RandomState(int(seed)).randn(1, z_dim)).float()


def z_from_seeds(seeds, z_dim: int) -> torch.Tensor:
    return torch.cat([z_from_seed(s, z_dim) for s in seeds], dim=0)


def estimate_w_avg(G: Generator, num_samples: int = 8192, seed: int = 0, batch: int = 1024) -> torch.Tensor:
    """Mean of mapped latents over ``num_samples`` z drawn with a fixed seed (for checkpoints
    without a stored average)."""
    gen = torch.Generator().manual_seed(seed)
    dev = G.w_avg.device
    total = torch.zeros(G.cfg.w_dim, dtype=torch.float64, device=dev)
    done = 0
    with torch.no_grad():
        while done < num_samples:
            n = min(batch, num_samples - done)
            z = torch.randn([n, G.cfg.z_dim], generator=gen).to(dev)
            c = None
            if G.cfg.c_dim:
                lab = torch.randint(0, G.cfg.c_dim, [n], generator=gen)
                c = F.one_hot(lab, G.cfg.c_dim).float().to(dev)
            total += G.mapping(z, c).double().sum(0)
            done += n
    return (total / num_samples).float()
