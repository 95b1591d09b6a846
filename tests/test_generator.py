import numpy as np
import pytest
import torch

from conftest import randomize, tiny_config
from nada_ops.latents import parse_seeds
from nada_ops.stylegan.config import ArchitectureError, StyleGAN2Config, layer_ws_index, ws_layer_map
from nada_ops.stylegan.networks import Generator, style_mix, truncate, z_from_seed, z_from_seeds
from nada_ops.stylegan.sampling import sample_latents, synthesize, to_comfy_image


def test_num_ws_and_layer_map_1024():
    cfg = StyleGAN2Config(img_resolution=1024)
    m = ws_layer_map(cfg)
    assert cfg.num_ws == 18 == len(m)
    assert m[0] == ["synthesis.b4.conv1"]
    assert m[1] == ["synthesis.b4.torgb", "synthesis.b8.conv0"]
    assert m[2] == ["synthesis.b8.conv1"]
    assert m[16] == ["synthesis.b1024.conv1"]
    assert m[17] == ["synthesis.b1024.torgb"]
    # every synthesis layer is driven by exactly one index
    inv = layer_ws_index(cfg)
    assert len(inv) == 1 + 2 * 8 + 9


def test_layer_map_is_what_forward_uses(tiny_G):
    """Changing W+ entry i changes exactly the inputs of the layers the map names."""
    G = tiny_G
    seen = {}
    hooks = []
    for name, mod in G.named_modules():
        if name.startswith("synthesis.") and name.count(".") == 2:
            hooks.append(mod.affine.register_forward_hook(
                lambda m, inp, out, name=name: seen.__setitem__(name, inp[0].clone())))
    ws = torch.randn(1, G.num_ws, G.cfg.w_dim)
    G.synthesis(ws)
    base = dict(seen)
    for i, layers in enumerate(ws_layer_map(G.cfg)):
        ws2 = ws.clone()
        ws2[:, i] += 1.0
        G.synthesis(ws2)
        changed = sorted(k for k in seen if not torch.equal(seen[k], base[k]))
        assert changed == sorted(layers), (i, changed, layers)
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("res,cb", [(32, 512), (64, 1024), (128, 2048)])
def test_shapes_any_resolution(res, cb):
    G = Generator(tiny_config(img_resolution=res, channel_base=cb))
    img = G(z_from_seeds([1, 2], 32))
    assert img.shape == (2, 3, res, res)
    assert torch.isfinite(img).all()


def test_invalid_resolution():
    with pytest.raises(ArchitectureError, match="power of two"):
        Generator(tiny_config(img_resolution=48))
    with pytest.raises(ArchitectureError, match="32..1024"):
        Generator(tiny_config(img_resolution=2048))


def test_seed_convention_matches_numpy():
    z = z_from_seed(123, 512)
    np.testing.assert_allclose(z[0].numpy(), np.random.RandomState(123).randn(512).astype(np.float32))


def test_truncation(tiny_G):
    G = tiny_G
    z = z_from_seeds([0, 1, 2], 32)
    ws1 = G.map(z)
    ws0 = G.map(z, truncation_psi=0.0)
    assert torch.allclose(ws0, G.w_avg.expand_as(ws0))
    wsh = G.map(z, truncation_psi=0.5)
    assert torch.allclose(wsh, G.w_avg + 0.5 * (ws1 - G.w_avg), atol=1e-6)
    wc = G.map(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(wc[:, :3], wsh[:, :3]) and torch.allclose(wc[:, 3:], ws1[:, 3:])


def test_style_mixing(tiny_G):
    G = tiny_G
    a = sample_latents(G, [0, 1], 1.0).ws
    b = sample_latents(G, [5, 5], 1.0).ws
    m = sample_latents(G, [0, 1], 1.0, mix_seeds=[5], mix_crossover=3)
    assert m.is_wplus
    assert torch.equal(m.ws[:, :3], a[:, :3]) and torch.equal(m.ws[:, 3:], b[:, 3:])
    per = style_mix(a, b, torch.tensor([0, G.num_ws]))
    assert torch.equal(per[0], b[0]) and torch.equal(per[1], a[1])


def test_noise_modes(tiny_G):
    G = tiny_G
    ws = sample_latents(G, [3], 0.7).ws
    c1 = synthesize(G, ws, "const")
    c2 = synthesize(G, ws, "const")
    assert torch.equal(c1, c2)
    r1 = synthesize(G, ws, "random", noise_seed=1)
    r2 = synthesize(G, ws, "random", noise_seed=1)
    r3 = synthesize(G, ws, "random", noise_seed=2)
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)
    n = synthesize(G, ws, "none")
    assert not torch.equal(n, c1)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="bogus")


def test_w_and_wplus_inputs(tiny_G):
    G = tiny_G
    z = z_from_seeds([4], 32)
    assert torch.allclose(G(z), G.synthesis(G.map(z)))
    with pytest.raises(ValueError, match="W\\+ of shape"):
        G.synthesis(torch.zeros(1, 3, 32))


def test_class_conditional():
    G = randomize(Generator(tiny_config(c_dim=4)))
    with pytest.raises(ValueError, match="class"):
        sample_latents(G, [0], 1.0)
    a = sample_latents(G, [0], 1.0, class_idx=1).ws
    b = sample_latents(G, [0], 1.0, class_idx=2).ws
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="out of range"):
        sample_latents(G, [0], 1.0, class_idx=4)


def test_batching_does_not_change_images(tiny_G):
    ws = sample_latents(tiny_G, range(5), 0.7).ws
    a = synthesize(tiny_G, ws, batch_size=5)
    b = synthesize(tiny_G, ws, batch_size=2)
    assert torch.allclose(a, b, atol=1e-5)
    im = to_comfy_image(a)
    assert im.shape == (5, 32, 32, 3) and im.dtype == torch.float32 and 0 <= im.min() and im.max() <= 1


def test_parse_seeds():
    assert parse_seeds("0-3,7, 10-11") == [0, 1, 2, 3, 7, 10, 11]
    with pytest.raises(ValueError):
        parse_seeds("a-b")
    with pytest.raises(ValueError):
        parse_seeds("5-1")


def test_gradients_flow(tiny_G):
    G = Generator(tiny_G.cfg)
    G.load_state_dict(tiny_G.state_dict())
    ws = G.map(z_from_seeds([0], 32)).detach().requires_grad_(True)
    G.synthesis(ws).square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    assert G.synthesis.b32.conv1.weight.grad.abs().sum() > 0
