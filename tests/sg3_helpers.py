"""Tiny StyleGAN3 generators for the tests (CPU, well under a second per forward pass)."""
from __future__ import annotations

import torch

from nada_ops.stylegan.config import StyleGAN3Config
from nada_ops.stylegan.networks_sg3 import StyleGAN3Generator


def tiny_sg3_config(kind: str = "t", **kw) -> StyleGAN3Config:
    """32 px, 16-d latents, 8 channels: NVIDIA's full layer design (14 layers + ToRGB, margins,
    filters), only narrow.  kind 't' or 'r' (1x1 convs, radial filters)."""
    base = dict(img_resolution=32, z_dim=16, w_dim=16, channel_base=256, channel_max=8)
    if kind == "r":
        base.update(conv_kernel=1, use_radial_filters=True)
    base.update(kw)
    return StyleGAN3Config(**base)


def randomize_sg3(G: StyleGAN3Generator, seed: int = 0) -> StyleGAN3Generator:
    """Non-trivial biases, magnitude EMAs, input affine (learned transform) and w_avg."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if name.endswith(".bias") or name.endswith("w_avg") or name.startswith("synthesis.input.affine"):
                t.add_(torch.randn(t.shape, generator=g) * 0.3)
            elif name.endswith("magnitude_ema"):
                t.fill_(float(torch.empty([]).uniform_(0.5, 2.0, generator=g)))
    return G


def tiny_sg3(kind: str = "t", seed: int = 0, **kw) -> StyleGAN3Generator:
    torch.manual_seed(seed)
    return randomize_sg3(StyleGAN3Generator(tiny_sg3_config(kind, **kw)).eval(), seed)
