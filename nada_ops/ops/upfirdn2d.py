"""Upsample, FIR-filter, downsample (upfirdn2d) of NCHW images.

``upfirdn2d(x, f, up, down, padding, flip_filter, gain)``:
1. upsample by inserting ``up-1`` zeros between pixels;
2. pad (negative padding crops) by ``padding = (x0, x1, y0, y1)``;
3. convolve with the 2D FIR filter ``f`` (true convolution unless ``flip_filter``),
   times ``gain``; a 1D filter is applied separably;
4. keep every ``down``-th pixel (the reference computes only those: a strided convolution).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import backend


def _pair(v, name):
    if isinstance(v, int):
        return v, v
    if len(v) != 2:
        raise ValueError(f"upfirdn2d: {name} must be an int or a pair, got {v!r}")
    return int(v[0]), int(v[1])


def _padding4(padding):
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return tuple(int(p) for p in padding)
    raise ValueError(f"upfirdn2d: padding must be an int, a pair or 4 ints, got {padding!r}")


def setup_filter(f, device=None, normalize=True, flip_filter=False, gain=1, separable=None) -> torch.Tensor:
    """Make a FIR filter tensor from a list: 1D (separable) or 2D, normalised to sum 1, times gain."""
    if f is None:
        f = [1]
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2):
        raise ValueError(f"setup_filter: filter must be 1D or 2D, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = f.ger(f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    if device is not None:
        f = f.to(device)
    return f


def upfirdn2d_reference(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0,
                        flip_filter=False, gain=1) -> torch.Tensor:
    """Plain-PyTorch upfirdn2d: the ground truth for the compiled kernel."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be NCHW, got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.ndim not in (1, 2):
        raise ValueError(f"upfirdn2d: filter must be 1D or 2D, got shape {tuple(f.shape)}")
    upx, upy = _pair(up, "up")
    downx, downy = _pair(down, "down")
    px0, px1, py0, py1 = _padding4(padding)
    if min(upx, upy, downx, downy) < 1:
        raise ValueError("upfirdn2d: up and down factors must be >= 1")
    n, c, h, w = x.shape

    # 1. Upsample by zero insertion.
    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)
    # 2. Pad / crop.
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    # 3. FIR filter (conv2d is correlation: flip for a true convolution).
    f = f.to(x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    # 4. Downsample: keep every down-th output (the convolution's stride computes only those).
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c, stride=(downy, downx))
    else:
        x = F.conv2d(x, f[None, None, None, :].repeat(c, 1, 1, 1), groups=c, stride=(1, downx))
        x = F.conv2d(x, f[None, None, :, None].repeat(c, 1, 1, 1), groups=c, stride=(downy, 1))
    return x


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0,
              flip_filter=False, gain=1) -> torch.Tensor:
    """Public upfirdn2d: compiled CUDA kernel when available, reference otherwise.

    The compiled kernel gives no gradient for the filter: a filter that requires grad
    (with grad mode on) always takes the reference path."""
    if f is not None and f.requires_grad and torch.is_grad_enabled():
        if backend.get_impl() == "compiled":
            raise backend.CompiledOpsUnavailable(
                "upfirdn2d: the compiled implementation was forced but the filter requires grad, "
                "which only the reference implementation supports")
        return upfirdn2d_reference(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    mod = backend.compiled_module("upfirdn2d", x)
    if mod is not None:
        if f is None:
            f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
        return mod.upfirdn2d_autograd(x, f, up=_pair(up, "up"), down=_pair(down, "down"),
                                      padding=_padding4(padding), flip_filter=flip_filter, gain=gain)
    return upfirdn2d_reference(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def _filter_size(f):
    if f is None:
        return 1, 1
    return (f.shape[-1], f.shape[0]) if f.ndim == 2 else (f.shape[0], f.shape[0])


def filter2d(x, f, padding=0, flip_filter=False, gain=1):
    """Filter with ``f`` keeping the size (plus ``padding``)."""
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1):
    """Upsample by ``up`` with the low-pass filter ``f`` (gain up^2 keeps the mean)."""
    upx, upy = _pair(up, "up")
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1):
    """Downsample by ``down`` after low-pass filtering with ``f``."""
    downx, downy = _pair(down, "down")
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain)
