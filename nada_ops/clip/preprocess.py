"""Generator output -> CLIP input: the ONE place where images are prepared for CLIP.

Every image that reaches a CLIP image tower in this package goes through
:func:`to_clip_input` (generator outputs directly, real ``IMAGE`` tensors after being
mapped to [-1, 1]), so all embeddings are computed from identically prepared pixels.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

SizeLike = Union[int, Sequence[int]]
StatLike = Union[Sequence[float], torch.Tensor]


def _as_hw(size: SizeLike) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


def _as_stat(v: StatLike, ref: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=ref.dtype, device=ref.device)
    if t.ndim == 0:
        t = t.expand(ref.shape[1])
    return t.reshape(1, -1, 1, 1)


def to_clip_input(img: torch.Tensor, size: SizeLike, mean: StatLike, std: StatLike) -> torch.Tensor:
    """Map generator output (NCHW, values in [-1, 1]) to a normalized CLIP input.

    Steps: ``x = (img + 1) / 2``; if the image is not already ``size``: resize so that the
    short side matches (aspect ratio kept) and center-crop the long side; then
    ``(x - mean) / std`` per channel. Nothing is clamped: values slightly outside
    [-1, 1] stay outside, so gradients are never cut off.

    Resampling: bicubic with ``antialias=True``. CLIP was trained on images that PIL
    resized with its (antialiased) BICUBIC filter, and torch's antialiased bicubic uses
    the same kernel (a = -0.5, support scaled with the downsampling factor), so
    generator images reach CLIP looking like the pictures it was trained on. Plain
    bicubic/bilinear without antialiasing would alias badly when a 1024 px image is
    reduced to 224 px (every output pixel would only see ~4x4 of ~21x21 source pixels),
    and the directional loss would then follow high-frequency artefacts. The op is
    differentiable (torch implements its backward on CPU and CUDA). When upsampling
    (small generators) antialiasing has no effect. Bicubic can overshoot slightly
    around sharp edges; that is fine since nothing downstream requires [0, 1].

    Args:
        img: float tensor (N, C, H, W), nominally in [-1, 1]; any float dtype/device.
        size: output side (int) or (height, width).
        mean, std: per-channel statistics of the CLIP model (sequences or tensors).

    Returns:
        (N, C, size_h, size_w) tensor, same dtype and device as ``img``, differentiable
        with respect to ``img``.
    """
    if img.ndim != 4:
        raise ValueError(f"to_clip_input expects an NCHW tensor, got shape {tuple(img.shape)}")
    if not img.is_floating_point():
        raise TypeError(f"to_clip_input expects a floating point tensor, got {img.dtype}")
    out_h, out_w = _as_hw(size)
    x = (img + 1.0) * 0.5
    h, w = x.shape[-2:]
    if (h, w) != (out_h, out_w):
        # Scale so that the image covers the output box (short side for square outputs),
        # then center-crop what sticks out.
        scale = max(out_h / h, out_w / w)
        new_h = max(out_h, round(h * scale))
        new_w = max(out_w, round(w * scale))
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False,
                              antialias=True)
        top = int(round((new_h - out_h) / 2.0))
        left = int(round((new_w - out_w) / 2.0))
        x = x[..., top:top + out_h, left:left + out_w]
    return (x - _as_stat(mean, x)) / _as_stat(std, x)
