"""Tiny CLIP guidance for trainer tests (no downloads)."""
from nada_ops.clip.direction import text_direction
from nada_ops.clip.tiny import tiny_clip_model
from nada_ops.nada.guidance import guidance_from


def tiny_guidance(source="photo", target="pencil sketch", seeds=(0,)):
    models = [tiny_clip_model(seed=s) for s in seeds]
    d = text_direction(models, source, target, templates="single")
    return guidance_from([(m, 1.0) for m in models], d)
