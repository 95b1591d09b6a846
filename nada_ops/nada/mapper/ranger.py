"""Ranger: the optimizer StyleCLIP trains its latent mappers with (lr 0.5 there).

Ranger (Wright 2019) = RAdam (Liu et al. 2019) + Lookahead (Zhang et al. 2019) + gradient
centralization (Yong et al. 2020), in the variant StyleCLIP ships ("20.4.11"), written here
from the algorithm:

1. Gradient centralization: for every parameter with more than one dimension the gradient
   loses its mean over all dimensions but the first.
2. Adam moments: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2`` (b1 0.95, b2 0.999).
3. Rectification: ``rho_max = 2 / (1 - b2) - 1``, ``rho_t = rho_max - 2 t b2^t / (1 - b2^t)``.
   While ``rho_t <= 5`` the step is momentum SGD: ``p -= lr m / (1 - b1^t)``; after that
   ``p -= lr r_t m / (sqrt(v) + eps)`` with
   ``r_t = sqrt((1 - b2^t) (rho_t - 4) (rho_t - 2) rho_max / ((rho_max - 4) (rho_max - 2) rho_t)) / (1 - b1^t)``
   (eps 1e-5, added to sqrt(v) before the bias correction of v, as in that variant).
4. Lookahead: every k (6) steps the slow weights move alpha (0.5) of the way to the fast
   weights and the fast weights are reset to them.
"""
from __future__ import annotations

import math

import torch


class Ranger(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, alpha: float = 0.5, k: int = 6, rho_threshold: float = 5.0,
                 betas=(0.95, 0.999), eps: float = 1e-5, weight_decay: float = 0.0, centralize: bool = True):
        if not lr > 0:
            raise ValueError(f"Ranger: learning rate must be > 0, got {lr}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Ranger: lookahead alpha must be in [0, 1], got {alpha}")
        if int(k) < 1:
            raise ValueError(f"Ranger: lookahead k must be >= 1, got {k}")
        if not eps > 0:
            raise ValueError(f"Ranger: eps must be > 0, got {eps}")
        defaults = dict(lr=lr, alpha=alpha, k=int(k), rho_threshold=rho_threshold, betas=tuple(betas), eps=eps,
                        weight_decay=weight_decay, centralize=centralize)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.float()
                if g.is_sparse:
                    raise RuntimeError("Ranger does not support sparse gradients")
                if group["centralize"] and g.dim() > 1:
                    g = g - g.mean(dim=tuple(range(1, g.dim())), keepdim=True)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    state["slow"] = p.detach().clone()
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                m.mul_(b1).add_(g, alpha=1 - b1)
                b2t = b2 ** t
                rho_max = 2 / (1 - b2) - 1
                rho = rho_max - 2 * t * b2t / (1 - b2t)
                w = p.float()
                if group["weight_decay"]:
                    w = w - group["weight_decay"] * lr * w
                if rho > group["rho_threshold"]:
                    r = math.sqrt((1 - b2t) * (rho - 4) / (rho_max - 4) * (rho - 2) / rho * rho_max / (rho_max - 2))
                    w = w - (lr * r / (1 - b1 ** t)) * m / (v.sqrt() + eps)
                else:
                    w = w - (lr / (1 - b1 ** t)) * m
                p.copy_(w)
                if t % group["k"] == 0:
                    slow = state["slow"]
                    slow.add_(p - slow, alpha=group["alpha"])
                    p.copy_(slow)
        return loss
