"""Our StyleGAN3 generator (configurations T and R) in plain PyTorch.

Alias-free synthesis (Karras et al., "Alias-Free Generative Adversarial Networks", NeurIPS 2021):
a Fourier-feature input whose frequencies are rotated and translated by a transform learned
from w (and, on request, by a user transform: NVIDIA's visualiser's translate / rotate), then
``num_layers`` layers of modulated convolution + ``filtered_lrelu`` (bias, upsample with a
low-pass filter, leaky ReLU, low-pass filter and downsample, with each layer's own filters and
margins), and a ToRGB layer.  The geometry of every layer comes from
:meth:`nada_ops.stylegan.config.StyleGAN3Config.layers`; the filters are designed here
(windowed-sinc with a Kaiser window, or, for config R's non-critical layers, a radially
symmetric jinc with a separable Kaiser window), in float64, like NVIDIA's design with scipy.

Parameter and buffer names follow NVIDIA's module structure (``synthesis.input.freqs``,
``synthesis.L3_52_512.affine.weight``, ...), which is also the key layout of this pack's
safetensors format; the designed filters are non-persistent buffers (recomputed from the
configuration, checked against the filters stored in NVIDIA's pickles when reading them).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import filtered_lrelu
from .config import StyleGAN3Config
from .networks import NOISE_MODES, FullyConnected, GeneratorBase, MappingNetwork


# ----------------------------------------------------------------------------- filter design
def kaiser_beta(attenuation_db: float) -> float:
    """Kaiser's empirical beta for a stopband attenuation in dB."""
    a = attenuation_db
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a > 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def kaiser_attenuation(numtaps: int, width_rel_nyquist: float) -> float:
    """Attenuation (dB) of a Kaiser-windowed FIR filter of ``numtaps`` taps and the given transition
    width (a fraction of the Nyquist frequency): Kaiser's formula."""
    return 2.285 * (numtaps - 1) * math.pi * width_rel_nyquist + 7.95


def bessel_j1(x) -> np.ndarray:
    """J1(x) in float64 from Bessel's integral J1(x) = 1/pi int_0^pi cos(t - x sin t) dt, by the
    trapezoidal rule, which converges exponentially for this periodic integrand: with
    64 + 2|x| intervals the error is at the level of float64 rounding (torch.special.bessel_j1
    is only good to about 5e-7)."""
    x = np.asarray(x, dtype=np.float64)
    n = int(64 + 2 * np.abs(x).max(initial=0.0))
    t = np.linspace(0.0, np.pi, n + 1)
    w = np.full(n + 1, 1.0 / n)
    w[0] = w[-1] = 0.5 / n
    return np.cos(t - x[..., None] * np.sin(t)) @ w


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """The low-pass filter of a StyleGAN3 layer (float32), or None for a single tap (identity).

    Separable (1D, ``numtaps`` taps): windowed sinc with cutoff ``cutoff`` and a Kaiser window
    whose beta gives the attenuation a transition band ``width`` wide needs, normalised to unit
    gain at DC.  Radial (2D, ``numtaps`` x ``numtaps``): the ideal radially symmetric low-pass
    (a jinc, ``J1(2 pi fc r) / (pi r)``) times the outer product of that Kaiser window,
    normalised to sum 1.  All in float64; ``fs`` is the sampling rate the filter runs at."""
    if numtaps < 1:
        raise ValueError(f"a filter needs at least one tap, got {numtaps}")
    if numtaps == 1:
        return None
    nyq = fs / 2
    beta = kaiser_beta(kaiser_attenuation(numtaps, width / nyq))
    window = np.kaiser(numtaps, beta)
    if not radial:
        m = np.arange(numtaps) - (numtaps - 1) / 2
        fc = cutoff / nyq
        h = fc * np.sinc(fc * m) * window
        h = h / h.sum()
        return torch.tensor(h, dtype=torch.float32, device="cpu")   # (also under a meta-device context)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    j1 = bessel_j1(2 * math.pi * cutoff * r)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(r > 0, j1 / (math.pi * np.where(r > 0, r, 1)), cutoff)   # limit at r = 0: fc
    f = f * np.outer(window, window)
    f = f / f.sum()
    return torch.tensor(f, dtype=torch.float32, device="cpu")


def layer_filters(layer) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(up_filter, down_filter) of one :class:`~nada_ops.stylegan.config.SG3Layer`."""
    fu = lowpass_filter(layer.up_taps, layer.in_cutoff, layer.in_half_width * 2, layer.tmp_sampling_rate)
    fd = lowpass_filter(layer.down_taps, layer.out_cutoff, layer.out_half_width * 2, layer.tmp_sampling_rate,
                        radial=layer.down_radial)
    return fu, fd


# ----------------------------------------------------------------------------- transforms
def make_transform(translate=(0.0, 0.0), rotate: float = 0.0) -> torch.Tensor:
    """The 3x3 transform of the image that NVIDIA's tools expose: rotate by ``rotate`` degrees and
    translate by ``translate`` (x, y; 1 = the image's width/height), as ``gen_images.py`` builds it."""
    a = math.radians(float(rotate))
    s, c = math.sin(a), math.cos(a)
    tx, ty = (float(v) for v in translate)
    return torch.tensor([[c, s, tx], [-s, c, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)


def input_transform(translate=(0.0, 0.0), rotate: float = 0.0) -> torch.Tensor:
    """The matrix the Fourier input takes (the INVERSE of the image transform, as NVIDIA's
    ``gen_images.py`` and visualiser store in ``synthesis.input.transform``), float32 [3, 3]."""
    return torch.linalg.inv(make_transform(translate, rotate)).float()


# ----------------------------------------------------------------------------- layers
class SynthesisInput(nn.Module):
    """Fourier features: ``channels`` sinusoids of fixed random frequencies (inside a disc of
    radius ``bandwidth``) and phases, sampled on a ``size`` x ``size`` grid at ``sampling_rate``,
    rotated/translated per sample by the transform ``affine(w)`` predicts (and by the user
    transform), mixed by a learned ``channels`` x ``channels`` matrix."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.channels, self.size = channels, size
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnected(w_dim, 4)
        with torch.no_grad():                       # starts as the identity transform
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3))        # inverse user transform (NVIDIA's buffer)
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand([channels]) - 0.5)

    def forward(self, w: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        n = w.shape[0]
        user = self.transform if transform is None else transform.to(w.device, torch.float32)
        if user.ndim == 2:
            user = user.unsqueeze(0)
        t = self.affine(w)                                       # (r_c, r_s, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        eye = torch.eye(3, device=w.device).unsqueeze(0).repeat([n, 1, 1])
        m_r = eye.clone()                                        # inverse rotation of the image
        m_r[:, 0, 0], m_r[:, 0, 1], m_r[:, 1, 0], m_r[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        m_t = eye.clone()                                        # inverse translation of the image
        m_t[:, 0, 2], m_t[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = m_r @ m_t @ user                            # rotate, translate, then the user's
        freqs = self.freqs.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)   # [N, C]
        freqs = freqs @ transforms[:, :2, :2]                                            # [N, C, 2]
        # Frequencies a user transform pushes past the band fade out instead of aliasing.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) /
                      (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        # Pixel centres in units of the sampling period, centred on the image.
        s = self.size
        coords = (torch.arange(s, device=w.device, dtype=torch.float32) + 0.5 - s / 2) / self.sampling_rate
        x = (freqs[:, :, 0, None, None] * coords[None, None, None, :] +
             freqs[:, :, 1, None, None] * coords[None, None, :, None] + phases[:, :, None, None])  # [N, C, H, W]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, :, None, None]
        weight = self.weight / math.sqrt(self.channels)
        return torch.einsum("oc,nchw->nohw", weight, x)


def modulated_conv2d_sg3(x, weight, styles, demodulate: bool, padding: int, input_gain):
    """StyleGAN3's modulated convolution, as activation scaling around one shared-weight conv.

    With demodulation, weights and styles are first normalised to unit RMS (per output
    channel / per sample; demodulation removes those scales again, they only keep fp16 in
    range), ``input_gain`` (the layer's 1/sqrt(magnitude_ema)) scales the input."""
    n = x.shape[0]
    if demodulate:
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        wsq = weight.float().square().sum(dim=[2, 3])                       # [O, I]
        dcoefs = (styles.float().square() @ wsq.t() + 1e-8).rsqrt()          # [N, O]
    x = x * (styles * input_gain).to(x.dtype).reshape(n, -1, 1, 1)
    x = F.conv2d(x, weight.to(x.dtype), padding=padding)
    if demodulate:
        x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
    return x


class SynthesisLayer(nn.Module):
    """Modulated conv (3x3 in T, 1x1 in R and in ToRGB) + filtered leaky ReLU."""

    def __init__(self, w_dim: int, spec, conv_clamp):
        super().__init__()
        self.spec = spec
        self.is_torgb = spec.is_torgb
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, spec.in_channels, bias_init=1.0)
        k = spec.conv_kernel
        self.weight = nn.Parameter(torch.randn([spec.out_channels, spec.in_channels, k, k]))
        self.bias = nn.Parameter(torch.zeros([spec.out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        fu, fd = layer_filters(spec)
        self.register_buffer("up_filter", fu, persistent=False)
        self.register_buffer("down_filter", fd, persistent=False)

    def forward(self, x, w, dtype=torch.float32):
        spec = self.spec
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(spec.in_channels * spec.conv_kernel ** 2))
        x = modulated_conv2d_sg3(x.to(dtype), self.weight, styles, demodulate=not self.is_torgb,
                                 padding=spec.conv_kernel - 1, input_gain=self.magnitude_ema.rsqrt())
        gain, slope = (1.0, 1.0) if self.is_torgb else (math.sqrt(2), 0.2)
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias.to(x.dtype), up=spec.up,
                              down=spec.down, padding=list(spec.padding), gain=gain, slope=slope,
                              clamp=self.conv_clamp)


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        self.cfg = cfg
        inp = cfg.input_spec()
        self.input = SynthesisInput(cfg.w_dim, inp["channels"], inp["size"], inp["sampling_rate"],
                                    inp["bandwidth"])
        self.layer_names = []
        for spec in cfg.layers():
            setattr(self, spec.name, SynthesisLayer(cfg.w_dim, spec, cfg.conv_clamp))
            self.layer_names.append(spec.name)

    def layers(self) -> list[SynthesisLayer]:
        return [getattr(self, n) for n in self.layer_names]

    def noise_layers(self) -> list:
        """StyleGAN3 has no per-pixel noise inputs."""
        return []

    def forward(self, ws, noise_mode="const", noises=None, dtype=torch.float32, transform=None):
        """W+ [N, num_ws, w_dim] -> images [N, C, H, W] (float32).  ``noise_mode``/``noises`` are
        accepted for a common interface with StyleGAN2 (StyleGAN3 has no noise inputs);
        ``dtype=float16`` runs the top layers in half precision (NVIDIA's fp16 layers);
        ``transform`` ([3, 3] or [N, 3, 3], see :func:`input_transform`) replaces the input's
        stored ``transform`` buffer for this call."""
        cfg = self.cfg
        if ws.ndim != 3 or ws.shape[1] != cfg.num_ws or ws.shape[2] != cfg.w_dim:
            raise ValueError(f"synthesis expects W+ of shape [N, {cfg.num_ws}, {cfg.w_dim}], got {tuple(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noises:
            raise ValueError("StyleGAN3 generators take no noise inputs")
        if transform is not None:
            if transform.shape[-2:] != (3, 3) or transform.ndim not in (2, 3) or \
                    (transform.ndim == 3 and transform.shape[0] not in (1, ws.shape[0])):
                raise ValueError(f"the input transform must be [3, 3] or [N, 3, 3], got {tuple(transform.shape)}")
        ws = ws.to(torch.float32)
        x = self.input(ws[:, 0], transform)
        for i, layer in enumerate(self.layers()):
            x = layer(x, ws[:, i + 1], dtype if layer.spec.use_fp16 else torch.float32)
        x = x.to(torch.float32)
        if cfg.output_scale != 1:
            x = x * cfg.output_scale
        return x


class StyleGAN3Generator(GeneratorBase):
    """StyleGAN3 generator: ``G(z, c) -> image in [-1, 1]`` (NCHW); same interface as
    :class:`nada_ops.stylegan.networks.Generator`."""

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const", noises=None,
                transform=None):
        ws = self.map(z, c, truncation_psi, truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, noises=noises, transform=transform)

    def make_noises(self, batch: int, generator: torch.Generator | None = None, device=None) -> list:
        """No noise inputs: an empty list (the common interface of the trainer and renderers)."""
        return []
