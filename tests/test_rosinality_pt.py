"""rosinality / StyleGAN-NADA ``.pt`` reader and writer."""
from __future__ import annotations

import argparse
import os
import pickle

import pytest
import torch

from nada_ops.stylegan.config import StyleGAN2Config
from nada_ops.stylegan.formats import CheckpointError
from nada_ops.stylegan.formats.rosinality_pt import (
    key_table,
    read_rosinality,
    to_rosinality_state_dict,
    write_rosinality,
)
from nada_ops.stylegan.networks import Generator, z_from_seeds

TINY = StyleGAN2Config(img_resolution=32, z_dim=32, w_dim=32, channel_base=512, channel_max=32,
                       num_mapping_layers=2)


def make_G(cfg: StyleGAN2Config = TINY, seed: int = 0) -> Generator:
    """A generator whose every tensor (w_avg, noise strengths, biases) is non-trivial."""
    torch.manual_seed(seed)
    G = Generator(cfg).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.copy_(torch.randn(()) * 0.5)
            elif name.endswith("affine.bias"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
        G.mapping.w_avg.copy_(torch.randn(cfg.w_dim))
    return G


def render(G, seeds=(0, 1, 2), psi=0.7):
    with torch.no_grad():
        return G(z_from_seeds(list(seeds), G.cfg.z_dim), truncation_psi=psi, noise_mode="const")


def load_into_generator(res) -> Generator:
    G = Generator(res.cfg).eval()
    G.load_state_dict(res.state_dict, strict=True)
    return G


@pytest.fixture(scope="module")
def tiny_G():
    return make_G()


@pytest.fixture(scope="module")
def tiny_sd(tiny_G):
    return to_rosinality_state_dict(tiny_G)


# ------------------------------------------------------------------ round trip
def test_roundtrip_identical_images(tmp_path, tiny_G):
    path = tmp_path / "g.pt"
    write_rosinality(tiny_G, path)
    res = read_rosinality(path)
    assert res.format == "rosinality-pt"
    assert res.w_avg_in_checkpoint is True
    assert res.cfg == TINY
    assert set(res.state_dict) == set(tiny_G.state_dict())
    for k, v in tiny_G.state_dict().items():
        assert torch.equal(res.state_dict[k], v), k
    G2 = load_into_generator(res)
    assert torch.equal(render(tiny_G), render(G2))
    assert res.provenance["source_key"] == "g_ema"
    assert res.provenance["mapping_lr_mul"] == 0.01
    assert "assumed" in res.provenance["mapping_lr_mul_source"]


def test_written_layout_is_rosinalitys(tmp_path, tiny_G, tiny_sd):
    sd = tiny_sd
    c4, c32 = TINY.channels(4), TINY.channels(32)
    assert sd["input.input"].shape == (1, c4, 4, 4)
    assert sd["conv1.conv.weight"].shape == (1, c4, c4, 3, 3)
    assert sd["conv1.noise.weight"].shape == (1,)
    assert sd["to_rgb1.conv.weight"].shape == (1, 3, c4, 1, 1)
    assert sd["to_rgb1.bias"].shape == (1, 3, 1, 1)
    assert sd["convs.5.conv.weight"].shape == (1, c32, c32, 3, 3)
    assert sd["to_rgbs.2.conv.modulation.weight"].shape == (c32, TINY.w_dim)
    assert sd["style.1.weight"].shape == (TINY.w_dim, TINY.z_dim)
    assert "style.3.weight" not in sd and "style.0.weight" not in sd
    # blur kernels only on the upsampling convs and the skip upsamplers
    assert sorted(k for k in sd if k.endswith("kernel")) == sorted(
        [f"convs.{i}.conv.blur.kernel" for i in (0, 2, 4)] + [f"to_rgbs.{i}.upsample.kernel" for i in range(3)])
    k = sd["convs.0.conv.blur.kernel"]
    assert k.shape == (4, 4) and torch.allclose(k.sum(), torch.tensor(4.0))
    # noises.noise_i follows forward order: b4.conv1, b8.conv0, b8.conv1, b16.conv0, ...
    layers = tiny_G.synthesis.noise_layers()
    assert len([k for k in sd if k.startswith("noises.")]) == len(layers) == 7
    for i, layer in enumerate(layers):
        assert sd[f"noises.noise_{i}"].shape == (1, 1, layer.resolution, layer.resolution)
        assert torch.equal(sd[f"noises.noise_{i}"][0, 0], layer.noise_const)
    assert torch.equal(sd["convs.2.noise.weight"][0], tiny_G.synthesis.b16.conv0.noise_strength)
    assert torch.equal(sd["convs.3.activate.bias"], tiny_G.synthesis.b16.conv1.bias)
    # file content
    path = tmp_path / "g.pt"
    write_rosinality(tiny_G, path, with_latent_avg=True)
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"g_ema", "latent_avg"}
    assert torch.equal(obj["latent_avg"], tiny_G.mapping.w_avg)


def test_key_table_covers_everything():
    table = key_table(TINY)
    ours = Generator(TINY).state_dict()
    assert {t[0] for t in table} | {"mapping.w_avg"} == set(ours)
    assert len({t[1] for t in table}) == len(table)


# ------------------------------------------------------------ file variants
def test_without_latent_avg(tmp_path, tiny_G):
    path = tmp_path / "nolat.pt"
    write_rosinality(tiny_G, path, with_latent_avg=False)
    res = read_rosinality(path)
    assert res.w_avg_in_checkpoint is False
    assert torch.equal(res.state_dict["mapping.w_avg"], torch.zeros(TINY.w_dim))
    assert any("latent_avg" in n for n in res.provenance["notes"])
    # everything but w_avg is intact: psi=1 renders identically
    G2 = load_into_generator(res)
    assert torch.equal(render(tiny_G, psi=1.0), render(G2, psi=1.0))


def test_load_generator_estimates_missing_w_avg(tmp_path, tiny_G):
    from nada_ops.stylegan.io import load_generator
    path = tmp_path / "nolat.pt"
    write_rosinality(tiny_G, path, with_latent_avg=False)
    h = load_generator(path)
    assert h.source_format == "rosinality-pt"
    assert "estimated" in h.provenance["w_avg"]
    assert h.G.w_avg.abs().sum() > 0


def test_latent_avg_with_batch_dim(tmp_path, tiny_G, tiny_sd):
    # rosinality's mean_latent() returns [1, w_dim]; NVIDIA conversions store [w_dim]
    path = tmp_path / "lat2d.pt"
    torch.save({"g_ema": tiny_sd, "latent_avg": tiny_G.mapping.w_avg[None].clone()}, path)
    res = read_rosinality(path)
    assert res.w_avg_in_checkpoint
    assert torch.equal(res.state_dict["mapping.w_avg"], tiny_G.mapping.w_avg)


def test_train_py_layout_with_args_namespace(tmp_path, tiny_G, tiny_sd):
    args = argparse.Namespace(size=32, latent=32, n_mlp=2, channel_multiplier=2, lr=0.002,
                              path="/data/lmdb", augment=False, r1=10.0, ckpt=None)
    path = tmp_path / "000100.pt"
    torch.save({"g": tiny_sd, "d": {"convs.0.0.weight": torch.zeros(2, 3, 1, 1)}, "g_ema": tiny_sd,
                "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "params": [0]}]},
                "d_optim": {"state": {}, "param_groups": []}, "args": args, "ada_aug_p": 0.0}, path)
    res = read_rosinality(path)
    assert res.provenance["args"]["size"] == 32
    assert res.provenance["mapping_lr_mul"] == 0.01
    assert torch.equal(render(load_into_generator(res), psi=1.0), render(tiny_G, psi=1.0))
    # the allow-list is scoped to our read: torch's global default is unchanged
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_args_lr_mlp_is_used(tmp_path, tiny_sd):
    path = tmp_path / "lr.pt"
    torch.save({"g_ema": tiny_sd, "args": argparse.Namespace(lr_mlp=0.1)}, path)
    res = read_rosinality(path)
    assert res.cfg.mapping_lr_mul == pytest.approx(0.1)
    assert res.provenance["mapping_lr_mul_source"] == "args.lr_mlp"


def test_stylegan_nada_layout(tmp_path, tiny_G, tiny_sd):
    """StyleGAN-NADA's train.py saves {'g_ema': ..., 'g_optim': Adam state}, no latent_avg."""
    params = [torch.nn.Parameter(torch.randn(3, 3)), torch.nn.Parameter(torch.randn(3))]
    opt = torch.optim.Adam(params, lr=0.002 * 0.8, betas=(0.0, 0.99 ** 0.8))
    (params[0].sum() + params[1].square().sum()).backward()
    opt.step()
    path = tmp_path / "000300.pt"
    torch.save({"g_ema": tiny_sd, "g_optim": opt.state_dict()}, path)
    res = read_rosinality(path)
    assert res.w_avg_in_checkpoint is False
    assert torch.equal(render(load_into_generator(res), psi=1.0), render(tiny_G, psi=1.0))


def test_g_fallback(tmp_path, tiny_G, tiny_sd):
    path = tmp_path / "g_only.pt"
    torch.save({"g": tiny_sd, "latent_avg": tiny_G.mapping.w_avg.clone()}, path)
    res = read_rosinality(path)
    assert res.provenance["source_key"] == "g"
    assert any("'g'" in n for n in res.provenance["notes"])
    assert torch.equal(render(load_into_generator(res)), render(tiny_G))


def test_bare_state_dict_and_module_prefix(tmp_path, tiny_G, tiny_sd):
    path = tmp_path / "bare.pt"
    torch.save(tiny_sd, path)
    res = read_rosinality(path)
    assert res.provenance["source_key"] is None and not res.w_avg_in_checkpoint
    path2 = tmp_path / "ddp.pt"
    torch.save({"g_ema": {f"module.{k}": v for k, v in tiny_sd.items()}}, path2)
    res2 = read_rosinality(path2)
    assert torch.equal(render(load_into_generator(res2), psi=1.0), render(tiny_G, psi=1.0))


def test_legacy_serialization_and_fp16(tmp_path, tiny_sd):
    path = tmp_path / "legacy.pt"
    torch.save({"g_ema": {k: v.half() for k, v in tiny_sd.items()}}, path, _use_new_zipfile_serialization=False)
    res = read_rosinality(path)
    assert all(v.dtype == torch.float32 for v in res.state_dict.values())


# -------------------------------------------------------- architecture inference
@pytest.mark.parametrize("res,base,cmax,n_mlp,z,w", [
    (32, 512, 32, 2, 32, 32),
    (32, 1024, 64, 1, 16, 16),
    (64, 512, 16, 3, 16, 24),
    (64, 1024, 32, 2, 32, 32),
    (64, 1024, 8, 2, 8, 8),      # every resolution at channel_max
])
def test_architecture_inference(tmp_path, res, base, cmax, n_mlp, z, w):
    cfg = StyleGAN2Config(img_resolution=res, z_dim=z, w_dim=w, channel_base=base, channel_max=cmax,
                          num_mapping_layers=n_mlp)
    G = make_G(cfg, seed=res + base)
    path = tmp_path / "arch.pt"
    write_rosinality(G, path)
    out = read_rosinality(path)
    for r in cfg.block_resolutions:
        assert out.cfg.channels(r) == cfg.channels(r)
    assert (out.cfg.img_resolution, out.cfg.z_dim, out.cfg.w_dim, out.cfg.num_mapping_layers) == (res, z, w, n_mlp)
    assert out.cfg.num_ws == cfg.num_ws
    assert torch.equal(render(load_into_generator(out), seeds=(3,)), render(G, seeds=(3,)))


def test_rosinality_config_f_channels():
    """rosinality channel_multiplier cm <-> channel_base 16384*cm, channel_max 512 (shapes only)."""
    cfg = StyleGAN2Config(img_resolution=256, channel_base=32768, channel_max=512)
    chans = {r: cfg.channels(r) for r in cfg.block_resolutions}
    assert chans == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    shapes = {rk: s for _, rk, _, s in key_table(cfg)}
    assert shapes["convs.10.conv.weight"] == (1, 128, 256, 3, 3)
    assert shapes["noises.noise_12"] == (1, 1, 256, 256)


# --------------------------------------------------------------------- bad files
def _assert_error(path, *fragments):
    with pytest.raises(CheckpointError) as ei:
        read_rosinality(path)
    msg = str(ei.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_empty_file(tmp_path):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    _assert_error(p, "empty")


def test_missing_file_and_folder(tmp_path):
    _assert_error(tmp_path / "nope.pt", "does not exist")
    _assert_error(tmp_path, "folder")


def test_truncated_zip(tmp_path, tiny_G):
    good = tmp_path / "good.pt"
    write_rosinality(tiny_G, good)
    data = good.read_bytes()
    p = tmp_path / "truncated.pt"
    p.write_bytes(data[: len(data) // 2])
    _assert_error(p)


def test_random_bytes(tmp_path):
    p = tmp_path / "random.pt"
    p.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1)).tolist()))
    _assert_error(p)
    p2 = tmp_path / "text.pt"
    p2.write_bytes(b"hello, this is not a checkpoint\n")
    _assert_error(p2)


class _Payload:
    """Unpickling this would create a folder (a visible, harmless side effect)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_forbidden_global_is_refused_and_not_run(tmp_path, tiny_sd):
    marker = tmp_path / "EXECUTED"
    for i, save in enumerate((lambda o, p: torch.save(o, p),
                              lambda o, p: p.write_bytes(pickle.dumps(o, protocol=2)))):
        p = tmp_path / f"evil{i}.pt"
        # (a plain pickle of tensors would first be refused for torch's own byte loader)
        save({"g_ema": tiny_sd if i == 0 else {}, "latent_avg": _Payload(str(marker))}, p)
        msg = _assert_error(p, "not allowed")
        assert "makedirs" in msg
        assert not marker.exists()


def test_dict_without_generator(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"state_dict": {"encoder.w": torch.zeros(2)}, "opts": {"a": 1}}, p)
    _assert_error(p, "'g_ema'", "state_dict")


def test_not_a_dict(tmp_path):
    p = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), p)
    _assert_error(p, "Tensor")


def test_missing_tensor(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    del sd["convs.3.noise.weight"]
    p = tmp_path / "missing.pt"
    torch.save({"g_ema": sd}, p)
    _assert_error(p, "'convs.3.noise.weight'")


def test_unexpected_tensor(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    sd["convs.1.extra"] = torch.zeros(3)
    p = tmp_path / "unexpected.pt"
    torch.save({"g_ema": sd}, p)
    _assert_error(p, "'convs.1.extra'")


def test_shape_mismatch(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    sd["convs.1.conv.modulation.weight"] = torch.zeros(5, 32)
    p = tmp_path / "shape.pt"
    torch.save({"g_ema": sd}, p)
    _assert_error(p, "'convs.1.conv.modulation.weight'", "shape")


def test_inconsistent_channels(tmp_path, tiny_sd):
    # 16px conv with 24 channels between 32 (8px) and 16 (32px): not min(base/res, max)
    sd = dict(tiny_sd)
    sd["convs.2.conv.weight"] = torch.zeros(1, 24, 32, 3, 3)
    p = tmp_path / "chan.pt"
    torch.save({"g_ema": sd}, p)
    _assert_error(p, "'convs.2.conv.weight'", "channel")


def test_wrong_blur_kernel(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    sd["to_rgbs.1.upsample.kernel"] = torch.ones(4, 4) / 4
    p = tmp_path / "blur.pt"
    torch.save({"g_ema": sd}, p)
    _assert_error(p, "'to_rgbs.1.upsample.kernel'")


def test_bad_latent_avg(tmp_path, tiny_sd):
    p = tmp_path / "lat.pt"
    torch.save({"g_ema": tiny_sd, "latent_avg": torch.zeros(7)}, p)
    _assert_error(p, "'latent_avg'")


def test_writer_refuses_conditional():
    cfg = StyleGAN2Config(img_resolution=32, z_dim=8, w_dim=8, c_dim=3, channel_base=256, channel_max=8,
                          num_mapping_layers=1)
    with pytest.raises(ValueError, match="conditional"):
        to_rosinality_state_dict(Generator(cfg))
