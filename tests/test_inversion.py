import pytest
import torch
from PIL import Image

from conftest import randomize, tiny_config
from nada_ops.cli import main
from nada_ops.inversion import (ClipFeatureDistance, FeatureDistance, InversionSettings, invert, learning_rate,
                                noise_regularization, prepare_target)
from nada_ops.latent_tools import load_latents
from nada_ops.stylegan.io import save_generator
from nada_ops.stylegan.networks import Generator, estimate_w_avg, z_from_seeds


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    g = randomize(Generator(tiny_config()).eval())
    with torch.no_grad():   # a realistic average latent (randomize() puts noise there)
        g.mapping.w_avg.copy_(estimate_w_avg(g, 2048))
    return g.requires_grad_(False)


@pytest.fixture(scope="module")
def target(G):
    with torch.no_grad():
        ws = G.map(z_from_seeds([1, 2], G.cfg.z_dim), truncation_psi=0.7)
        return ws, G.synthesis(ws)


def _state(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def test_w_inversion_recovers_a_generated_image(G, target):
    ws_true, img = target
    before, img_before = _state(G), img.clone()
    r = invert(G, img, InversionSettings(steps=100, mode="w", lr=0.1))
    assert r.latents.ws.shape == (2, G.num_ws, G.cfg.w_dim) and not r.latents.is_wplus
    # W: every W+ entry is the same w
    assert torch.equal(r.latents.ws, r.latents.ws[:, :1].expand_as(r.latents.ws))
    assert (r.mse_final < 0.2 * r.mse_start).all(), (r.mse_start, r.mse_final)
    assert r.loss_history[-1] < 0.2 * r.loss_history[0]
    # the reconstruction is what the generator makes of the returned latents
    with torch.no_grad():
        assert torch.allclose(G.synthesis(r.latents.ws), r.images, atol=1e-5)
    assert r.steps_done == 100 and not r.stopped_early
    assert r.latents.info["op"] == "invert" and len(r.latents.info["mse_final"]) == 2
    # nothing was modified
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())
    assert torch.equal(img, img_before)


def test_wplus_inversion_and_init(G, target):
    _, img = target
    r = invert(G, img, InversionSettings(steps=60, mode="w+", lr=0.1))
    assert r.latents.is_wplus
    assert (r.mse_final < 0.3 * r.mse_start).all()
    # starting from a good solution keeps it good (and accepts W+ init in W mode)
    r2 = invert(G, img, InversionSettings(steps=5, mode="w", lr=0.01, initial_w_noise=0.0),
                init_ws=target[0])
    assert (r2.mse_start < 1e-8).all() and (r2.mse_final < 1e-3).all()


def test_noise_optimization_with_clip_perceptual(G, target):
    from nada_ops.clip.tiny import tiny_clip_model
    _, img = target
    clip = tiny_clip_model(image_size=32)
    calls = []

    class Spy(ClipFeatureDistance):
        def features(self, x):
            calls.append(x.requires_grad)
            return super().features(x)
    r = invert(G, img[:1], InversionSettings(steps=25, optimize_noise=True, perceptual_weight=1.0),
               perceptual=Spy(clip))
    assert calls[0] is False and any(calls[1:])          # target once (no grad), then every step with grad
    assert len(r.noises) == len(G.synthesis.noise_layers())
    for nz in r.noises:                                   # maps renormalised every step
        assert abs(float(nz.mean())) < 1e-3 and abs(float(nz.std()) - 1) < 0.05
    assert r.mse_final[0] < r.mse_start[0]
    assert r.latents.info["perceptual"] == "clip"
    # CLIP distance: zero for identical images, positive otherwise, differentiable
    fd = ClipFeatureDistance(clip)
    with torch.no_grad():
        f = fd.features(img)
        assert torch.all(fd.distance(f, f) < 1e-5)
        assert torch.all(fd.distance(fd.features(img.flip(0)), f) > 1e-3)


def test_custom_feature_distance_plugs_in(G, target):
    class Blur(FeatureDistance):
        name = "blur"

        def features(self, x):
            return torch.nn.functional.avg_pool2d(x, 4)

        def distance(self, a, b):
            return (a - b).square().mean(dim=[1, 2, 3])
    r = invert(G, target[1], InversionSettings(steps=10, perceptual_weight=5.0), perceptual=Blur())
    assert r.latents.info["perceptual"] == "blur"


def test_interrupt_returns_best_so_far(G, target):
    _, img = target

    class Stop(Exception):
        pass

    def progress(step, total, preview):
        assert total == 200
        if step == 15:
            raise Stop()
    r = invert(G, img, InversionSettings(steps=200), progress=progress)
    assert r.stopped_early and isinstance(r.stop_exception, Stop) and r.steps_done == 15
    assert (r.mse_final <= r.mse_start).all()
    assert r.latents.info["stopped_early"] is True


def test_previews_and_inference_mode_generator(G, target):
    _, img = target
    with torch.inference_mode():      # a generator and an image made inside ComfyUI's inference mode
        G_inf = Generator(G.cfg)
        G_inf.load_state_dict(G.state_dict())
        G_inf.requires_grad_(False)
        img_inf = img.clone()
    previews = []
    r = invert(G_inf, img_inf, InversionSettings(steps=6, preview_every=3),
               progress=lambda s, t, p: previews.append(p))
    assert [p is not None for p in previews] == [False, False, True, False, False, True]
    assert previews[2].size == (64, 32)   # target | reconstruction
    assert r.steps_done == 6


def test_schedules_and_regularizer():
    s = InversionSettings(steps=100, lr=0.1)
    assert learning_rate(0, 100, s) == 0
    assert learning_rate(50, 100, s) == pytest.approx(0.1)
    assert learning_rate(99, 100, s) < 0.001
    g = torch.Generator().manual_seed(0)
    white = [torch.randn(2, 1, 16, 16, generator=g)]
    smooth = [torch.ones(2, 1, 16, 16)]
    assert noise_regularization(white).shape == (2,)
    assert (noise_regularization(smooth) > 100 * noise_regularization(white)).all()
    with pytest.raises(ValueError, match="mode"):
        InversionSettings(mode="z").validate()


def test_prepare_target_crops_and_resizes():
    img = torch.full([1, 3, 40, 80], -1.0)
    img[..., 20:60] = 1.0       # the central square is white
    t = prepare_target(img, 32)
    assert t.shape == (1, 3, 32, 32) and torch.allclose(t, torch.ones_like(t))
    s = prepare_target(img, 32, crop="stretch")
    assert s[..., 0].mean() < -0.9 and s[..., 16].mean() > 0.9


def test_cli_invert(tmp_path, G, target):
    g = tmp_path / "g.safetensors"
    save_generator(G, g)
    _, img = target
    arr = ((img[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    Image.fromarray(arr).save(tmp_path / "photo.png")
    out = tmp_path / "lat.pt"
    assert main(["invert", "--generator", str(g), "--image", str(tmp_path / "photo.png"), "--steps", "30",
                 "--out", str(out)]) == 0
    lat = load_latents(out, G.num_ws, G.cfg.w_dim)
    assert lat.ws.shape == (1, G.num_ws, G.cfg.w_dim) and lat.info["images"] == ["photo.png"]
    assert lat.info["mse_final"][0] < lat.info["mse_start"][0]
    recon = Image.open(tmp_path / "lat_recon.png")
    assert recon.size == (64, 32)
