"""The error every untrusted-file reader raises, and bounded descriptions of file data.

Anything read from a file may be hostile: a nested list whose ``repr`` takes longer than
the age of the universe, a 100 MB string, an int with a million digits. Error messages
therefore never call ``str``/``repr`` on file data; they call :func:`describe`, which
costs O(limit) whatever it is given.
"""
from __future__ import annotations

import os

__all__ = ["UntrustedFileError", "describe", "path_text"]

#: Default length of a description (characters, roughly).
DESCRIBE_LIMIT = 80


def path_text(path) -> str:
    """A printable form of any path the pack can be given (str, bytes, PathLike, non-UTF-8)."""
    try:
        p = os.fspath(path)
    except TypeError:
        return describe(path)
    if isinstance(p, bytes):
        return os.fsdecode(p).encode("utf-8", "backslashreplace").decode("utf-8")
    return p.encode("utf-8", "backslashreplace").decode("utf-8")


class UntrustedFileError(ValueError):
    """A file cannot be used: the message names the file and the problem.

    Format readers convert it into their own error class (``CheckpointError``,
    ``DirectionFileError``, ...) with ``problem`` unchanged.
    """

    def __init__(self, path, problem: str):
        self.path = path_text(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _atom(obj, room: int) -> str:
    t = type(obj)
    if obj is None or t is bool:
        return repr(obj)
    if t is int:
        if obj.bit_length() > 64:
            return f"<int of {obj.bit_length()} bits>"
        return repr(obj)
    if t is float:
        return repr(obj)
    if t is str:
        room = max(room, 8)
        s = repr(obj[:room])
        return s if len(obj) <= room else s[:-1] + f"...' ({len(obj)} chars)"
    if t in (bytes, bytearray):
        room = max(room, 8)
        s = repr(bytes(obj[:room]))
        return s if len(obj) <= room else s[:-1] + f"...' ({len(obj)} bytes)"
    return ""


def describe(obj, limit: int = DESCRIBE_LIMIT) -> str:
    """A short description of ``obj`` in O(limit) time and memory.

    Atoms are shown (truncated); containers show their type, length and first few items;
    tensors and arrays their shape and dtype; anything else only its type name (its own
    ``__repr__`` is never called).
    """
    budget = [max(int(limit), 16)]
    return _describe(obj, budget, 0)


def _describe(obj, budget: list, depth: int) -> str:
    if budget[0] <= 0:
        return "..."
    s = _atom(obj, budget[0])
    if not s:
        t = type(obj)
        name = t.__name__
        if t in (list, tuple, set, frozenset) or isinstance(obj, dict):
            n = len(obj)
            if depth >= 2 or n == 0:
                s = f"<{name} of {n} items>" if n else ("()" if t is tuple else f"<empty {name}>")
            else:
                parts = []
                budget[0] -= len(name) + 4
                items = obj.items() if isinstance(obj, dict) else obj
                for i, item in enumerate(items):
                    if i >= 3 or budget[0] <= 0:
                        parts.append(f"... {n} items")
                        break
                    if isinstance(obj, dict):
                        k, v = item
                        parts.append(f"{_describe(k, budget, depth + 1)}: {_describe(v, budget, depth + 1)}")
                    else:
                        parts.append(_describe(item, budget, depth + 1))
                s = f"{name}[" + ", ".join(parts) + "]"
        else:
            shape = getattr(obj, "shape", None) if _is_array(obj) else None
            if shape is not None:
                dims = list(shape)[:8]
                s = f"<{name} shape {dims}{'...' if len(shape) > 8 else ''} dtype {getattr(obj, 'dtype', '?')}>"
            else:
                s = f"<{name}>"
    budget[0] -= len(s)
    return s


def _is_array(obj) -> bool:
    mod = type(obj).__module__ or ""
    return mod.startswith(("torch", "numpy"))
