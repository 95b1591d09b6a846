"""A loaded prior: network, config, the standardisation statistics of w and where it came from.

``LatentPrior`` is the small value object passed between nodes. It is immutable by
convention: sampling never changes it; training works on copies (:mod:`.trainer`).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F

from .config import PriorConfig
from .diffusion import Schedule, sample
from .network import PriorNetwork


@dataclass(frozen=True)
class LatentPrior:
    net: PriorNetwork
    w_mean: torch.Tensor           # [num_latents, latent_dim]
    w_std: torch.Tensor            # [num_latents, latent_dim], > 0
    name: str = "prior"
    source_format: str = "nada-prior"
    provenance: dict = field(default_factory=dict)

    @property
    def cfg(self) -> PriorConfig:
        return self.net.cfg

    @property
    def device(self) -> torch.device:
        return self.w_mean.device

    @cached_property
    def schedule(self) -> Schedule:
        return Schedule(self.cfg.num_timesteps, self.device)

    @property
    def clip_name(self) -> str | None:
        """open_clip architecture of the CLIP model the prior was trained with (e.g. 'ViT-B-32')."""
        c = self.provenance.get("clip") or {}
        return c.get("name")

    @property
    def guidance_possible(self) -> bool:
        return self.cfg.cond_drop_prob > 0

    # ------------------------------------------------------------------ conditions
    def condition(self, embeds: torch.Tensor) -> torch.Tensor:
        """Raw CLIP embeddings [N, cond_dim] -> what the network is conditioned on."""
        cfg = self.cfg
        if embeds.ndim != 2 or embeds.shape[1] != cfg.cond_dim:
            raise ValueError(f"the prior is conditioned on {cfg.cond_dim}-d CLIP embeddings, got shape "
                             f"{tuple(embeds.shape)} (is it the CLIP model the prior was trained with?)")
        c = embeds.to(self.device, torch.float32)
        if cfg.cond_norm == "l2":
            c = F.normalize(c, dim=-1) * math.sqrt(cfg.cond_dim)
        return c * cfg.cond_scale

    def standardise(self, w: torch.Tensor) -> torch.Tensor:
        return (w.to(self.device) - self.w_mean) / self.w_std * self.cfg.latent_scale

    def destandardise(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.cfg.latent_scale * self.w_std + self.w_mean

    # ------------------------------------------------------------------ sampling
    def sample_w(self, embeds: torch.Tensor, guidance: float = 1.0, steps: int | None = None,
                 respacing: str = "reference", truncation: float = 1.0, generator: torch.Generator | None = None,
                 progress=None) -> torch.Tensor:
        """Latents [N, num_latents, latent_dim] (in the generator's W space) for raw CLIP
        embeddings [N, cond_dim]; truncation moves them towards the data mean of w."""
        if guidance != 1.0 and not self.guidance_possible:
            raise ValueError("this prior was trained without dropping the condition, so classifier-free "
                             "guidance is impossible: use guidance 1")
        if not math.isfinite(guidance) or not math.isfinite(truncation):
            raise ValueError("guidance and truncation must be finite numbers")
        cfg = self.cfg
        cond = self.condition(embeds)
        shape = (cond.shape[0], cfg.num_latents, cfg.latent_dim)
        x = sample(self.net, self.schedule, cond, shape, guidance, steps or cfg.num_timesteps, respacing,
                   generator, progress)
        w = self.destandardise(x)
        if truncation != 1.0:
            w = self.w_mean + truncation * (w - self.w_mean)
        return w

    def to_wplus(self, w: torch.Tensor, num_ws: int) -> torch.Tensor:
        """[N, num_latents, latent_dim] -> W+ [N, num_ws, latent_dim] (each latent repeated over
        its group of W+ entries)."""
        reps = torch.tensor(self.cfg.wplus_repeats(num_ws), device=w.device)
        return w.repeat_interleave(reps, dim=1)

    # ------------------------------------------------------------------ bookkeeping
    def to(self, device) -> "LatentPrior":
        """A copy on ``device`` (the original is not modified)."""
        net = copy.deepcopy(self.net).to(device)
        return LatentPrior(net=net, w_mean=self.w_mean.to(device), w_std=self.w_std.to(device), name=self.name,
                           source_format=self.source_format, provenance=copy.deepcopy(self.provenance))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def describe(self) -> str:
        c = self.cfg
        lines = [f"name: {self.name}", f"format: {self.source_format}",
                 f"network: width {c.dim}, {c.depth} layers, {c.heads} heads x {c.dim_head}, "
                 f"{self.parameter_count():,} parameters",
                 f"diffusion: {c.num_timesteps} {c.schedule} timesteps, x0 prediction, condition dropped with "
                 f"p = {c.cond_drop_prob:g}" + ("" if self.guidance_possible else " (no guidance)"),
                 f"condition: {c.cond_dim}-d CLIP embedding ({c.cond_norm}), latents: {c.num_latents} x "
                 f"{c.latent_dim}" + (f", W+ groups {list(c.latent_repeats)}" if c.latent_repeats else "")]
        clip = self.provenance.get("clip") or {}
        if clip:
            lines.append("clip: " + ", ".join(f"{k}={v}" for k, v in clip.items()))
        gen = self.provenance.get("generator") or {}
        if gen:
            lines.append("generator: " + ", ".join(f"{k}={v}" for k, v in gen.items()))
        tr = self.provenance.get("training") or {}
        if tr:
            lines.append("training: " + ", ".join(f"{k}={v}" for k, v in tr.items() if not isinstance(v, (dict, list))))
        for note in self.provenance.get("notes", []):
            lines.append(f"note: {note}")
        return "\n".join(lines)


def new_prior(cfg: PriorConfig, w_mean: torch.Tensor, w_std: torch.Tensor, seed: int = 0, name: str = "prior",
              provenance: dict | None = None) -> LatentPrior:
    """A freshly initialised prior (deterministic from ``seed``; the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = PriorNetwork(cfg)
    mean = w_mean.reshape(-1, cfg.latent_dim).float()
    std = w_std.reshape(-1, cfg.latent_dim).float()
    if mean.shape[0] == 1 and cfg.num_latents > 1:
        mean, std = mean.expand(cfg.num_latents, -1).clone(), std.expand(cfg.num_latents, -1).clone()
    return LatentPrior(net=net, w_mean=mean, w_std=std, name=name, provenance=dict(provenance or {}))
