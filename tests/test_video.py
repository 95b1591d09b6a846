import json
import os

import numpy as np
import pytest
import torch

from conftest import randomize, tiny_config
from nada_ops.cli import main
from nada_ops.latent_tools import direction_from_array, direction_offsets
from nada_ops.render_jobs import load_job_file, run_jobs
from nada_ops.stylegan.io import save_generator
from nada_ops.stylegan.networks import Generator
from nada_ops.video import (EASINGS, GifWriter, Mp4Writer, WebpWriter, ease, open_writer, plan_frames,
                            probe_video, render_transition, to_uint8_hwc)


pytestmark = pytest.mark.usefixtures("one_thread")


def _frames(n, h=48, w=64):
    """Distinct, smooth test frames (a moving bar over a gradient)."""
    out = []
    x = np.linspace(0, 255, w, dtype=np.float32)
    for i in range(n):
        a = np.zeros((h, w, 3), np.uint8)
        a[..., 0] = x[None].astype(np.uint8)
        a[..., 1] = (i * 255 // max(n - 1, 1))
        a[:, (i * 3) % w: (i * 3) % w + 4, 2] = 255
        out.append(a)
    return out


@pytest.fixture(scope="module")
def gens():
    torch.manual_seed(0)
    return [randomize(Generator(tiny_config()).eval(), s) for s in range(3)]


# ---------------------------------------------------------------------------- easing
def test_easings_hit_endpoints_and_are_monotonic():
    for name in EASINGS:
        assert ease(name, 0.0) == 0.0 and ease(name, 1.0) == 1.0
        vals = [ease(name, i / 50) for i in range(51)]
        assert all(b >= a - 1e-12 for a, b in zip(vals, vals[1:])), name
    with pytest.raises(ValueError, match="easing must be one of"):
        ease("bounce", 0.5)


def test_frame_plan():
    p = plan_frames(9, 3, "linear")
    assert [f.position for f in p] == [0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert p[0].latent_u == 0 and p[-1].latent_u == 1
    e = plan_frames(5, 2, "ease_in_out")
    assert e[0].position == 0 and e[-1].position == 1 and e[2].position == pytest.approx(0.5)
    assert e[1].position < 0.25                           # slow start
    loop = plan_frames(8, 2, "linear", loop=True)
    assert [f.position for f in loop] == [0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25]   # last != first
    assert plan_frames(1, 2)[0].position == 0
    with pytest.raises(ValueError, match="at least 2 generators"):
        plan_frames(10, 1)


# --------------------------------------------------------------------------- writers
def test_mp4_is_h264_with_all_frames(tmp_path):
    frames = _frames(12)
    with Mp4Writer(tmp_path / "a.mp4", fps=12) as w:
        for f in frames:
            w.write(f)
    info = probe_video(tmp_path / "a.mp4")
    assert info == {"frames": 12, "width": 64, "height": 48, "format": "mp4", "codec": "h264",
                    "pix_fmt": "yuv420p"}
    import av
    with av.open(str(tmp_path / "a.mp4")) as c:
        dec = [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
    assert np.abs(dec[5].astype(int) - frames[5]).mean() < 6     # decodes to the same picture
    # odd sizes are padded to even ones (yuv420p)
    with open_writer(tmp_path / "odd.mp4", fps=10) as w:
        for f in _frames(3, 33, 31):
            w.write(f)
    assert probe_video(tmp_path / "odd.mp4")["width"] == 32
    assert oct(os.stat(tmp_path / "a.mp4").st_mode & 0o777) != "0o600"


def test_gif_streams_every_frame(tmp_path):
    frames = _frames(10)
    with GifWriter(tmp_path / "a.gif", fps=20) as w:
        for f in frames:
            w.write(f)
    info = probe_video(tmp_path / "a.gif")
    assert (info["frames"], info["width"], info["height"]) == (10, 64, 48)
    from PIL import Image
    with Image.open(tmp_path / "a.gif") as im:
        assert im.info.get("loop") == 0 and im.info.get("duration") == 50   # ms (5 centiseconds)
        im.seek(7)
        got = np.asarray(im.convert("RGB")).astype(int)
    assert np.abs(got - frames[7]).mean() < 8


@pytest.mark.parametrize("backend", ["pyav", "pillow"])
def test_webp_animated(tmp_path, backend):
    if backend == "pyav":
        import av
        if "libwebp_anim" not in av.codecs_available:
            pytest.skip("this PyAV build has no libwebp_anim")
    w = WebpWriter(tmp_path / "a.webp", fps=10, backend=backend)
    assert w.streams == (backend == "pyav")
    with w:
        for f in _frames(8):
            w.write(f)
    info = probe_video(tmp_path / "a.webp")
    assert (info["frames"], info["width"], info["height"]) == (8, 64, 48)


def test_writer_is_atomic(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with open_writer(tmp_path / "x.mp4") as w:
            w.write(_frames(1)[0])
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []          # no final file, no temp file
    w = open_writer(tmp_path / "y.gif")
    with pytest.raises(ValueError, match="frame size changed"):
        w.write(_frames(1)[0])
        w.write(_frames(1, 10, 10)[0])
    w.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="unsupported video extension"):
        open_writer(tmp_path / "z.avi")


# -------------------------------------------------------------------------- rendering
def _render_ref(G, ws, cols=None):
    with torch.no_grad():
        return to_uint8_hwc(G.synthesis(ws), cols)


def test_transition_frames_hit_both_models(tmp_path, gens):
    A, B, _ = gens
    ws = A.w_avg[None, None].repeat(1, A.num_ws, 1) + torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(1))
    progress = []
    w = open_writer(tmp_path / "t.mp4", fps=8)
    out = render_transition([A, B], ws, 6, easing="smoothstep", writers=[w], collect=True,
                            progress=lambda d, t, p: progress.append((d, t, p is not None)), preview_every=2)
    assert out.shape == (6, 32, 32, 3) and out.dtype == torch.float32
    assert np.array_equal((out[0] * 255).round().byte().numpy(), _render_ref(A, ws))
    assert np.array_equal((out[-1] * 255).round().byte().numpy(), _render_ref(B, ws))
    assert [p[0] for p in progress] == list(range(1, 7)) and progress[0][2] and not progress[1][2]
    info = probe_video(tmp_path / "t.mp4")
    assert (info["frames"], info["width"], info["height"]) == (6, 32, 32)
    last = render_transition([A, B], ws, 4, last_frame=True)
    assert last.shape == (1, 32, 32, 3) and torch.equal(last[0], out[-1])


def test_transition_with_latent_motion_and_grid(gens):
    A, B, C = gens
    g = torch.Generator().manual_seed(2)
    ws = A.w_avg[None, None].repeat(3, A.num_ws, 1) + torch.randn(3, 1, 32, generator=g)
    end = A.w_avg[None, None].repeat(3, A.num_ws, 1) + torch.randn(3, 1, 32, generator=g)
    out = render_transition([A, B, C], ws, 5, keyframes=end[None], collect=True, cols=3)
    assert out.shape == (5, 32, 96, 3)
    assert np.array_equal((out[-1] * 255).round().byte().numpy(), _render_ref(C, end, 3))
    d = direction_from_array(torch.randn(1, 32, generator=g))
    off = direction_offsets(d, A.num_ws, "0-3")
    out2 = render_transition([A, B], ws[:1], 3, direction_offset=off, direction_strength=2.0, collect=True)
    assert np.array_equal((out2[-1] * 255).round().byte().numpy(), _render_ref(B, ws[:1] + 2.0 * off[None]))
    assert np.array_equal((out2[0] * 255).round().byte().numpy(), _render_ref(A, ws[:1]))


def test_random_noise_is_fixed_across_frames(gens):
    A = gens[0]
    ws = A.w_avg[None, None].repeat(2, A.num_ws, 1)
    out = render_transition([A, A], ws, 3, noise_mode="random", noise_seed=5, collect=True, batch_size=1)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    # the noise belongs to the latent, not to the batch split; another seed gives other noise
    assert torch.equal(render_transition([A, A], ws, 1, noise_mode="random", noise_seed=5, collect=True,
                                         batch_size=2)[0], out[0])
    assert not torch.equal(render_transition([A, A], ws, 1, noise_mode="random", noise_seed=6, collect=True)[0],
                           out[0])


def test_separate_layout_writes_one_file_per_latent(tmp_path, gens):
    A, B, _ = gens
    ws = A.w_avg[None, None].repeat(2, A.num_ws, 1) + torch.randn(2, 1, 32)
    ws_ = [open_writer(tmp_path / f"{i}.gif", fps=10) for i in range(2)]
    assert render_transition([A, B], ws, 4, layout="separate", writers=ws_) is None
    for i in range(2):
        assert probe_video(tmp_path / f"{i}.gif")["frames"] == 4


def test_interrupt_leaves_no_partial_file(tmp_path, gens):
    A, B, _ = gens
    ws = A.w_avg[None, None].repeat(1, A.num_ws, 1)

    def stop(d, t, p):
        if d == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        render_transition([A, B], ws, 5, writers=[open_writer(tmp_path / "v.mp4")], progress=stop)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------ batch runner
def test_job_file_runner_resumes(tmp_path, gens):
    A, B, C = gens
    for name, G in zip("abc", gens):
        save_generator(G, tmp_path / f"{name}.safetensors")
    from nada_ops.latent_tools import save_latents
    from nada_ops.latents import WLatents
    save_latents(WLatents(ws=A.w_avg[None, None].repeat(2, A.num_ws, 1)), tmp_path / "inv.pt")
    job = {"defaults": {"frames": 4, "fps": 8, "psi": 0.7, "seeds": "0-2"},
           "jobs": [{"name": "ab", "generators": ["a.safetensors", "b.safetensors"]},
                    {"name": "abc", "generators": ["a.safetensors", "b.safetensors", "c.safetensors"],
                     "seeds": "5", "layout": "grid", "format": "gif", "loop": True},
                    {"name": "inv", "generators": ["b.safetensors", "a.safetensors"], "latents": "inv.pt",
                     "format": "webp"}]}
    (tmp_path / "jobs.json").write_text(json.dumps(job))
    out = tmp_path / "out"
    jobs = load_job_file(tmp_path / "jobs.json")
    r1 = run_jobs(jobs, str(out))
    assert sorted(r1[0].written) == ["seed0000.mp4", "seed0001.mp4", "seed0002.mp4"]
    assert r1[1].written == ["grid.gif"]
    assert sorted(r1[2].written) == ["latent0000.webp", "latent0001.webp"]
    assert probe_video(out / "ab" / "seed0001.mp4")["frames"] == 4
    assert probe_video(out / "abc" / "grid.gif")["frames"] == 4
    assert json.loads((out / "ab" / "job.json").read_text())["frames"] == 4
    # resume: only the missing output is rendered again
    os.remove(out / "ab" / "seed0001.mp4")
    mtime = os.path.getmtime(out / "ab" / "seed0000.mp4")
    r2 = run_jobs(jobs, str(out))
    assert r2[0].written == ["seed0001.mp4"] and sorted(r2[0].skipped) == ["seed0000.mp4", "seed0002.mp4"]
    assert r2[1].written == [] and r2[1].skipped == ["grid.gif"] and r2[2].written == []
    assert os.path.getmtime(out / "ab" / "seed0000.mp4") == mtime
    assert probe_video(out / "ab" / "seed0001.mp4")["frames"] == 4
    # the command line form: everything already there
    assert main(["render-transition", "--job", str(tmp_path / "jobs.json"), "--out", str(out)]) == 0


def test_cli_render_transition_and_errors(tmp_path, gens, capsys):
    A, B, _ = gens
    save_generator(A, tmp_path / "a.safetensors")
    save_generator(B, tmp_path / "b.safetensors")
    save_generator(Generator(tiny_config(img_resolution=64)), tmp_path / "big.safetensors")
    out = tmp_path / "o"
    args = ["render-transition", "--generators", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
            "--seeds", "0-1", "--frames", "3", "--format", "webp", "--out", str(out)]
    assert main(args) == 0
    assert sorted(f for f in os.listdir(out) if f.endswith(".webp")) == ["seed0000.webp", "seed0001.webp"]
    assert main(args) == 0
    assert "0 file(s) written, 2 already there" in capsys.readouterr().out
    bad = ["render-transition", "--generators", str(tmp_path / "a.safetensors"), str(tmp_path / "big.safetensors"),
           "--seeds", "0", "--frames", "2", "--out", str(tmp_path / "o2")]
    assert main(bad) == 1
    assert "a is 32px, big is 64px" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"jobs": [{"generators": ["a.safetensors"], "seeds": "0"}]}))
    assert main(["render-transition", "--job", str(tmp_path / "bad.json"), "--out", str(out)]) == 1
    assert "at least 2 generator files" in capsys.readouterr().err
