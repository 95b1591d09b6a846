"""Gaussian diffusion for the prior: cosine schedule, the x0-prediction training loss,
and respaced ancestral sampling with classifier-free guidance.

Schedule (Nichol & Dhariwal's cosine, s = 0.008, betas clipped at 0.999), computed in
float64 and kept in float32 like the reference.

Respacing, two ways (``respacing``):

- ``"reference"``: exactly what clip2latent's ``set_timestep_skip(k)`` does (k = T / steps,
  T divisible by steps): timesteps T-k, T-2k, ..., 0; posterior means from the betas
  re-derived at those timesteps; the noise added at each step, however, uses the
  posterior variance of the FULL schedule at that timestep (the reference overwrites
  the variance and mean coefficients but not the log-variance it samples with). This
  is how the released checkpoints were evaluated in the paper.
- ``"even"``: timesteps spread evenly over [0, T-1] (any count), and the posterior mean
  AND variance of the respaced chain (as in Nichol & Dhariwal's respacing). It starts at
  T-1 (pure noise); the reference's chain starts at T-k, where x is not yet pure noise.

With steps = T both are the plain 1000-step chain.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

RESPACINGS = ("reference", "even")


def cosine_betas(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """float64 betas of the cosine schedule (clipped to [0, 0.999])."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    acp = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    acp = acp / acp[0]
    return torch.clip(1 - acp[1:] / acp[:-1], 0, 0.999)


class Schedule:
    """The diffusion constants (float32 tensors on ``device``) for ``timesteps`` steps."""

    def __init__(self, timesteps: int, device="cpu"):
        betas = cosine_betas(timesteps)
        self.timesteps = int(timesteps)
        alphas = 1.0 - betas
        acp = torch.cumprod(alphas, dim=0)
        acp_prev = F.pad(acp[:-1], (1, 0), value=1.0)
        post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
        f32 = dict(dtype=torch.float32, device=device)
        self.betas = betas.to(**f32)
        self.alphas_cumprod = acp.to(**f32)
        self.sqrt_acp = acp.sqrt().to(**f32)
        self.sqrt_one_minus_acp = (1.0 - acp).sqrt().to(**f32)
        self.posterior_log_variance = post_var.clamp(min=1e-20).log().to(**f32)
        self.coef1 = (betas * acp_prev.sqrt() / (1.0 - acp)).to(**f32)
        self.coef2 = ((1.0 - acp_prev) * alphas.sqrt() / (1.0 - acp)).to(**f32)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x0.ndim - 1)
        return self.sqrt_acp[t].view(shape) * x0 + self.sqrt_one_minus_acp[t].view(shape) * noise

    def sampling_plan(self, steps: int, respacing: str = "reference"):
        """(timesteps to run, coef1, coef2, log-variance), one entry per step, in sampling order
        (all float32 on the schedule's device)."""
        T = self.timesteps
        steps = int(steps)
        if not 1 <= steps <= T:
            raise ValueError(f"steps must be in 1..{T}, got {steps}")
        if respacing not in RESPACINGS:
            raise ValueError(f"respacing must be one of {RESPACINGS}, got {respacing!r}")
        dev = self.betas.device
        if respacing == "reference":
            if T % steps:
                divisors = [k for k in range(1, min(T, 100) + 1) if T % k == 0]
                raise ValueError(f"reference respacing needs a number of steps that divides {T} "
                                 f"(e.g. {', '.join(map(str, divisors[-8:]))}); use respacing 'even' "
                                 f"for {steps} steps")
            skip = T // steps
            ts = torch.arange(0, T, skip)
            log_var = self.posterior_log_variance[ts.to(dev)]
            # the reference's arithmetic: float32 betas from the float32 cumulative products,
            # then the respaced chain's products recomputed from them
            acp32 = self.alphas_cumprod.cpu()[ts]
            betas = 1.0 - acp32 / F.pad(acp32[:-1], (1, 0), value=1.0)
            alphas = 1.0 - betas
            acp = torch.cumprod(alphas, dim=0)
        else:
            ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long()
            acp = self.alphas_cumprod.double().cpu()[ts]
            betas = 1.0 - acp / F.pad(acp[:-1], (1, 0), value=1.0)
            alphas = 1.0 - betas
        acp_prev = F.pad(acp[:-1], (1, 0), value=1.0)
        coef1 = betas * acp_prev.sqrt() / (1.0 - acp)
        coef2 = (1.0 - acp_prev) * alphas.sqrt() / (1.0 - acp)
        if respacing == "even":
            post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
            log_var = post_var.clamp(min=1e-20).log().to(dev, torch.float32)
        f32 = dict(dtype=torch.float32, device=dev)
        order = torch.arange(len(ts) - 1, -1, -1)
        return (ts[order].to(dev), coef1[order].to(**f32), coef2[order].to(**f32), log_var[order.to(dev)])


def training_loss(net, schedule: Schedule, x0: torch.Tensor, cond: torch.Tensor, keep: torch.Tensor,
                  t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """MSE between the predicted and the true x0 (the reference's 'l2' loss, predict_x_start)."""
    pred = net(schedule.q_sample(x0, t, noise), t, cond, keep)
    return F.mse_loss(pred, x0)


def guided_prediction(net, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """x0 prediction with classifier-free guidance: null + (cond - null) * scale. The
    conditional and unconditional passes run as one batch."""
    b = x.shape[0]
    if guidance == 1.0:
        return net(x, t, cond, torch.ones(b, dtype=torch.bool, device=x.device))
    keep = torch.cat((torch.ones(b, dtype=torch.bool, device=x.device),
                      torch.zeros(b, dtype=torch.bool, device=x.device)))
    both = net(torch.cat((x, x)), torch.cat((t, t)), torch.cat((cond, cond)), keep)
    pc, pu = both[:b], both[b:]
    return pu + (pc - pu) * guidance


@torch.no_grad()
def sample(net, schedule: Schedule, cond: torch.Tensor, shape, guidance: float = 1.0, steps: int | None = None,
           respacing: str = "reference", generator: torch.Generator | None = None,
           progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Ancestral sampling of x0 (standardised latents) for conditions ``cond`` [B, D].

    Random numbers are drawn in the reference's order: the initial x, then one normal
    draw of ``shape`` per step (also at t = 0, where it is multiplied by 0), all from
    ``generator`` (the global generator when None)."""
    steps = steps or schedule.timesteps
    ts, c1, c2, log_var = schedule.sampling_plan(steps, respacing)
    dev = cond.device
    x = torch.randn(shape, generator=generator, device=dev)
    b = shape[0]
    for i in range(len(ts)):
        t = ts[i].expand(b)
        x0 = guided_prediction(net, x, t, cond, guidance)
        mean = c1[i] * x0 + c2[i] * x
        noise = torch.randn(shape, generator=generator, device=dev)
        if int(ts[i]) > 0:
            x = mean + (0.5 * log_var[i]).exp() * noise
        else:
            x = mean
        if progress is not None:
            progress(i + 1, len(ts))
    return x
