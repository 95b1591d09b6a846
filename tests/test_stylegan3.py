"""StyleGAN3 (T/R): layer design and filters, the W+ map, safe reading of NVIDIA's pickle
structure (written by tests/writers/nvidia_pickle.py from our own random networks), our
safetensors format, and the input transform.

Parity with NVIDIA's own code (pickles written by its training loop, rendered by it) is checked
outside CI (NVIDIA's code is not vendored); see README *Verification*."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nada_ops.nada.schedule import group_indices, trainable_layer_names
from nada_ops.stylegan.config import StyleGAN3Config, frozen_layers, ws_index_resolution, ws_layer_map
from nada_ops.stylegan.formats import CheckpointError
from nada_ops.stylegan.formats.nvidia_pkl import read_nvidia_pickle
from nada_ops.stylegan.io import load_generator, read_checkpoint, save_generator
from nada_ops.stylegan.networks import z_from_seeds
from nada_ops.stylegan.networks_sg3 import input_transform, layer_filters, lowpass_filter
from nada_ops.stylegan.sampling import input_transform_for, sample_latents, synthesize
from sg3_helpers import tiny_sg3, tiny_sg3_config
from writers import nvidia_pickle as nv

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "module_src_was_executed"
    yield m
    assert not m.exists(), "module_src was executed"


@pytest.fixture(scope="module")
def G_t():
    return tiny_sg3("t", seed=1)


@pytest.fixture(scope="module")
def G_r():
    return tiny_sg3("r", seed=2, c_dim=3)


# ------------------------------------------------------------------ design
def test_layer_design_matches_nvidia_models():
    """Layer names (size, channels) of NVIDIA's published T and R models, from our design."""
    t1024 = StyleGAN3Config(img_resolution=1024).validate()
    assert t1024.layer_names() == [
        "L0_36_512", "L1_36_512", "L2_52_512", "L3_52_512", "L4_84_512", "L5_148_512", "L6_148_512", "L7_276_323",
        "L8_276_203", "L9_532_128", "L10_1044_81", "L11_1044_51", "L12_1044_32", "L13_1024_32", "L14_1024_3"]
    r1024 = StyleGAN3Config(img_resolution=1024, channel_base=65536, channel_max=1024, conv_kernel=1,
                            use_radial_filters=True).validate()
    assert r1024.layer_names()[7:11] == ["L7_276_645", "L8_276_406", "L9_532_256", "L10_1044_161"]
    assert r1024.architecture == "stylegan3-r" and t1024.architecture == "stylegan3-t"
    t512 = StyleGAN3Config(img_resolution=512).validate()
    assert t512.layer_names()[-4:] == ["L11_532_96", "L12_532_64", "L13_512_64", "L14_512_3"]
    l4 = t1024.layers()[4]          # 52 -> 84 px: upsampled 4x, cropped back by the margin
    assert (l4.in_size, l4.out_size, l4.up, l4.down, l4.up_taps, l4.down_taps, l4.padding) == \
        (52, 84, 4, 2, 24, 12, (-6, -9, -6, -9))
    assert t1024.num_ws == 16 and [l.use_fp16 for l in t1024.layers()].count(True) == 10


def test_filters_equal_scipy_design():
    """Reference taps computed by scipy.signal.firwin / NVIDIA's radial formula (values only)."""
    cfg = StyleGAN3Config(img_resolution=256, channel_base=65536, channel_max=1024, conv_kernel=1,
                          use_radial_filters=True)
    layers = cfg.layers()
    fu, _ = layer_filters(layers[4])          # L4_52_1024: 12 taps, cutoff 4 sqrt(2), fs 64
    want = [0.0001395971, 0.0066801887, 0.0337127847, 0.0893862344, 0.1598048363, 0.2102763587]
    assert fu.shape == (12,)
    np.testing.assert_allclose(fu[:6].numpy(), want, atol=2e-9)
    assert torch.equal(fu, fu.flip(0))
    _, fd = layer_filters(layers[9])          # L9_148_724: radial 12x12 (config R, not critical)
    assert fd.shape == (12, 12) and layers[9].down_radial
    np.testing.assert_allclose(fd[0, :6].numpy(), [0.00085423661, 0.001103684298, 0.000476175472,
                                                   -0.000861744481, -0.002220388695, -0.003012214503], atol=2e-9)
    np.testing.assert_allclose(fd[5, :6].numpy(), [-0.003012214503, -0.007203816968, -0.001379985833,
                                                   0.024230372062, 0.063774641679, 0.094371172517], atol=2e-9)
    assert abs(float(fd.sum()) - 1) < 1e-6 and torch.allclose(fd, fd.t())
    assert lowpass_filter(1, 2.0, 1.0, 16) is None


def test_config_validation_refuses_bad_designs():
    with pytest.raises(ValueError, match="num_critical"):
        StyleGAN3Config(img_resolution=64, num_layers=2, num_critical=2).validate()
    with pytest.raises(ValueError, match="transition band"):
        StyleGAN3Config(img_resolution=64, first_stopband=1.0).validate()
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN3Config(img_resolution=96).validate()
    cfg = tiny_sg3_config("r")
    assert StyleGAN3Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown architecture field"):
        StyleGAN3Config.from_dict(dict(cfg.to_dict(), noise=True))


# ------------------------------------------------------------------ W+ map
def test_ws_layer_map_and_frozen_layers():
    cfg = tiny_sg3_config()
    m = ws_layer_map(cfg)
    names = cfg.layer_names()
    assert len(m) == cfg.num_ws == 16
    assert m[0] == ["synthesis.input"] and m[-1] == [f"synthesis.{names[-1]}"]
    assert [x[0] for x in m[1:]] == [f"synthesis.{n}" for n in names]
    assert frozen_layers(cfg) == {"synthesis.input", f"synthesis.{names[-1]}"}
    assert trainable_layer_names(cfg, range(16)) == [f"synthesis.{n}" for n in names[:-1]]
    assert trainable_layer_names(cfg, [0, 15]) == []
    res = ws_index_resolution(cfg)
    assert res == sorted(res) and res[0] == 4 and res[-1] == 32
    groups = [group_indices(cfg, [g]) for g in ("coarse", "middle", "fine")]
    assert sorted(sum(groups, [])) == list(range(16)) and all(groups[:2])


def test_synthesis_uses_each_ws_entry_for_its_layer(G_t):
    """Changing W+ entry i changes the style input of exactly the layer the map names."""
    seen = {}
    hooks = [mod.affine.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0].clone()))
             for name, mod in [("synthesis.input", G_t.synthesis.input)] +
             [(f"synthesis.{n}", getattr(G_t.synthesis, n)) for n in G_t.synthesis.layer_names]]
    try:
        ws = torch.randn(1, 16, 16)
        with torch.no_grad():
            G_t.synthesis(ws)
    finally:
        for h in hooks:
            h.remove()
    for i, layers in enumerate(ws_layer_map(G_t.cfg)):
        assert torch.equal(seen[layers[0]], ws[:, i])


# ------------------------------------------------------------------ NVIDIA pickles
@pytest.mark.parametrize("kind", ["t", "r"])
def test_nvidia_pickle_round_trip(tmp_path, marker, kind, G_t, G_r):
    G = G_t if kind == "t" else G_r
    p = nv.write_stylegan3_pickle(G, tmp_path / f"sg3{kind}.pkl", marker, protocol=2 if kind == "r" else 4)
    h = load_generator(p)
    assert h.family == "stylegan3" and h.cfg == G.cfg
    assert h.provenance["code_family"] == f"stylegan3 (stylegan3-{kind})"
    sd = G.state_dict()
    assert set(h.G.state_dict()) == set(sd)
    for k, v in h.G.state_dict().items():
        assert torch.equal(v, sd[k]), k
    c = torch.nn.functional.one_hot(torch.tensor([1, 2]), 3).float() if G.cfg.c_dim else None
    with torch.no_grad():
        ws = G.map(z_from_seeds([0, 1], 16), c, 0.7)
        assert torch.equal(h.G.synthesis(ws), G.synthesis(ws))
    assert "StyleGAN3 config" in h.describe() and "num_ws (W+ entries): 16" in h.describe()
    assert read_nvidia_pickle(p, network="G").cfg == G.cfg


def test_fp32_pickle_without_clamp(tmp_path, marker):
    G = tiny_sg3("t", seed=3, conv_clamp=None)
    p = nv.write_stylegan3_pickle(G, tmp_path / "fp32.pkl", marker, fp32=True, keys=("G_ema",))
    assert read_nvidia_pickle(p).cfg.conv_clamp is None


def _refusal_cases(G):
    names = G.cfg.layer_names()
    L5 = names[5]
    bad_filter = getattr(G.synthesis, L5).down_filter.clone()
    bad_filter[0] += 0.01
    return {
        "layer_attr": (dict(layer_attrs={L5: {"in_cutoff": np.float64(3.0)}}), r"in_cutoff=3\.0.*not supported"),
        "padding": (dict(layer_attrs={L5: {"padding": [1, 2, 3, 4]}}), r"padding"),
        "custom_filter": (dict(filters={f"{L5}.down_filter": bad_filter}), r"custom filters are not supported"),
        "unknown_option": (dict(extra_kwargs={"use_noise": True}), r"unknown options \['use_noise'\]"),
        "missing_tensor": (dict(drop=(f"synthesis.{L5}.weight",)), rf"missing tensor 'synthesis\.{L5}\.weight'"),
        "wrong_shape": (dict(override={"synthesis.input.freqs": torch.zeros(8, 3)}), r"'synthesis\.input\.freqs' has shape"),
        "bad_kernel": (dict(extra_kwargs={"conv_kernel": 4}), r"conv_kernel must be"),
        "num_layers": (dict(extra_kwargs={"num_layers": 10 ** 9}), r"records num_layers=14 but the generator.s init"),
    }


@pytest.mark.parametrize("case", ["layer_attr", "padding", "custom_filter", "unknown_option", "missing_tensor",
                                  "wrong_shape", "bad_kernel", "num_layers"])
def test_nvidia_pickle_refusals(tmp_path, marker, case, G_t):
    kwargs, expect = _refusal_cases(G_t)[case]
    p = nv.write_stylegan3_pickle(G_t, tmp_path / f"{case}.pkl", marker, keys=("G_ema",), **kwargs)
    with pytest.raises(CheckpointError, match=expect) as e:
        read_nvidia_pickle(p)
    assert f"{case}.pkl" in str(e.value)


# ------------------------------------------------------------------ safetensors
def test_safetensors_round_trip_and_format_names(tmp_path, G_r, tiny_G):
    from safetensors import safe_open
    p3, p2 = tmp_path / "g3.safetensors", tmp_path / "g2.safetensors"
    save_generator(G_r, p3, {"note": "x"})
    save_generator(tiny_G, p2)
    with safe_open(str(p3), "pt") as f:
        meta3 = f.metadata()
        assert not any(k.endswith("_filter") for k in f.keys())     # designed, not stored
    with safe_open(str(p2), "pt") as f:
        assert f.metadata()["format"] == "nada-stylegan2"
    assert meta3["format"] == "nada-stylegan3"
    res = read_checkpoint(p3)
    assert res.cfg == G_r.cfg and res.provenance["note"] == "x"
    h = load_generator(p3)
    for k, v in G_r.state_dict().items():
        assert torch.equal(h.G.state_dict()[k], v)
    assert load_generator(p2).family == "stylegan2"


# ------------------------------------------------------------------ sampling and transform
def test_input_transform_is_nvidias_buffer_and_batched(G_t):
    lat = sample_latents(G_t, [0, 1, 2], 0.7)
    M = input_transform((0.125, -0.25), 30.0)
    G2 = copy.deepcopy(G_t)
    with torch.no_grad():
        G2.synthesis.input.transform.copy_(M)            # what NVIDIA's gen_images.py does
        want = G2.synthesis(lat.ws)
    got = synthesize(G_t, lat.ws, transform=M, batch_size=3)
    assert torch.equal(got, want)
    per = torch.stack([input_transform((0.1 * i, 0.0), 10.0 * i) for i in range(3)])
    got = synthesize(G_t, lat.ws, transform=per, batch_size=2)
    for i in range(3):
        assert torch.allclose(got[i], synthesize(G_t, lat.ws[i:i + 1], transform=per[i])[0], atol=1e-6)
    assert input_transform_for(G_t, (0, 0), 0) is None
    assert torch.equal(synthesize(G_t, lat.ws, transform=torch.eye(3)), synthesize(G_t, lat.ws))


def test_translation_moves_the_image(G_t):
    """Config T: translating the input by 2 pixels shifts the image by 2 pixels (away from the
    borders, where content enters), with the sign NVIDIA's make_transform uses."""
    lat = sample_latents(G_t, [5], 1.0)
    base = synthesize(G_t, lat.ws)[0]
    moved = synthesize(G_t, lat.ws, transform=input_transform_for(G_t, (2 / 32, 0.0), 0.0))[0]
    inner = (slice(None), slice(8, 24), slice(10, 22))
    shifted = torch.roll(base, shifts=2, dims=2)
    err = (moved - shifted)[inner].abs().mean() / base[inner].abs().mean()
    assert err < 0.15, float(err)
    assert (moved - base)[inner].abs().mean() / base[inner].abs().mean() > 2 * err


def test_transform_refused_for_stylegan2(tiny_G):
    with pytest.raises(ValueError, match="StyleGAN3"):
        input_transform_for(tiny_G, (0.1, 0), 0)
    with pytest.raises(ValueError, match="StyleGAN3"):
        synthesize(tiny_G, torch.zeros(1, tiny_G.num_ws, 32), transform=torch.eye(3))


def test_image_of_a_seed_does_not_depend_on_the_batch(G_t):
    lat = sample_latents(G_t, [3, 4, 5], 0.7)
    a = synthesize(G_t, lat.ws, batch_size=3)
    b = synthesize(G_t, lat.ws[1:2], batch_size=1)
    assert torch.allclose(a[1:2], b, atol=1e-6)
