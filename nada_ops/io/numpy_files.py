"""NumPy data from untrusted files: ``.npy`` arrays, and the numpy scalars/arrays that
NVIDIA's network pickles contain.

- :func:`read_npy` parses the header with numpy's own format helpers (header length
  bounded), refuses object/structured/sub-array dtypes, and checks that the declared
  shape x itemsize is exactly the number of bytes that follow before reading them, so a
  40-byte file declaring 2^40 elements is refused without allocating anything.
- :func:`numpy_allow_list` replaces numpy's pickle reconstruction functions (which
  allocate whatever shape the pickle names) with stand-ins that accept numeric dtypes
  only and build arrays only from raw bytes really present in the pickle.
"""
from __future__ import annotations

import math
import pickle

import numpy as np

from .budget import ReadBudget
from .errors import UntrustedFileError, describe
from .pickles import AllowList

__all__ = ["read_npy", "numpy_allow_list", "NumpyDtype", "NumpyArray", "NUMERIC_KINDS", "MAX_NPY_HEADER"]

#: numpy dtype kinds a weights/latents file may use: bool, signed, unsigned, float.
NUMERIC_KINDS = "biuf"
MAX_NPY_HEADER = 10000             # numpy's own default limit for a header
_MAX_NDIM = 32
_MAX_DIM = 1 << 40


def _check_dtype(dt: np.dtype, what: str, path) -> np.dtype:
    if dt.hasobject or dt.kind not in NUMERIC_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise UntrustedFileError(path, f"{what} has dtype {describe(str(dt))}; only plain numeric arrays are "
                                       "accepted (object/pickled/structured arrays are refused)")
    return dt


def _check_shape(shape, what: str, path) -> tuple:
    if type(shape) is not tuple or len(shape) > _MAX_NDIM or \
            any(type(d) is not int or not 0 <= d <= _MAX_DIM for d in shape):
        raise UntrustedFileError(path, f"{what} has shape {describe(shape)}")
    return shape


def read_npy(path, what: str = "the array", budget: ReadBudget | None = None) -> np.ndarray:
    """Read one plain numeric array from a ``.npy`` file (never unpickles)."""
    from .torch_files import open_untrusted
    with open_untrusted(path, budget) as (fh, budget):
        try:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            # The header length is checked here (numpy < 1.24 has no limit of its own).
            start = fh.tell()
            raw = fh.read(2 if version == (1, 0) else 4)
            hlen = int.from_bytes(raw, "little") if len(raw) in (2, 4) else -1
            if not 0 <= hlen <= MAX_NPY_HEADER:
                raise ValueError(f"Header info length ({hlen}) is larger than {MAX_NPY_HEADER} bytes")
            fh.seek(start)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
        except (ValueError, EOFError, OSError, SyntaxError, TypeError) as e:
            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            if "pickle" in msg.lower() or "object" in msg.lower():
                msg += " (object/pickled arrays are refused)"
            raise UntrustedFileError(path, f"not a plain numpy .npy array ({msg})") from None
        _check_dtype(dtype, what, path)
        _check_shape(shape, what, path)
        need = math.prod(shape) * dtype.itemsize
        have = budget.file_size - fh.tell()
        if need != have:
            raise UntrustedFileError(path, f"{what} declares shape {list(shape)} of {dtype} ({need} bytes) but the "
                                           f"file holds {have} bytes of data (corrupt or hostile file)")
        budget.charge_tensor(need, what)
        arr = np.empty(math.prod(shape), dtype=dtype)
        view = memoryview(arr).cast("B")
        got = 0
        while got < need:
            k = fh.readinto(view[got:got + (16 << 20)])
            if not k:
                break
            got += k
            budget.check_time()
        if got != need:
            raise UntrustedFileError(path, f"{what} is truncated")
    return arr.reshape(shape, order="F" if fortran else "C")


# -------------------------------------------------------- numpy inside pickles
class NumpyDtype:
    """Stand-in for a pickled ``numpy.dtype``: numeric type codes only."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype

    def __setstate__(self, state):
        # (version, byteorder, subdescr, names, fields, elsize, alignment, flags[, metadata])
        if type(state) is not tuple or len(state) not in (8, 9) or type(state[0]) is not int or \
                state[1] not in ("<", ">", "|", "=") or any(x is not None for x in state[2:5]) or \
                (len(state) == 9 and state[8] is not None):
            raise pickle.UnpicklingError(f"numpy dtype state {describe(state)} is not a plain numeric dtype")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class NumpyArray:
    """Stand-in for a pickled ``numpy.ndarray``: ``array`` is set from raw bytes of the pickle."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    @property
    def shape(self):
        return None if self.array is None else self.array.shape

    @property
    def dtype(self):
        return None if self.array is None else self.array.dtype

    def __setstate__(self, state):
        if type(state) is not tuple or len(state) != 5:
            raise pickle.UnpicklingError(f"numpy array state {describe(state)}")
        version, shape, dt, fortran, raw = state
        if type(version) is not int or type(dt) is not NumpyDtype or type(fortran) is not bool or \
                type(raw) not in (bytes, bytearray):
            raise pickle.UnpicklingError("numpy array state is not a plain numeric array (object arrays and "
                                         "out-of-band data are refused)")
        if type(shape) is not tuple or len(shape) > _MAX_NDIM or \
                any(type(d) is not int or not 0 <= d <= _MAX_DIM for d in shape):
            raise pickle.UnpicklingError(f"numpy array shape {describe(shape)}")
        need = math.prod(shape) * dt.dtype.itemsize
        if need != len(raw):
            raise pickle.UnpicklingError(f"numpy array of shape {list(shape)} needs {need} bytes but the pickle "
                                         f"holds {len(raw)}")
        self.array = np.frombuffer(raw, dtype=dt.dtype).reshape(shape, order="F" if fortran else "C")


class _NdarrayMarker:
    """``numpy.ndarray`` as a pickle may name it: only an argument of ``_reconstruct``."""


_NDARRAY = _NdarrayMarker()
_CODES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}


def _np_dtype(code, align=False, copy=True, *rest):
    if rest or type(code) is not str or code not in _CODES or type(align) is not bool or type(copy) is not bool:
        raise pickle.UnpicklingError(f"numpy dtype {describe(code)} is not a plain numeric type")
    return NumpyDtype(np.dtype(code))


def _np_scalar(dt, data=None, *rest):
    if rest or type(dt) is not NumpyDtype or type(data) not in (bytes, bytearray) or len(data) != dt.dtype.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar of {describe(dt)} from {describe(data)} is not a plain number")
    return np.frombuffer(bytes(data), dtype=dt.dtype)[0]


def _np_reconstruct(cls, shape=(0,), typecode=b"b", *rest):
    if rest or cls is not _NDARRAY:
        raise pickle.UnpicklingError(f"numpy reconstruction of {describe(cls)} is not a plain array")
    return NumpyArray()     # filled by BUILD from raw bytes; the shape given here is ignored


def _np_frombuffer(buf, dt, shape, order, *rest):
    """Protocol 5's ``numpy._core.numeric._frombuffer`` with in-band data."""
    if rest or type(order) is not str or order not in ("C", "F"):
        raise pickle.UnpicklingError("numpy _frombuffer called with unexpected arguments")
    arr = NumpyArray()
    arr.__setstate__((1, shape, dt, order == "F", buf))
    return arr


def numpy_allow_list() -> AllowList:
    a = AllowList()
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        a.call(mod, "scalar", _np_scalar)
        a.call(mod, "_reconstruct", _np_reconstruct)
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        a.call(mod, "_frombuffer", _np_frombuffer)
    a.call("numpy", "dtype", _np_dtype)
    a.value("numpy", "ndarray", _NDARRAY)
    a.setstate(NumpyDtype).setstate(NumpyArray)
    return a
