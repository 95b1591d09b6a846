import math
import pickle

import numpy as np
import pytest
import torch

from nada_ops.latent_tools import (DirectionFileError, apply_direction, direction_offsets, interpolate_latents,
                                   latent_path, lerp, load_direction, load_latents, parse_indices, pick,
                                   save_latents, slerp)
from nada_ops.latents import WLatents


pytestmark = pytest.mark.usefixtures("one_thread")


NUM_WS, W_DIM = 8, 32


def _lat(n, seed=0, wplus=False):
    g = torch.Generator().manual_seed(seed)
    if wplus:
        ws = torch.randn([n, NUM_WS, W_DIM], generator=g)
    else:
        ws = torch.randn([n, 1, W_DIM], generator=g).repeat(1, NUM_WS, 1)
    return WLatents(ws=ws, is_wplus=wplus, info={"seeds": list(range(100, 100 + n))})


# ------------------------------------------------------------------ interpolation
def test_lerp_and_slerp_endpoints_exact():
    a, b = torch.randn(3, NUM_WS, W_DIM), torch.randn(3, NUM_WS, W_DIM)
    assert torch.equal(lerp(a, b, 0.0), a) and torch.equal(lerp(a, b, 1.0), b)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    c = torch.randn(W_DIM)
    assert torch.equal(slerp(a, b, 1.0, center=c), b)


def test_slerp_geometry():
    a = torch.zeros(W_DIM); a[0] = 2.0
    b = torch.zeros(W_DIM); b[1] = 2.0
    m = slerp(a, b, 0.5)
    assert torch.allclose(m.norm(), torch.tensor(2.0), atol=1e-5)                 # stays on the sphere
    assert torch.allclose(m[:2], torch.tensor([math.sqrt(2), math.sqrt(2)]), atol=1e-5)
    q = slerp(a, b, 1 / 3)   # constant angular speed: 30 degrees
    assert math.isclose(float(torch.atan2(q[1], q[0])), math.pi / 6, abs_tol=1e-5)
    # different lengths: the norm is interpolated linearly
    assert math.isclose(float(slerp(a, b * 2, 0.5).norm()), 3.0, rel_tol=1e-5)
    # parallel vectors fall back to lerp without NaN
    assert torch.allclose(slerp(a, a * 3, 0.5), a * 2, atol=1e-5)
    # around a center
    c = torch.full([W_DIM], 5.0)
    assert torch.allclose(slerp(a + c, b + c, 0.5, center=c), m + c, atol=1e-5)


def test_interpolate_latents_orders_and_broadcast():
    a, b = _lat(2, 0), _lat(2, 1)
    out = interpolate_latents(a, b, 5, "lerp", order="pair")
    assert out.ws.shape == (10, NUM_WS, W_DIM) and not out.is_wplus
    assert torch.equal(out.ws[0], a.ws[0]) and torch.equal(out.ws[4], b.ws[0])
    assert torch.equal(out.ws[5], a.ws[1]) and torch.equal(out.ws[9], b.ws[1])
    assert torch.allclose(out.ws[2], (a.ws[0] + b.ws[0]) / 2, atol=1e-6)
    step = interpolate_latents(a, b, 5, "slerp", order="step")
    assert torch.equal(step.ws[0], a.ws[0]) and torch.equal(step.ws[1], a.ws[1])
    assert torch.equal(step.ws[-1], b.ws[1])
    one = interpolate_latents(_lat(1, 3), b, 3)                  # one start for every end
    assert one.ws.shape[0] == 6 and torch.equal(one.ws[0], one.ws[3])
    with pytest.raises(ValueError, match="3 entries and latents B 2"):
        interpolate_latents(_lat(3), b, 3)
    bad = WLatents(ws=torch.zeros(2, 10, W_DIM))
    with pytest.raises(ValueError, match="different generator architectures"):
        interpolate_latents(a, bad, 3)


def test_latent_path_keyframes():
    kf = torch.stack([torch.zeros(4), torch.ones(4), torch.full([4], 3.0)])
    assert torch.equal(latent_path(kf, 0.0), kf[0]) and torch.equal(latent_path(kf, 1.0), kf[2])
    assert torch.allclose(latent_path(kf, 0.75), torch.full([4], 2.0))


# ---------------------------------------------------------------------------- pick
def test_pick_and_indices():
    lat = _lat(6)
    assert parse_indices("0,2,4-5", 6) == [0, 2, 4, 5]
    assert parse_indices("-1", 6) == [5] and parse_indices("-3--2", 6) == [3, 4]
    assert parse_indices("all", 3) == [0, 1, 2] and parse_indices(" 3 , 1 ", 6) == [3, 1]
    p = pick(lat, "4,1")
    assert torch.equal(p.ws, lat.ws[[4, 1]]) and p.info["seeds"] == [104, 101]
    with pytest.raises(ValueError, match="out of range"):
        pick(lat, "6")
    with pytest.raises(ValueError, match="cannot parse"):
        pick(lat, "a-b")
    p.ws.add_(1)   # picking copies
    assert not torch.equal(p.ws, lat.ws[[4, 1]])


# ---------------------------------------------------------------------- directions
@pytest.mark.parametrize("shape", [(W_DIM,), (1, W_DIM), (NUM_WS, W_DIM), (1, NUM_WS, W_DIM)])
def test_direction_shapes_accepted(tmp_path, shape):
    arr = np.random.RandomState(0).randn(*shape).astype(np.float32)
    np.save(tmp_path / "d.npy", arr)
    torch.save(torch.from_numpy(arr), tmp_path / "d.pt")
    for f in ("d.npy", "d.pt"):
        d = load_direction(tmp_path / f)
        assert d.vector.shape in ((1, W_DIM), (NUM_WS, W_DIM)) and d.name == "d"
        out = apply_direction(_lat(2), d, 1.0)
        assert out.ws.shape == (2, NUM_WS, W_DIM)


@pytest.mark.parametrize("shape", [(2, 3, W_DIM), (W_DIM, 1, 1, 1), ()])
def test_direction_bad_shape_names_file(tmp_path, shape):
    np.save(tmp_path / "weird.npy", np.ones(shape, np.float32))
    with pytest.raises(DirectionFileError, match=r"weird\.npy.*shape"):
        load_direction(tmp_path / "weird.npy")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_direction_files_are_read_safely(tmp_path):
    # object arrays need pickle: refused
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DirectionFileError, match=r"obj\.npy.*pickle"):
        load_direction(tmp_path / "obj.npy")

    # a .pt that would run code when unpickled: refused by weights_only, never executed
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(DirectionFileError, match=r"evil\.pt.*weights-only"):
        load_direction(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()

    torch.save({"boundary": torch.ones(1, W_DIM), "meta": torch.zeros(3)}, tmp_path / "dict.pt")
    assert load_direction(tmp_path / "dict.pt").vector.shape == (1, W_DIM)
    torch.save({"a": torch.ones(W_DIM), "b": torch.ones(W_DIM)}, tmp_path / "ambiguous.pt")
    with pytest.raises(DirectionFileError, match=r"ambiguous\.pt.*one tensor"):
        load_direction(tmp_path / "ambiguous.pt")
    np.save(tmp_path / "ints.npy", np.ones(W_DIM, np.int64))
    with pytest.raises(DirectionFileError, match="floating point"):
        load_direction(tmp_path / "ints.npy")
    np.save(tmp_path / "nan.npy", np.full(W_DIM, np.nan, np.float32))
    with pytest.raises(DirectionFileError, match="NaN"):
        load_direction(tmp_path / "nan.npy")
    (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(DirectionFileError, match="unsupported extension"):
        load_direction(tmp_path / "d.txt")
    with pytest.raises(DirectionFileError, match="does not exist"):
        load_direction(tmp_path / "missing.npy")


def test_direction_dimension_mismatch(tmp_path):
    np.save(tmp_path / "big.npy", np.ones((1, 512), np.float32))
    d = load_direction(tmp_path / "big.npy")
    with pytest.raises(DirectionFileError, match="w_dim 32"):
        apply_direction(_lat(1), d, 1.0)
    np.save(tmp_path / "rows.npy", np.ones((5, W_DIM), np.float32))
    with pytest.raises(DirectionFileError, match="5 W\\+ rows"):
        apply_direction(_lat(1), load_direction(tmp_path / "rows.npy"), 1.0)


def test_apply_direction_layers_and_no_mutation(tmp_path):
    vec = np.random.RandomState(1).randn(1, W_DIM).astype(np.float32)
    np.save(tmp_path / "smile.npy", vec)
    d = load_direction(tmp_path / "smile.npy")
    lat = _lat(2)
    before = lat.ws.clone()
    full = apply_direction(lat, d, 2.0)
    assert torch.allclose(full.ws, before + 2.0 * torch.from_numpy(vec)[None], atol=1e-6)
    assert not full.is_wplus
    part = apply_direction(lat, d, -1.5, layers="0-2")
    assert part.is_wplus
    assert torch.allclose(part.ws[:, :3], before[:, :3] - 1.5 * torch.from_numpy(vec)[None], atol=1e-6)
    assert torch.equal(part.ws[:, 3:], before[:, 3:])
    unit = apply_direction(lat, d, 1.0, normalize=True)
    assert torch.allclose((unit.ws - before).norm(dim=-1), torch.ones(2, NUM_WS), atol=1e-5)
    assert torch.equal(lat.ws, before)
    assert part.info["edits"][-1]["layers"] == [0, 1, 2]
    off = direction_offsets(d, NUM_WS, "-1")
    assert off.shape == (NUM_WS, W_DIM) and off[:-1].abs().sum() == 0


def test_latents_file_roundtrip(tmp_path):
    lat = _lat(3, wplus=True)
    save_latents(lat, tmp_path / "l.pt")
    back = load_latents(tmp_path / "l.pt", NUM_WS, W_DIM)
    assert torch.equal(back.ws, lat.ws) and back.is_wplus and back.info["seeds"] == [100, 101, 102]
    torch.save(torch.randn(2, W_DIM), tmp_path / "w.pt")
    w = load_latents(tmp_path / "w.pt", NUM_WS, W_DIM)
    assert w.ws.shape == (2, NUM_WS, W_DIM) and not w.is_wplus
    with pytest.raises(ValueError, match="generator needs"):
        load_latents(tmp_path / "l.pt", 14, W_DIM)
