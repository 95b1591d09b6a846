"""Unpickling untrusted files with bounded cost: the one base every pickle reader uses.

:class:`BoundedUnpickler` is Python's pure-Python unpickler (``pickle._Unpickler``) with
the opcodes that touch attacker-built objects replaced:

- Globals come only from an explicit allow-list (:class:`AllowList`); nothing is imported.
  Each entry says how it may be used: called by REDUCE (``call``: functions written to
  validate their arguments before allocating anything), instantiated empty by NEWOBJ
  (``new``), or only referenced (``value``: dtypes, markers).
- Dict keys and set members must be strings, bytes, small numbers or short tuples of
  strings, checked BEFORE the dict or set hashes them: a shared nested tuple used as a
  key (whose hash costs 2^depth) or colliding integers cannot be inserted.
- APPEND(S) only extend lists, SETITEM(S) only fill dicts, ADDITEMS only sets; BUILD only
  reaches classes the allow-list names; INST/OBJ, extension codes and out-of-band buffers
  are refused.
- Every read is bounded by the bytes really left in the input (a 2^60-byte string
  declared by a 20-byte file fails at once), and the whole read is charged to a
  :class:`~nada_ops.io.budget.ReadBudget` (memory per opcode and per payload, wall-clock
  deadline checked every few thousand opcodes), so a variant nobody thought of fails closed.

Nothing here calls ``str``/``repr``/``hash``/``==`` on file data before its type is
checked; messages describe data with :func:`~nada_ops.io.errors.describe`.
"""
from __future__ import annotations

import collections
import pickle
from struct import unpack
from typing import Any, Callable

from .budget import PICKLE_OP_COST, ReadBudget
from .errors import UntrustedFileError, describe

__all__ = ["BoundedUnpickler", "AllowList", "PickleRefusedError", "check_key", "LimitedInput", "MemoryInput",
           "run_unpickler", "global_name", "safe_set", "safe_frozenset", "safe_ordered_dict", "latin1_bytes",
           "MAX_KEY_TUPLE"]

#: Largest tuple accepted as a dict key or set member.
MAX_KEY_TUPLE = 8
#: Payloads at least this large are read straight into a bytearray (no temporary copy).
_LARGE_PAYLOAD = 1 << 16
_CHECK_EVERY = 4096
_INT_KEY_LIMIT = 1 << 61       # ints below this hash to themselves: no engineered collisions


class PickleRefusedError(UntrustedFileError, pickle.UnpicklingError):
    """The pickle asks for something the allow-list does not permit (or is malformed)."""


def global_name(module, name) -> str:
    """``module.name`` for a message (both are strings from the file: bounded)."""
    def part(s):
        return s if type(s) is str and len(s) <= 120 and s.isprintable() else describe(s, 60)
    return f"{part(module)}.{part(name)}"


# ------------------------------------------------------------------------- key checks
def check_key(k, path=None, where: str = "a dict key") -> None:
    """Refuse keys whose hashing could cost more than their size (or be made to collide).
    Raises :class:`PickleRefusedError` naming ``path`` (a plain UnpicklingError without one)."""
    t = type(k)
    if t is str or t is bytes or k is None or t is bool or t is float:
        return
    if t is int:
        if -_INT_KEY_LIMIT < k < _INT_KEY_LIMIT:
            return
    elif t is tuple and len(k) <= MAX_KEY_TUPLE:
        if all(type(x) in (str, bytes, bool) or x is None for x in k):
            return
    problem = f"{where} is {describe(k)}; keys must be strings, numbers or short tuples of strings"
    if path is None:
        raise pickle.UnpicklingError(problem)
    raise PickleRefusedError(path, problem)


# -------------------------------------------------------- stand-ins for common globals
def safe_set(items=(), *rest):
    """``builtins.set`` for REDUCE: members checked before they are hashed."""
    if rest or type(items) not in (list, tuple):
        raise pickle.UnpicklingError("builtins.set called with unexpected arguments")
    for x in items:
        check_key(x, None, "a set member")
    return set(items)


def safe_frozenset(items=(), *rest):
    if rest or type(items) not in (list, tuple):
        raise pickle.UnpicklingError("builtins.frozenset called with unexpected arguments")
    for x in items:
        check_key(x, None, "a set member")
    return frozenset(items)


def safe_ordered_dict(items=(), *rest):
    """``collections.OrderedDict`` for REDUCE: only empty, or a list of checked (key, value) pairs."""
    if rest or type(items) not in (list, tuple):
        raise pickle.UnpicklingError("collections.OrderedDict called with unexpected arguments")
    for pair in items:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise pickle.UnpicklingError("collections.OrderedDict called with items that are not pairs")
        check_key(pair[0])
    return collections.OrderedDict(items)


def latin1_bytes(text, encoding="latin1", *rest):
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use to store bytes."""
    if rest or type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unexpected _codecs.encode call in the pickle")
    return text.encode("latin1")


# ----------------------------------------------------------------------- allow-list
class AllowList:
    """Globals a pickle may name, and what it may do with each.

    ``call``: may be called by REDUCE (the function validates its own arguments);
    ``new``: a class NEWOBJ may create empty and BUILD may fill with a dict of str keys;
    ``setstate``: a class whose own ``__setstate__`` (written in this pack) BUILD may call;
    ``value``: may only be referenced (dtypes, markers).
    """

    def __init__(self):
        self.globals: dict[tuple[str, str], Any] = {}
        self.callables: dict[int, Any] = {}
        self.new_classes: set = set()
        self.setstate_classes: set = set()

    def call(self, module: str, name: str, fn: Callable) -> "AllowList":
        self.globals[(module, name)] = fn
        self.callables[id(fn)] = fn
        return self

    def new(self, module: str, name: str, cls: type) -> "AllowList":
        self.globals[(module, name)] = cls
        self.new_classes.add(cls)
        return self

    def value(self, module: str, name: str, obj) -> "AllowList":
        self.globals[(module, name)] = obj
        return self

    def setstate(self, cls: type) -> "AllowList":
        self.setstate_classes.add(cls)
        return self

    def merged(self, other: "AllowList") -> "AllowList":
        out = AllowList()
        for src in (self, other):
            out.globals.update(src.globals)
            out.callables.update(src.callables)
            out.new_classes |= src.new_classes
            out.setstate_classes |= src.setstate_classes
        return out


# ------------------------------------------------------------------------- inputs
class LimitedInput:
    """A binary stream that refuses to read past the bytes it is known to hold
    (``size``): a pickle declaring a 2^60-byte string fails at once instead of asking the
    file object for that much. ``consumed`` is charged to the budget by the unpickler."""

    def __init__(self, raw, size: int, budget: ReadBudget, what: str):
        self._raw = raw
        self.size = self.remaining = int(size)
        self._budget = budget
        self._what = what

    @property
    def consumed(self) -> int:
        return self.size - self.remaining

    def _need(self, n: int):
        if n > self.remaining:
            raise PickleRefusedError(
                self._budget.path, f"{self._what} declares an item of {n} bytes but only {self.remaining} "
                                   "bytes remain (corrupt, or a hostile file)")

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.remaining
        if n > self.remaining:
            self._need(n)
        data = self._raw.read(n)
        self.remaining -= len(data)
        return data

    def readinto(self, buf) -> int:
        n = len(buf)
        self._need(n)
        view = memoryview(buf).cast("B")
        got = 0
        while got < n:
            k = self._raw.readinto(view[got:min(n, got + (16 << 20))])
            if not k:
                break
            got += k
            self._budget.check_time()
        self.remaining -= got
        return got

    def readline(self) -> bytes:
        data = self._raw.readline(self.remaining)
        self.remaining -= len(data)
        return data


class MemoryInput:
    """A read-only stream over a memoryview (no copy of the whole buffer)."""

    def __init__(self, buf):
        self._mv = memoryview(buf).cast("B")
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._mv) if n is None or n < 0 else min(len(self._mv), self.pos + n)
        data = bytes(self._mv[self.pos:end])
        self.pos = end
        return data

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        n = min(len(view), len(self._mv) - self.pos)
        view[:n] = self._mv[self.pos:self.pos + n]
        self.pos += n
        return n

    def readline(self, limit: int = -1) -> bytes:
        end = len(self._mv) if limit is None or limit < 0 else min(len(self._mv), self.pos + limit)
        chunk = self._mv[self.pos:end]
        idx = bytes(chunk).find(b"\n") if len(chunk) <= 4096 else _find_newline(chunk)
        stop = end if idx < 0 else self.pos + idx + 1
        data = bytes(self._mv[self.pos:stop])
        self.pos = stop
        return data


def _find_newline(mv) -> int:
    step = 4096
    for start in range(0, len(mv), step):
        i = bytes(mv[start:start + step]).find(b"\n")
        if i >= 0:
            return start + i
    return -1


# ------------------------------------------------------------------------- unpickler
_d = pickle._Unpickler.dispatch
_P = pickle


class BoundedUnpickler(pickle._Unpickler):
    """See the module docstring. Subclasses set :attr:`allow` and may override
    :meth:`persistent_load` and :meth:`refuse_global`."""

    dispatch = dict(_d)
    allow: AllowList = AllowList()

    def __init__(self, file, *, path, budget: ReadBudget, size: int, what: str = "the pickle",
                 allow: AllowList | None = None, charge_reads: bool = True):
        """``file``: the stream, ``size``: the bytes it may still hold for this pickle.
        ``charge_reads``: charge the bytes read to the budget (False when the caller
        already holds them in memory and charged them)."""
        self.path = path
        self.budget = budget
        self.what = what
        if allow is not None:
            self.allow = allow
        self._input = LimitedInput(file, size, budget, what)
        self._charge_reads = charge_reads
        self._charged = 0
        super().__init__(self._input, encoding="utf-8", errors="strict")

    def _charge(self, ops: int):
        mem = ops * PICKLE_OP_COST
        if self._charge_reads:
            consumed = self._input.consumed
            mem += consumed - self._charged
            self._charged = consumed
        self.budget.charge_memory(mem, self.what)

    # -- errors
    def refuse(self, problem: str):
        raise PickleRefusedError(self.path, problem)

    def refuse_global(self, module: str, name: str):
        self.refuse(f"refusing to load global '{global_name(module, name)}': it is not allowed in {self.what}, "
                    "which may hold only tensors and plain data (loading anything else could run code "
                    "stored in the file)")

    # -- the main loop: same as pickle's, with the budget checked every few thousand opcodes
    def load(self):
        self._unframer = _P._Unframer(self._file_read, self._file_readline)
        self.read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        read = self.read
        dispatch = self.dispatch
        budget = self.budget
        n = 0
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError("the pickle data is truncated")
                op = dispatch.get(key[0])
                if op is None:
                    self.refuse(f"{self.what} holds an unknown opcode {key!r} (corrupt file)")
                op(self)
                n += 1
                if n == _CHECK_EVERY:
                    n = 0
                    self._charge(_CHECK_EVERY)
                    budget.check_time()
        except _P._Stop as stopinst:
            self._charge(n)
            return stopinst.value

    # -- globals
    def find_class(self, module, name):
        obj = self.allow.globals.get((module, name))
        if obj is None:
            self.refuse_global(module, name)
        return obj

    def persistent_load(self, pid):
        self.refuse(f"{self.what} uses persistent ids (not expected in this kind of file)")

    def load_reduce(self):
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        if self.allow.callables.get(id(func)) is not func:
            self.refuse(f"{self.what} calls {describe(func)}, which is not an allowed function")
        if type(args) is not tuple:
            self.refuse(f"{self.what} calls a function with arguments {describe(args)}")
        stack[-1] = func(*args)
    dispatch[_P.REDUCE[0]] = load_reduce

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self._newobj(cls, args, {})
    dispatch[_P.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self._newobj(cls, args, kwargs)
    dispatch[_P.NEWOBJ_EX[0]] = load_newobj_ex

    def _newobj(self, cls, args, kwargs):
        if not (isinstance(cls, type) and cls in self.allow.new_classes):
            self.refuse(f"{self.what} creates an object of {describe(cls)}, which is not allowed")
        if type(args) is not tuple or args or type(kwargs) is not dict or kwargs:
            self.refuse(f"{self.what} creates a {cls.__name__} with arguments; only empty objects are allowed")
        self.append(cls.__new__(cls))

    def _refused_opcode(self):
        self.refuse(f"{self.what} uses a pickle opcode that is not allowed in a weights file "
                    "(INST/OBJ/EXT/out-of-band buffers)")
    for _op in (_P.INST, _P.OBJ, _P.EXT1, _P.EXT2, _P.EXT4, _P.NEXT_BUFFER, _P.READONLY_BUFFER):
        dispatch[_op[0]] = _refused_opcode
    del _op

    # -- containers: type and keys checked before anything is hashed
    def load_dict(self):
        items = self.pop_mark()
        if len(items) % 2:
            self.refuse(f"{self.what} builds a dict from an odd number of items")
        for i in range(0, len(items), 2):
            check_key(items[i], self.path)
        self.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})
    dispatch[_P.DICT[0]] = load_dict

    def _is_dict(self, obj) -> bool:
        t = type(obj)
        return t is dict or t is collections.OrderedDict or (isinstance(obj, dict) and t in self.allow.new_classes)

    def _target_dict(self, target):
        if not self._is_dict(target):
            self.refuse(f"{self.what} sets items on {describe(target)}, which is not a dict")

    def load_setitem(self):
        stack = self.stack
        value = stack.pop()
        key = stack.pop()
        target = stack[-1]
        self._target_dict(target)
        check_key(key, self.path)
        target[key] = value
    dispatch[_P.SETITEM[0]] = load_setitem

    def load_setitems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        self._target_dict(target)
        if len(items) % 2:
            self.refuse(f"{self.what} sets items from an odd number of values")
        for i in range(0, len(items), 2):
            check_key(items[i], self.path)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
    dispatch[_P.SETITEMS[0]] = load_setitems

    def load_additems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            self.refuse(f"{self.what} adds set items to {describe(target)}")
        for x in items:
            check_key(x, self.path, "a set member")
        target.update(items)
    dispatch[_P.ADDITEMS[0]] = load_additems

    def load_frozenset(self):
        items = self.pop_mark()
        for x in items:
            check_key(x, self.path, "a set member")
        self.append(frozenset(items))
    dispatch[_P.FROZENSET[0]] = load_frozenset

    def load_append(self):
        value = self.stack.pop()
        target = self.stack[-1]
        if type(target) is not list:
            self.refuse(f"{self.what} appends to {describe(target)}, which is not a list")
        target.append(value)
    dispatch[_P.APPEND[0]] = load_append

    def load_appends(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not list:
            self.refuse(f"{self.what} appends to {describe(target)}, which is not a list")
        target.extend(items)
    dispatch[_P.APPENDS[0]] = load_appends

    def load_build(self):
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        cls = type(inst)
        if cls in self.allow.setstate_classes:
            inst.__setstate__(state)
            return
        if cls in self.allow.new_classes or cls is collections.OrderedDict:
            if type(state) is tuple and len(state) == 2 and state[1] is None:
                state = state[0]
            if state is None:
                return
            if not isinstance(state, dict):
                self.refuse(f"{self.what} sets the state of a {cls.__name__} to {describe(state)}")
            for k in state:
                if type(k) is not str:
                    self.refuse(f"{self.what} sets attribute {describe(k)} on a {cls.__name__}")
            inst.__dict__.update(state)
            return
        self.refuse(f"{self.what} sets the state of {describe(inst)}, which is not allowed")
    dispatch[_P.BUILD[0]] = load_build

    # -- large payloads straight into a bytearray (no temporary copy)
    def _payload(self, n: int, as_bytearray: bool = False):
        if n < _LARGE_PAYLOAD:
            data = self.read(n)
            return bytearray(data) if as_bytearray else data
        frame = self._unframer.current_frame
        if frame is not None:
            with frame.getbuffer() as b:
                in_frame = frame.tell() < b.nbytes
            if in_frame:                      # (a hostile file may put large items in a frame)
                data = self.read(n)
                return bytearray(data)
            self._unframer.current_frame = None
        if self._charge_reads:
            self.budget.charge_memory(n, self.what)
        buf = bytearray(n)
        if self._input.readinto(buf) != n:
            raise EOFError("the pickle data is truncated")
        self._charged += n
        return buf

    def load_binbytes(self):
        n, = unpack("<I", self.read(4))
        self.append(self._payload(n))
    dispatch[_P.BINBYTES[0]] = load_binbytes

    def load_binbytes8(self):
        n, = unpack("<Q", self.read(8))
        self.append(self._payload(n))
    dispatch[_P.BINBYTES8[0]] = load_binbytes8

    def load_bytearray8(self):
        n, = unpack("<Q", self.read(8))
        self.append(self._payload(n, as_bytearray=True))
    dispatch[_P.BYTEARRAY8[0]] = load_bytearray8


def run_unpickler(unpickler: BoundedUnpickler, error=PickleRefusedError):
    """``unpickler.load()`` with every failure turned into a clear error naming the file."""
    path = unpickler.path
    try:
        return unpickler.load()
    except UntrustedFileError:
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        text = str(e)[:200]
        if isinstance(e, EOFError) or "truncated" in text or "exhausted" in text:
            raise error(path, f"{unpickler.what} is truncated or corrupt ({type(e).__name__}: {text})") from None
        raise error(path, f"{unpickler.what} is not readable ({type(e).__name__}: {text})") from None
    except RecursionError:
        raise error(path, f"{unpickler.what} is nested too deeply") from None
    except MemoryError:
        raise error(path, f"{unpickler.what} needs more memory than is available") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure on corrupt data
        raise error(path, f"{unpickler.what} is corrupt ({type(e).__name__}: {str(e)[:200]})") from None
