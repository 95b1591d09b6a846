import pytest
import torch

from conftest import randomize, tiny_config
from nada_ops.interpolate import GeneratorPath, architecture_mismatch, blend_generators, check_same_architecture
from nada_ops.stylegan.config import ArchitectureError
from nada_ops.stylegan.networks import Generator


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair():
    torch.manual_seed(0)
    A = randomize(Generator(tiny_config()).eval(), 0)
    B = randomize(Generator(tiny_config()).eval(), 1)
    return A, B


def _all(G):
    d = dict(G.named_parameters())
    d.update(dict(G.named_buffers()))
    return d


def _snapshot(G):
    return {k: v.detach().clone() for k, v in _all(G).items()}


def _same(G, snap):
    cur = _all(G)
    return set(cur) == set(snap) and all(torch.equal(cur[k], snap[k]) for k in snap)


def test_endpoints_exact_and_linear():
    A, B = _pair()
    sa, sb = _snapshot(A), _snapshot(B)
    assert _same(blend_generators(A, B, 0.0), sa)
    assert _same(blend_generators(A, B, 1.0), sb)
    for t in (0.25, 0.5, 0.9):
        Gt = _all(blend_generators(A, B, t))
        for k in sa:
            if sa[k].is_floating_point():
                exp = sa[k] + t * (sb[k] - sa[k])
                assert torch.allclose(Gt[k], exp, rtol=1e-6, atol=1e-5 * (1 + exp.abs().max())), k
    # linear: equal steps in t give equal steps in weights
    g1, g2, g3 = (_all(blend_generators(A, B, t)) for t in (0.2, 0.5, 0.8))
    k = "synthesis.b32.conv1.weight"
    assert torch.allclose(g2[k] - g1[k], g3[k] - g2[k], atol=1e-5)
    # images at the endpoints are exactly the endpoints' images
    ws = A.w_avg[None, None].repeat(2, A.num_ws, 1) + torch.randn(2, 1, 32)
    with torch.no_grad():
        assert torch.equal(blend_generators(A, B, 0.0).synthesis(ws), A.synthesis(ws))
        assert torch.equal(blend_generators(A, B, 1.0).synthesis(ws), B.synthesis(ws))
    # inputs untouched
    assert _same(A, sa) and _same(B, sb)


def test_t_out_of_range():
    A, B = _pair()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        blend_generators(A, B, 1.5)


@pytest.mark.parametrize("kw,needle", [
    (dict(img_resolution=64), "A is 32px, B is 64px"),
    (dict(channel_max=16), "channel_max: A has 32, B has 16"),
    (dict(w_dim=16), "w_dim"),
    (dict(num_mapping_layers=3), "num_mapping_layers"),
])
def test_architecture_mismatch_is_named(kw, needle):
    A = Generator(tiny_config())
    B = Generator(tiny_config(**kw))
    with pytest.raises(ArchitectureError, match=needle):
        blend_generators(A, B, 0.5)
    assert architecture_mismatch(A, A) is None
    with pytest.raises(ArchitectureError, match="generators src and dst"):
        check_same_architecture(A, B, "src", "dst")


def test_path_blends_in_place_over_a_sequence():
    torch.manual_seed(0)
    gens = [randomize(Generator(tiny_config()).eval(), s) for s in range(3)]
    snaps = [_snapshot(G) for G in gens]
    path = GeneratorPath(gens)
    target = path.target
    ptrs = {k: v.data_ptr() for k, v in _all(target).items()}
    assert _same(path.set(0), snaps[0])
    assert _same(path.set(1), snaps[1])
    assert _same(path.set(2), snaps[2])
    G = path.set(1.5)
    assert G is target
    k = "synthesis.b16.conv0.weight"
    assert torch.allclose(_all(G)[k], (snaps[1][k] + snaps[2][k]) / 2, atol=1e-5)
    assert _same(path.set_u(0.25), _snapshot(blend_generators(gens[0], gens[1], 0.5)))
    # no reallocation: the same storage is written every time
    assert {k: v.data_ptr() for k, v in _all(target).items()} == ptrs
    assert all(_same(G_, s) for G_, s in zip(gens, snaps))
    with pytest.raises(ValueError, match="at least 2"):
        GeneratorPath(gens[:1])
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        path.set(2.5)


def test_works_inside_inference_mode():
    A, B = _pair()
    sa = _snapshot(A)
    with torch.inference_mode():
        A2 = Generator(tiny_config()); A2.load_state_dict(A.state_dict())
        G = blend_generators(A2, B, 0.3)
        path = GeneratorPath([A2, B])
        for s in (0.0, 0.5, 1.0):
            path.set(s)
        ws = A.w_avg[None, None].repeat(1, A.num_ws, 1)
        img = G.synthesis(ws)
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
    assert _same(A, sa)


def test_cli_interpolate_models(tmp_path, capsys):
    from nada_ops.cli import main
    from nada_ops.stylegan.io import load_generator, save_generator
    A, B = _pair()
    save_generator(A, tmp_path / "a.safetensors")
    save_generator(B, tmp_path / "b.safetensors")
    save_generator(Generator(tiny_config(img_resolution=64)), tmp_path / "big.safetensors")
    out = tmp_path / "mix.safetensors"
    assert main(["interpolate-models", "--a", str(tmp_path / "a.safetensors"), "--b", str(tmp_path / "b.safetensors"),
                 "--t", "0.25", "--out", str(out)]) == 0
    h = load_generator(out)
    entry = h.provenance["history"][-1]        # both sides with their histories (tests/test_cli_rough_edges.py)
    assert (entry["op"], entry["t"], entry["a"]["name"], entry["b"]["name"]) == ("interpolate", 0.25, "a", "b")
    k = "synthesis.b32.torgb.weight"
    exp = A.state_dict()[k] + 0.25 * (B.state_dict()[k] - A.state_dict()[k])
    assert torch.allclose(h.G.state_dict()[k], exp, atol=1e-6)
    assert main(["interpolate-models", "--a", str(tmp_path / "a.safetensors"), "--b",
                 str(tmp_path / "big.safetensors"), "--t", "0.5", "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "A (a) is 32px, B (big) is 64px" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
