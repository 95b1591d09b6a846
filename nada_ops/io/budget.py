"""Limits for reading one untrusted file: memory, tensor bytes, wall-clock time.

Every reader in :mod:`nada_ops.io` charges what it allocates to a :class:`ReadBudget`;
a read that goes over a limit stops with an :class:`UntrustedFileError` naming the file.
The limits are there so that a variant of a hostile file nobody thought of fails closed
(a clear error) instead of open (a hang or an out-of-memory kill of the server).

Limits (environment variables override the defaults):

- ``NADA_MAX_LOAD_BYTES`` (default 8 GiB): all memory one read may allocate (tensor
  storages, tensor views a caller may copy, pickle objects). Raise it for very large CLIP
  models; the largest models the pack uses (1024 px StyleGAN2, ViT-L/14) need < 2 GiB.
- ``NADA_MAX_LOAD_SECONDS`` (default 600): wall-clock time for one read.
- Tensor bytes a file may declare: at most :data:`TENSOR_BYTES_PER_FILE_BYTE` times the
  file's size plus :data:`TENSOR_BYTES_SLACK`. Every tensor must be backed by bytes
  that are really in the file, so a real file declares about 1x its size (a tensor
  viewed twice counts twice; fp16 weights become fp32 later, which the factor covers).
"""
from __future__ import annotations

import os
import time

from .errors import UntrustedFileError

__all__ = ["ReadBudget", "max_load_bytes", "max_load_seconds", "DEFAULT_MAX_LOAD_BYTES",
           "DEFAULT_MAX_LOAD_SECONDS", "TENSOR_BYTES_PER_FILE_BYTE", "TENSOR_BYTES_SLACK",
           "PICKLE_OP_COST"]

DEFAULT_MAX_LOAD_BYTES = 8 << 30
DEFAULT_MAX_LOAD_SECONDS = 600.0
TENSOR_BYTES_PER_FILE_BYTE = 4
TENSOR_BYTES_SLACK = 1 << 20
#: Bytes charged per pickle opcode: an upper bound of what one opcode can allocate
#: besides its payload (an empty dict + a memo entry + a stack slot).
PICKLE_OP_COST = 256
_GiB = 1 << 30


def _env_number(name: str, default, kind):
    v = os.environ.get(name)
    if v:
        try:
            n = kind(v)
            if n > 0:
                return n
        except ValueError:
            pass
    return default


def max_load_bytes() -> int:
    """Memory one file read may allocate (``NADA_MAX_LOAD_BYTES``, default 8 GiB)."""
    return int(_env_number("NADA_MAX_LOAD_BYTES", DEFAULT_MAX_LOAD_BYTES, int))


def max_load_seconds() -> float:
    """Wall-clock limit of one file read (``NADA_MAX_LOAD_SECONDS``, default 600 s)."""
    return float(_env_number("NADA_MAX_LOAD_SECONDS", DEFAULT_MAX_LOAD_SECONDS, float))


def _size(n: int) -> str:
    if n >= _GiB:
        return f"{n / _GiB:.1f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n} bytes"


class ReadBudget:
    """What one read of ``path`` (a file of ``file_size`` bytes) may still spend.

    ``charge_memory``: anything allocated (pickle objects, payloads, storages);
    ``charge_tensor``: tensor bytes (storages allocated, and views a caller may copy),
    bounded by the file's size; ``check_time``: the wall-clock deadline.
    """

    def __init__(self, path, file_size: int, memory_limit: int | None = None,
                 seconds: float | None = None):
        self.path = path
        self.file_size = max(int(file_size), 0)
        self.memory_limit = int(memory_limit if memory_limit is not None else max_load_bytes())
        self.tensor_limit = min(self.memory_limit,
                                TENSOR_BYTES_PER_FILE_BYTE * self.file_size + TENSOR_BYTES_SLACK)
        self.seconds = float(seconds if seconds is not None else max_load_seconds())
        self.deadline = time.monotonic() + self.seconds
        self.memory = 0
        self.tensor_bytes = 0

    @classmethod
    def for_file(cls, path, fh=None) -> "ReadBudget":
        if fh is not None:
            size = os.fstat(fh.fileno()).st_size
        else:
            size = os.path.getsize(path)
        return cls(path, size)

    def fail(self, problem: str):
        raise UntrustedFileError(self.path, problem)

    def charge_memory(self, nbytes: int, what: str = "data") -> None:
        self.memory += int(nbytes)
        if self.memory > self.memory_limit:
            self.fail(f"reading it needs more than {_size(self.memory_limit)} of memory (at {what}); "
                      "the limit is NADA_MAX_LOAD_BYTES")

    def charge_tensor(self, nbytes: int, what: str = "a tensor") -> None:
        nbytes = int(nbytes)
        self.tensor_bytes += nbytes
        if self.tensor_bytes > self.tensor_limit:
            if self.tensor_limit < self.memory_limit:
                self.fail(f"{what} brings the tensor data it declares to {_size(self.tensor_bytes)}, more than "
                          f"{TENSOR_BYTES_PER_FILE_BYTE}x the file's {_size(self.file_size)}: the file does not "
                          "hold the data it claims")
            self.fail(f"{what} brings the tensor data to {_size(self.tensor_bytes)}, more than the "
                      f"{_size(self.memory_limit)} allowed (NADA_MAX_LOAD_BYTES)")
        self.charge_memory(nbytes, what)

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            self.fail(f"reading it took longer than {self.seconds:g} s (NADA_MAX_LOAD_SECONDS); "
                      "the file is malformed or far larger than any supported model")
