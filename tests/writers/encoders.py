"""pSp / e4e / ReStyle checkpoints in the authors' format, from small random encoders.

The file is what their training code saves: ``torch.save({'state_dict': {'encoder.*',
'decoder.*'}, 'opts': vars(opts), 'latent_avg': [n_styles, 512]})`` with their tensor names
(``input_layer.*``, ``body.N.res_layer.*`` / ``conv1``, ``bn1``, ``body.N.conv1`` ...,
``styles.N.convs.2k``, ``latlayer1/2``), BatchNorm's ``num_batches_tracked`` included, the
decoder as a rosinality generator state dict."""
from __future__ import annotations

import torch

from nada_ops.invert.encoders import ENCODER_TYPES, file_key
from nada_ops.invert.networks import COARSE, MIDDLE, EncoderConfig, StyleEncoder
from nada_ops.stylegan.formats.rosinality_pt import to_rosinality_state_dict

TYPES_BY_REPO = {
    "pSp": "GradualStyleEncoder", "e4e": "Encoder4Editing", "restyle_e4e": "ProgressiveBackboneEncoder",
    "restyle_psp": "BackboneEncoder", "restyle_e4e_resnet": "ResNetProgressiveBackboneEncoder",
    "restyle_psp_resnet_fpn": "ResNetGradualStyleEncoder", "e4e_w": "SingleStyleCodeEncoder",
}


def tiny_encoder_config(encoder_type: str, num_ws: int = 8, w_dim: int = 32, restyle: bool = False) -> EncoderConfig:
    family, source, progressive, repo = ENCODER_TYPES[encoder_type]
    restyle = restyle or repo == "ReStyle"
    backbone = "resnet34" if family == "resnet34" else "ir_se"
    widths = (8, 16, 24, w_dim)
    heads = ()
    if source != "pooled":
        heads = tuple(4 if source != "fpn" or i < COARSE else 5 if i < MIDDLE else 6 for i in range(num_ws))
    return EncoderConfig(backbone=backbone, style_source=source, progressive=progressive,
                         in_channels=6 if restyle else 3, stem_width=8, stage_units=(1, 2, 1, 1),
                         stage_widths=widths, se_hidden=(2, 4, 4, 8) if backbone == "ir_se" else (),
                         n_styles=num_ws, w_dim=w_dim, head_convs=heads)


def random_encoder(cfg: EncoderConfig, seed: int = 0) -> StyleEncoder:
    torch.manual_seed(seed)
    net = StyleEncoder(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var") or name.endswith("norm_in.weight") or name.endswith("norm_out.weight") \
                    or name.endswith("norm_a.weight") or name.endswith("norm_b.weight") or name.endswith("norm.weight"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("act.weight"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5)
    return net


def authors_state_dict(net: StyleEncoder) -> dict:
    out = {}
    for k, v in net.state_dict().items():
        fk = file_key(k, net.cfg.backbone)
        out["encoder." + fk] = v.clone()
        if fk.endswith("running_var"):
            out["encoder." + fk[:-len("running_var")] + "num_batches_tracked"] = torch.tensor(1000)
    return out


def write_encoder_checkpoint(path, encoder_type: str, G=None, seed: int = 0, resolution: int = 32,
                             restyle: bool | None = None, opts: dict | None = None, latent_avg=True,
                             cfg: EncoderConfig | None = None, extra: dict | None = None) -> StyleEncoder:
    """Write a checkpoint like the authors' training code; returns the encoder (our module)."""
    num_ws = 2 * (resolution.bit_length() - 1) - 2
    cfg = cfg or tiny_encoder_config(encoder_type, num_ws=num_ws, w_dim=G.cfg.w_dim if G is not None else 32,
                                     restyle=bool(restyle))
    net = random_encoder(cfg, seed)
    sd = authors_state_dict(net)
    if G is not None:
        sd.update({"decoder." + k: v for k, v in to_rosinality_state_dict(G).items()})
    repo = ENCODER_TYPES[encoder_type][3]
    o = {"exp_dir": "/experiments/x", "encoder_type": encoder_type, "input_nc": cfg.in_channels, "label_nc": 0,
         "batch_size": 8, "learning_rate": 0.0001, "lpips_lambda": 0.8, "start_from_latent_avg": True,
         "learn_in_w": False, "dataset_type": "ffhq_encode", "checkpoint_path": None, "device": "cuda:0",
         "progressive_steps": [0, 20000, 22000], "n_iters_per_batch": 5, "train_decoder": False}
    o["stylegan_size" if repo == "e4e" else "output_size"] = resolution
    o.update(opts or {})
    ck = {"state_dict": sd, "opts": o}
    if latent_avg is not False:
        w = G.w_avg.detach().cpu() if G is not None and latent_avg is True else torch.randn(cfg.w_dim) * 0.3
        ck["latent_avg"] = w[None].repeat(cfg.n_styles, 1)
    if extra:
        ck.update(extra)
    torch.save(ck, str(path))
    return net
