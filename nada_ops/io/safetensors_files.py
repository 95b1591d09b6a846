"""safetensors files read from a validated header (no ``safetensors.torch.load_file``).

The header is checked completely before any tensor byte is read: JSON of bounded size
and nesting (a deeply nested header is an error, not a RecursionError), the exact
``{name: {dtype, shape, data_offsets}}`` layout with a known dtype, every tensor's size
equal to numel x itemsize, and the data offsets tiling the data block exactly
(contiguous, no overlap, nothing past the end of the file) as the safetensors
specification requires. Metadata must be a ``{str: str}`` dict.

Reading works for any path the pack can write (non-UTF-8 names too: the Rust reader
only takes UTF-8 strings), and nothing beyond the file's validated data block is
allocated.
"""
from __future__ import annotations

import itertools
import json
import math
import re
import struct
import sys

import torch

from .budget import ReadBudget
from .errors import UntrustedFileError, describe
from .tensors import MAX_DIM, MAX_NDIM

__all__ = ["SafetensorsHeader", "read_safetensors_header", "read_safetensors", "write_safetensors", "format_problem", "loads_json",
           "SAFETENSORS_DTYPES", "MAX_HEADER_BYTES", "MAX_JSON_DEPTH"]

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
#: A header describing thousands of tensors is < 1 MiB; the safetensors library allows 100 MB.
MAX_HEADER_BYTES = 16 << 20
#: Nesting of any JSON read from a file (safetensors headers are 3 levels deep).
MAX_JSON_DEPTH = 32

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


def loads_json(text, what: str, path, max_depth: int = MAX_JSON_DEPTH, max_chars: int = MAX_HEADER_BYTES):
    """``json.loads`` for text from a file: size and nesting checked first (linear time),
    so malformed input is a clear :class:`UntrustedFileError`, never a RecursionError."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise UntrustedFileError(path, f"{what} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if type(text) is not str:
        raise UntrustedFileError(path, f"{what} is {describe(text)}, expected JSON text")
    if len(text) > max_chars:
        raise UntrustedFileError(path, f"{what} is {len(text)} characters long (at most {max_chars})")
    stripped = _STRINGS.sub("", text)
    steps = [1 if c in "[{" else -1 for c in _BRACKETS.findall(stripped)]
    depth = max(itertools.accumulate(steps), default=0)
    if depth > max_depth:
        raise UntrustedFileError(path, f"{what} is nested {depth} levels deep (at most {max_depth})")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        raise UntrustedFileError(path, f"{what} is not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None


class SafetensorsHeader:
    """A validated safetensors header: ``entries`` {name: (dtype, shape, begin, end)} in
    file order, ``metadata`` {str: str}, ``data_start`` (file offset of the data block)."""

    def __init__(self, path, entries: dict, metadata: dict, data_start: int, data_size: int):
        self.path, self.entries, self.metadata = path, entries, metadata
        self.data_start, self.data_size = data_start, data_size

    def shapes(self) -> dict[str, tuple]:
        return {k: v[1] for k, v in self.entries.items()}


def _entry(path, name: str, info) -> tuple:
    where = f"safetensors entry {describe(name)}"
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise UntrustedFileError(path, f"{where} is {describe(info)}; expected {{dtype, shape, data_offsets}}")
    dt = info["dtype"]
    if type(dt) is not str or dt not in SAFETENSORS_DTYPES:
        raise UntrustedFileError(path, f"{where} has dtype {describe(dt)}; supported: {sorted(SAFETENSORS_DTYPES)}")
    shape = info["shape"]
    if type(shape) is not list or len(shape) > MAX_NDIM or \
            any(type(d) is not int or not 0 <= d <= MAX_DIM for d in shape):
        raise UntrustedFileError(path, f"{where} has shape {describe(shape)}")
    offs = info["data_offsets"]
    if type(offs) is not list or len(offs) != 2 or any(type(o) is not int or o < 0 for o in offs) or offs[1] < offs[0]:
        raise UntrustedFileError(path, f"{where} has data_offsets {describe(offs)}")
    dtype = SAFETENSORS_DTYPES[dt]
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if offs[1] - offs[0] != nbytes:
        raise UntrustedFileError(path, f"{where} declares shape {shape} of {dt} ({nbytes} bytes) but its data "
                                       f"offsets span {offs[1] - offs[0]} bytes")
    return dtype, tuple(shape), offs[0], offs[1]


def read_safetensors_header(fh, path, budget: ReadBudget) -> SafetensorsHeader:
    size = budget.file_size
    head = fh.read(8)
    if len(head) < 8:
        raise UntrustedFileError(path, "file is too short to be a safetensors file")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise UntrustedFileError(path, f"safetensors header length {n} does not fit in a file of {size} bytes "
                                       "(truncated or not a safetensors file)")
    budget.charge_memory(n * 16, "the safetensors header")
    header = loads_json(fh.read(n), "the safetensors header", path, max_depth=4)
    if not isinstance(header, dict):
        raise UntrustedFileError(path, "the safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or any(type(v) is not str for v in meta.values()):
        raise UntrustedFileError(path, "safetensors '__metadata__' must map strings to strings, got "
                                       f"{describe(meta)}")
    entries = {name: _entry(path, name, info) for name, info in header.items()}
    data_start, data_size = 8 + n, size - 8 - n
    pos = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != pos:
            problem = "overlaps the previous tensor" if begin < pos else f"leaves a gap at byte {pos}"
            raise UntrustedFileError(path, f"safetensors entry {describe(name)} {problem} (data offsets must tile "
                                           "the data block)")
        pos = end
    if pos > data_size:
        raise UntrustedFileError(path, f"file is truncated: tensors need {data_start + pos} bytes, file has {size}")
    if pos != data_size:
        raise UntrustedFileError(path, f"{data_size - pos} bytes after the last tensor are not described by the "
                                       "header (corrupt file)")
    return SafetensorsHeader(path, entries, meta, data_start, data_size)


def read_safetensors_data(fh, header: SafetensorsHeader, budget: ReadBudget) -> dict[str, torch.Tensor]:
    """All tensors of a validated header: views of one buffer holding the data block."""
    budget.charge_tensor(header.data_size, "the tensor data")
    buf = torch.empty(header.data_size, dtype=torch.uint8)
    if header.data_size:
        fh.seek(header.data_start)
        view = memoryview(buf.numpy()).cast("B")
        got = 0
        while got < header.data_size:
            k = fh.readinto(view[got:got + (16 << 20)])
            if not k:
                break
            got += k
            budget.check_time()
        if got != header.data_size:
            raise UntrustedFileError(header.path, "file is truncated (the data block is shorter than its header says)")
    out = {}
    for name, (dtype, shape, begin, end) in header.entries.items():
        raw = buf[begin:end]
        if end == begin:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        if begin % torch.empty((), dtype=dtype).element_size():
            raw = raw.clone()          # an unaligned offset: this tensor gets its own buffer
        out[name] = raw.view(dtype).view(shape)
    return out


def read_safetensors(path, check=None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file. ``check(header)``, if given, runs on the
    validated header BEFORE any tensor data is read (e.g. to compare shapes with an
    architecture)."""
    from .torch_files import open_untrusted
    with open_untrusted(path) as (fh, budget):
        header = read_safetensors_header(fh, path, budget)
        if check is not None:
            check(header)
        return read_safetensors_data(fh, header, budget), header.metadata


def format_problem(metadata: dict, names, version: str, what: str) -> str | None:
    """What is wrong with the ``format`` / ``format_version`` fields that the pack's own
    safetensors files (generators, mappers, priors) carry, or None. ``names``: the accepted
    format name(s); ``what``: what the file should be ("a prior", ...), for the hint."""
    names = [names] if isinstance(names, str) else sorted(names)
    fmt = metadata.get("format")
    if fmt not in names:
        expected = repr(names[0]) if len(names) == 1 else f"one of {names}"
        return (f"safetensors metadata field 'format' is {describe(fmt)}, expected {expected} "
                f"(is this {what} saved by this pack?)")
    ver = metadata.get("format_version")
    if ver != version:
        return f"metadata field 'format_version' is {describe(ver)}; this version of the pack reads {version!r}"
    return None


_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def write_safetensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write ``tensors`` ({name: tensor}) and string ``metadata`` as a safetensors file,
    byte for byte the same for the same input (the safetensors library writes its metadata
    in hash order, so two saves of one model differ; render farms and sweeps compare
    outputs byte for byte).

    Layout per the specification: an 8-byte little-endian header length, the JSON header
    (tensors in name order, keys sorted, no spaces, padded with spaces to a multiple of 8),
    then the tensors' little-endian bytes back to back in header order. Any safetensors
    reader (and :func:`read_safetensors`) reads it. Tensors are streamed to the file one at
    a time: no copy of the whole model is made. Write through :func:`nada_ops.fileio.atomic_write`.
    """
    meta = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise TypeError("safetensors metadata must be a {str: str} dict")
    names = sorted(tensors)
    header: dict = {}
    offset = 0
    for name in names:
        t = tensors[name]
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        if t.dtype not in _DTYPE_NAMES:
            raise TypeError(f"tensor {name!r}: dtype {t.dtype} cannot be stored in safetensors")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    if meta:
        header["__metadata__"] = meta
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for name in names:
            t = tensors[name].detach()
            if t.numel() == 0:
                continue
            t = t.to("cpu").contiguous().reshape(-1)
            if t.dtype == torch.bool:
                t = t.to(torch.uint8)
            if sys.byteorder != "little" and t.element_size() > 1:
                t = torch.from_numpy(t.view(torch.uint8).numpy().reshape(-1, t.element_size())[:, ::-1].copy()
                                     .reshape(-1))
            fh.write(memoryview(t.view(torch.uint8).numpy()))
