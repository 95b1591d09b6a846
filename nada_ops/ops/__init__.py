"""Low-level ops of the StyleGAN generators: ``bias_act``, ``upfirdn2d`` and (StyleGAN3)
``filtered_lrelu``.

Each op has a plain-PyTorch reference implementation and ONE public function
that chooses between the reference and the compiled CUDA extension
(``nada_ops.ops.backend`` decides which).
"""
from .bias_act import bias_act, ACTIVATIONS
from .upfirdn2d import upfirdn2d, setup_filter, upsample2d, downsample2d, filter2d
from .filtered_lrelu import filtered_lrelu

__all__ = ["bias_act", "ACTIVATIONS", "upfirdn2d", "setup_filter", "upsample2d", "downsample2d", "filter2d",
           "filtered_lrelu"]
