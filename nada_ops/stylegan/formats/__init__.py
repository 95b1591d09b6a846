"""Checkpoint readers/writers, one module per format.

Every reader returns a :class:`ReadResult`: our architecture config plus a state dict
whose keys are exactly those of ``nada_ops.stylegan.networks.Generator(cfg).state_dict()``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import StyleGAN2Config


class CheckpointError(ValueError):
    """A model file cannot be read; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class ReadResult:
    cfg: StyleGAN2Config
    state_dict: dict[str, torch.Tensor]
    format: str                               # 'nvidia-pkl' | 'rosinality-pt' | 'safetensors'
    w_avg_in_checkpoint: bool = True          # False: the caller estimates w_avg
    provenance: dict = field(default_factory=dict)   # free-form, JSON-serialisable
