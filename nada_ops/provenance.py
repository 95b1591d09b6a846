"""How a generator was made, as text: the ``history`` list of a generator's provenance
(adaptations, blends) summarised one entry per line, with the details wrapped below it, and
the history entry of a blend, which keeps the histories (prompts, settings) of BOTH sides.
"""
from __future__ import annotations

import textwrap

WIDTH = 100
#: A blend keeps its sides' histories in full one level deep; blends of blends deeper than that
#: keep one summary line per entry (the safetensors metadata has a nesting limit).
FULL_DEPTH = 1


def summary(entry) -> str:
    """One line for one history entry."""
    if not isinstance(entry, dict):
        return str(entry)
    op = entry.get("op", "?")
    if op == "nada_adapt":
        d = entry.get("direction") or {}
        if d.get("kind") == "text":
            what = f"'{d.get('source', '?')}' -> '{d.get('target', '?')}'"
        elif d.get("kind") == "image":
            what = "few-shot image direction" + (f" ({d['num_target_images']} target images)"
                                                 if "num_target_images" in d else "")
        else:
            what = str(d.get("kind", "direction"))
        n = entry.get("iterations_done")
        loss = entry.get("final_loss")
        bits = [f"NADA adaptation {what}"]
        if n is not None:
            bits.append(f"{n} iterations" + (" (interrupted)" if entry.get("interrupted") else "")
                        + (" (snapshot)" if entry.get("snapshot") else ""))
        if isinstance(loss, (int, float)):
            bits.append(f"final loss {loss:.4f}")
        return ", ".join(bits)
    if op == "interpolate":
        def side(s):
            if isinstance(s, dict):
                inner = [summary(h) for h in s.get("history") or []]
                return s.get("name", "?") + (f" [{'; '.join(inner)}]" if inner else "")
            return str(s)
        return f"interpolate (weight blend) t={entry.get('t', '?')}: (1 - t) * A + t * B, " \
               f"A = {side(entry.get('a'))}, B = {side(entry.get('b'))}"
    return f"{op}: " + ", ".join(f"{k}={v}" for k, v in entry.items() if k != "op")


def _value(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def format_history(history, indent: str = "  ", width: int = WIDTH) -> list[str]:
    """Lines for a history list: '1. <summary>' and the entry's fields wrapped beneath it."""
    lines = []
    for i, entry in enumerate(history or [], 1):
        head = f"{indent}{i}. "
        lines += textwrap.wrap(summary(entry), width, initial_indent=head,
                               subsequent_indent=" " * len(head)) or [head]
        if not isinstance(entry, dict):
            continue
        sub = " " * len(head)
        for k, v in entry.items():
            if k == "op":
                continue
            if entry.get("op") == "interpolate" and k in ("a", "b") and isinstance(v, dict):
                lines.append(f"{sub}{k.upper()}: {v.get('name', '?')}"
                             + (f" (from {v['source_file']})" if v.get("source_file") else ""))
                lines += format_history(v.get("history") or [], sub + "   ", width)
                continue
            lines += textwrap.wrap(f"{k}: {_value(v)}", width, initial_indent=sub,
                                   subsequent_indent=sub + "    ", break_on_hyphens=False) or [sub + k]
    return lines


def _compact(history, depth: int) -> list:
    out = []
    for h in history or []:
        if isinstance(h, dict) and h.get("op") == "interpolate":
            if depth >= FULL_DEPTH:
                out.append(summary(h))
                continue
            h = dict(h, a=_side_compact(h.get("a"), depth + 1), b=_side_compact(h.get("b"), depth + 1))
        out.append(h)
    return out


def _side_compact(side, depth):
    if not isinstance(side, dict):
        return side
    return dict(side, history=_compact(side.get("history"), depth))


def blend_entry(a, b, t: float) -> dict:
    """The history entry of the blend (1 - t) * A + t * B of two generator handles: both sides'
    names, source files and histories (so the prompts of either side stay known)."""
    def side(h):
        prov = h.provenance or {}
        return {"name": h.name, "source_file": prov.get("source_file"), "source_format": h.source_format,
                "history": _compact(prov.get("history", []), 0)}
    return {"op": "interpolate", "t": float(t), "a": side(a), "b": side(b)}
