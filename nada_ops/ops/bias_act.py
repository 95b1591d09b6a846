"""Fused bias + activation + gain (+ clamp).

``y = clamp(act(x + b) * gain, -clamp, clamp)`` with ``b`` broadcast along ``dim``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import backend


@dataclass(frozen=True)
class Activation:
    name: str
    func: Callable[[torch.Tensor, float], torch.Tensor]
    alpha: float          # parameter of the activation (lrelu slope, ...)
    def_gain: float       # gain that keeps the activations' 2nd moment ~1
    cuda_idx: int         # index understood by the CUDA kernel
    ref: str              # what the derivative can be computed from: 'x' or 'y'
    has_2nd_grad: bool


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation("linear", lambda x, a: x, 0.0, 1.0, 1, "", False),
    "relu": Activation("relu", lambda x, a: F.relu(x), 0.0, math.sqrt(2), 2, "y", False),
    "lrelu": Activation("lrelu", lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2), 3, "y", False),
    "tanh": Activation("tanh", lambda x, a: torch.tanh(x), 0.0, 1.0, 4, "y", True),
    "sigmoid": Activation("sigmoid", lambda x, a: torch.sigmoid(x), 0.0, 1.0, 5, "y", True),
    "elu": Activation("elu", lambda x, a: F.elu(x), 0.0, 1.0, 6, "y", True),
    "selu": Activation("selu", lambda x, a: F.selu(x), 0.0, 1.0, 7, "y", True),
    "softplus": Activation("softplus", lambda x, a: F.softplus(x), 0.0, 1.0, 8, "y", True),
    "swish": Activation("swish", lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2), 9, "x", True),
}


def _resolve(act: str, alpha, gain, clamp):
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown activation {act!r}; known: {sorted(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def bias_act_reference(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1,
                       act: str = "linear", alpha=None, gain=None, clamp=None) -> torch.Tensor:
    """Plain-PyTorch bias_act: the ground truth for the compiled kernel."""
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias_act: bias of shape {tuple(b.shape)} does not match "
                             f"dimension {dim} of x {tuple(x.shape)}")
        if not 0 <= dim < x.ndim:
            raise ValueError(f"bias_act: dim {dim} out of range for x of rank {x.ndim}")
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha=None, gain=None, clamp=None) -> torch.Tensor:
    """Add bias ``b`` along ``dim``, apply ``act``, multiply by ``gain``, clamp to +-``clamp``.

    ``gain=None`` uses the activation's default gain (sqrt(2) for lrelu/relu).
    Dispatches to the compiled CUDA kernel when available (see ``nada_ops.ops.backend``).
    """
    mod = backend.compiled_module("bias_act", x)
    if mod is not None:
        spec, alpha_f, gain_f, clamp_f = _resolve(act, alpha, gain, clamp)
        return mod.bias_act_autograd(x, b, dim=dim, act=act, alpha=alpha_f, gain=gain_f, clamp=clamp_f)
    return bias_act_reference(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
