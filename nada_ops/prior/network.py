"""The clip2latent prior network: a causal transformer over
``[condition, timestep, noised w (x num_latents), learned query (x num_latents)]`` whose
outputs at the query positions are the denoised w (x0 prediction).

The same computation as DALLE2-pytorch 0.2.38's ``DiffusionPriorNetwork`` /
``CausalTransformer`` (and clip2latent's ``WPlusPriorNetwork`` for several latents), which
the clip2latent checkpoints were trained with; written here from its description:

- pre-norm blocks ``x += attn(x); x += ff(x)``; LayerNorms have a gain only (eps 1e-5);
- attention: ``heads`` query heads and ONE shared key/value head (dim_head), a learned
  "null" key/value pair prepended to the keys (always visible), rotary position embedding
  (interleaved pairs, theta 10000) on the first ``rotary_dim`` features of queries and keys,
  a T5-style relative position bias (``rel_pos_buckets`` buckets, ``max_distance`` 128) whose
  key positions count the null key as position 0, causal masking, and a LayerNorm after the
  output projection;
- the condition token is hidden from every query (only the null key remains) when it is
  dropped: classifier-free guidance;
- feed-forward: LayerNorm -> Linear(dim, 2 x ff_mult x dim) -> SwiGLU -> Linear(..., dim);
- final LayerNorm and a bias-free output projection.

Where the condition or the latent size differs from the width (e.g. ViT-L/14 with a 512-d
StyleGAN) a linear map in/out is added; the reference requires them to be equal and then
none exists.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import PriorConfig

LN_EPS = 1e-5
ROTARY_THETA = 10000.0


def layer_norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], gain, None, LN_EPS)


def rotary_frequencies(rotary_dim: int) -> torch.Tensor:
    """1 / theta^(2i / d) for i < d / 2 (float32, as the reference computes them)."""
    return 1.0 / (ROTARY_THETA ** (torch.arange(0, rotary_dim, 2)[: rotary_dim // 2].float() / rotary_dim))


def rotary_cos_sin(n: int, rotary_dim: int, device, dtype):
    """cos / sin tables [n, rotary_dim]: each frequency used for an adjacent feature pair (the
    float32 frequencies of the reference; angles in float32 or float64, whichever is wider)."""
    work = torch.float64 if dtype == torch.float64 else torch.float32
    freqs = rotary_frequencies(rotary_dim).to(device, work)
    ang = torch.arange(n, device=device, dtype=work)[:, None] * freqs[None, :]
    ang = ang.repeat_interleave(2, dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) on the first
    ``cos.shape[-1]`` features of the last dim; sequence is dim -2."""
    r = cos.shape[-1]
    if r == 0:
        return x
    head, tail = x[..., :r], x[..., r:]
    pairs = head.unflatten(-1, (r // 2, 2))
    rot = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat((head * cos + rot * sin, tail), dim=-1)


def relative_position_buckets(n_query: int, n_key: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5 causal buckets [n_query, n_key]: distance d = max(query - key, 0) in bucket d below
    num_buckets / 2, log-spaced above (capped at num_buckets - 1)."""
    q = torch.arange(n_query)[:, None]
    k = torch.arange(n_key)[None, :]
    d = (q - k).clamp(min=0)
    max_exact = num_buckets // 2
    small = d < max_exact
    large = max_exact + (torch.log(d.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return torch.where(small, d, large)


class Attention(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        d, dh = cfg.dim, cfg.dim_head
        self.heads, self.dim_head = cfg.heads, dh
        self.norm = nn.Parameter(torch.ones(d))
        self.null_kv = nn.Parameter(torch.randn(2, dh))
        self.to_q = nn.Parameter(torch.empty(cfg.inner_dim, d))
        self.to_kv = nn.Parameter(torch.empty(2 * dh, d))
        self.to_out = nn.Parameter(torch.empty(d, cfg.inner_dim))
        self.out_norm = nn.Parameter(torch.ones(d))
        for w in (self.to_q, self.to_kv, self.to_out):
            _linear_init(w)

    def forward(self, x, bias, cos, sin):
        """x [B, n, d]; bias [B or 1, heads, n, n + 1] (relative bias + masks, additive)."""
        b, n, _ = x.shape
        h = layer_norm(x, self.norm)
        q = F.linear(h, self.to_q).view(b, n, self.heads, self.dim_head).transpose(1, 2)
        k, v = F.linear(h, self.to_kv).chunk(2, dim=-1)
        q = apply_rotary(q * self.dim_head ** -0.5, cos, sin)
        k = apply_rotary(k, cos, sin)
        nk, nv = self.null_kv[0].expand(b, 1, -1), self.null_kv[1].expand(b, 1, -1)
        k = torch.cat((nk.to(k.dtype), k), dim=1)
        v = torch.cat((nv.to(v.dtype), v), dim=1)
        sim = torch.einsum("bhid,bjd->bhij", q, k) + bias
        attn = sim.softmax(dim=-1)
        out = torch.einsum("bhij,bjd->bhid", attn, v)
        out = out.transpose(1, 2).reshape(b, n, -1)
        return layer_norm(F.linear(out, self.to_out), self.out_norm)


class FeedForward(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.norm = nn.Parameter(torch.ones(cfg.dim))
        self.proj_in = nn.Parameter(torch.empty(2 * cfg.ff_inner, cfg.dim))
        self.proj_out = nn.Parameter(torch.empty(cfg.dim, cfg.ff_inner))
        _linear_init(self.proj_in)
        _linear_init(self.proj_out)

    def forward(self, x):
        a, gate = F.linear(layer_norm(x, self.norm), self.proj_in).chunk(2, dim=-1)
        return F.linear(a * F.silu(gate), self.proj_out)


class Block(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.ff = FeedForward(cfg)


class PriorNetwork(nn.Module):
    """``forward(x, t, cond, keep)``: noised (standardised) latents ``x`` [B, num_latents,
    latent_dim], timesteps ``t`` [B] (long), conditions ``cond`` [B, cond_dim] (already
    scaled), ``keep`` [B] bool (False = condition dropped) -> predicted x0, shaped like x."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.dim
        self.time_embed = nn.Parameter(torch.randn(cfg.num_timesteps, d))
        self.query = nn.Parameter(torch.randn(cfg.num_latents, d))
        self.rel_pos_bias = nn.Parameter(torch.randn(cfg.rel_pos_buckets, cfg.heads))
        if cfg.cond_dim != d:
            self.cond_in = nn.Linear(cfg.cond_dim, d)
        if cfg.latent_dim != d:
            self.latent_in = nn.Linear(cfg.latent_dim, d)
            self.latent_out = nn.Linear(d, cfg.latent_dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.Parameter(torch.ones(d))
        self.project_out = nn.Parameter(torch.empty(d, d))
        _linear_init(self.project_out)
        n = cfg.num_tokens
        self.register_buffer("buckets", relative_position_buckets(n, n + 1, cfg.rel_pos_buckets,
                                                                  cfg.rel_pos_max_distance), persistent=False)
        # causal: query i sees the null key (0) and tokens 0..i (keys 1..i+1)
        causal = torch.ones(n, n + 1, dtype=torch.bool).triu(2)
        self.register_buffer("causal", causal, persistent=False)

    def attention_bias(self, keep: torch.Tensor, dtype) -> torch.Tensor:
        """[B, heads, n, n+1]: relative position bias, -max where a key is masked (causal, or
        the condition token (key 1) of a dropped condition)."""
        n = self.cfg.num_tokens
        bias = self.rel_pos_bias[self.buckets].permute(2, 0, 1).to(dtype)       # [h, n, n+1]
        b = keep.shape[0]
        masked = self.causal[None].expand(b, n, n + 1).clone()
        masked[:, :, 1] |= ~keep[:, None]
        neg = torch.finfo(dtype).max
        return bias[None].masked_fill(masked[:, None], -neg)

    def forward(self, x, t, cond, keep=None):
        cfg = self.cfg
        squeeze = x.ndim == 2
        if squeeze:
            x = x[:, None]
        b = x.shape[0]
        if keep is None:
            keep = torch.ones(b, dtype=torch.bool, device=x.device)
        c = cond.to(x.dtype)
        if cfg.cond_dim != cfg.dim:
            c = self.cond_in(c)
        h = self.latent_in(x) if cfg.latent_dim != cfg.dim else x
        tokens = torch.cat((c[:, None], self.time_embed[t][:, None].to(x.dtype), h,
                            self.query[None].expand(b, -1, -1).to(x.dtype)), dim=1)
        bias = self.attention_bias(keep, tokens.dtype)
        cos, sin = rotary_cos_sin(tokens.shape[1], cfg.rotary_dim, tokens.device, tokens.dtype)
        for blk in self.layers:
            tokens = tokens + blk.attn(tokens, bias, cos, sin)
            tokens = tokens + blk.ff(tokens)
        out = F.linear(layer_norm(tokens, self.norm_out), self.project_out)[:, -cfg.num_latents:]
        if cfg.latent_dim != cfg.dim:
            out = self.latent_out(out)
        return out[:, 0] if squeeze else out


def _linear_init(w: torch.Tensor) -> None:
    # nn.Linear's default initialisation (kaiming uniform, a = sqrt(5))
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
