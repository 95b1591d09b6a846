"""nada_ops: the StyleGAN-NADA library behind the ComfyUI node pack.

Usable from plain Python and from the command line (``python -m nada_ops``).
Never imports ComfyUI.  Importing it is cheap: no compilation, no model loading.
"""
__version__ = "0.1.0"
