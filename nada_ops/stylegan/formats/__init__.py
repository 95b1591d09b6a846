"""Checkpoint readers/writers, one module per format.

Every reader returns a :class:`ReadResult`: our architecture config (StyleGAN2 or StyleGAN3)
plus a state dict whose keys are exactly those of
``nada_ops.stylegan.networks.build_generator(cfg).state_dict()``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import StyleGAN2Config


class CheckpointError(ValueError):
    """A model file cannot be read; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        from ...io.errors import path_text
        self.path = path_text(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class ReadResult:
    cfg: StyleGAN2Config                      # or a StyleGAN3Config
    state_dict: dict[str, torch.Tensor]
    format: str                               # 'nvidia-pkl' | 'rosinality-pt' | 'safetensors'
    w_avg_in_checkpoint: bool = True          # False: the caller estimates w_avg
    provenance: dict = field(default_factory=dict)   # free-form, JSON-serialisable


#: Fewest bytes a stored weight can take (float16 / bfloat16).
MIN_WEIGHT_BYTES = 2


def reference_shapes(cfg: StyleGAN2Config) -> dict[str, tuple]:
    """Shapes of ``build_generator(cfg).state_dict()``, built on the meta device (no memory)."""
    from ..networks import build_generator
    with torch.device("meta"):
        G = build_generator(cfg)
    return {k: tuple(v.shape) for k, v in G.state_dict().items()}


def check_weights_fit(cfg: StyleGAN2Config, present_bytes: int, path, where: str = "the file") -> dict[str, tuple]:
    """Refuse an architecture whose weights cannot be in ``present_bytes`` bytes of tensor
    data (checked before any network is built); returns :func:`reference_shapes`."""
    import math
    shapes = reference_shapes(cfg)
    n = sum(math.prod(s) for s in shapes.values())
    need = n * MIN_WEIGHT_BYTES
    if need > present_bytes:
        raise CheckpointError(
            path, f"the architecture it declares ({cfg.img_resolution}px {cfg.family}, channel_max {cfg.channel_max}, "
                  f"w_dim {cfg.w_dim}, {cfg.num_mapping_layers} mapping layers) has {n:,} weights, at least "
                  f"{need:,} bytes, but {where} holds only {present_bytes:,} bytes of tensor data")
    return shapes
