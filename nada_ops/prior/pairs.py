"""Training pairs for the prior: (CLIP image embedding, w), made by the generator itself.

For each pair: z ~ N(0, I), w = mapping(z) (no truncation), image = synthesis(w), embedding =
CLIP image embedding of the image (the pack's one preprocessing path, ``ClipModel.
encode_generator_images``: resize to the CLIP input size, CLIP normalisation; no augmentation).

On disk (:func:`make_pairs`), a folder holds ``manifest.json`` (what the pairs are made of:
generator, CLIP model, seed, shard size) and shards ``pairs_000000.safetensors``, ... of
``shard_size`` pairs each (tensors ``w`` [n, w_dim], ``embed`` [n, D], and ``w_sum`` /
``w_sqsum`` (float64) for the standardisation statistics). Shard k's latents come from its own
random stream (seed, k), drawn for a whole shard, so a shard is the same whenever it is made:
an interrupted run resumes at the first missing shard, and asking for more pairs later
extends the set. Memory holds one shard at a time.
"""
from __future__ import annotations

import json
import math
import os
from typing import Callable, Iterator

import numpy as np
import torch

from ..fileio import atomic_write
from ..io.errors import UntrustedFileError, describe, path_text

FORMAT_NAME = "nada-prior-pairs"
FORMAT_VERSION = "1"
MANIFEST = "manifest.json"
SHARD_TEMPLATE = "pairs_{:06d}.safetensors"
MAX_SHARD_SIZE = 200_000
MAX_PAIRS = 100_000_000
MAX_MANIFEST_BYTES = 1 << 20

ProgressFn = Callable[[int, int], None]


class PairsError(ValueError):
    def __init__(self, path, problem: str):
        self.path = path_text(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def shard_seed(seed: int, shard: int) -> int:
    """The random stream of shard ``shard`` (independent of every other shard)."""
    return int(np.random.SeedSequence([int(seed), int(shard)]).generate_state(2, dtype=np.uint64)[0] >> 1)


def generator_info(handle) -> dict:
    """What identifies a generator in a manifest / a prior's provenance."""
    cfg = handle.cfg
    return {"name": handle.name, "file": handle.provenance.get("source_file", handle.name),
            "resolution": cfg.img_resolution, "z_dim": cfg.z_dim, "w_dim": cfg.w_dim, "num_ws": cfg.num_ws}


def clip_info(model) -> dict:
    return {"name": model.name, "pretrained": model.pretrained, "key": model.key, "embed_dim": model.embed_dim,
            "input_size": model.input_size}


@torch.no_grad()
def render_pairs(G, clip_model, z: torch.Tensor, batch: int = 32, noise_mode: str = "const",
                 noise_generator: torch.Generator | None = None, progress: ProgressFn | None = None):
    """(w [n, w_dim], embed [n, D]) for latents z [n, z_dim], in batches."""
    ws, embs = [], []
    dev = G.w_avg.device
    n = z.shape[0]
    for i in range(0, n, batch):
        zb = z[i:i + batch].to(dev)
        w = G.map(zb, None, 1.0)
        noises = G.make_noises(w.shape[0], noise_generator) if noise_mode == "random" else None
        img = G.synthesis(w, noise_mode=noise_mode, noises=noises)
        e = clip_model.encode_generator_images(img.float())
        ws.append(w[:, 0].float().cpu())
        embs.append(e.float().cpu())
        if progress is not None:
            progress(min(i + batch, n), n)
    return torch.cat(ws), torch.cat(embs)


def pairs_in_memory(G, clip_model, count: int, seed: int = 0, batch: int = 32, noise_mode: str = "const",
                    progress: ProgressFn | None = None) -> "InMemoryPairs":
    """``count`` pairs held in memory (small runs: the Train Prior node, tests)."""
    if G.cfg.c_dim > 0:
        raise ValueError("the prior needs an unconditional generator (this one is class-conditional)")
    gen = torch.Generator().manual_seed(shard_seed(seed, 0))
    z = torch.randn(count, G.cfg.z_dim, generator=gen)
    w, e = render_pairs(G, clip_model, z, batch, noise_mode, progress=progress)
    return InMemoryPairs(w, e, {"seed": seed, "count": count, "noise_mode": noise_mode})


# ============================================================================ on disk
def _read_manifest(folder) -> dict | None:
    from ..io.safetensors_files import loads_json
    p = os.path.join(os.fspath(folder), MANIFEST)
    if not os.path.exists(p):
        return None
    with open(p, "rb") as fh:
        raw = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise PairsError(p, "manifest is too large")
    try:
        m = loads_json(raw, "the manifest", p, max_depth=6)
    except UntrustedFileError as e:
        raise PairsError(p, e.problem) from None
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME or m.get("format_version") != FORMAT_VERSION:
        raise PairsError(p, f"not a pair-set manifest of this pack (format {describe(m.get('format') if isinstance(m, dict) else m)})")
    for k in ("shard_size", "count", "seed", "w_dim", "embed_dim"):
        v = m.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 2 ** 63:
            raise PairsError(p, f"manifest field {k!r} is {describe(v)}")
    if not 1 <= m["shard_size"] <= MAX_SHARD_SIZE or m["count"] > MAX_PAIRS:
        raise PairsError(p, "manifest shard_size / count out of range")
    return m


def _signature(m: dict) -> dict:
    """The fields that must agree for shards to belong to one pair set."""
    g = m.get("generator") or {}
    c = m.get("clip") or {}
    return {"generator": {k: g.get(k) for k in ("name", "resolution", "z_dim", "w_dim", "num_ws")},
            "clip": {k: c.get(k) for k in ("key", "embed_dim")}, "seed": m.get("seed"),
            "shard_size": m.get("shard_size"), "noise_mode": m.get("noise_mode")}


def _check_shard(path, index: int, w_dim: int, embed_dim: int) -> int | None:
    """Pairs in a valid shard file (header only), or None when it is missing/unusable."""
    from ..io.safetensors_files import read_safetensors_header
    from ..io.torch_files import open_untrusted
    if not os.path.exists(path):
        return None
    try:
        with open_untrusted(path) as (fh, budget):
            h = read_safetensors_header(fh, path, budget)
    except UntrustedFileError:
        return None
    e = h.entries
    if set(e) != {"w", "embed", "w_sum", "w_sqsum"} or h.metadata.get("index") != str(index):
        return None
    n = e["w"][1][0] if len(e["w"][1]) == 2 else -1
    if e["w"][1] != (n, w_dim) or e["embed"][1] != (n, embed_dim) or n < 1:
        return None
    return n


def make_pairs(G, clip_model, folder, count: int, shard_size: int = 10_000, batch: int = 32, seed: int = 0,
               noise_mode: str = "const", generator_meta: dict | None = None,
               progress: ProgressFn | None = None, log=None) -> dict:
    """Make (or complete) a set of ``count`` pairs in ``folder``; returns the manifest.

    Shards already complete are kept (resume); a shard of a different set (other generator,
    CLIP model, seed or shard size) is an error naming the field. ``progress(done, count)``
    is called after each batch and may raise to stop (complete shards stay on disk)."""
    if G.cfg.c_dim > 0:
        raise ValueError("the prior needs an unconditional generator (this one is class-conditional)")
    if not 1 <= count <= MAX_PAIRS:
        raise ValueError(f"count must be in 1..{MAX_PAIRS}")
    if not 1 <= shard_size <= MAX_SHARD_SIZE:
        raise ValueError(f"shard_size must be in 1..{MAX_SHARD_SIZE}")
    if noise_mode not in ("const", "random", "none"):
        raise ValueError(f"noise_mode must be const, random or none, got {noise_mode!r}")
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    gmeta = dict(generator_meta or {"name": "generator"})
    gmeta.update(resolution=G.cfg.img_resolution, z_dim=G.cfg.z_dim, w_dim=G.cfg.w_dim, num_ws=G.cfg.num_ws)
    embed_dim = clip_model.embed_dim
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "generator": gmeta,
                "clip": clip_info(clip_model), "seed": int(seed), "shard_size": int(shard_size),
                "noise_mode": noise_mode, "w_dim": G.cfg.w_dim, "embed_dim": int(embed_dim),
                "preprocessing": "nada_ops.clip.preprocess.to_clip_input (antialiased bicubic to the CLIP input "
                                 "size, CLIP mean/std)", "truncation_psi": 1.0}
    old = _read_manifest(folder)
    if old is not None:
        a, b = _signature(old), _signature(manifest)
        diff = [k for k in a if a[k] != b[k]]
        if diff:
            raise PairsError(os.path.join(folder, MANIFEST),
                             f"the pairs here were made with another {', '.join(diff)} ({describe(a[diff[0]], 160)} "
                             f"vs now {describe(b[diff[0]], 160)}): use another folder")
        count = max(count, int(old["count"]))
    manifest["count"] = int(count)
    text = json.dumps(manifest, indent=1, sort_keys=True)

    def write_manifest(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(os.path.join(folder, MANIFEST), write_manifest)
    n_shards = math.ceil(count / shard_size)
    done = 0
    todo = []
    for k in range(n_shards):
        need = min(shard_size, count - k * shard_size)
        have = _check_shard(os.path.join(folder, SHARD_TEMPLATE.format(k)), k, G.cfg.w_dim, embed_dim)
        if have is not None and have >= need:
            done += need
        else:
            todo.append((k, need))
    if log and done:
        log(f"{done} pairs already in {folder}; making {count - done} more")
    from ..io.safetensors_files import write_safetensors
    dev = G.w_avg.device
    for k, need in todo:
        gen = torch.Generator().manual_seed(shard_seed(seed, k))
        z = torch.randn(shard_size, G.cfg.z_dim, generator=gen)[:need]
        ngen = torch.Generator(device=dev).manual_seed(shard_seed(seed, k) ^ 0x5EED) if noise_mode == "random" \
            else None
        base = done
        w, e = render_pairs(G, clip_model, z, batch, noise_mode, ngen,
                            progress=(lambda d, t, base=base: progress(base + d, count)) if progress else None)
        wd = w.double()
        tensors = {"w": w.contiguous(), "embed": e.contiguous(), "w_sum": wd.sum(0), "w_sqsum": wd.square().sum(0)}
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "index": str(k),
                "first": str(k * shard_size), "count": str(need)}
        atomic_write(os.path.join(folder, SHARD_TEMPLATE.format(k)),
                     lambda tmp, tensors=tensors, meta=meta: write_safetensors(tmp, tensors, meta))
        done += need
    return manifest


class PairData:
    """What the trainer needs from a pair set."""
    w_dim: int
    embed_dim: int

    def __len__(self) -> int:
        raise NotImplementedError

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of w per dimension (float32), std unbiased as torch.std."""
        raise NotImplementedError

    def signature(self) -> dict:
        return {}

    def batches(self, batch: int, epoch: int, seed: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's (embed, w) batches in a shuffled order fixed by (seed, epoch), after
        skipping ``skip`` batches; the last incomplete batch is dropped."""
        raise NotImplementedError


def _stats_from_sums(n, s, sq):
    mean = s / n
    var = (sq - n * mean.square()) / max(n - 1, 1)
    return mean.float(), var.clamp(min=0).sqrt().float()


class InMemoryPairs(PairData):
    def __init__(self, w: torch.Tensor, embed: torch.Tensor, info: dict | None = None):
        if w.ndim != 2 or embed.ndim != 2 or w.shape[0] != embed.shape[0] or w.shape[0] < 2:
            raise ValueError(f"pairs need w [n, w_dim] and embed [n, D] with n >= 2, got {tuple(w.shape)} and "
                             f"{tuple(embed.shape)}")
        self.w, self.embed = w.float(), embed.float()
        self.w_dim, self.embed_dim = w.shape[1], embed.shape[1]
        self.info = dict(info or {})

    def __len__(self):
        return self.w.shape[0]

    def stats(self):
        wd = self.w.double()
        return _stats_from_sums(wd.shape[0], wd.sum(0), wd.square().sum(0))

    def signature(self):
        return {"in_memory": True, **{k: v for k, v in self.info.items() if isinstance(v, (int, float, str))}}

    def batches(self, batch, epoch, seed, skip=0):
        g = torch.Generator().manual_seed(shard_seed(seed, 1_000_000 + epoch))
        order = torch.randperm(len(self), generator=g)
        for j, i in enumerate(range(0, len(self) - batch + 1, batch)):
            if j < skip:
                continue
            idx = order[i:i + batch]
            yield self.embed[idx], self.w[idx]


class ShardedPairs(PairData):
    """A pair set on disk, read shard by shard (``mix`` shards shuffled together at a time)."""

    def __init__(self, folder, mix: int = 4):
        self.folder = os.fspath(folder)
        m = _read_manifest(self.folder)
        if m is None:
            raise PairsError(self.folder, f"no {MANIFEST}: not a pair set (make one with "
                                          "'python -m nada_ops prior make-pairs')")
        self.manifest = m
        self.w_dim, self.embed_dim = m["w_dim"], m["embed_dim"]
        self.mix = max(1, int(mix))
        self.shards = []      # (path, n)
        size = m["shard_size"]
        for k in range(math.ceil(m["count"] / size)):
            p = os.path.join(self.folder, SHARD_TEMPLATE.format(k))
            n = _check_shard(p, k, self.w_dim, self.embed_dim)
            if n is None:
                break
            self.shards.append((p, n))
        if not self.shards:
            raise PairsError(self.folder, "no complete shard yet (make-pairs has not finished one)")

    def __len__(self):
        return sum(n for _, n in self.shards)

    def signature(self):
        return {**_signature(self.manifest), "pairs": len(self)}

    def _read(self, path):
        from ..io.safetensors_files import read_safetensors
        try:
            sd, _ = read_safetensors(path)
        except UntrustedFileError as e:
            raise PairsError(path, e.problem) from None
        for k in ("w", "embed"):
            if not sd[k].is_floating_point() or not torch.isfinite(sd[k]).all():
                raise PairsError(path, f"tensor {k!r} is not finite floating-point data")
        return {k: sd[k].float() for k in ("w", "embed")}

    def _read_sums(self, path):
        """Only the two small sum tensors of a shard (validated header, then their byte ranges)."""
        from ..io.safetensors_files import read_safetensors_header
        from ..io.torch_files import open_untrusted
        out = {}
        try:
            with open_untrusted(path) as (fh, budget):
                h = read_safetensors_header(fh, path, budget)
                for k in ("w_sum", "w_sqsum"):
                    dtype, shape, begin, end = h.entries[k]
                    if dtype != torch.float64 or shape != (self.w_dim,):
                        raise PairsError(path, f"tensor {k!r} is {dtype} {list(shape)}, expected float64 [{self.w_dim}]")
                    fh.seek(h.data_start + begin)
                    raw = bytearray(fh.read(end - begin))
                    if len(raw) != end - begin:
                        raise PairsError(path, "file is truncated")
                    out[k] = torch.frombuffer(raw, dtype=torch.float64).clone()
                    if not torch.isfinite(out[k]).all():
                        raise PairsError(path, f"tensor {k!r} holds NaN or Inf values")
        except UntrustedFileError as e:
            raise PairsError(path, e.problem) from None
        return out

    def stats(self):
        n, s, sq = 0, 0.0, 0.0
        for p, k in self.shards:
            d = self._read_sums(p)
            n, s, sq = n + k, s + d["w_sum"], sq + d["w_sqsum"]
        return _stats_from_sums(n, s, sq)

    def batches(self, batch, epoch, seed, skip=0):
        g = torch.Generator().manual_seed(shard_seed(seed, 2_000_000 + epoch))
        order = torch.randperm(len(self.shards), generator=g).tolist()
        carry_e, carry_w = None, None
        j = 0
        for gi in range(0, len(order), self.mix):
            group = [self.shards[i] for i in order[gi:gi + self.mix]]
            parts = [self._read(p) for p, _ in group]
            e = torch.cat(([carry_e] if carry_e is not None else []) + [d["embed"] for d in parts])
            w = torch.cat(([carry_w] if carry_w is not None else []) + [d["w"] for d in parts])
            perm = torch.randperm(w.shape[0], generator=torch.Generator().manual_seed(
                shard_seed(seed, 3_000_000 + epoch * 100_003 + gi)))
            e, w = e[perm], w[perm]
            full = (w.shape[0] // batch) * batch
            for i in range(0, full, batch):
                if j >= skip:
                    yield e[i:i + batch], w[i:i + batch]
                j += 1
            carry_e, carry_w = (e[full:], w[full:]) if full < w.shape[0] else (None, None)
