"""Prompt templates for text embeddings.

The template texts are not copied here: they come from open_clip's copy of the CLIP
paper's ImageNet prompts (``open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES``, a
tuple of 80 callables ``c -> str``).

Modes:
- ``'single'``: the raw prompt only.
- ``'imagenet'``: all 80 templates of the CLIP paper's ImageNet prompt notebook.
- ``'nada'``: the 79 templates StyleGAN-NADA averages over (the spec's reference set):
  open_clip's 80 without ``'a photo of many {}.'``. The paper's reference code lists them
  in another order, which does not change the mean beyond float rounding.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple, Union

__all__ = ["TEMPLATE_MODES", "DEFAULT_TEMPLATE_MODE", "get_templates", "expand_templates",
           "templates_label"]

Template = Union[str, Callable[[str], str]]
TemplatesLike = Union[str, Sequence[Template]]

TEMPLATE_MODES = ("single", "nada", "imagenet")
DEFAULT_TEMPLATE_MODE = "nada"
_NOT_IN_NADA = "a photo of many {}."


def _raw(c: str) -> str:
    return c


def get_templates(mode: str) -> Tuple[Template, ...]:
    """The templates of a named mode (see module docstring)."""
    if mode == "single":
        return (_raw,)
    if mode in ("imagenet", "nada"):
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
        if mode == "imagenet":
            return tuple(OPENAI_IMAGENET_TEMPLATES)
        return tuple(t for t in OPENAI_IMAGENET_TEMPLATES if _apply(t, "{}") != _NOT_IN_NADA)
    raise ValueError(f"unknown template mode {mode!r}; one of {TEMPLATE_MODES}")


def _apply(template: Template, text: str) -> str:
    if callable(template):
        return template(text)
    if "{}" not in template:
        raise ValueError(f"template {template!r} has no '{{}}' placeholder")
    return template.replace("{}", text)


def expand_templates(text: str, templates: TemplatesLike = "single") -> List[str]:
    """All prompts for ``text``: one per template.

    ``templates``: a mode name ('single', 'nada', 'imagenet') or a sequence of templates,
    each a callable ``str -> str`` or a string with a ``{}`` placeholder (substituted
    literally, so braces in ``text`` are safe).
    """
    if isinstance(templates, str):
        templates = get_templates(templates)
    out = [_apply(t, text) for t in templates]
    if not out:
        raise ValueError("no templates given")
    return out


def templates_label(templates: TemplatesLike) -> str:
    """Short description of ``templates`` for provenance records."""
    if isinstance(templates, str):
        return templates
    return f"custom({len(templates)})"
