"""Chooses, per call, between the compiled CUDA ops and the plain-PyTorch reference.

Policy (one place):
- ``NADA_OPS_IMPL`` environment variable, or :func:`set_impl`: ``auto`` (default),
  ``reference`` or ``compiled``.
- ``auto``: compiled on CUDA tensors when the extension builds, reference otherwise
  (CPU, MPS, build failure).  A build failure is reported once and never retried in
  the same process.  Only the ops listed in :data:`AUTO_COMPILED` are taken compiled
  under ``auto``: an op joins that list once its GPU parity tests and its benchmark
  have run on a GPU.
- ``compiled``: forces the extension; on a non-CUDA tensor or when the build fails
  this raises :class:`CompiledOpsUnavailable` with the reason.
"""
from __future__ import annotations

import os
import threading

_VALID = ("auto", "reference", "compiled")
#: Ops whose compiled kernel ``auto`` uses.  ``filtered_lrelu`` (StyleGAN3) is compiled, built
#: and tested through the extension's CPU path, but its CUDA kernel has not yet run on a GPU:
#: it is used only when forced (``NADA_OPS_IMPL=compiled``) until its GPU tests pass and
#: ``benchmarks/bench_kernels.py`` shows it faster than the reference.
AUTO_COMPILED = frozenset({"bias_act", "upfirdn2d"})
_override: str | None = None
_lock = threading.Lock()


class CompiledOpsUnavailable(RuntimeError):
    """The compiled op was required but cannot be used (no CUDA tensor, build failed)."""


def set_impl(impl: str | None) -> None:
    """Force ``'reference'`` / ``'compiled'`` / ``'auto'`` for this process (None: back to env)."""
    global _override
    if impl is not None and impl not in _VALID:
        raise ValueError(f"ops implementation must be one of {_VALID}, got {impl!r}")
    _override = impl


def get_impl() -> str:
    impl = _override or os.environ.get("NADA_OPS_IMPL", "auto").strip().lower() or "auto"
    if impl not in _VALID:
        raise ValueError(f"NADA_OPS_IMPL must be one of {_VALID}, got {impl!r}")
    return impl


def compiled_module(op_name: str, tensor) -> object | None:
    """Return the compiled extension module for ``op_name`` if it should be used for
    ``tensor``, else None (use the reference).  Raises when 'compiled' is forced but
    unavailable."""
    impl = get_impl()
    if impl == "reference" or (impl == "auto" and op_name not in AUTO_COMPILED):
        return None
    on_cuda = getattr(tensor, "is_cuda", False)
    if not on_cuda:
        if impl == "compiled":
            raise CompiledOpsUnavailable(
                f"{op_name}: the compiled implementation was forced (NADA_OPS_IMPL=compiled) "
                f"but the tensor is on {tensor.device.type!r}; the compiled ops run on CUDA "
                f"tensors only. Use NADA_OPS_IMPL=auto or reference.")
        return None
    from ..kernels import loader  # imported lazily: never at package import
    with _lock:
        mod, err = loader.get_extension(op_name)
    if mod is None:
        if impl == "compiled":
            raise CompiledOpsUnavailable(f"{op_name}: the compiled extension is unavailable: {err}")
        return None
    supports = getattr(mod, "supports", None)
    if supports is not None and not supports(tensor):
        if impl == "compiled":
            raise CompiledOpsUnavailable(
                f"{op_name}: the compiled implementation does not support dtype {tensor.dtype} "
                f"(supported: {', '.join(str(d) for d in getattr(mod, 'SUPPORTED_DTYPES', ()))})")
        return None
    return mod
