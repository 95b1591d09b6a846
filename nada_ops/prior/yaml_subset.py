"""A small, safe reader for the YAML that configuration files like clip2latent's use: block
mappings and lists by indentation, ``[a, b]`` flow lists, ``{}`` / ``[]``, plain and quoted
scalars (int with ``_`` separators, float, bool, null, strings), comments, and OmegaConf
``${a.b.c}`` interpolations resolved against the document.

It never builds anything but dicts, lists, strings, numbers, booleans and None: tags (``!``),
anchors and aliases (``&``, ``*``), block scalars (``|``, ``>``), several documents and
complex keys are refused with an error naming the file and the line. Size, nesting and
interpolation depth are bounded, so a hostile file cannot make it run long or deep.
"""
from __future__ import annotations

import re

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_INTERPOLATION_DEPTH = 16
#: Values the resolved document may hold (interpolations copy subtrees: no exponential blow-up).
MAX_NODES = 100_000

_INT = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")
_FLOAT = re.compile(r"^[-+]?(\d[\d_]*)?\.?\d*([eE][-+]?\d+)?$")
_KEY = re.compile(r"^([A-Za-z0-9_.\-/ ]+|'[^']*'|\"[^\"]*\"):(\s|$)")
_INTERP = re.compile(r"\$\{([^${}]+)\}")


class YamlError(ValueError):
    def __init__(self, path, problem: str):
        from ..io.errors import path_text
        self.path = path_text(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _strip_comment(text: str) -> str:
    out, quote = [], None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            break
        out.append(ch)
    return "".join(out).rstrip()


def _scalar(tok: str, fail):
    t = tok.strip()
    if not t:
        return None
    if t[0] in "!&*|>%@`":
        fail(f"{t[:20]!r}: YAML tags, anchors, aliases and block scalars are not accepted")
    if t[0] in "'\"":
        if len(t) < 2 or t[-1] != t[0]:
            fail(f"unterminated string {t[:40]!r}")
        body = t[1:-1]
        return body.replace("''", "'") if t[0] == "'" else body.replace('\\"', '"').replace("\\\\", "\\")
    if t.startswith("["):
        if not t.endswith("]"):
            fail(f"unterminated list {t[:40]!r}")
        inner = t[1:-1].strip()
        if not inner:
            return []
        if "[" in _INTERP.sub("", inner) or "{" in _INTERP.sub("", inner):
            fail("nested flow collections are not accepted")
        return [_scalar(p, fail) for p in inner.split(",")]
    if t.startswith("{"):
        if t == "{}":
            return {}
        fail("flow mappings other than {} are not accepted")
    low = t.lower()
    if low in ("null", "~"):
        return None
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if _INT.match(t):
        if len(t) > 40:
            fail(f"number {t[:20]}... is too long")
        return int(t.replace("_", ""))
    if any(c.isdigit() for c in t) and _FLOAT.match(t) and len(t) <= 60:
        try:
            return float(t.replace("_", ""))
        except ValueError:
            pass
    if low in (".inf", "+.inf", "-.inf", ".nan"):
        return float(low.replace(".", "")) if "nan" not in low else float("nan")
    return t


def parse_yaml(text: str, path="<config>") -> dict:
    """The mapping a YAML document of the accepted subset describes (interpolations resolved)."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_BYTES:
            raise YamlError(path, f"file is {len(text)} bytes long; a configuration is at most {MAX_BYTES}")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise YamlError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if len(text) > MAX_BYTES:
        raise YamlError(path, f"file is {len(text)} characters long; a configuration is at most {MAX_BYTES}")
    lines = []
    for no, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlError(path, f"line {no}: tab in indentation")
        s = _strip_comment(raw)
        if not s.strip():
            continue
        if s.strip() in ("---", "...") and not s.startswith(" "):
            if lines:
                raise YamlError(path, f"line {no}: several YAML documents are not accepted")
            continue
        lines.append((no, len(s) - len(s.lstrip(" ")), s.strip()))
    pos = [0]

    def fail_at(no):
        def fail(msg):
            raise YamlError(path, f"line {no}: {msg}")
        return fail

    def block(indent: int, depth: int):
        if depth > MAX_DEPTH:
            raise YamlError(path, f"nested more than {MAX_DEPTH} levels deep")
        no, ind, s = lines[pos[0]]
        if s.startswith("- ") or s == "-":
            return seq(ind, depth)
        return mapping(ind, depth)

    def value_after(no, ind, rest, depth):
        fail = fail_at(no)
        if rest:
            return _scalar(rest, fail)
        if pos[0] < len(lines) and lines[pos[0]][1] > ind:
            return block(lines[pos[0]][1], depth + 1)
        if pos[0] < len(lines) and lines[pos[0]][1] == ind and lines[pos[0]][2].startswith("-"):
            return seq(ind, depth + 1)       # a list at the same indentation as its key
        return None

    def mapping(indent: int, depth: int) -> dict:
        out: dict = {}
        while pos[0] < len(lines):
            no, ind, s = lines[pos[0]]
            if ind < indent:
                break
            fail = fail_at(no)
            if ind > indent:
                fail("unexpected indentation")
            if s.startswith("-"):
                break
            m = _KEY.match(s)
            if not m:
                fail(f"expected 'key: value', got {s[:40]!r}")
            key = m.group(1)
            if key[0] in "'\"":
                key = key[1:-1]
            if key in out:
                fail(f"key {key!r} appears twice")
            pos[0] += 1
            out[key] = value_after(no, ind, s[m.end():].strip(), depth)
        return out

    def seq(indent: int, depth: int) -> list:
        out: list = []
        while pos[0] < len(lines):
            no, ind, s = lines[pos[0]]
            if ind < indent or not (s.startswith("- ") or s == "-"):
                break
            fail = fail_at(no)
            if ind > indent:
                fail("unexpected indentation")
            rest = s[1:].strip()
            pos[0] += 1
            if _KEY.match(rest):
                fail("mappings inside lists are not accepted")
            out.append(value_after(no, ind, rest, depth))
        return out

    if not lines:
        return {}
    doc = block(lines[0][1], 0)
    if pos[0] != len(lines):
        no = lines[pos[0]][0]
        raise YamlError(path, f"line {no}: unexpected text (indentation?)")
    if not isinstance(doc, dict):
        raise YamlError(path, "the document is not a mapping")
    return resolve_interpolations(doc, path)


def resolve_interpolations(doc: dict, path="<config>") -> dict:
    """Replace ``${a.b}`` (OmegaConf absolute interpolation) by the referenced value: the
    value itself when the string is just the reference, else its text inside the string."""

    budget = [MAX_NODES]

    def lookup(ref: str, depth: int):
        node = doc
        for part in ref.strip().split("."):
            if not isinstance(node, dict) or part not in node:
                raise YamlError(path, f"interpolation ${{{ref}}} refers to a missing key")
            node = node[part]
        return resolve(node, depth + 1)

    def resolve(v, depth: int):
        if depth > MAX_INTERPOLATION_DEPTH:
            raise YamlError(path, "interpolations nested too deep (a cycle?)")
        budget[0] -= 1
        if budget[0] < 0:
            raise YamlError(path, f"the configuration expands to more than {MAX_NODES} values")
        if isinstance(v, dict):
            return {k: resolve(x, depth) for k, x in v.items()}
        if isinstance(v, list):
            return [resolve(x, depth) for x in v]
        if isinstance(v, str) and "${" in v:
            m = _INTERP.fullmatch(v)
            if m:
                return lookup(m.group(1), depth)
            return _INTERP.sub(lambda mm: str(lookup(mm.group(1), depth)), v)
        return v

    return resolve(doc, 0)
