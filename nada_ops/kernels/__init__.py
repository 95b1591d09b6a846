"""The compiled StyleGAN ops (bias_act, upfirdn2d, filtered_lrelu): CUDA/C++ sources and their loader.

- ``common.h``, ``bias_act.h/.cu``, ``upfirdn2d.h/.cu``, ``filtered_lrelu.h/.cu``, ``ext.cpp``: our sources (one
  extension); the headers hold the element/tile functions that both the CUDA kernels and
  the extension's sequential CPU path (used by the tests) run.
- ``loader.py``: just-in-time build with torch.utils.cpp_extension + ninja on the first use
  on a CUDA device (never at import), on-disk cache, file lock, one-time failure report.
- ``autograd.py``: the differentiable wrappers the dispatchers in ``nada_ops.ops`` call.
- ``build.py``: ``python -m nada_ops.kernels.build --arch 9.0`` compiles without a GPU.

Importing this package imports nothing heavy and builds nothing.
"""
