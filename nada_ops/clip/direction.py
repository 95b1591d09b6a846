"""CLIP-space directions (NADA_SPEC section 2) and the value type that carries them.

Notation: ``norm(v) = v / |v|``; ``E_T``/``E_I`` the text/image encoders.

- text embedding of a class: ``mean_t norm(E_T(tmpl_t(text)))``, normalized again when
  used on its own (global loss target, :func:`text_embedding`);
- text direction: ``dT = norm(mean_t norm(E_T(tmpl_t(target))) - mean_t norm(E_T(tmpl_t(source))))``
  exactly as the spec writes it: the template MEANS are subtracted before any
  re-normalization (this is also what the paper's reference code computes). With one
  template it is the same as ``norm(emb(target) - emb(source))``;
- image direction: ``dT = norm(mean norm(E_I(target images)) - mean norm(E_I(source images)))``.

What a trainer needs per model key: ``direction`` (unit dT, directional loss) and
``target`` (unit target embedding, global loss / layer selection).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Tuple, Union

import torch

from .ensemble import ClipEnsemble
from .models import ClipModel, model_key
from .templates import DEFAULT_TEMPLATE_MODE, TemplatesLike, expand_templates, templates_label

__all__ = ["Direction", "model_key", "text_embedding", "text_direction", "image_direction",
           "IdenticalEmbeddingsError", "MIN_DIFFERENCE"]

#: Below this |mean_target - mean_source| (embeddings are unit vectors) a direction is
#: considered undefined. Unrelated prompts differ by ~0.1-0.6 in real CLIP models.
MIN_DIFFERENCE = 1e-4

ModelsLike = Union[ClipModel, ClipEnsemble, Iterable[Union[ClipModel, Tuple[ClipModel, float]]]]


class IdenticalEmbeddingsError(ValueError):
    """Source and target give (nearly) the same embedding: no direction between them."""


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _as_models(models: ModelsLike) -> List[ClipModel]:
    if isinstance(models, ClipModel):
        return [models]
    if isinstance(models, ClipEnsemble):
        return models.models
    out = []
    for m in models:
        if isinstance(m, tuple):
            m = m[0]
        if not isinstance(m, ClipModel):
            raise TypeError(f"expected ClipModel, got {type(m).__name__}")
        out.append(m)
    if not out:
        raise ValueError("no CLIP models given")
    return out


@dataclass(frozen=True, eq=False)
class Direction:
    """A CLIP-space edit direction for one or more CLIP models (immutable by convention).

    ``directions[key]``: unit dT (D,) float32 for the model with ``model_key`` ``key``.
    ``targets[key]``: unit target embedding (D,): the template-averaged target text
    embedding for text directions, the normalized mean target image embedding for image
    directions (usable as the global-loss target in both cases).
    ``sources[key]``: the same for the source side.
    ``provenance``: how it was made: ``kind`` ('text' | 'image'), ``models`` (keys) and,
    for text, ``source``, ``target``, ``templates``, ``num_templates``; for images,
    ``num_target_images``, ``num_source_images``, ``source_layout``.
    """

    directions: Dict[str, torch.Tensor]
    targets: Dict[str, torch.Tensor]
    sources: Dict[str, torch.Tensor]
    provenance: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        keys = set(self.directions)
        if not keys:
            raise ValueError("a Direction needs at least one model")
        if set(self.targets) != keys or set(self.sources) != keys:
            raise ValueError("directions, targets and sources must have the same model keys")

    @property
    def kind(self) -> str:
        return self.provenance.get("kind", "unknown")

    @property
    def keys(self) -> List[str]:
        return list(self.directions)

    def for_model(self, model: Union[ClipModel, str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(unit direction, unit target) for a model or model key, on the model's device."""
        key = model if isinstance(model, str) else model_key(model)
        if key not in self.directions:
            raise KeyError(f"this direction was computed for {self.keys}, not for {key!r}; "
                           "compute it with the same CLIP models the trainer uses")
        d, t = self.directions[key], self.targets[key]
        if isinstance(model, ClipModel):
            d, t = d.to(model.device), t.to(model.device)
        return d, t

    def to(self, device) -> "Direction":
        """A copy with all tensors on ``device``."""
        mv = lambda dct: {k: v.to(device) for k, v in dct.items()}  # noqa: E731
        return Direction(mv(self.directions), mv(self.targets), mv(self.sources),
                         dict(self.provenance))


def _template_mean(model: ClipModel, text: str, templates: TemplatesLike) -> torch.Tensor:
    """mean_t norm(E_T(tmpl_t(text))) - NOT re-normalized."""
    prompts = expand_templates(text, templates)
    return _normalize(model.encode_text(prompts)).mean(dim=0)


def text_embedding(model: ClipModel, text: str,
                   templates: TemplatesLike = DEFAULT_TEMPLATE_MODE) -> torch.Tensor:
    """Unit text embedding (D,): normalized mean of the normalized per-template embeddings."""
    return _normalize(_template_mean(model, text, templates))


def _difference_or_raise(mean_t: torch.Tensor, mean_s: torch.Tensor, key: str, what: str) -> torch.Tensor:
    diff = mean_t - mean_s
    n = float(diff.norm())
    if not n >= MIN_DIFFERENCE:  # also catches NaN
        raise IdenticalEmbeddingsError(
            f"{what} give (nearly) identical CLIP embeddings for model {key} "
            f"(|difference| = {n:.2e}); the direction between them is undefined. "
            "Use source and target descriptions that differ in meaning.")
    return diff / n


def text_direction(models: ModelsLike, source: str, target: str,
                   templates: TemplatesLike = DEFAULT_TEMPLATE_MODE) -> Direction:
    """Direction from ``source`` text to ``target`` text for each model (see module doc)."""
    if source.strip() == target.strip():
        raise IdenticalEmbeddingsError(f"source and target texts are the same ({source!r})")
    ms = _as_models(models)
    dirs, tgts, srcs = {}, {}, {}
    with torch.no_grad():
        for m in ms:
            k = model_key(m)
            mean_s = _template_mean(m, source, templates)
            mean_t = _template_mean(m, target, templates)
            dirs[k] = _difference_or_raise(mean_t, mean_s, k, f"source {source!r} and target {target!r}")
            tgts[k], srcs[k] = _normalize(mean_t), _normalize(mean_s)
    n_templates = len(expand_templates("x", templates))
    return Direction(dirs, tgts, srcs, {
        "kind": "text", "source": source, "target": target,
        "templates": templates_label(templates), "num_templates": n_templates,
        "models": [model_key(m) for m in ms]})


def _count_images(images) -> int:
    if isinstance(images, (list, tuple)):
        return sum(_count_images(i) for i in images)
    if isinstance(images, torch.Tensor):
        return int(images.shape[0]) if images.ndim == 4 else 1
    return 1


def image_direction(models: ModelsLike, target_images, source_images,
                    source_layout: str = "generator", batch_size: int = 16) -> Direction:
    """Few-shot direction (supplement C) from real target images.

    ``target_images``: real images, ComfyUI ``IMAGE`` (N, H, W, C) in [0, 1], PIL images
    or a list of those.
    ``source_images``: with ``source_layout='generator'`` (default), generator outputs
    (N, C, H, W) in [-1, 1] (the spec's N_s = 16 samples of G_frozen); with
    ``source_layout='image'``, real images like ``target_images``.
    """
    if source_layout not in ("generator", "image"):
        raise ValueError("source_layout must be 'generator' or 'image'")
    if source_layout == "generator":
        if not (isinstance(source_images, torch.Tensor) and source_images.ndim == 4
                and source_images.shape[1] == 3):
            shape = tuple(source_images.shape) if isinstance(source_images, torch.Tensor) else type(source_images)
            raise ValueError(f"generator source images must be (N, 3, H, W) in [-1, 1], got {shape}; "
                             "for real images (N, H, W, C) pass source_layout='image'")
    ms = _as_models(models)
    dirs, tgts, srcs = {}, {}, {}
    with torch.no_grad():
        for m in ms:
            k = model_key(m)
            mean_t = _normalize(m.encode_pil_or_tensor_images(target_images, batch_size)).mean(0)
            if source_layout == "generator":
                src = torch.cat([m.encode_generator_images(source_images[i:i + batch_size])
                                 for i in range(0, source_images.shape[0], batch_size)])
            else:
                src = m.encode_pil_or_tensor_images(source_images, batch_size)
            mean_s = _normalize(src).mean(0)
            dirs[k] = _difference_or_raise(mean_t, mean_s, k, "target and source images")
            tgts[k], srcs[k] = _normalize(mean_t), _normalize(mean_s)
    return Direction(dirs, tgts, srcs, {
        "kind": "image", "num_target_images": _count_images(target_images),
        "num_source_images": _count_images(source_images), "source_layout": source_layout,
        "models": [model_key(m) for m in ms]})
