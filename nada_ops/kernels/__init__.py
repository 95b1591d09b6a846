"""CUDA sources of the compiled ops and their just-in-time loader (see loader.py)."""
