"""NVIDIA network pickles: safe reading (never executes module_src, refuses foreign globals),
round trip through a test-side writer, and clear errors for everything unreadable."""
import os

import pytest
import torch

from conftest import randomize, tiny_config
from nada_ops.stylegan.formats import CheckpointError
from nada_ops.stylegan.formats.nvidia_pkl import read_nvidia_pickle
from nada_ops.stylegan.networks import Generator, z_from_seeds
from writers.nvidia_pickle import (
    write_forbidden_global_pickle, write_malformed_stylegan3_pickle, write_nvidia_pickle, write_tf_era_pickle,
)

SEEDS = [0, 1, 2]


def _cfg(**kw):
    return tiny_config(conv_clamp=256, **kw)


def _images(G, c=None, psi=0.7):
    with torch.no_grad():
        return G(z_from_seeds(SEEDS, G.cfg.z_dim), c, truncation_psi=psi, noise_mode="const")


def _load(result):
    G = Generator(result.cfg).eval()
    G.load_state_dict(result.state_dict, strict=True)
    return G


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "module_src_was_executed"
    yield m
    assert not m.exists(), "module_src (or a forbidden global) was executed"


@pytest.fixture(scope="module")
def G_uncond():
    torch.manual_seed(1)
    return randomize(Generator(_cfg()).eval(), seed=1)


@pytest.mark.parametrize("init_style,protocol", [("ada", 4), ("sg3", 3), ("ada", 2)])
def test_roundtrip_identical_images(tmp_path, marker, G_uncond, init_style, protocol):
    p = write_nvidia_pickle(G_uncond, tmp_path / "net.pkl", marker, init_style=init_style, protocol=protocol)
    r = read_nvidia_pickle(p)
    assert r.format == "nvidia-pkl" and r.w_avg_in_checkpoint
    assert r.cfg == G_uncond.cfg
    assert set(r.state_dict) == set(G_uncond.state_dict())
    assert torch.equal(_images(_load(r)), _images(G_uncond))
    assert r.provenance["network"] == "G_ema"
    assert r.provenance["other_keys_in_file"] == ["D", "G", "augment_pipe", "training_set_kwargs"]
    assert r.provenance["training_set_kwargs"]["resolution"] == 32


def test_roundtrip_class_conditional(tmp_path, marker):
    torch.manual_seed(2)
    G = randomize(Generator(_cfg(c_dim=4)).eval(), seed=2)
    r = read_nvidia_pickle(write_nvidia_pickle(G, tmp_path / "cond.pkl", marker))
    assert r.cfg.c_dim == 4 and r.cfg == G.cfg
    c = torch.nn.functional.one_hot(torch.tensor([0, 3, 1]), 4).float()
    assert torch.equal(_images(_load(r), c), _images(G, c))


def test_network_choice_and_missing_g_ema(tmp_path, marker, G_uncond):
    p = write_nvidia_pickle(G_uncond, tmp_path / "no_ema.pkl", marker, keys=("G", "D"))
    with pytest.raises(CheckpointError, match=r"no 'G_ema'.*network='G'") as e:
        read_nvidia_pickle(p)
    assert "no_ema.pkl" in str(e.value)
    r = read_nvidia_pickle(p, network="G")
    assert torch.equal(_images(_load(r)), _images(G_uncond))
    with pytest.raises(CheckpointError, match="Discriminator"):
        read_nvidia_pickle(p, network="D")


def test_missing_w_avg_is_flagged(tmp_path, marker, G_uncond):
    p = write_nvidia_pickle(G_uncond, tmp_path / "nowavg.pkl", marker, drop=["mapping.w_avg"], w_avg_beta=None)
    r = read_nvidia_pickle(p)
    assert not r.w_avg_in_checkpoint
    assert torch.count_nonzero(r.state_dict["mapping.w_avg"]) == 0


def test_forbidden_global_refused(tmp_path, marker, G_uncond):
    p = write_forbidden_global_pickle(G_uncond, tmp_path / "evil.pkl", marker)
    with pytest.raises(CheckpointError, match=r"refuses to load global 'os\.system'") as e:
        read_nvidia_pickle(p)
    assert "evil.pkl" in str(e.value)
    p = write_forbidden_global_pickle(G_uncond, tmp_path / "evil2.pkl", marker, func=("builtins", "exec"))
    with pytest.raises(CheckpointError, match=r"builtins\.exec"):
        read_nvidia_pickle(p)


def test_malformed_stylegan3_refused(tmp_path, marker):
    """StyleGAN3 pickles are read (tests/test_stylegan3.py); one that only looks like StyleGAN3
    (two made-up layers) is refused with what does not fit."""
    p = write_malformed_stylegan3_pickle(tmp_path / "sg3.pkl", marker)
    with pytest.raises(CheckpointError, match=r"unsupported StyleGAN3 architecture: .*num_critical") as e:
        read_nvidia_pickle(p)
    assert "sg3.pkl" in str(e.value)


def test_tf_era_pickle_refused(tmp_path):
    p = write_tf_era_pickle(tmp_path / "tf.pkl")
    with pytest.raises(CheckpointError, match=r"TensorFlow.*legacy\.py"):
        read_nvidia_pickle(p)


def test_non_skip_architecture_refused(tmp_path, marker, G_uncond):
    p = write_nvidia_pickle(G_uncond, tmp_path / "resnet.pkl", marker, architecture="resnet")
    with pytest.raises(CheckpointError, match=r"architecture 'resnet' is not supported"):
        read_nvidia_pickle(p)


def test_shape_mismatch_and_missing_tensor_name_the_key(tmp_path, marker, G_uncond):
    key = "synthesis.b16.conv1.weight"
    p = write_nvidia_pickle(G_uncond, tmp_path / "bad.pkl", marker, override={key: torch.zeros(32, 32, 1, 1)})
    with pytest.raises(CheckpointError, match=rf"'{key}' has shape \[32, 32, 1, 1\], expected \[32, 32, 3, 3\]"):
        read_nvidia_pickle(p)
    p = write_nvidia_pickle(G_uncond, tmp_path / "miss.pkl", marker, drop=["synthesis.b8.torgb.bias"])
    with pytest.raises(CheckpointError, match=r"missing tensor 'synthesis\.b8\.torgb\.bias'"):
        read_nvidia_pickle(p)


def test_broken_files(tmp_path, marker, G_uncond):
    good = write_nvidia_pickle(G_uncond, tmp_path / "good.pkl", marker).read_bytes()
    cases = {
        "empty.pkl": b"",
        "truncated.pkl": good[: len(good) // 2],
        "cut_header.pkl": good[:3],
        "random.pkl": bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).tolist()),
        "random_proto.pkl": b"\x80\x04" + bytes(range(256)) * 4,
        "text.pkl": b"this is not a pickle\n",
        "zip.pkl": b"PK\x03\x04" + b"\0" * 100,
        "int.pkl": b"\x80\x04K\x07.",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            read_nvidia_pickle(tmp_path / name)
        assert name in str(e.value), (name, str(e.value))
    for missing in [tmp_path / "nope.pkl", tmp_path]:
        with pytest.raises(CheckpointError):
            read_nvidia_pickle(missing)


def test_many_random_corruptions_never_crash(tmp_path, marker, G_uncond):
    good = bytearray(write_nvidia_pickle(G_uncond, tmp_path / "good.pkl", marker).read_bytes())
    g = torch.Generator().manual_seed(3)
    p = tmp_path / "corrupt.pkl"
    for _ in range(40):
        data = bytearray(good)
        for pos in torch.randint(0, len(data), (8,), generator=g).tolist():
            data[pos] = int(torch.randint(0, 256, (1,), generator=g))
        p.write_bytes(bytes(data))
        try:
            read_nvidia_pickle(p)
        except CheckpointError as e:
            assert "corrupt.pkl" in str(e)
    assert not os.path.exists(marker)
