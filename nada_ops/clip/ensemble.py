"""Several CLIP models with weights; the CLIP losses are weighted sums over them."""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from .models import ClipModel, load_clip, model_key

__all__ = ["ClipEnsemble"]

log = logging.getLogger(__name__)


def _materialize(spec: Any, load_fn: Callable[..., ClipModel], load_kwargs: Dict[str, Any]) -> ClipModel:
    if isinstance(spec, ClipModel):
        return spec
    if isinstance(spec, str):
        model = load_fn(spec, **load_kwargs)
    elif isinstance(spec, Mapping):
        model = load_fn(**{**load_kwargs, **spec})
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        model = load_fn(spec[0], spec[1], **load_kwargs)
    elif callable(spec):
        model = spec()
    else:
        raise TypeError(f"cannot make a CLIP model from {spec!r}: give a ClipModel, an "
                        "architecture name, (name, pretrained), a dict of load_clip arguments "
                        "or a zero-argument callable")
    if not isinstance(model, ClipModel):
        raise TypeError(f"loading {spec!r} gave {type(model).__name__}, not a ClipModel")
    return model


class ClipEnsemble:
    """CLIP models with their loss weights; models with weight 0 are never loaded.

    ``models_with_weights``: iterable of ``(spec, weight)``; ``spec`` is a
    :class:`ClipModel`, an architecture name (loaded with ``load_fn(name, **load_kwargs)``),
    a ``(name, pretrained)`` pair, a dict of ``load_fn`` arguments, or a zero-argument
    callable returning a ClipModel. Weights must be finite and >= 0, at least one > 0.
    Models are loaded in the given order, only for non-zero weights. Two entries for the
    same model key are an error (directions are stored per key).

    Iterating yields ``(model, weight)``.
    """

    def __init__(self, models_with_weights: Iterable[Tuple[Any, float]],
                 load_fn: Optional[Callable[..., ClipModel]] = None, **load_kwargs):
        load_fn = load_fn or load_clip
        entries: List[Tuple[ClipModel, float]] = []
        keys = set()
        for spec, weight in models_with_weights:
            w = float(weight)
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"CLIP model weight must be finite and >= 0, got {weight!r} for {spec!r}")
            if w == 0:
                log.debug("skipping CLIP model %r: weight 0", spec)
                continue
            model = _materialize(spec, load_fn, load_kwargs)
            k = model_key(model)
            if k in keys:
                raise ValueError(f"CLIP model {k!r} is listed twice")
            keys.add(k)
            entries.append((model, w))
        if not entries:
            raise ValueError("a CLIP ensemble needs at least one model with a non-zero weight")
        self._entries: Tuple[Tuple[ClipModel, float], ...] = tuple(entries)

    def __iter__(self) -> Iterator[Tuple[ClipModel, float]]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, key: str) -> ClipModel:
        for m, _ in self._entries:
            if model_key(m) == key:
                return m
        raise KeyError(key)

    def __repr__(self):
        inner = ", ".join(f"{model_key(m)}: {w:g}" for m, w in self._entries)
        return f"ClipEnsemble({inner})"

    @property
    def models(self) -> List[ClipModel]:
        return [m for m, _ in self._entries]

    @property
    def weights(self) -> List[float]:
        return [w for _, w in self._entries]

    @property
    def keys(self) -> List[str]:
        return [model_key(m) for m, _ in self._entries]

    def weight_of(self, key: str) -> float:
        for m, w in self._entries:
            if model_key(m) == key:
                return w
        raise KeyError(key)
