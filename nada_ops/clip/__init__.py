"""CLIP guidance: loading frozen CLIP models, differentiable preprocessing, prompt
templates and CLIP-space directions (NADA_SPEC section 2).

Importing this package does not import open_clip (that happens on first use).
"""
from .preprocess import to_clip_input
from .models import (ClipModel, ClipWeightsNotFoundError, DEFAULT_PRETRAINED, RANDOM_WEIGHTS,
                     find_local_weights, load_clip, model_key)
from .ensemble import ClipEnsemble
from .templates import DEFAULT_TEMPLATE_MODE, TEMPLATE_MODES, expand_templates, get_templates
from .direction import (Direction, IdenticalEmbeddingsError, image_direction, text_direction,
                        text_embedding)

__all__ = [
    "to_clip_input", "ClipModel", "ClipWeightsNotFoundError", "DEFAULT_PRETRAINED",
    "RANDOM_WEIGHTS", "find_local_weights", "load_clip", "model_key", "ClipEnsemble",
    "DEFAULT_TEMPLATE_MODE", "TEMPLATE_MODES", "expand_templates", "get_templates", "Direction",
    "IdenticalEmbeddingsError", "image_direction", "text_direction", "text_embedding",
]
