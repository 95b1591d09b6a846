"""``torch.save`` files read without ``torch.load``: zip archives, the legacy format, and
the pickled storages inside NVIDIA's network pickles.

``torch.load(weights_only=True)`` runs no code from the file, but its unpickler hashes
attacker-built dict keys (a 200-byte file hangs it), and its legacy reader allocates every
storage at the size the pickle declares before looking at the data. This module reads the
same formats on :class:`~nada_ops.io.pickles.BoundedUnpickler`:

- zip archives (torch >= 1.6): ``<prefix>/data.pkl`` is unpickled with :func:`torch_allow_list`
  (what ``weights_only`` allows that the pack's files use); each storage is read from its
  record ``<prefix>/data/<key>`` only after checking that the record holds the bytes the
  pickle declares (stored records are read straight from the file, compressed ones are
  inflated in chunks and never beyond what the tensor needs);
- the legacy format (``_use_new_zipfile_serialization=False``, and every storage inside an
  NVIDIA ``.pkl``): magic number, version and system-info pickles, the object pickle, the
  storage key list, then ``int64 numel`` + raw bytes per storage; a storage is declared
  against the bytes left in the input before it is allocated.

Tensors are built with :func:`nada_ops.io.tensors.tensor_view` (no stride-0 or
overlapping views, storage large enough, bytes charged to the read's budget). Tensors
come back as views of the storages read (no copy); callers copy what they keep.
"""
from __future__ import annotations

import collections
import contextlib
import io
import os
import struct
import sys
import zipfile
from pickle import UnpicklingError

import torch

from .budget import ReadBudget
from .errors import UntrustedFileError, describe
from .pickles import (AllowList, BoundedUnpickler, MemoryInput, PickleRefusedError, latin1_bytes,
                      run_unpickler, safe_frozenset, safe_ordered_dict, safe_set)
from .tensors import MAX_NDIM, NUMERIC_DTYPES, tensor_view

__all__ = ["read_torch_file", "read_legacy_storage_bytes", "TorchArchive", "TorchUnpickler", "Storage",
           "StorageType", "torch_allow_list", "open_untrusted", "is_zip", "LEGACY_MAGIC",
           "STORAGE_DTYPES", "MAX_PICKLE_RECORD"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
#: Largest ``data.pkl`` accepted (a real one describes thousands of tensors in < 1 MiB).
MAX_PICKLE_RECORD = 64 << 20
_CHUNK = 16 << 20
#: deflate cannot expand data by more than about 1032:1
_MAX_INFLATE_RATIO = 1100

#: torch's legacy typed-storage names ('torch', '<Name>Storage') -> dtype
STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


# ------------------------------------------------------------------------- storages
class StorageType:
    """Stand-in for ``torch.<Name>Storage`` in a pickle: carries the dtype only."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


_STORAGE_TYPES = {name: StorageType(dt) for name, dt in STORAGE_DTYPES.items()}


class Storage:
    """The bytes of one storage of a file: ``nbytes`` bytes of ``dtype`` elements.

    ``data`` (a 1-D uint8 tensor) is allocated on first use or attached later without a
    copy (:meth:`attach`); tensors are views of it."""

    __slots__ = ("key", "dtype", "nbytes", "data", "budget", "filled")

    def __init__(self, key: str, dtype: torch.dtype, nbytes: int, budget: ReadBudget, data=None):
        self.key, self.dtype, self.nbytes, self.budget = key, dtype, nbytes, budget
        self.data = data
        self.filled = data is not None

    def buffer(self) -> torch.Tensor:
        if self.data is None:
            self.data = torch.empty(self.nbytes, dtype=torch.uint8)
        return self.data

    def typed(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.dtype
        if dtype not in NUMERIC_DTYPES:
            raise PickleRefusedError(self.budget.path, f"storage {self.key}: dtype {describe(dtype)} is not allowed")
        item = torch.empty((), dtype=dtype).element_size()
        if self.nbytes % item:
            raise PickleRefusedError(self.budget.path, f"storage {self.key} holds {self.nbytes} bytes, not a "
                                                       f"whole number of {dtype} elements")
        return self.buffer().view(dtype)

    def __repr__(self):
        return f"<Storage {self.key} {self.dtype} {self.nbytes} bytes>"


# ------------------------------------------------------------- tensor rebuild stand-ins
def _storage_arg(storage) -> Storage:
    if type(storage) is not Storage:
        raise UnpicklingError(f"a tensor is built from {describe(storage)}, not from a storage of the file")
    return storage


def _empty_hooks(hooks):
    if hooks is None or (isinstance(hooks, dict) and type(hooks) in (dict, collections.OrderedDict) and not hooks):
        return
    raise UnpicklingError(f"a tensor carries backward hooks {describe(hooks)}")


def _no_metadata(metadata):
    if metadata is None or (type(metadata) is dict and not metadata):
        return
    raise UnpicklingError(f"a tensor carries metadata {describe(metadata)} (conjugate/negative views "
                           "are not used in weights files)")


def _view(storage, offset, size, stride, dtype=None) -> torch.Tensor:
    s = _storage_arg(storage)
    typed = s.typed(dtype)
    return tensor_view(typed, offset, size, stride, f"a tensor in storage {s.key}", s.budget)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _view(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    _empty_hooks(backward_hooks)
    _no_metadata(metadata)
    return _view(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    _empty_hooks(backward_hooks)
    _no_metadata(metadata)
    if not isinstance(dtype, torch.dtype):
        raise UnpicklingError(f"a tensor has dtype {describe(dtype)}")
    return _view(storage, storage_offset, size, stride, dtype)


def _tensor_arg(data) -> torch.Tensor:
    if type(data) is not torch.Tensor:
        raise UnpicklingError(f"a parameter wraps {describe(data)}, not a tensor")
    return data


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    _empty_hooks(backward_hooks)
    return _tensor_arg(data)      # parameters come back as plain tensors


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    _empty_hooks(backward_hooks)
    return _tensor_arg(data)


def _torch_size(dims=(), *rest):
    if rest or type(dims) not in (tuple, list) or len(dims) > MAX_NDIM or \
            any(type(d) is not int or d < 0 for d in dims):
        raise UnpicklingError(f"torch.Size of {describe(dims)}")
    return torch.Size(dims)


def torch_allow_list() -> AllowList:
    """What a weights file may name: tensor/storage rebuilds, dtypes, plain containers."""
    a = AllowList()
    for name, fn in (("_rebuild_tensor", _rebuild_tensor), ("_rebuild_tensor_v2", _rebuild_tensor_v2),
                     ("_rebuild_tensor_v3", _rebuild_tensor_v3), ("_rebuild_parameter", _rebuild_parameter),
                     ("_rebuild_parameter_with_state", _rebuild_parameter_with_state)):
        a.call("torch._utils", name, fn)
    for name, st in _STORAGE_TYPES.items():
        a.value("torch", name, st)
    for dt in NUMERIC_DTYPES:
        a.value("torch", str(dt).split(".", 1)[1], dt)
    a.call("torch", "Size", _torch_size)
    a.call("collections", "OrderedDict", safe_ordered_dict)
    a.call("_codecs", "encode", latin1_bytes)
    for mod in ("builtins", "__builtin__"):
        a.call(mod, "set", safe_set)
        a.call(mod, "frozenset", safe_frozenset)
    return a


_TORCH_ALLOW = torch_allow_list()


# --------------------------------------------------------------------- opening files
@contextlib.contextmanager
def open_untrusted(path, budget: ReadBudget | None = None):
    """Open ``path`` (any str/bytes/PathLike, non-UTF-8 too) for reading; yields
    ``(file, budget)``. Missing files, folders and empty files are clear errors."""
    p = os.fspath(path)
    try:
        fh = open(p, "rb")
    except FileNotFoundError:
        raise UntrustedFileError(path, "file does not exist") from None
    except IsADirectoryError:
        raise UntrustedFileError(path, "is a folder, expected a file") from None
    except OSError as e:
        raise UntrustedFileError(path, f"cannot open the file ({e.strerror or type(e).__name__})") from None
    with fh:
        st = os.fstat(fh.fileno())
        if st.st_size == 0:
            raise UntrustedFileError(path, "file is empty")
        yield fh, (budget or ReadBudget(path, st.st_size))


def is_zip(head: bytes) -> bool:
    return head[:4] == b"PK\x03\x04"


# ------------------------------------------------------------------------ unpicklers
class TorchUnpickler(BoundedUnpickler):
    """``data.pkl`` of a torch zip archive: storages come from the archive's records."""

    allow = _TORCH_ALLOW

    def __init__(self, file, *, archive: "TorchArchive", size: int, allow: AllowList | None = None,
                 what: str | None = None, charge_reads: bool = True):
        super().__init__(file, path=archive.path, budget=archive.budget, size=size,
                         what=what or archive.what, allow=allow, charge_reads=charge_reads)
        self.archive = archive

    def persistent_load(self, pid):
        if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage" or type(pid[1]) is not StorageType:
            self.refuse(f"{self.what} refers to {describe(pid)}, not to a tensor storage")
        _, stype, key, _location, numel = pid
        return self.archive.storage(key, stype.dtype, numel)


class TorchArchive:
    """A torch zip archive (``torch.save`` or TorchScript) opened for checked reads."""

    def __init__(self, fh, path, budget: ReadBudget, what: str = "the archive"):
        self.fh, self.path, self.budget, self.what = fh, path, budget, what
        self.file_size = os.fstat(fh.fileno()).st_size
        try:
            self.zf = zipfile.ZipFile(fh)
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, struct.error) as e:
            raise UntrustedFileError(path, f"not a readable zip archive, truncated or corrupt "
                                           f"({type(e).__name__}: {str(e)[:120]})") from None
        budget.charge_memory(len(infos) * 1024, "the zip directory")
        self.infos = {i.filename: i for i in infos}
        pkls = [n for n in self.infos if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise UntrustedFileError(path, "is a zip archive but not a torch checkpoint "
                                           f"({'no' if not pkls else len(pkls)} '<name>/data.pkl' records)")
        self.prefix = pkls[0].split("/", 1)[0]
        order = self.infos.get(f"{self.prefix}/byteorder")
        if order is not None:
            value = self.read_small(order.filename, 16).strip()
            if value != sys.byteorder.encode():
                raise UntrustedFileError(path, f"{describe(value)}-endian archive; only {sys.byteorder}-endian "
                                               "files can be read")
        self._storages: dict[str, Storage] = {}

    def has(self, name: str) -> bool:
        return f"{self.prefix}/{name}" in self.infos

    def _info(self, name: str, what: str) -> zipfile.ZipInfo:
        info = self.infos.get(name)
        if info is None:
            raise UntrustedFileError(self.path, f"the archive has no record '{describe(name, 100)[1:-1]}' ({what})")
        if info.flag_bits & 0x1:
            raise UntrustedFileError(self.path, f"record {info.filename} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UntrustedFileError(self.path, f"record {info.filename} uses compression method "
                                                f"{info.compress_type} (torch writes uncompressed records)")
        return info

    def read_small(self, name: str, limit: int) -> bytes:
        info = self._info(name, "metadata")
        if info.file_size > limit:
            raise UntrustedFileError(self.path, f"record {name} declares {info.file_size} bytes (at most {limit})")
        with self.zf.open(info) as f:
            return f.read(limit)

    def open_pickle(self, name: str):
        """(stream, size) of a pickle record, checked against :data:`MAX_PICKLE_RECORD`."""
        info = self._info(f"{self.prefix}/{name}", "pickle")
        size = info.file_size
        if size > MAX_PICKLE_RECORD:
            raise UntrustedFileError(self.path, f"record {info.filename} declares {size} bytes of pickle; a "
                                                f"weights file needs far less (limit {MAX_PICKLE_RECORD >> 20} MiB)")
        if info.compress_type != zipfile.ZIP_STORED and size > max(info.compress_size, 1) * _MAX_INFLATE_RATIO:
            raise UntrustedFileError(self.path, f"record {info.filename} claims to inflate {info.compress_size} "
                                                f"bytes to {size}: not a valid deflate stream")
        return self.zf.open(info), size

    def unpickle(self, name: str = "data.pkl", unpickler_cls=TorchUnpickler, **kw):
        """Unpickle a pickle record; it is read into memory first (bounded by
        :data:`MAX_PICKLE_RECORD`), so the unpickler's many small reads are cheap."""
        stream, size = self.open_pickle(name)
        self.budget.charge_memory(size, f"record {name}")
        with stream:
            data = stream.read(size)
        u = unpickler_cls(io.BytesIO(data), archive=self, size=len(data), charge_reads=False, **kw)
        return run_unpickler(u)

    def storage(self, key, dtype: torch.dtype, numel) -> Storage:
        if type(key) is not str or not key or len(key) > 64 or not all(c.isalnum() or c in "_-." for c in key):
            raise PickleRefusedError(self.path, f"storage key {describe(key)} is not a record name")
        if type(numel) is not int or numel < 0:
            raise PickleRefusedError(self.path, f"storage {key} declares {describe(numel)} elements")
        if dtype not in NUMERIC_DTYPES:
            raise PickleRefusedError(self.path, f"storage {key} has dtype {dtype}, not allowed in a weights file")
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        cached = self._storages.get(key)
        if cached is not None:
            if cached.nbytes < nbytes:
                raise PickleRefusedError(self.path, f"storage {key} is declared with two different sizes")
            return cached if cached.dtype == dtype else Storage(key, dtype, cached.nbytes, self.budget, cached.data)
        data = self.read_storage(key, nbytes)
        s = Storage(key, dtype, nbytes, self.budget, data)
        self._storages[key] = s
        return s

    def read_storage(self, key: str, nbytes: int) -> torch.Tensor:
        info = self._info(f"{self.prefix}/data/{key}", f"tensor storage {key}")
        if info.file_size < nbytes:
            raise UntrustedFileError(self.path, f"tensor storage {key} declares {nbytes} bytes but its record holds "
                                                f"{info.file_size}: the file does not contain the data it claims")
        compressed = info.compress_type != zipfile.ZIP_STORED
        if compressed and nbytes > max(info.compress_size, 1) * _MAX_INFLATE_RATIO:
            raise UntrustedFileError(self.path, f"tensor storage {key} would inflate {info.compress_size} bytes to "
                                                f"{nbytes}: not a valid deflate stream")
        self.budget.charge_tensor(nbytes, f"tensor storage {key}")
        buf = torch.empty(nbytes, dtype=torch.uint8)
        if nbytes == 0:
            return buf
        view = memoryview(buf.numpy()).cast("B")
        if not compressed:
            start = self._stored_data_offset(info)
            if start + nbytes > self.file_size:
                raise UntrustedFileError(self.path, f"tensor storage {key} runs past the end of the file (truncated)")
            self.fh.seek(start)
            got = self._fill(self.fh.readinto, view)
        else:
            with self.zf.open(info) as f:
                got = self._fill(f.readinto, view)
        if got != nbytes:
            raise UntrustedFileError(self.path, f"tensor storage {key} is truncated ({got} of {nbytes} bytes)")
        return buf

    def _stored_data_offset(self, info: zipfile.ZipInfo) -> int:
        self.fh.seek(info.header_offset)
        head = self.fh.read(30)
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            raise UntrustedFileError(self.path, f"record {info.filename} has no valid local header (corrupt zip)")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        return info.header_offset + 30 + name_len + extra_len

    def _fill(self, readinto, view) -> int:
        got, n = 0, len(view)
        while got < n:
            k = readinto(view[got:min(n, got + _CHUNK)])
            if not k:
                break
            got += k
            self.budget.check_time()
        return got


# --------------------------------------------------------------------- legacy format
class LegacyUnpickler(BoundedUnpickler):
    """The object pickle of the legacy format: storages are declared, filled afterwards."""

    allow = _TORCH_ALLOW

    def __init__(self, file, *, reader: "_LegacyReader", size: int, allow=None, what=None):
        super().__init__(file, path=reader.path, budget=reader.budget, size=size, what=what or reader.what,
                         allow=allow, charge_reads=reader.charge_reads)
        self.reader = reader

    def persistent_load(self, pid):
        if type(pid) is not tuple or len(pid) != 6 or pid[0] != "storage" or type(pid[1]) is not StorageType:
            self.refuse(f"{self.what} refers to {describe(pid)}, not to a tensor storage")
        _, stype, key, _location, numel, view = pid
        if view is not None:
            self.refuse(f"{self.what} uses storage views (a format of torch < 1.0 that is not supported)")
        return self.reader.declare(key, stype.dtype, numel)


class _LegacyReader:
    def __init__(self, src, size: int, path, budget: ReadBudget, what: str, memory=None):
        self.src, self.size, self.path, self.budget, self.what = src, size, path, budget, what
        self.start = src.tell() if memory is None else 0
        self.memory = memory                  # the whole input when it is already in memory
        self.charge_reads = memory is None
        self.declared: dict[str, Storage] = {}
        self.declared_bytes = 0

    def tell(self) -> int:
        return (self.src.pos if self.memory is not None else self.src.tell()) - self.start

    def remaining(self) -> int:
        return self.size - self.tell()

    def small_pickle(self, what: str, allow=None):
        u = BoundedUnpickler(self.src, path=self.path, budget=self.budget, size=self.remaining(),
                             what=f"{self.what} ({what})", allow=allow or AllowList(),
                             charge_reads=self.charge_reads)
        return run_unpickler(u)

    def declare(self, key, dtype, numel) -> Storage:
        if type(key) is not str or len(key) > 64:
            raise PickleRefusedError(self.path, f"storage key {describe(key)} is not valid")
        if type(numel) is not int or numel < 0:
            raise PickleRefusedError(self.path, f"storage {key} declares {describe(numel)} elements")
        if dtype not in NUMERIC_DTYPES:
            raise PickleRefusedError(self.path, f"storage {key} has dtype {dtype}, not allowed in a weights file")
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        s = self.declared.get(key)
        if s is not None:
            if s.nbytes != nbytes:
                raise PickleRefusedError(self.path, f"storage {key} is declared with two different sizes")
            return s if s.dtype == dtype else Storage(key, dtype, nbytes, self.budget, s.data)
        self.declared_bytes += nbytes + 8
        if self.declared_bytes > self.remaining():
            raise PickleRefusedError(self.path, f"{self.what} declares tensor storages of {self.declared_bytes} "
                                                f"bytes but only {self.remaining()} bytes follow: the file does "
                                                "not contain the data it claims")
        if self.memory is None:
            self.budget.charge_tensor(nbytes, f"tensor storage {key}")
        s = Storage(key, dtype, nbytes, self.budget)
        self.declared[key] = s
        return s

    def load(self, allow: AllowList | None = None):
        magic = self.small_pickle("magic number")
        if type(magic) is not int or magic != LEGACY_MAGIC:
            raise UntrustedFileError(self.path, f"{self.what} is not a torch.save file (no torch magic number)")
        version = self.small_pickle("format version")
        if type(version) is not int or version != LEGACY_PROTOCOL_VERSION:
            raise UntrustedFileError(self.path, f"{self.what} has torch format version {describe(version)}, "
                                                f"expected {LEGACY_PROTOCOL_VERSION}")
        info = self.small_pickle("system info")
        if type(info) is dict and info.get("little_endian") is False:
            raise UntrustedFileError(self.path, f"{self.what} was written on a big-endian machine")
        u = LegacyUnpickler(self.src, reader=self, size=self.remaining(), allow=allow)
        obj = run_unpickler(u)
        keys = self.small_pickle("storage keys")
        if type(keys) is not list or len(keys) > len(self.declared) or any(type(k) is not str for k in keys):
            raise UntrustedFileError(self.path, f"{self.what} has an invalid storage key list {describe(keys)}")
        for key in keys:
            s = self.declared.get(key)
            if s is None or s.filled:
                raise UntrustedFileError(self.path, f"{self.what} lists storage {describe(key)} that the object "
                                                    "pickle does not declare (or twice)")
            self.fill(s)
        missing = [k for k, s in self.declared.items() if not s.filled]
        if missing:
            raise UntrustedFileError(self.path, f"{self.what} declares storage {describe(missing[0])} but holds "
                                                "no data for it (truncated)")
        return obj

    def fill(self, s: Storage):
        head = self.src.read(8)
        if len(head) != 8:
            raise UntrustedFileError(self.path, f"{self.what} is truncated (storage {s.key})")
        (numel,) = struct.unpack("<q", head)
        item = torch.empty((), dtype=s.dtype).element_size()
        if numel * item != s.nbytes:
            raise UntrustedFileError(self.path, f"storage {s.key} holds {numel} elements but was declared with "
                                                f"{s.nbytes // item}")
        if s.nbytes > self.remaining():
            raise UntrustedFileError(self.path, f"{self.what} is truncated (storage {s.key} needs {s.nbytes} bytes, "
                                                f"{self.remaining()} left)")
        if self.memory is not None and s.data is None and isinstance(self.memory, bytearray):
            # zero copy: a view of the payload (the caller copies what it keeps)
            s.data = torch.frombuffer(self.memory, dtype=torch.uint8, offset=self.src.pos, count=s.nbytes) \
                if s.nbytes else torch.empty(0, dtype=torch.uint8)
            self.src.pos += s.nbytes
        else:
            buf = s.buffer()
            view = memoryview(buf.numpy()).cast("B")
            got, n = 0, s.nbytes
            while got < n:
                k = self.src.readinto(view[got:min(n, got + _CHUNK)])
                if not k:
                    break
                got += k
                self.budget.check_time()
            if got != n:
                raise UntrustedFileError(self.path, f"{self.what} is truncated (storage {s.key})")
        s.filled = True


def read_legacy_storage_bytes(payload, path, budget: ReadBudget):
    """The storage inside ``torch.storage._load_from_bytes(payload)`` (NVIDIA's pickles
    store every tensor's storage that way): a legacy-format ``torch.save`` of one storage."""
    if type(payload) not in (bytes, bytearray):
        raise PickleRefusedError(path, f"a tensor storage payload is {describe(payload)}, expected bytes")
    reader = _LegacyReader(MemoryInput(payload), len(payload), path, budget, "a pickled tensor storage",
                           memory=payload)
    obj = reader.load()
    if type(obj) is not Storage:
        raise PickleRefusedError(path, f"a pickled tensor storage holds {describe(obj)}, not a storage")
    return obj


# ------------------------------------------------------------------------ public API
def read_torch_file(path, allow: AllowList | None = None, what: str = "the file"):
    """The object a ``torch.save`` file holds (zip or legacy format), read with bounded
    cost. ``allow`` extends :func:`torch_allow_list` (e.g. ``argparse.Namespace``).
    Tensors are validated views of the file's storages. Raises :class:`UntrustedFileError`."""
    allow_all = _TORCH_ALLOW.merged(allow) if allow is not None else _TORCH_ALLOW
    with open_untrusted(path) as (fh, budget):
        head = fh.read(4)
        fh.seek(0)
        if is_zip(head):
            archive = TorchArchive(fh, path, budget, what=what)
            if archive.has("constants.pkl"):
                raise UntrustedFileError(path, "is a TorchScript archive (torch.jit.save), not a torch.save "
                                               "checkpoint")
            return archive.unpickle("data.pkl", allow=allow_all)
        if head[:1] == b"\x80":
            reader = _LegacyReader(fh, budget.file_size, path, budget, what)
            return reader.load(allow=allow_all)
        raise UntrustedFileError(path, "is not a torch.save file (neither a zip archive nor a pickle)")
