"""Latent tools: interpolate W/W+ latents (lerp / slerp), pick entries from a batch, and
edit directions (InterFaceGAN boundaries, GANSpace/StyleCLIP-style W or W+ directions).

All functions return new tensors / values; inputs are never modified.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .io.errors import UntrustedFileError, describe
from .latents import WLatents

INTERPOLATION_MODES = ("lerp", "slerp")
#: A direction is [1, w_dim] or [num_ws, w_dim] (num_ws is 18 at 1024 px).
MAX_DIRECTION_ROWS = 64
MAX_W_DIM = 8192
#: Latents loaded from one file (each entry is one image; W codes are expanded to W+).
MAX_LATENTS = 65536


class DirectionFileError(ValueError):
    """A direction file cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# ---------------------------------------------------------------------- interpolation
def lerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    """(1 - t) a + t b, exact at t = 0 and t = 1. ``t`` a float or a tensor broadcastable to a."""
    if not isinstance(t, torch.Tensor):
        t = torch.tensor(float(t), dtype=a.dtype, device=a.device)
    return torch.lerp(a, b, t.to(a.dtype))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, center: torch.Tensor | None = None,
          eps: float = 1e-12) -> torch.Tensor:
    """Spherical interpolation along the last dimension (each w vector separately).

    The angle is taken between ``a - center`` and ``b - center`` (``center`` defaults to the
    origin; pass the generator's ``w_avg`` to interpolate around the average latent). The
    vector norm is interpolated linearly, so paths between vectors of different length are
    smooth, and the result is exact at t = 0 and t = 1. Nearly parallel vectors fall back to
    lerp."""
    t = float(t)
    if t == 0.0:
        return a.clone()
    if t == 1.0:
        return b.to(a.device, a.dtype).clone()
    if center is not None:
        c = center.to(a.device, a.dtype)
        return slerp(a - c, b.to(a.device, a.dtype) - c, t, None, eps) + c
    a64, b64 = a.double(), b.to(a.device).double()
    na = a64.norm(dim=-1, keepdim=True)
    nb = b64.norm(dim=-1, keepdim=True)
    ua = a64 / na.clamp_min(eps)
    ub = b64 / nb.clamp_min(eps)
    omega = torch.acos((ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    so = torch.sin(omega)
    safe = so > 1e-6
    so_s = torch.where(safe, so, torch.ones_like(so))
    wa = torch.where(safe, torch.sin((1 - t) * omega) / so_s, torch.full_like(so, 1 - t))
    wb = torch.where(safe, torch.sin(t * omega) / so_s, torch.full_like(so, t))
    direction = wa * ua + wb * ub
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(eps)
    norm = na + t * (nb - na)
    out = direction * norm
    # a zero-length endpoint has no direction: use lerp there
    degenerate = (na <= eps) | (nb <= eps)
    out = torch.where(degenerate, a64 + t * (b64 - a64), out)
    return out.to(a.dtype)


def interpolate(a: torch.Tensor, b: torch.Tensor, t, mode: str = "lerp",
                center: torch.Tensor | None = None) -> torch.Tensor:
    if mode == "lerp":
        return lerp(a, b, t)
    if mode == "slerp":
        return slerp(a, b, t, center)
    raise ValueError(f"interpolation mode must be one of {INTERPOLATION_MODES}, got {mode!r}")


def _broadcast_pair(a: WLatents, b: WLatents) -> tuple[torch.Tensor, torch.Tensor]:
    if a.ws.shape[1:] != b.ws.shape[1:]:
        raise ValueError(f"latents A have shape [N, {a.ws.shape[1]}, {a.ws.shape[2]}] and latents B "
                         f"[N, {b.ws.shape[1]}, {b.ws.shape[2]}]: they come from different generator architectures")
    wa, wb = a.ws, b.ws.to(a.ws.device, a.ws.dtype)
    if wa.shape[0] != wb.shape[0]:
        if wa.shape[0] == 1:
            wa = wa.expand(wb.shape[0], -1, -1)
        elif wb.shape[0] == 1:
            wb = wb.expand(wa.shape[0], -1, -1)
        else:
            raise ValueError(f"latents A hold {wa.shape[0]} entries and latents B {wb.shape[0]}: give the same "
                             "number, or one on either side")
    return wa, wb


def interpolation_ts(steps: int, include_end: bool = True) -> list[float]:
    """``steps`` values of t from 0 to 1 (1 included unless ``include_end`` is False)."""
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps == 1:
        return [0.0]
    div = steps - 1 if include_end else steps
    return [i / div for i in range(steps)]


def interpolate_latents(a: WLatents, b: WLatents, steps: int, mode: str = "lerp",
                        center: torch.Tensor | None = None, order: str = "pair") -> WLatents:
    """Interpolate each pair (a_i, b_i) in ``steps`` steps (t = 0 .. 1 inclusive).

    ``order='pair'``: rows are [a_0 .. b_0, a_1 .. b_1, ...] (each path contiguous, ready for
    a video of one pair); ``order='step'``: rows are [all pairs at t0, all pairs at t1, ...]."""
    wa, wb = _broadcast_pair(a, b)
    ts = interpolation_ts(steps)
    rows = torch.stack([interpolate(wa, wb, t, mode, center) for t in ts], dim=1)  # [N, S, num_ws, w_dim]
    if order == "step":
        rows = rows.transpose(0, 1)
    elif order != "pair":
        raise ValueError(f"order must be 'pair' or 'step', got {order!r}")
    ws = rows.reshape(-1, wa.shape[1], wa.shape[2]).contiguous()
    info = {"op": "interpolate", "mode": mode, "steps": len(ts), "order": order,
            "a": a.info, "b": b.info}
    return WLatents(ws=ws, is_wplus=a.is_wplus or b.is_wplus, info=info)


def latent_path(keyframes: torch.Tensor, u: float, mode: str = "lerp",
                center: torch.Tensor | None = None) -> torch.Tensor:
    """Position ``u`` in [0, 1] along the piecewise path through ``keyframes`` [K, ...].

    Returns one entry shaped like ``keyframes[0]``; K = 1 gives that keyframe."""
    k = keyframes.shape[0]
    if k == 1:
        return keyframes[0].clone()
    u = min(max(float(u), 0.0), 1.0)
    pos = u * (k - 1)
    i = min(int(math.floor(pos)), k - 2)
    return interpolate(keyframes[i], keyframes[i + 1], pos - i, mode, center)


# ------------------------------------------------------------------------------ pick
def parse_indices(spec, n: int) -> list[int]:
    """'0,2,5-7' / '-1' / 'all' -> indices into a batch of ``n`` (negative counts from the end)."""
    if isinstance(spec, int):
        parts = [str(spec)]
    elif isinstance(spec, (list, tuple)):
        parts = [str(int(s)) for s in spec]
    else:
        s = str(spec).strip()
        if s.lower() in ("", "all", "*"):
            return list(range(n))
        parts = [p.strip() for p in s.split(",") if p.strip()]
    out: list[int] = []
    for p in parts:
        try:
            if "-" in p[1:]:
                lo_s, hi_s = p[0] + p[1:].split("-", 1)[0], p[1:].split("-", 1)[1]
                lo, hi = int(lo_s), int(hi_s)
                lo, hi = (lo + n if lo < 0 else lo), (hi + n if hi < 0 else hi)
                if hi < lo:
                    raise ValueError(f"range {p!r} is descending")
                rng = list(range(lo, hi + 1))
            else:
                v = int(p)
                rng = [v + n if v < 0 else v]
        except ValueError as e:
            raise ValueError(f"cannot parse indices {spec!r} ({e}); expected e.g. '0', '0,2,5-7' or '-1'") from None
        for i in rng:
            if not 0 <= i < n:
                raise ValueError(f"index {i} in {spec!r} is out of range for a batch of {n} latents (0..{n - 1})")
        out.extend(rng)
    if not out:
        raise ValueError(f"no indices in {spec!r}")
    return out


def pick(latents: WLatents, indices) -> WLatents:
    """Entries ``indices`` (see :func:`parse_indices`) of a latent batch, in that order."""
    idx = parse_indices(indices, latents.batch)
    ws = latents.ws[torch.tensor(idx, device=latents.ws.device)].clone()
    info = dict(latents.info)
    info["picked"] = idx
    seeds = latents.info.get("seeds")
    if isinstance(seeds, list) and len(seeds) == latents.batch:
        info["seeds"] = [seeds[i] for i in idx]
    return WLatents(ws=ws, is_wplus=latents.is_wplus, info=info)


# ------------------------------------------------------------------------ directions
@dataclass(frozen=True)
class LatentDirection:
    """An editing direction in W ([1, w_dim]) or W+ ([num_ws, w_dim])."""
    vector: torch.Tensor
    name: str = "direction"
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.vector.ndim != 2:
            raise ValueError(f"a direction is [1, w_dim] or [num_ws, w_dim], got {tuple(self.vector.shape)}")

    @property
    def w_dim(self) -> int:
        return self.vector.shape[1]

    @property
    def per_layer(self) -> bool:
        return self.vector.shape[0] > 1


def direction_from_array(arr, name: str = "direction", path=None, num_ws: int | None = None,
                         w_dim: int | None = None) -> LatentDirection:
    """Validate a [w_dim] / [1, w_dim] / [num_ws, w_dim] (also [1, num_ws, w_dim]) array."""
    where = path if path is not None else name
    t = torch.as_tensor(np.asarray(arr) if not isinstance(arr, torch.Tensor) else arr)
    if not t.is_floating_point():
        raise DirectionFileError(where, f"direction has dtype {t.dtype}, expected floating point values")
    shape = tuple(t.shape)
    if t.ndim == 1:
        t = t[None]
    elif t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2 or not 1 <= t.shape[0] <= MAX_DIRECTION_ROWS or not 1 <= t.shape[1] <= MAX_W_DIM:
        raise DirectionFileError(where, f"direction has shape {list(shape)}; expected [w_dim], [1, w_dim] or "
                                        "[num_ws, w_dim] (e.g. [512], [1, 512], [18, 512])")
    if w_dim is not None and t.shape[1] != w_dim:
        raise DirectionFileError(where, f"direction has shape {list(shape)}, but the latents have w_dim {w_dim}")
    if num_ws is not None and t.shape[0] not in (1, num_ws):
        raise DirectionFileError(where, f"direction has {t.shape[0]} W+ rows (shape {list(shape)}), but the "
                                        f"latents have {num_ws} (use [1, {t.shape[1]}] or [{num_ws}, {t.shape[1]}])")
    t = t.detach().to(torch.float32).cpu().clone()
    if not torch.isfinite(t).all():
        raise DirectionFileError(where, "direction contains NaN or Inf values")
    if float(t.abs().max()) == 0.0:
        raise DirectionFileError(where, "direction is all zeros")
    return LatentDirection(vector=t, name=name, info={"shape": list(shape)})


_DICT_KEYS = ("direction", "boundary", "latent", "w", "ws", "vector")


def load_direction(path) -> LatentDirection:
    """Load an editing direction from .npy (a plain numeric array; object/pickled arrays are
    refused) or .pt/.pth (read like ``torch.load(weights_only=True)`` but with bounded cost:
    a tensor, or a dict holding one tensor or one of the keys direction/boundary/latent/w/ws/vector)."""
    from .io.numpy_files import read_npy
    from .io.torch_files import read_torch_file

    p = os.fspath(path)
    name = os.path.splitext(os.path.basename(p))[0]
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if not os.path.isfile(p):
        raise DirectionFileError(p, "file does not exist")
    ext = os.path.splitext(p)[1].lower()
    ext = os.fsdecode(ext) if isinstance(ext, bytes) else ext
    if ext == ".npy":
        try:
            arr = read_npy(p, what="the direction")
        except UntrustedFileError as e:
            raise DirectionFileError(p, e.problem) from None
        if arr.dtype.kind != "f":
            raise DirectionFileError(p, f"direction has dtype {arr.dtype}, expected floating point values")
        return direction_from_array(arr.astype(np.float32), name, p)
    if ext in (".pt", ".pth"):
        try:
            obj = read_torch_file(p, what="the direction file")
        except UntrustedFileError as e:
            raise DirectionFileError(p, f"cannot read it as a weights-only torch file ({e.problem})") from None
        if isinstance(obj, dict):
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            key = next((k for k in _DICT_KEYS if k in tensors), None)
            if key is None and len(tensors) == 1:
                key = next(iter(tensors))
            if key is None:
                keys = sorted(str(k)[:60] for k in list(obj)[:64])[:8]
                raise DirectionFileError(p, f"a dict with keys {keys}: expected one tensor, "
                                            f"or one of the keys {list(_DICT_KEYS)}")
            obj = tensors[key]
        if not isinstance(obj, torch.Tensor):
            raise DirectionFileError(p, f"contains {describe(obj)}, expected a tensor")
        return direction_from_array(obj, name, p)
    raise DirectionFileError(p, f"unsupported extension {ext!r}: use .npy, .pt or .pth")


def parse_layers(spec, num_ws: int) -> list[int]:
    """W+ indices to edit: '' / 'all' -> all, else e.g. '0-5' or '4,5,6' (negative from the end)."""
    return sorted(set(parse_indices(spec, num_ws)))


def apply_direction(latents: WLatents, direction: LatentDirection, strength: float, layers=None,
                    normalize: bool = False) -> WLatents:
    """ws + strength * d on the chosen W+ indices (all by default).

    ``normalize`` scales the direction to unit length per row first (InterFaceGAN boundaries
    already are unit normals, so ``strength`` is then a distance in W)."""
    ws = latents.ws
    num_ws, w_dim = ws.shape[1], ws.shape[2]
    d = direction_from_array(direction.vector, direction.name, num_ws=num_ws, w_dim=w_dim).vector
    d = d.to(ws.device, ws.dtype)
    if normalize:
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if d.shape[0] == 1:
        d = d.expand(num_ws, -1)
    idx = list(range(num_ws)) if layers is None else parse_layers(layers, num_ws)
    mask = torch.zeros(num_ws, 1, dtype=ws.dtype, device=ws.device)
    mask[idx] = 1
    out = ws + float(strength) * (d * mask)[None]
    partial = len(idx) != num_ws
    info = dict(latents.info)
    info.setdefault("edits", [])
    info["edits"] = list(info["edits"]) + [{"direction": direction.name, "strength": float(strength),
                                            "layers": idx if partial else "all", "normalize": bool(normalize)}]
    return WLatents(ws=out, is_wplus=latents.is_wplus or partial or direction.per_layer, info=info)


def direction_offsets(direction: LatentDirection, num_ws: int, layers=None, normalize: bool = False,
                      device=None) -> torch.Tensor:
    """The per-W+-index offset [num_ws, w_dim] that ``strength`` 1 adds (for animations)."""
    d = direction_from_array(direction.vector, direction.name, num_ws=num_ws).vector.to(device or "cpu")
    if normalize:
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if d.shape[0] == 1:
        d = d.expand(num_ws, -1)
    idx = list(range(num_ws)) if layers is None else parse_layers(layers, num_ws)
    mask = torch.zeros(num_ws, 1, device=d.device)
    mask[idx] = 1
    return (d * mask).contiguous()


# ------------------------------------------------------------------- latent files
def save_latents(latents: WLatents, path) -> None:
    """Save latents as a weights-only-loadable .pt dict {'ws', 'is_wplus', 'info' (JSON string)}."""
    import json

    from .fileio import atomic_write
    obj = {"ws": latents.ws.detach().cpu().float().clone(), "is_wplus": bool(latents.is_wplus),
           "info": json.dumps(latents.info, default=str, sort_keys=True)}
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_latents(path, num_ws: int | None = None, w_dim: int | None = None) -> WLatents:
    """Load latents written by :func:`save_latents` (or a bare tensor [N, num_ws, w_dim] /
    [N, w_dim] in a .pt or .npy file). W codes [N, w_dim] are repeated to W+ when ``num_ws`` is given.

    Files are untrusted: read with the pack's bounded readers (no pickle code, every tensor
    backed by bytes in the file), at most :data:`MAX_LATENTS` entries, float values only."""
    from .io.budget import max_load_bytes
    from .io.numpy_files import read_npy
    from .io.safetensors_files import loads_json
    from .io.tensors import float32_copy
    from .io.torch_files import read_torch_file

    p = os.fspath(path)
    ext = os.path.splitext(p)[1].lower()
    ext = os.fsdecode(ext) if isinstance(ext, bytes) else ext
    base = os.path.basename(p)
    info: dict = {"file": os.fsdecode(base) if isinstance(base, bytes) else base}
    is_wplus = None
    try:
        if ext == ".npy":
            t = torch.from_numpy(read_npy(p, what="the latents"))
        else:
            obj = read_torch_file(p, what="the latents file")
            if isinstance(obj, dict):
                if not isinstance(obj.get("ws"), torch.Tensor):
                    keys = sorted(str(k)[:60] for k in list(obj)[:64])[:8]
                    raise ValueError(f"{p}: expected a dict with a tensor 'ws', got keys {keys}")
                t = obj["ws"]
                is_wplus = obj.get("is_wplus")
                if is_wplus is not None and type(is_wplus) is not bool:
                    raise ValueError(f"{p}: 'is_wplus' is {describe(is_wplus)}, expected true/false")
                text = obj.get("info", "{}")
                if type(text) is str:
                    try:
                        extra = loads_json(text, "'info'", p, max_depth=16, max_chars=1 << 20)
                    except UntrustedFileError:
                        extra = None
                    if isinstance(extra, dict):
                        info.update(extra)
            elif isinstance(obj, torch.Tensor):
                t = obj
            else:
                raise ValueError(f"{p}: expected a tensor or a dict with 'ws', got {describe(obj)}")
    except UntrustedFileError as e:
        raise ValueError(f"{p}: cannot read latents ({e.problem})") from None
    if not t.is_floating_point():
        raise ValueError(f"{p}: latents have dtype {t.dtype}, expected floating point values")
    if t.ndim not in (2, 3):
        raise ValueError(f"{p}: latents have shape {list(t.shape)}, expected [N, num_ws, w_dim] or [N, w_dim]")
    if t.shape[0] > MAX_LATENTS:
        raise ValueError(f"{p}: the file holds {t.shape[0]} latents; at most {MAX_LATENTS} are loaded at once")
    if t.ndim == 2:
        if num_ws is None:
            raise ValueError(f"{p}: W codes of shape {list(t.shape)} need the generator's num_ws to expand to W+")
        if w_dim is not None and t.shape[1] != w_dim:
            raise ValueError(f"{p}: latents have shape {list(t.shape)} but the generator needs [N, {w_dim}] or "
                             f"[N, {num_ws}, {w_dim}]")
        if t.shape[0] * num_ws * t.shape[1] * 4 > max_load_bytes():
            raise ValueError(f"{p}: {t.shape[0]} W codes expanded to W+ would need more memory than "
                             "NADA_MAX_LOAD_BYTES allows")
        t = t.float()[:, None].repeat(1, num_ws, 1)
        is_wplus = False
    else:
        t = float32_copy(t)          # own memory: nothing keeps the file's buffers alive
    if (num_ws is not None and t.shape[1] != num_ws) or (w_dim is not None and t.shape[2] != w_dim):
        raise ValueError(f"{p}: latents have shape {list(t.shape)} but the generator needs "
                         f"[N, {num_ws}, {w_dim}]")
    if not torch.isfinite(t).all():
        raise ValueError(f"{p}: latents contain NaN or Inf values")
    if is_wplus is None:
        is_wplus = bool((t - t[:, :1]).abs().max() > 0) if t.shape[0] else False
    return WLatents(ws=t, is_wplus=bool(is_wplus), info=info)
