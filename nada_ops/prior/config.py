"""The architecture and diffusion settings of a clip2latent prior, in one validated value.

Sizes follow the reference code (clip2latent's ``config/model/*.yaml`` on DALLE2-pytorch
0.2.38's ``DiffusionPriorNetwork``): the paper's model is ``mid`` (width 512, 12 layers,
12 heads of 64, 1000 cosine timesteps, x0 prediction, condition dropped with p = 0.2):
48,767,872 parameters.

Everything here is also what our own prior file stores (``config`` metadata, JSON), so
:meth:`PriorConfig.from_dict` validates every field of a file before anything is built.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace

#: Sizes of the presets (``mid`` is the paper's, ``small`` the reference's smaller config).
PRESETS = {
    "mid": dict(dim=512, depth=12, heads=12, dim_head=64),
    "small": dict(dim=512, depth=6, heads=8, dim_head=64),
    "tiny": dict(dim=64, depth=2, heads=2, dim_head=32),
}
CONDITION_NORMS = ("raw", "l2")
SCHEDULES = ("cosine",)

# Bounds of a config read from a file (far above any real prior, low enough that a hostile
# file cannot ask for a gigantic network before its tensors are checked).
_BOUNDS = {
    "dim": (1, 8192), "depth": (1, 128), "heads": (1, 256), "dim_head": (2, 1024), "ff_mult": (1, 16),
    "num_timesteps": (2, 100_000), "num_latents": (1, 64), "latent_dim": (1, 8192), "cond_dim": (1, 8192),
    "rotary_dim": (0, 1024), "rel_pos_buckets": (2, 4096), "rel_pos_max_distance": (2, 1 << 20),
}


class PriorConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PriorConfig:
    dim: int = 512                 # transformer width
    depth: int = 12
    heads: int = 12
    dim_head: int = 64
    ff_mult: int = 4
    num_timesteps: int = 1000
    num_latents: int = 1           # w tokens predicted (1 = W; >1 = groups of W+ entries)
    latent_dim: int = 512          # the generator's w_dim
    cond_dim: int = 512            # the CLIP embedding size
    rotary_dim: int = 32           # min(32, dim_head) in the reference
    rel_pos_buckets: int = 32
    rel_pos_max_distance: int = 128
    schedule: str = "cosine"
    cond_drop_prob: float = 0.2    # > 0: classifier-free guidance possible
    latent_scale: float = 1.0      # reference 'image_embed_scale' (w is multiplied by it)
    cond_scale: float = 1.0        # reference 'text_embed_scale' (the condition is multiplied by it)
    cond_norm: str = "raw"         # 'raw': CLIP embedding as it is (reference); 'l2': unit norm x sqrt(cond_dim)
    latent_repeats: tuple = ()     # W+ entries per predicted latent; () = repeat to the generator's num_ws

    @classmethod
    def preset(cls, name: str, latent_dim: int, cond_dim: int, **kw) -> "PriorConfig":
        if name not in PRESETS:
            raise PriorConfigError(f"unknown prior size {name!r}; choose one of {sorted(PRESETS)}")
        p = dict(PRESETS[name])
        p.update(kw)
        p.setdefault("rotary_dim", min(32, p["dim_head"]))
        return cls(latent_dim=latent_dim, cond_dim=cond_dim, **p).validate()

    @property
    def inner_dim(self) -> int:
        return self.heads * self.dim_head

    @property
    def ff_inner(self) -> int:
        return self.ff_mult * self.dim

    @property
    def num_tokens(self) -> int:
        """condition, time, noised latents, learned queries."""
        return 2 + 2 * self.num_latents

    def wplus_repeats(self, num_ws: int) -> tuple:
        """W+ entries per predicted latent for a generator with ``num_ws`` entries."""
        if self.latent_repeats:
            if sum(self.latent_repeats) != num_ws:
                raise PriorConfigError(f"the prior's latent_repeats {list(self.latent_repeats)} give "
                                       f"{sum(self.latent_repeats)} W+ entries; the generator has {num_ws}")
            return tuple(self.latent_repeats)
        if self.num_latents != 1:
            raise PriorConfigError("a prior with several latents needs latent_repeats")
        return (num_ws,)

    def validate(self, where: str = "prior config") -> "PriorConfig":
        def bad(msg):
            raise PriorConfigError(f"{where}: {msg}")

        for name, (lo, hi) in _BOUNDS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                bad(f"'{name}' must be an integer in {lo}..{hi}, got {v!r:.40}")
        for name in ("cond_drop_prob", "latent_scale", "cond_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad(f"'{name}' must be a finite number, got {v!r:.40}")
        if not 0.0 <= self.cond_drop_prob < 1.0:
            bad(f"'cond_drop_prob' must be in [0, 1), got {self.cond_drop_prob}")
        if self.latent_scale <= 0 or self.cond_scale <= 0:
            bad("'latent_scale' and 'cond_scale' must be > 0")
        if self.schedule not in SCHEDULES:
            bad(f"'schedule' {self.schedule!r:.40} is not supported (only {SCHEDULES})")
        if self.cond_norm not in CONDITION_NORMS:
            bad(f"'cond_norm' must be one of {CONDITION_NORMS}, got {self.cond_norm!r:.40}")
        if self.rotary_dim % 2 or self.rotary_dim > self.dim_head:
            bad(f"'rotary_dim' {self.rotary_dim} must be even and at most dim_head {self.dim_head}")
        if self.inner_dim > 65536 or self.ff_inner > 131072:
            bad(f"heads x dim_head = {self.inner_dim} / ff width {self.ff_inner} is too large")
        reps = self.latent_repeats
        if not isinstance(reps, tuple) or len(reps) > 64 or \
                any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 64 for r in reps):
            bad(f"'latent_repeats' must be a list of at most 64 integers in 1..64, got {reps!r:.60}")
        if reps and len(reps) != self.num_latents:
            bad(f"{len(reps)} latent_repeats for {self.num_latents} latents")
        return self

    def parameter_count(self) -> int:
        d, L = self.dim, self.depth
        per_layer = (2 * d + 2 * self.dim_head + d * self.inner_dim + d * 2 * self.dim_head
                     + self.inner_dim * d + d + d * 2 * self.ff_inner + self.ff_inner * d)
        n = self.num_timesteps * d + self.num_latents * d + self.rel_pos_buckets * self.heads + L * per_layer
        n += d + d * d
        if self.cond_dim != d:
            n += self.cond_dim * d + d
        if self.latent_dim != d:
            n += 2 * self.latent_dim * d + d + self.latent_dim
        return n

    def to_dict(self) -> dict:
        out = asdict(self)
        out["latent_repeats"] = list(self.latent_repeats)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d, where: str = "prior config") -> "PriorConfig":
        if not isinstance(d, dict):
            raise PriorConfigError(f"{where}: expected an object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(k for k in d if k not in names)
        if unknown:
            raise PriorConfigError(f"{where}: unknown field(s) {unknown[:5]}")
        kw = dict(d)
        if "latent_repeats" in kw:
            reps = kw["latent_repeats"]
            if not isinstance(reps, (list, tuple)):
                raise PriorConfigError(f"{where}: 'latent_repeats' must be a list")
            kw["latent_repeats"] = tuple(reps)
        return cls(**kw).validate(where)

    def replace(self, **kw) -> "PriorConfig":
        return replace(self, **kw).validate()

