"""Filtered leaky ReLU: the alias-free nonlinearity of StyleGAN3 (Karras et al. 2021, sec. 3.2).

``filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)`` does, per
channel of an NCHW batch:

1. add the bias ``b`` (channel-wise; the zero padding below stays zero);
2. upsample by ``up`` (zero insertion), pad by ``padding = (x0, x1, y0, y1)`` (negative values
   crop) and filter with the upsampling FIR filter ``fu`` times ``up**2`` -- an ``upfirdn2d``
   whose output keeps only the positions where the filter lies entirely inside the padded image;
3. leaky ReLU with negative ``slope``, times ``gain``, clamped to ``[-clamp, clamp]`` (``None``:
   no clamping);
4. filter with the downsampling FIR filter ``fd`` (no padding, same cropping) and keep every
   ``down``-th pixel.

Filters are 1D (applied separably), 2D, or ``None`` (identity); ``flip_filter`` = correlation
instead of convolution.  The output size per axis is
``(in * up + pad0 + pad1 - (fu_taps - 1) - (fd_taps - 1) + (down - 1)) // down``.

:func:`filtered_lrelu_reference` is the specification: the four steps above written with the
pack's public ``bias_act`` and ``upfirdn2d`` (so that it runs on any device, with autograd of any
order).  :func:`filtered_lrelu` is the one public function: it takes the compiled CUDA kernel
(one fused pass, see ``nada_ops/kernels/filtered_lrelu.h``) when ``nada_ops.ops.backend`` says so,
the reference otherwise.
"""
from __future__ import annotations

import math

import torch

from . import backend
from .bias_act import bias_act
from .upfirdn2d import _padding4, upfirdn2d

SQRT2 = math.sqrt(2)


def filter_taps(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter: 1D filters are separable (same taps on both axes)."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def check_args(x, fu, fd, b, up, down, padding, gain, slope, clamp):
    """Validated (px0, px1, py0, py1), plus the output size; raises ValueError naming the problem."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"filtered_lrelu: x must be an NCHW tensor, got {getattr(x, 'shape', type(x))}")
    for name, f in (("fu", fu), ("fd", fd)):
        if f is not None and (not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.numel() == 0):
            raise ValueError(f"filtered_lrelu: {name} must be None, a 1D or a 2D filter, got "
                             f"{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[1]):
        raise ValueError(f"filtered_lrelu: bias of shape {tuple(b.shape)} does not match the {x.shape[1]} "
                         f"channels of x")
    if type(up) is not int or type(down) is not int or up < 1 or down < 1:
        raise ValueError(f"filtered_lrelu: up and down must be integers >= 1, got {up!r}, {down!r}")
    if not (gain > 0 and math.isfinite(gain)):
        raise ValueError(f"filtered_lrelu: gain must be a finite number > 0, got {gain!r}")
    if not (slope >= 0 and math.isfinite(slope)):
        raise ValueError(f"filtered_lrelu: slope must be a finite number >= 0, got {slope!r}")
    if clamp is not None and not clamp >= 0:
        raise ValueError(f"filtered_lrelu: clamp must be None or >= 0, got {clamp!r}")
    px0, px1, py0, py1 = _padding4(padding)
    fuw, fuh = filter_taps(fu)
    fdw, fdh = filter_taps(fd)
    out_w = (x.shape[3] * up + px0 + px1 - (fuw - 1) - (fdw - 1) + (down - 1)) // down
    out_h = (x.shape[2] * up + py0 + py1 - (fuh - 1) - (fdh - 1) + (down - 1)) // down
    if out_w < 1 or out_h < 1:
        raise ValueError(f"filtered_lrelu: no output pixels for x {tuple(x.shape)}, up {up}, down {down}, "
                         f"padding {(px0, px1, py0, py1)} and filters of {fuw}x{fuh} / {fdw}x{fdh} taps")
    return (px0, px1, py0, py1), (out_h, out_w)


def filtered_lrelu_reference(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                             b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding=0,
                             gain: float = SQRT2, slope: float = 0.2, clamp: float | None = None,
                             flip_filter: bool = False) -> torch.Tensor:
    """The specification, written with ``bias_act`` and ``upfirdn2d`` (module docstring)."""
    pad, (out_h, out_w) = check_args(x, fu, fd, b, up, down, padding, gain, slope, clamp)
    if b is not None:
        x = bias_act(x, b.to(x.dtype))
    x = upfirdn2d(x, fu, up=up, padding=pad, gain=up * up, flip_filter=flip_filter)
    x = bias_act(x, None, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    x = upfirdn2d(x, fd, down=down, flip_filter=flip_filter)
    assert x.shape[2:] == (out_h, out_w), (tuple(x.shape), out_h, out_w)
    return x


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding=0, gain: float = SQRT2,
                   slope: float = 0.2, clamp: float | None = None, flip_filter: bool = False) -> torch.Tensor:
    """Bias, upsample + filter, leaky ReLU (gain, clamp), filter + downsample (module docstring).

    Dispatches to the compiled CUDA kernel when ``nada_ops.ops.backend`` selects it for ``x``;
    the kernel gives no gradient for the filters, so filters that require grad (with grad mode
    on) always take the reference path."""
    filters_need_grad = torch.is_grad_enabled() and any(f is not None and f.requires_grad for f in (fu, fd))
    if filters_need_grad:
        if backend.get_impl() == "compiled":
            raise backend.CompiledOpsUnavailable(
                "filtered_lrelu: the compiled implementation was forced but a filter requires grad, which "
                "only the reference implementation supports")
    else:
        mod = backend.compiled_module("filtered_lrelu", x)
        if mod is not None:
            pad, _ = check_args(x, fu, fd, b, up, down, padding, gain, slope, clamp)
            return mod.filtered_lrelu_autograd(x, fu, fd, b, up=up, down=down, padding=pad, gain=float(gain),
                                               slope=float(slope), clamp=clamp, flip_filter=flip_filter)
    return filtered_lrelu_reference(x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                                    clamp=clamp, flip_filter=flip_filter)
