"""W / W+ latents as a value type passed between nodes, and seed helpers."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class WLatents:
    """A batch of W+ latents ``ws`` [N, num_ws, w_dim] (W codes are repeated to W+).

    ``is_wplus`` is False while every entry of a row is the same w (plain W).
    ``info`` records how they were made (seeds, psi, inversion, ...).
    """
    ws: torch.Tensor
    is_wplus: bool = False
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.ws.ndim != 3:
            raise ValueError(f"latents must have shape [N, num_ws, w_dim], got {tuple(self.ws.shape)}")

    @property
    def batch(self) -> int:
        return self.ws.shape[0]

    def check_compatible(self, cfg, what: str = "latents") -> None:
        if self.ws.shape[1] != cfg.num_ws or self.ws.shape[2] != cfg.w_dim:
            raise ValueError(f"{what} have shape [N, {self.ws.shape[1]}, {self.ws.shape[2]}] but the generator "
                             f"({cfg.img_resolution}px) needs [N, {cfg.num_ws}, {cfg.w_dim}]")


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def parse_seeds(spec: str | int | list, max_count: int | None = None) -> list[int]:
    """'0-3,7,10-11' -> [0,1,2,3,7,10,11] (also an int or a list of ints).

    At most ``max_count`` seeds (default :data:`nada_ops.limits.MAX_SEEDS`), counted while
    parsing: a short text naming billions of seeds is refused before any list is built."""
    from .limits import MAX_SEEDS, UINT32
    limit = MAX_SEEDS if max_count is None else int(max_count)

    def one(s) -> int:
        if isinstance(s, bool) or not isinstance(s, int):
            if isinstance(s, float) and s.is_integer():
                s = int(s)
            else:
                raise ValueError(f"seeds must be whole numbers, got {type(s).__name__} {s!r:.40}")
        if not 0 <= s <= UINT32:
            raise ValueError(f"seed {s} is out of range 0..2^32-1")
        return s

    if isinstance(spec, (list, tuple)):
        if len(spec) > limit:
            raise ValueError(f"{len(spec)} seeds given, at most {limit} allowed")
        seeds = [one(s) for s in spec]
        if not seeds:
            raise ValueError("no seeds given (empty list)")
        return seeds
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return [one(spec)]
    if not isinstance(spec, str):
        raise ValueError(f"seeds must be text like '0-15', a number or a list of numbers, got "
                         f"{type(spec).__name__}")
    seeds: list[int] = []
    for part in spec.split(","):
        if not part.strip():
            continue
        m = _RANGE.match(part)
        if not m:
            raise ValueError(f"cannot parse seeds {spec!r:.80}: expected e.g. '0-15' or '1,5,9'")
        if len(m.group(1)) > 10 or len(m.group(2) or "") > 10:
            raise ValueError(f"seed {part.strip()!r:.40} is out of range 0..2^32-1")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise ValueError(f"seed range {part.strip()!r} is descending")
        if b > UINT32:
            raise ValueError(f"seed {b} is out of range 0..2^32-1")
        if len(seeds) + (b - a + 1) > limit:
            raise ValueError(f"seeds {spec!r:.80} name more than {limit} seeds")
        seeds.extend(range(a, b + 1))
    if not seeds:
        raise ValueError(f"no seeds in {spec!r:.80}")
    return seeds
