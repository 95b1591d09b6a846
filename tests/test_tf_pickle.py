"""TensorFlow-era StyleGAN2 pickles (the original release: FFHQ / LSUN car, cat, church, horse
config-f) read without TensorFlow and without running the source code stored in them. Files are
written by tests/writers/tf_pickle.py in the TensorFlow layout (see there); the comparison with
NVIDIA's own converter (stylegan2-ada-pytorch's legacy.py) was run locally (see the report)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import randomize, tiny_config
from nada_ops.stylegan.formats import CheckpointError
from nada_ops.stylegan.formats.nvidia_tf_pkl import read_nvidia_tf_pickle
from nada_ops.stylegan.io import load_generator
from nada_ops.stylegan.networks import Generator, z_from_seeds
from writers.tf_pickle import tf_static_kwargs, write_tf_stylegan2_pickle

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "EXECUTED"


def _G(**kw):
    torch.manual_seed(1)
    return randomize(Generator(tiny_config(**kw)).eval(), 3)


@pytest.mark.parametrize("protocol", [2, 4])
def test_tf_pickle_gives_the_same_generator(tmp_path, marker, protocol):
    G = _G()
    p = write_tf_stylegan2_pickle(G, tmp_path / "stylegan2-church-config-f.pkl", marker, protocol=protocol)
    h = load_generator(p)                       # found by content: the NVIDIA reader hands it over
    assert h.source_format == "nvidia-tf-pkl" and not marker.exists()
    sd = G.state_dict()
    for k, v in h.G.state_dict().items():     # (style biases are stored minus 1: float32 rounding)
        assert torch.allclose(v, sd[k], rtol=0, atol=1e-6), k
    z = z_from_seeds([0, 1], 32)
    assert torch.allclose(h.G(z, truncation_psi=0.7), G(z, truncation_psi=0.7), atol=1e-6)
    assert h.provenance["tf_build_func"] == "G_main" and "w_avg" not in h.provenance   # dlatent_avg read


def test_conditional_tf_pickle_with_label_embedding(tmp_path, marker):
    G = _G(c_dim=5)
    p = write_tf_stylegan2_pickle(G, tmp_path / "c.pkl", marker)
    res = read_nvidia_tf_pickle(p)
    assert res.cfg.c_dim == 5 and torch.equal(res.state_dict["mapping.embed.weight"], G.state_dict()["mapping.embed.weight"])


@pytest.mark.parametrize("how, message", [
    (dict(static_kwargs=dict(tf_static_kwargs(tiny_config()), architecture="resnet")), "architecture='resnet'"),
    (dict(static_kwargs=dict(tf_static_kwargs(tiny_config()), some_new_option=1)), "unknown TensorFlow build arg"),
    (dict(drop=("synthesis/8x8/Conv1/bias",)), "'synthesis/8x8/Conv1/bias' .* is missing"),
    (dict(extra_variables=(("synthesis/ToRGB_lod0/weight", np.zeros((1, 1, 16, 3), np.float32)),)), "'orig'"),
    (dict(extra_variables=(("mapping/LabelConcat/weight", np.zeros((5, 32), np.float32)),)), "LabelConcat"),
    (dict(static_kwargs=dict(tf_static_kwargs(tiny_config()), fmap_max=16)), "the architecture in the file's build"),
    (dict(static_kwargs=dict(tf_static_kwargs(tiny_config()), fmap_max=64)), "holds only .* bytes"),
    (dict(version=3), "too old"),
    (dict(extra_variables=(("synthesis/4x4/Conv/bias", np.zeros(32, np.int32)),)), "floating point"),
])
def test_tf_pickles_we_cannot_read_are_refused_clearly(tmp_path, marker, how, message):
    p = write_tf_stylegan2_pickle(_G(), tmp_path / "bad.pkl", marker, **how)
    with pytest.raises(CheckpointError, match=message) as e:
        load_generator(p)
    assert "bad.pkl" in str(e.value) and not marker.exists()


def test_foreign_globals_in_a_tf_pickle_are_refused(tmp_path, marker):
    from writers.nvidia_pickle import Call, Global
    p = write_tf_stylegan2_pickle(_G(), tmp_path / "evil.pkl", marker,
                                  extra_variables=(("synthesis/x", Call(Global("os", "system"), ("touch " + str(marker),))),))
    with pytest.raises(CheckpointError, match="refuses to load global 'os.system'"):
        load_generator(p)
    assert not marker.exists()


def test_stylegan1_and_the_papers_configs_a_to_d_are_refused(tmp_path, marker):
    p = write_tf_stylegan2_pickle(_G(), tmp_path / "sg1.pkl", marker, build_func="G_style")
    with pytest.raises(CheckpointError, match="only StyleGAN2's G_main"):
        load_generator(p)
    assert not marker.exists()
