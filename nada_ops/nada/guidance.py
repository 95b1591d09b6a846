"""What the trainer needs from CLIP: per model, its weight, the unit direction dT and the
unit target embedding (for the global loss / adaptive layer selection)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GuidanceEntry:
    model: object            # nada_ops.clip.models.ClipModel (encode_generator_images)
    weight: float
    key: str
    direction: torch.Tensor  # unit vector dT
    target: torch.Tensor     # unit target embedding


class Guidance:
    def __init__(self, entries: list[GuidanceEntry]):
        entries = [e for e in entries if e.weight != 0]
        if not entries:
            raise ValueError("CLIP guidance needs at least one CLIP model with a non-zero weight")
        self.entries = entries

    def models(self):
        return [(e.model, e.weight, e.key) for e in self.entries]

    def direction(self, key: str) -> torch.Tensor:
        return self._get(key).direction

    def target(self, key: str) -> torch.Tensor:
        return self._get(key).target

    def targets(self) -> dict:
        return {e.key: e.target for e in self.entries}

    def for_training(self) -> "Guidance":
        """A copy usable under autograd: tensors (CLIP weights, caches, directions) created
        inside ComfyUI's ``torch.inference_mode()`` by upstream nodes are inference tensors,
        which autograd refuses to save for backward.  Call outside inference mode."""
        out = []
        for e in self.entries:
            out.append(GuidanceEntry(model=e.model.for_autograd(), weight=e.weight, key=e.key,
                                     direction=e.direction.detach().clone(), target=e.target.detach().clone()))
        return Guidance(out)

    def _get(self, key):
        for e in self.entries:
            if e.key == key:
                return e
        raise KeyError(f"no CLIP model {key!r} in the guidance (have {[e.key for e in self.entries]})")


def guidance_from(ensemble, direction) -> Guidance:
    """Pair each CLIP model of ``ensemble`` ((model, weight) pairs, zero weights skipped)
    with its unit direction and target from ``direction`` (nada_ops.clip.direction.Direction)."""
    entries = []
    for model, weight in ensemble:
        if weight == 0:
            continue
        d, t = direction.for_model(model)
        entries.append(GuidanceEntry(model=model, weight=float(weight), key=model.key, direction=d, target=t))
    return Guidance(entries)


def few_shot_direction(ensemble, image_files, G, num_source_samples: int = 16):
    """The image-guided (few-shot) direction: the target images (decoded only as large as the
    largest CLIP input) against ``num_source_samples`` images of ``G`` (seeds 0.., no truncation)."""
    from ..clip.direction import image_direction
    from ..io.images import read_images
    from ..stylegan.sampling import sample_latents, synthesize
    side = max(max(m.input_size) if isinstance(m.input_size, (tuple, list)) else int(m.input_size)
               for m in ensemble.models)
    imgs = read_images(image_files, max_side=side)
    src = synthesize(G, sample_latents(G, range(num_source_samples), 1.0).ws, "const", 8)
    return image_direction(ensemble, imgs, src, source_layout="generator")
