"""Cross-model interpolation in weight space (NADA supplement F).

theta(t) = (1 - t) theta_A + t theta_B for two generators of the same architecture. Because a
NADA-adapted generator keeps the source's latent space, rendering a fixed w while t goes
0 -> 1 morphs the image from one domain into the other.

Two ways to use it:
- :func:`blend_generators` builds ONE new generator for one t (the InterpolateModels node).
- :class:`GeneratorPath` holds references to K >= 2 generators and ONE preallocated target
  generator, and writes the blend for a position along the sequence into the target in place
  (``torch.lerp(..., out=)``), so rendering a video costs one lerp over the weights per
  frame and no new modules or allocations.

Neither ever modifies the input generators.  At t = 0 and t = 1 the result equals the
endpoints exactly (``torch.lerp`` is exact there).
"""
from __future__ import annotations

import dataclasses

import torch

from .stylegan.config import ArchitectureError
from .stylegan.networks import Generator, build_generator


def architecture_mismatch(A: Generator, B: Generator, name_a: str = "A", name_b: str = "B") -> str | None:
    """None when A and B can be interpolated, else a sentence naming what differs."""
    ca, cb = A.cfg, B.cfg
    if type(ca) is not type(cb):
        return (f"generators {name_a} and {name_b} are different kinds of networks ({name_a} is {ca.family}, "
                f"{name_b} is {cb.family}); only generators of the same architecture can be interpolated")
    diffs = []
    for f in dataclasses.fields(ca):
        va, vb = getattr(ca, f.name), getattr(cb, f.name)
        if va != vb:
            diffs.append(f"{f.name}: {name_a} has {va!r}, {name_b} has {vb!r}")
    if diffs:
        hint = ""
        if ca.img_resolution != cb.img_resolution:
            hint = f" ({name_a} is {ca.img_resolution}px, {name_b} is {cb.img_resolution}px)"
        return (f"generators {name_a} and {name_b} have different architectures{hint}: " + "; ".join(diffs))
    sa, sb = _tensors(A), _tensors(B)
    if set(sa) != set(sb):
        only_a = sorted(set(sa) - set(sb))[:3]
        only_b = sorted(set(sb) - set(sa))[:3]
        return (f"generators {name_a} and {name_b} have different tensors: only in {name_a}: {only_a}, "
                f"only in {name_b}: {only_b}")
    for k in sa:
        if sa[k].shape != sb[k].shape:
            return (f"tensor {k!r} has shape {list(sa[k].shape)} in {name_a} and {list(sb[k].shape)} in {name_b}")
    return None


def check_same_architecture(A: Generator, B: Generator, name_a: str = "A", name_b: str = "B") -> None:
    msg = architecture_mismatch(A, B, name_a, name_b)
    if msg:
        raise ArchitectureError(msg)


def _tensors(G: Generator) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (persistent or not) by name."""
    out = dict(G.named_parameters())
    out.update(dict(G.named_buffers()))
    return out


def _empty_like_generator(cfg, device) -> Generator:
    """A generator (StyleGAN2 or 3) with uninitialised storage on ``device`` (no random init, no copy)."""
    with torch.device("meta"):
        G = build_generator(cfg)
    G = G.to_empty(device=device)
    G.requires_grad_(False)
    return G.eval()


def _check_t(t) -> float:
    t = float(t)
    if not (t == t) or not -1e-9 <= t <= 1 + 1e-9:
        raise ValueError(f"interpolation t must be in [0, 1], got {t}")
    return min(max(t, 0.0), 1.0)


class GeneratorPath:
    """Blend along a sequence of K >= 2 generators into one preallocated target, in place.

    ``set(s)`` with s in [0, K-1]: segment floor(s), local t = s - floor(s).  ``set_u(u)`` with
    u in [0, 1] maps to s = u (K - 1).  Inputs are only read; tensors of generators on another
    device are copied to the target's device once (that copy is the only extra memory besides
    the target)."""

    def __init__(self, generators, names=None, device=None, target: Generator | None = None):
        gens = list(generators)
        if len(gens) < 2:
            raise ValueError(f"a model path needs at least 2 generators, got {len(gens)}")
        if names is None:
            names = [chr(ord("A") + i) if i < 26 else f"G{i}" for i in range(len(gens))]
        names = list(names)
        for i in range(1, len(gens)):
            check_same_architecture(gens[0], gens[i], names[0], names[i])
        self.cfg = gens[0].cfg
        self.device = torch.device(device) if device is not None else gens[0].w_avg.device
        self.names = names
        self.target = target if target is not None else _empty_like_generator(self.cfg, self.device)
        if target is not None:
            check_same_architecture(gens[0], target, names[0], "target")
        self._dst = _tensors(self.target)
        self._src = []
        for G in gens:
            ts = {}
            for k, v in _tensors(G).items():
                ts[k] = v if v.device == self.device else v.detach().to(self.device)
            self._src.append(ts)
        self._float_keys = [k for k, v in self._dst.items() if v.is_floating_point()]
        self._other_keys = [k for k in self._dst if k not in set(self._float_keys)]
        self.position: float | None = None

    def w_avg(self, i: int = 0) -> torch.Tensor:
        """The average latent of generator ``i`` (on the target's device)."""
        return self._src[i]["mapping.w_avg"]

    @property
    def num_generators(self) -> int:
        return len(self._src)

    @torch.no_grad()
    def set(self, s: float) -> Generator:
        """Write the blend at position ``s`` in [0, K-1] into the target and return it."""
        k = self.num_generators
        s = float(s)
        if not -1e-9 <= s <= k - 1 + 1e-9:
            raise ValueError(f"path position must be in [0, {k - 1}], got {s}")
        s = min(max(s, 0.0), float(k - 1))
        if self.position is not None and s == self.position:
            return self.target
        i = min(int(s), k - 2)
        t = s - i
        a, b = self._src[i], self._src[i + 1]
        for name in self._float_keys:
            dst = self._dst[name]
            if t == 0.0:
                dst.copy_(a[name])
            elif t == 1.0:
                dst.copy_(b[name])
            else:
                torch.lerp(a[name].to(dst.dtype), b[name].to(dst.dtype), t, out=dst)
        for name in self._other_keys:
            self._dst[name].copy_(a[name])
        self.position = s
        return self.target

    def set_u(self, u: float) -> Generator:
        """Position u in [0, 1] over the whole sequence."""
        u = _check_t(u)
        return self.set(u * (self.num_generators - 1))


def blend_generators(A: Generator, B: Generator, t: float, device=None, names=("A", "B")) -> Generator:
    """A NEW generator with weights (1 - t) A + t B (t in [0, 1]); A and B are not modified."""
    t = _check_t(t)
    path = GeneratorPath([A, B], names=list(names), device=device)
    return path.set(t)
