"""StyleGAN3 through the rest of the pack: NADA training with all / manual / adaptive layer
freezing, presets, weight interpolation, transition videos, inversion and the command line.
Generators: NVIDIA's StyleGAN3 design with 4 layers (6 W+ entries) at 32 px, 8 channels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clip_helpers import tiny_guidance
from nada_ops.cli import main
from nada_ops.interpolate import blend_generators
from nada_ops.nada.schedule import PRESETS, FreezeSchedule, group_indices, trainable_layer_names
from nada_ops.nada.trainer import AdaptSettings, adapt
from nada_ops.stylegan.config import ArchitectureError, ws_layer_map
from nada_ops.stylegan.io import load_generator, save_generator
from nada_ops.stylegan.sampling import sample_latents, synthesize
from nada_ops.video import render_transition
from sg3_helpers import tiny_sg3

pytestmark = pytest.mark.usefixtures("one_thread")
MINI = dict(num_layers=4, num_critical=1, margin_size=2)
FAST = dict(iterations=2, preview_every=0, batch_size=2, mixing_prob=0.5)


@pytest.fixture(scope="module")
def G():
    return tiny_sg3("t", seed=5, **MINI)


@pytest.fixture(scope="module")
def guidance():
    return tiny_guidance()


def _sd(G):
    return {k: v.detach().clone() for k, v in G.state_dict().items()}


def _changed_layers(G_new, before):
    return {k.rsplit(".", 1)[0] for k, v in G_new.state_dict().items() if not torch.equal(v, before[k])}


def test_all_layers_train_and_frozen_parts_stay(G, guidance):
    before = _sd(G)
    r = adapt(G, guidance, AdaptSettings(**FAST), FreezeSchedule())
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items()), "the input generator was modified"
    names = G.cfg.layer_names()
    changed = {k for k, v in r.G.state_dict().items() if not torch.equal(v, before[k])}
    for k in changed:      # only conv weights and biases of L0..L(n-1) train
        assert k.endswith((".weight", ".bias")) and ".affine." not in k and not k.startswith("mapping."), k
        assert not k.startswith(("synthesis.input.", f"synthesis.{names[-1]}.")), k
    assert {k.rsplit(".", 1)[0] for k in changed} == {f"synthesis.{n}" for n in names[:-1]}
    assert r.steps_done == 2 and all(np.isfinite(r.losses))


def test_manual_and_adaptive_freezing_use_the_stylegan3_map(G, guidance):
    before = _sd(G)
    r = adapt(G, guidance, AdaptSettings(**FAST), FreezeSchedule(mode="manual", indices=(2, 5)))
    assert _changed_layers(r.G, before) == {ws_layer_map(G.cfg)[2][0]}          # 5 = ToRGB: frozen
    r = adapt(G, guidance, AdaptSettings(**FAST), FreezeSchedule(mode="adaptive", k=2, n_w=2))
    chosen = set()
    for idx in r.layer_history:
        assert len(idx) == 2 and all(0 <= i < G.cfg.num_ws for i in idx)
        chosen |= set(idx)
    assert _changed_layers(r.G, before) <= set(trainable_layer_names(G.cfg, chosen))


def test_presets_say_what_fits_stylegan3(tiny_cfg):
    from nada_ops.stylegan.config import StyleGAN3Config
    assert all("stylegan3" in p for p in PRESETS.values())
    name = "StyleGAN3: fine layers only (keep pose and geometry)"
    with pytest.raises(ValueError, match="is for stylegan3 generators, this one is stylegan2"):
        FreezeSchedule(mode="manual", indices=(1,), preset=name).validate(tiny_cfg)
    cfg = StyleGAN3Config(img_resolution=256)          # NVIDIA's design (no network is built)
    fine = group_indices(cfg, ["fine"])
    assert fine == list(range(8, 16))                   # layers L7.. (cutoff >= 22.6) and ToRGB
    FreezeSchedule(mode="manual", indices=tuple(fine), preset=name).validate(cfg)
    assert trainable_layer_names(cfg, fine) == [f"synthesis.{n}" for n in cfg.layer_names()[7:14]]


def test_interpolation_and_transition_video(G, tmp_path):
    B = tiny_sg3("t", seed=6, **MINI)
    mid = blend_generators(G, B, 0.5)
    for k, v in mid.state_dict().items():
        assert torch.allclose(v, torch.lerp(G.state_dict()[k], B.state_dict()[k], 0.5)), k
    lat = sample_latents(G, [0, 1], 0.7)
    frames = render_transition([G, B], lat.ws, 3, easing="linear", collect=True, cols=2)
    assert frames.shape[0] == 3
    ends = [synthesize(g, lat.ws) for g in (G, B)]
    for f, imgs in ((frames[0], ends[0]), (frames[-1], ends[1])):
        want = ((imgs.clamp(-1, 1) + 1) * 127.5).round() / 255
        assert (f[:, :32].permute(2, 0, 1) - want[0]).abs().max() < 1 / 255 + 1e-6
    from conftest import randomize, tiny_config
    from nada_ops.stylegan.networks import Generator
    with pytest.raises(ArchitectureError, match="different kinds of networks.*stylegan3.*stylegan2"):
        blend_generators(G, randomize(Generator(tiny_config())), 0.5)


def test_inversion_runs_on_stylegan3(G):
    from nada_ops.inversion import InversionSettings, invert
    target = synthesize(G, sample_latents(G, [9], 1.0).ws)
    res = invert(G, target, InversionSettings(steps=3, perceptual_weight=0.0, optimize_noise=True, mode="w+"))
    assert res.latents.ws.shape == (1, G.cfg.num_ws, G.cfg.w_dim)


def test_command_line(G, tmp_path, capsys, tiny_G):
    from writers.nvidia_pickle import write_stylegan3_pickle
    pkl = write_stylegan3_pickle(G, tmp_path / "sg3.pkl", tmp_path / "marker", keys=("G_ema",))
    assert main(["info", str(pkl)]) == 0
    out = capsys.readouterr().out
    assert "StyleGAN3 config T" in out and "num_ws (W+ entries): 6" in out and "L0_20_8" in out
    png = tmp_path / "grid.png"
    assert main(["sample", "--generator", str(pkl), "--seeds", "0-1", "--rotate", "30", "--translate", "0.1,-0.05",
                 "--out", str(png)]) == 0 and png.exists()
    g2 = tmp_path / "sg2.safetensors"
    save_generator(tiny_G, g2)
    assert main(["sample", "--generator", str(g2), "--seeds", "0", "--rotate", "10", "--out", str(png)]) == 1
    assert "StyleGAN3" in capsys.readouterr().err
    b = tmp_path / "b.safetensors"
    save_generator(tiny_sg3("t", seed=7, **MINI), b)
    blend = tmp_path / "blend.safetensors"
    assert main(["interpolate-models", "--a", str(pkl), "--b", str(b), "--t", "0.25", "--out", str(blend)]) == 0
    assert load_generator(blend).family == "stylegan3"
    assert not (tmp_path / "marker").exists()
