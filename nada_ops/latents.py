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


def parse_seeds(spec: str | int | list) -> list[int]:
    """'0-3,7,10-11' -> [0,1,2,3,7,10,11]."""
    if isinstance(spec, int):
        return [spec]
    if isinstance(spec, (list, tuple)):
        return [int(s) for s in spec]
    seeds: list[int] = []
    for part in str(spec).split(","):
        if not part.strip():
            continue
        m = _RANGE.match(part)
        if not m:
            raise ValueError(f"cannot parse seeds {spec!r}: expected e.g. '0-15' or '1,5,9'")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise ValueError(f"seed range {part.strip()!r} is descending")
        if b - a > 100000:
            raise ValueError(f"seed range {part.strip()!r} is too long")
        seeds.extend(range(a, b + 1))
    if not seeds:
        raise ValueError(f"no seeds in {spec!r}")
    for s in seeds:
        if s >= 2 ** 32:
            raise ValueError(f"seed {s} is out of range 0..2^32-1")
    return seeds
