"""CLIP losses of StyleGAN-NADA (paper eqs. 1 and 2)."""
from __future__ import annotations

import torch

EPS = 1e-8
# |dI| below this counts as "no change yet": right after initialisation the two generators
# differ only by float32 rounding between the autograd and no-grad paths (|dI| ~ 1e-7..1e-6),
# whose direction is noise. With this floor the first step is pulled straight along dT.
DIRECTION_EPS = 1e-4


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def guarded_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """cos(a, b) along the last dim, 0 (not NaN) where a or b is the zero vector."""
    return (a * b).sum(-1) / (a.norm(dim=-1).clamp_min(eps) * b.norm(dim=-1).clamp_min(eps))


def directional_loss(emb_train: torch.Tensor, emb_frozen: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Eq. 2: dI = norm(E(G_train(w))) - norm(E(G_frozen(w))); L = mean(1 - cos(dI, dT)).

    At step 0 the generators are identical, dI = 0 and the cosine is undefined; the guarded
    cosine (norm floored at DIRECTION_EPS) gives ~0 there (loss ~1) with a finite gradient
    along dT, never NaN."""
    d_img = _unit(emb_train.float()) - _unit(emb_frozen.float())
    d_txt = direction.float().to(d_img.device).reshape(1, -1)
    return (1 - guarded_cosine(d_img, d_txt, eps=DIRECTION_EPS)).mean()


def global_loss(emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 1: L = mean(1 - cos(E_I(G(w)), E_T(target)))."""
    return (1 - guarded_cosine(emb.float(), target.float().to(emb.device).reshape(1, -1))).mean()
