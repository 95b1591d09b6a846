"""Tiny random open_clip models for tests and benchmarks (no download, deterministic).

The text tower keeps CLIP's real tokenizer geometry (context 77, vocabulary 49408), so
open_clip's bundled BPE tokenizer (``bpe_simple_vocab_16e6.txt.gz``, shipped inside the
open_clip package; nothing is downloaded) works unchanged.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Dict, Union

import torch

from .models import ClipModel

__all__ = ["TINY_NAME", "tiny_clip_config", "build_tiny_open_clip", "tiny_clip_model",
           "register_tiny_config"]

TINY_NAME = "tiny-vit"


def tiny_clip_config(image_size: int = 32, width: int = 32, layers: int = 2, patch_size: int = 8,
                     embed_dim: int = 32, head_width: int = 16) -> Dict[str, Any]:
    """An open_clip model config (the JSON layout of ``open_clip/model_configs``)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": layers, "width": width,
                       "head_width": head_width, "patch_size": patch_size},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width,
                     "heads": max(1, width // head_width), "layers": layers},
    }


def build_tiny_open_clip(seed: int = 0, config: Dict[str, Any] | None = None, **cfg_kwargs):
    """An ``open_clip.model.CLIP`` with deterministic random weights (global RNG untouched)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.model import CLIP, set_model_preprocess_cfg

    cfg = copy.deepcopy(config) if config is not None else tiny_clip_config(**cfg_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**cfg)
    set_model_preprocess_cfg(model, {
        "size": cfg["vision_cfg"]["image_size"], "mode": "RGB", "mean": OPENAI_DATASET_MEAN,
        "std": OPENAI_DATASET_STD, "interpolation": "bicubic", "resize_mode": "shortest",
        "fill_color": 0})
    return model.eval()


def tiny_clip_model(seed: int = 0, image_size: int = 32, device: Union[str, torch.device] = "cpu",
                    dtype: torch.dtype = torch.float32, name: str = TINY_NAME, **cfg_kwargs) -> ClipModel:
    """A tiny frozen :class:`ClipModel` (ViT width 32, 2 layers, patch 8; embed_dim 32).

    Its key is ``'<name>:random-seed<seed>'`` so tiny models with different seeds never
    share a key.
    """
    from open_clip.tokenizer import SimpleTokenizer

    model = build_tiny_open_clip(seed, image_size=image_size, **cfg_kwargs)
    model.to(device=device, dtype=dtype)
    return ClipModel(model, name=name, pretrained=f"random-seed{seed}",
                     tokenizer=SimpleTokenizer(context_length=77), dtype=dtype)


def register_tiny_config(directory: Union[str, os.PathLike], name: str = TINY_NAME,
                         **cfg_kwargs) -> Path:
    """Write ``<directory>/<name>.json`` and register it with open_clip (``add_model_config``)
    so that ``open_clip.create_model(name, ...)`` and :func:`load_clip` know the tiny
    architecture. Registration is process-wide (open_clip keeps a global registry)."""
    import open_clip

    path = Path(directory) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tiny_clip_config(**cfg_kwargs)))
    open_clip.add_model_config(path)
    return path
