"""The one validation layer for tensors read from untrusted files.

Every tensor a reader builds from file data goes through :func:`tensor_view`: before any
byte is copied it checks that

- shape, strides and offset are plain non-negative integers of sane size,
- the view does not overlap itself (no stride-0 "expand" or overlapping strides: a view
  never holds more elements than the bytes behind it),
- the storage really holds every element the view addresses,
- the dtype is one of :data:`NUMERIC_DTYPES`,

and charges the view's bytes to the read's :class:`~nada_ops.io.budget.ReadBudget`
(bounded by the file's size and ``NADA_MAX_LOAD_BYTES``). Format readers then ask for the
dtype they need (:func:`require_float`) and for finite values (:func:`check_finite`).
"""
from __future__ import annotations

import math

import torch

from .errors import UntrustedFileError, describe

__all__ = ["NUMERIC_DTYPES", "FLOAT_DTYPES", "MAX_NDIM", "MAX_DIM", "check_geometry", "tensor_view",
           "require_float", "check_finite", "dtype_itemsize", "float32_copy"]

#: dtypes a tensor in a weights file may have (what torch's weights_only allows, less
#: complex/quantized types no model file of the pack's formats uses).
NUMERIC_DTYPES = frozenset({
    torch.float32, torch.float64, torch.float16, torch.bfloat16,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
})
FLOAT_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16})
MAX_NDIM = 16
MAX_DIM = 1 << 40          # no dimension of a real tensor comes near 10^12


def dtype_itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _int_list(v, what: str, path, name: str) -> list[int]:
    if type(v) not in (tuple, list, torch.Size):
        raise UntrustedFileError(path, f"{what}: {name} is {describe(v)}, expected a tuple of integers")
    if len(v) > MAX_NDIM:
        raise UntrustedFileError(path, f"{what}: {name} has {len(v)} dimensions (at most {MAX_NDIM})")
    out = []
    for x in v:
        if type(x) is not int or not 0 <= x <= MAX_DIM:
            raise UntrustedFileError(path, f"{what}: {name} holds {describe(x)}, expected integers in 0..2^40")
        out.append(x)
    return out


def check_geometry(size, stride, offset, storage_numel: int, what: str, path) -> tuple[list, list, int]:
    """Validate a strided view ``(size, stride, offset)`` of a storage of
    ``storage_numel`` elements; returns the checked ``(size, stride, offset)``.

    The view must address only elements that exist and must not overlap itself, so its
    element count never exceeds the storage's."""
    size = _int_list(size, what, path, "shape")
    stride = _int_list(stride, what, path, "stride")
    if len(stride) != len(size):
        raise UntrustedFileError(path, f"{what}: shape {size} and stride {stride} differ in length")
    if type(offset) is not int or not 0 <= offset <= MAX_DIM:
        raise UntrustedFileError(path, f"{what}: storage offset {describe(offset)} is not a valid integer")
    numel = math.prod(size)
    if numel == 0:
        if offset > storage_numel:
            raise UntrustedFileError(path, f"{what}: storage offset {offset} is past the end of its storage "
                                           f"({storage_numel} elements)")
        return size, stride, offset
    # Non-overlap: with dimensions of extent > 1 sorted by stride, each stride must
    # step over everything the smaller strides already cover.
    dims = sorted((st, sz) for sz, st in zip(size, stride) if sz > 1)
    covered = 1
    for st, sz in dims:
        if st < covered:
            kind = "stride 0 (an expanded view)" if st == 0 else "overlapping strides"
            raise UntrustedFileError(
                path, f"{what}: shape {size} with stride {stride} has {kind}: its elements share memory, "
                      "a tensor file must store every element")
        covered = st * sz
    last = offset + sum((sz - 1) * st for sz, st in zip(size, stride))
    if last >= storage_numel:
        raise UntrustedFileError(
            path, f"{what}: shape {size} (stride {stride}, offset {offset}) needs {last + 1} elements but its "
                  f"storage holds {storage_numel}: the file does not contain the data the tensor declares")
    return size, stride, offset


def tensor_view(storage: torch.Tensor, offset, size, stride, what: str, budget) -> torch.Tensor:
    """A checked strided view of the 1-D tensor ``storage`` (no copy); charged to ``budget``."""
    if storage.dtype not in NUMERIC_DTYPES:
        raise UntrustedFileError(budget.path, f"{what}: dtype {storage.dtype} is not allowed in a weights file")
    size, stride, offset = check_geometry(size, stride, offset, storage.numel(), what, budget.path)
    budget.charge_tensor(math.prod(size) * storage.element_size(), what)
    budget.check_time()
    return storage.as_strided(size, stride, storage.storage_offset() + offset)


def require_float(t: torch.Tensor, what: str, path) -> torch.Tensor:
    """Refuse anything but a floating-point tensor (weights are never integers)."""
    if not isinstance(t, torch.Tensor):
        raise UntrustedFileError(path, f"{what} is {describe(t)}, expected a tensor")
    if t.dtype not in FLOAT_DTYPES:
        raise UntrustedFileError(path, f"{what} has dtype {t.dtype}; weights must be floating point "
                                       "(float16/bfloat16/float32/float64)")
    return t


def check_finite(t: torch.Tensor, what: str, path) -> None:
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        raise UntrustedFileError(path, f"{what} contains NaN or Inf values")


def float32_copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous float32 copy that shares nothing with the file's buffers (one copy)."""
    if t.dtype == torch.float32:
        return t.contiguous().clone() if t.is_contiguous() else t.contiguous()
    return t.to(torch.float32, memory_format=torch.contiguous_format)
