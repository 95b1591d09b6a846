"""Nodes for inversion, latent tools, model interpolation and transition rendering, called as
ComfyUI calls them: inside torch.inference_mode(), with inputs made by upstream nodes."""
import json
import os
import re

import numpy as np
import pytest
import torch

from conftest import ROOT, randomize, tiny_config
from nada_ops.stylegan.io import save_generator
from nada_ops.stylegan.networks import Generator, estimate_w_avg
from nada_ops.video import probe_video


pytestmark = pytest.mark.usefixtures("one_thread")


MY_NODES = ["NADAInvertImage", "NADAInterpolateModels", "NADARenderTransition", "NADALatentInterpolate",
            "NADALatentPick", "NADAApplyDirection", "NADALoadLatentDirection"]
WIDGET_T = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def _tiny(seed, **kw):
    torch.manual_seed(seed)
    G = randomize(Generator(tiny_config(**kw)).eval(), seed)
    with torch.no_grad():
        G.mapping.w_avg.copy_(estimate_w_avg(G, 1024))
    return G


@pytest.fixture
def env(comfy):
    save_generator(_tiny(0), comfy.stylegan_dir / "a.safetensors")
    save_generator(_tiny(1), comfy.stylegan_dir / "b.safetensors")
    save_generator(_tiny(2), comfy.stylegan_dir / "c.safetensors")
    save_generator(_tiny(3, img_resolution=64), comfy.stylegan_dir / "big.safetensors")
    comfy.nodes = comfy.pack.NODE_CLASS_MAPPINGS
    return comfy


def _load(env, name):
    return env.nodes["NADALoadStyleGAN"]().load(name, "cpu", "fp32")[0]


def _sd(handle):
    return {k: v.clone() for k, v in handle.G.state_dict().items()}


def _unchanged(handle, snap):
    return all(torch.equal(v, snap[k]) for k, v in handle.G.state_dict().items())


def test_registered_with_tooltips_and_prefixed_types(env):
    for nid in MY_NODES:
        cls = env.nodes[nid]
        assert cls.CATEGORY.startswith("StyleGAN-NADA") and cls.DESCRIPTION
        for key, part in cls.INPUT_TYPES().items():
            if key == "hidden":
                continue
            for name, spec in part.items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{nid}.{name} has no tooltip"
        for t in cls.RETURN_TYPES:
            assert t in ("IMAGE", "STRING", "INT", "VIDEO") or t.startswith("NADA_")
        assert os.path.exists(ROOT / "web" / "docs" / f"{nid}.md"), f"no help page for {nid}"


def test_invert_node_in_inference_mode(env):
    m = env.nodes
    with torch.inference_mode():
        gen = _load(env, "a.safetensors")
        (lat,) = m["NADASampleW"]().sample(gen, seed=4, batch_size=2, truncation_psi=0.7)
        (photo,) = m["NADASynthesize"]().render(gen, lat, "const", 2)
        snap, photo_before = _sd(gen), photo.clone()
        latents, recon, info = m["NADAInvertImage"]().invert(
            gen, photo, steps=40, mode="W", learning_rate=0.1, perceptual_weight=1.0, optimize_noise=False,
            search_seed=0, preview_every=10)
    assert latents.ws.shape == (2, gen.cfg.num_ws, gen.cfg.w_dim) and not latents.is_wplus
    assert recon.shape == photo.shape and 0 <= float(recon.min()) and float(recon.max()) <= 1
    start = [float(x) for x in re.search(r"start: (.*)", info).group(1).split(",")]
    final = [float(x) for x in re.search(r"final: (.*)", info).group(1).split(",")]
    assert all(f < 0.5 * s for s, f in zip(start, final)), info
    assert _unchanged(gen, snap) and torch.equal(photo, photo_before)
    previews = [p for p in env.progress if p[2] is not None]
    assert len(previews) == 4 and previews[0][2][0] == "JPEG"
    # the latents feed the other nodes (here: render them with another generator)
    with torch.inference_mode():
        (img_b,) = m["NADASynthesize"]().render(_load(env, "b.safetensors"), latents, "const", 2)
    assert img_b.shape == (2, 32, 32, 3)


def test_invert_node_with_clip_and_wplus(env):
    from nada_ops.clip.ensemble import ClipEnsemble
    from nada_ops.clip.tiny import tiny_clip_model
    m = env.nodes
    with torch.inference_mode():      # CLIP loaded by an upstream node: inference tensors
        clip = ClipEnsemble([(tiny_clip_model(image_size=32), 1.0)])
        gen = _load(env, "a.safetensors")
        photo = torch.rand(1, 40, 48, 3)   # non-square: center-cropped
        (init,) = m["NADASampleW"]().sample(gen, seed=1, batch_size=1, truncation_psi=0.5)
        latents, recon, info = m["NADAInvertImage"]().invert(
            gen, photo, steps=8, mode="W+", learning_rate=0.05, perceptual_weight=0.5, optimize_noise=True,
            search_seed=3, clip=clip, init_latents=init)
    assert latents.is_wplus and recon.shape == (1, 32, 32, 3)
    assert latents.info["perceptual"] == "clip" and latents.info["optimize_noise"] is True


def test_invert_node_interrupt(env):
    m = env.nodes
    with torch.inference_mode():
        gen = _load(env, "a.safetensors")
        photo = torch.rand(1, 32, 32, 3)
        env.interrupt = True
        with pytest.raises(env.mm.InterruptProcessingException):
            m["NADAInvertImage"]().invert(gen, photo, 50, "W", 0.1, 1.0, False, 0)
        env.interrupt = True
        latents, recon, info = m["NADAInvertImage"]().invert(gen, photo, 50, "W", 0.1, 1.0, False, 0,
                                                             on_interrupt="keep best so far")
    assert "stopped early" in info and "1/50 steps" in info
    assert latents.info["stopped_early"] is True and recon.shape == (1, 32, 32, 3)


def test_interpolate_models_node(env):
    m = env.nodes
    with torch.inference_mode():
        a, b = _load(env, "a.safetensors"), _load(env, "b.safetensors")
        sa, sb = _sd(a), _sd(b)
        (g0,) = m["NADAInterpolateModels"]().blend(a, b, 0.0)
        (g1,) = m["NADAInterpolateModels"]().blend(a, b, 1.0)
        (gh,) = m["NADAInterpolateModels"]().blend(a, b, 0.5)
        assert all(torch.equal(v, sa[k]) for k, v in g0.G.state_dict().items())
        assert all(torch.equal(v, sb[k]) for k, v in g1.G.state_dict().items())
        k = "synthesis.b8.conv1.weight"
        assert torch.allclose(gh.G.state_dict()[k], (sa[k] + sb[k]) / 2, atol=1e-6)
        assert _unchanged(a, sa) and _unchanged(b, sb)
        assert gh.G is not a.G and gh.provenance["history"][-1]["op"] == "interpolate"
        assert gh.provenance["history"][-1]["t"] == 0.5 and "history" not in a.provenance
        assert "interpolate" in gh.describe()
        # the blend is a usable generator downstream
        (lat,) = m["NADASampleW"]().sample(gh, seed=0, batch_size=1, truncation_psi=0.7)
        (img,) = m["NADASynthesize"]().render(gh, lat, "const", 1)
        assert img.shape == (1, 32, 32, 3)
        big = _load(env, "big.safetensors")
        with pytest.raises(ValueError, match=r"32px.*64px.*img_resolution"):
            m["NADAInterpolateModels"]().blend(a, big, 0.5)
    # an interpolated generator (inference tensors) can still be inverted against
    with torch.inference_mode():
        latents, _, _ = m["NADAInvertImage"]().invert(gh, torch.rand(1, 32, 32, 3), 3, "W", 0.1, 1.0, False, 0)
    assert latents.ws.shape[0] == 1


def test_render_transition_node(env):
    m = env.nodes
    with torch.inference_mode():
        a, b, c = (_load(env, f"{x}.safetensors") for x in "abc")
        snaps = [_sd(h) for h in (a, b, c)]
        (lat,) = m["NADASampleW"]().sample(a, seed=0, batch_size=2, truncation_psi=0.7)
        ws_before = lat.ws.clone()
        out = m["NADARenderTransition"]().render(a, b, lat, frames=5, fps=10.0, easing="ease_in_out", loop=False,
                                                 save_format="mp4", filename_prefix="nada/tr", generator_c=c,
                                                 grid_columns=2)
        frames, path, video = out["result"]
        assert frames.shape == (5, 32, 64, 3) and frames.dtype == torch.float32
        assert video.get_stream_source() == path      # VIDEO for core Save Video: the saved MP4 itself
        (first,) = m["NADASynthesize"]().render(a, lat, "const", 2)
        (last,) = m["NADASynthesize"]().render(c, lat, "const", 2)
    assert torch.allclose(frames[0, :, :32], first[0], atol=1 / 255 + 1e-6)
    assert torch.allclose(frames[-1, :, 32:], last[1], atol=1 / 255 + 1e-6)
    assert path.startswith(str(env.output)) and path.endswith("tr_00001.mp4")
    info = probe_video(path)
    assert (info["frames"], info["width"], info["height"]) == (5, 64, 32)
    ui = out["ui"]
    assert ui["images"][0] == {"filename": "tr_00001.mp4", "subfolder": "nada", "type": "output"}
    assert all(_unchanged(h, s) for h, s in zip((a, b, c), snaps)) and torch.equal(lat.ws, ws_before)
    assert any(p[2] is not None for p in env.progress)


def test_render_transition_with_motion_and_formats(env):
    m = env.nodes
    ddir = env.models_dir / "latent_directions"
    ddir.mkdir(parents=True, exist_ok=True)
    np.save(ddir / "smile.npy", np.random.RandomState(0).randn(1, 32).astype(np.float32))
    with torch.inference_mode():
        a, b = _load(env, "a.safetensors"), _load(env, "b.safetensors")
        (lat,) = m["NADASampleW"]().sample(a, seed=0, batch_size=1, truncation_psi=0.7)
        (end,) = m["NADASampleW"]().sample(a, seed=9, batch_size=1, truncation_psi=0.7)
        (d, _) = m["NADALoadLatentDirection"]().load("smile.npy")
        out = m["NADARenderTransition"]().render(a, b, lat, 4, 8.0, "linear", True, "gif", "loop",
                                                 latents_end=end, direction=d, direction_strength=2.0,
                                                 direction_layers="0-3", noise_mode="random",
                                                 return_frames=False)
        frames, path, video = out["result"]
        assert frames.shape == (1, 32, 32, 3)
        assert probe_video(path)["frames"] == 4
        vinfo = probe_video(video.get_stream_source())      # VIDEO: an H.264 MP4 in the temp folder
        assert vinfo["frames"] == 4 and vinfo["codec"] == "h264"
        none = m["NADARenderTransition"]().render(a, b, lat, 3, 8.0, "linear", False, "none", "x")
        assert none["result"][1] == "" and none["result"][0].shape[0] == 3 and none["ui"] == {}
        big = _load(env, "big.safetensors")
        with pytest.raises(ValueError, match="img_resolution"):
            m["NADARenderTransition"]().render(a, big, lat, 3, 8.0, "linear", False, "none", "x")
    assert not [f for f in os.listdir(env.output) if f.startswith(".tmp")]
    assert not [f for _, _, fs in os.walk(env.base / "temp") for f in fs if f.startswith(".tmp")]


def test_latent_nodes(env):
    m = env.nodes
    ddir = env.models_dir / "latent_directions"
    ddir.mkdir(parents=True, exist_ok=True)
    np.save(ddir / "age.npy", np.ones((8, 32), np.float32))
    np.save(ddir / "bad.npy", np.ones((3, 3, 3), np.float32))
    assert m["NADALoadLatentDirection"].INPUT_TYPES()["required"]["direction_file"][0] == ["age.npy", "bad.npy"]
    with torch.inference_mode():
        a = _load(env, "a.safetensors")
        (lat,) = m["NADASampleW"]().sample(a, seed=0, batch_size=4, truncation_psi=0.7)
        before = lat.ws.clone()
        (p,) = m["NADALatentPick"]().run(lat, "-1,0")
        assert torch.equal(p.ws, lat.ws[[3, 0]]) and p.info["seeds"] == [3, 0]
        (q,) = m["NADALatentPick"]().run(lat, "1-2")
        (i,) = m["NADALatentInterpolate"]().run(p, q, 3, "slerp", "pair", generator=a)
        assert i.ws.shape[0] == 6 and torch.equal(i.ws[0], p.ws[0]) and torch.equal(i.ws[5], q.ws[1])
        (j,) = m["NADALatentInterpolate"]().run(p, q, 2, "lerp", "step")
        assert torch.equal(j.ws[1], p.ws[1]) and torch.equal(j.ws[2], q.ws[0])
        (d, info) = m["NADALoadLatentDirection"]().load("age.npy")
        assert "per W+ entry" in info
        (e,) = m["NADAApplyDirection"]().run(lat, d, 1.5, layers="2,3")
        assert torch.allclose(e.ws[:, 2:4], before[:, 2:4] + 1.5) and torch.equal(e.ws[:, 4:], before[:, 4:])
        assert e.is_wplus and torch.equal(lat.ws, before)
        with pytest.raises(ValueError, match=r"bad\.npy.*shape \[3, 3, 3\]"):
            m["NADALoadLatentDirection"]().load("bad.npy")
