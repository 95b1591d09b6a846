"""StyleGAN-NADA node pack for ComfyUI (entry point only).

Registers the model folders and the nodes. Nothing is compiled or loaded at import.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes._comfy import register_model_folders

register_model_folders()

WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
