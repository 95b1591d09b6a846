"""ComfyUI node adapters. Each module exports NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS."""
from __future__ import annotations

import importlib

_MODULES = ["generator", "adapt", "latents", "invert", "interpolate", "images", "faces", "mapper", "prior"]

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

for _name in _MODULES:
    _mod = importlib.import_module(f".{_name}", __name__)
    NODE_CLASS_MAPPINGS.update(_mod.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_mod.NODE_DISPLAY_NAME_MAPPINGS)

from .dashboard import register_routes as _register_routes  # noqa: E402

_register_routes()
