"""The command line's rough edges (issue 12, item 4), each with a test: devices that do not exist,
stale transition videos, a CLIP file passed as a generator, long CPU runs, messages that ran into
the progress bar, the history printed as one line, blends that forgot a side, the grid layout,
error prefixes."""
from __future__ import annotations

import json
import os
import re

import pytest
import torch
from PIL import Image

from nada_ops.cli import main
from nada_ops.stylegan.io import load_generator, save_generator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def gen_file(tmp_path, tiny_G):
    g = tmp_path / "g.safetensors"
    save_generator(tiny_G, g)
    return g


def _adapt_entry(source, target, iterations=300):
    return {"op": "nada_adapt", "direction": {"kind": "text", "source": source, "target": target,
                                              "templates": "nada", "num_templates": 79,
                                              "models": ["ViT-B-32:ViT-B-32-openai.safetensors",
                                                         "ViT-B-16:ViT-B-16-openai.safetensors"]},
            "clip_models": ["ViT-B-32:ViT-B-32-openai.safetensors (weight 1)",
                            "ViT-B-16:ViT-B-16-openai.safetensors (weight 1)"],
            "settings": {"iterations": iterations, "batch_size": 2, "lr": 0.002, "betas": [0.0, 0.99],
                         "reference_lr_scale": False, "mixing_prob": 0.0, "seed": 0, "preview_every": 50,
                         "preview_seeds": [0, 1, 2, 3], "lambda_global": 0.0},
            "schedule": {"mode": "adaptive", "k": None, "k_fraction": 0.6666666666666666, "n_w": 8, "n_i": 1,
                         "indices": []},
            "iterations_done": iterations, "interrupted": False, "final_loss": 0.6123456}


def test_devices_that_do_not_exist_are_messages(gen_file, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert main(["sample", "--generator", str(gen_file), "--device", "gpu", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "error: --device gpu: unknown device (did you mean --device cuda?)" in err
    assert "this machine has: auto, cpu" in err and "Traceback" not in err
    if not torch.cuda.is_available():
        assert main(["sample", "--generator", str(gen_file), "--device", "cuda", "--out", out]) == 2
        err = capsys.readouterr().err
        assert "error: --device cuda: no CUDA GPU here" in err and "this machine has: auto, cpu" in err


def test_render_transition_renders_again_when_settings_change(tmp_path, tiny_G, capsys):
    from conftest import randomize
    from nada_ops.stylegan.networks import copy_generator
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_generator(tiny_G, a)
    save_generator(randomize(copy_generator(tiny_G), 5), b)
    out = tmp_path / "vid"
    base = ["render-transition", "--generators", str(a), str(b), "--seeds", "0-1", "--format", "gif",
            "--out", str(out)]

    def frames(f):
        with Image.open(out / f) as im:
            return im.n_frames
    assert main(base + ["--frames", "3"]) == 0
    assert frames("seed0000.gif") == 3 and "2 file(s) written" in capsys.readouterr().out
    assert main(base + ["--frames", "3"]) == 0                      # unchanged: skipped
    assert "0 file(s) written, 2 already there" in capsys.readouterr().out
    assert main(base + ["--frames", "2"]) == 0                      # changed: rendered again, and said why
    cap = capsys.readouterr()
    assert frames("seed0000.gif") == 2 and "2 file(s) written" in cap.out
    assert "rendering 2 existing output(s) again" in cap.err and "frames 3 -> 2" in cap.err
    rec = json.loads((out / "job.json").read_text())
    assert rec["frames"] == 2 and set(rec["outputs"]) == {"seed0000.gif", "seed0001.gif"}
    os.utime(b, ns=(os.stat(b).st_atime_ns, os.stat(b).st_mtime_ns + 10 ** 9))   # a generator saved again
    assert main(base + ["--frames", "2"]) == 0
    cap = capsys.readouterr()
    assert "2 file(s) written" in cap.out and "generators (files changed)" in cap.err
    (out / "job.json").unlink()                                    # outputs without a record: rendered again
    assert main(base + ["--frames", "2"]) == 0
    assert "no record of the settings" in capsys.readouterr().err


def test_clip_file_passed_as_generator_says_where_it_belongs(tmp_path, capsys):
    from safetensors.torch import save_file

    from nada_ops.clip.tiny import build_tiny_open_clip
    sd = {k: v.contiguous() for k, v in build_tiny_open_clip().state_dict().items()}
    save_file(sd, str(tmp_path / "ViT-B-32-openai.safetensors"))
    torch.save(sd, tmp_path / "open_clip_pytorch_model.bin")
    for f in ("ViT-B-32-openai.safetensors", "open_clip_pytorch_model.bin"):
        assert main(["info", str(tmp_path / f)]) == 1
        err = capsys.readouterr().err
        assert "is a CLIP model" in err and "not a StyleGAN generator" in err and "models/open_clip" in err
        assert "--clip-weights" in err and "Traceback" not in err


def test_long_cpu_runs_are_estimated_before_they_start(gen_file, tmp_path, capsys, monkeypatch):
    from nada_ops.cli import invert as invert_cli
    Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy()).save(tmp_path / "p.png")
    monkeypatch.setattr(invert_cli, "LONG_CPU_RUN_S", 0.0)
    assert main(["invert", "--generator", str(gen_file), "--image", str(tmp_path / "p.png"), "--steps", "2",
                 "--out", str(tmp_path / "lat.pt")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"estimate on this CPU: about .* per step, .* for 2 steps", err)
    assert "note: that is a long run on a CPU" in err and "--steps" in err


def test_messages_never_run_into_the_progress_bar(capsys):
    from nada_ops.cli.common import ProgressPrinter, Stage, say
    bar = ProgressPrinter("adapt")
    bar(3, 10, "loss 0.5")
    say("stopping after this iteration")
    bar(4, 10)
    with Stage("loading generator"):
        pass
    bar(10, 10)
    say("interrupted; saved")
    lines = capsys.readouterr().err.split("\n")
    assert "stopping after this iteration" in lines and "interrupted; saved" in lines
    assert any(line.startswith("loading generator ... done") for line in lines)


def test_ctrl_c_during_adapt_prints_on_its_own_lines(tmp_path, gen_file, capsys, monkeypatch):
    import signal

    from nada_ops.cli import common
    from nada_ops.clip.tiny import TINY_NAME, build_tiny_open_clip, register_tiny_config
    from safetensors.torch import save_file
    register_tiny_config(tmp_path / "cfg")
    clip = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in build_tiny_open_clip().state_dict().items()}, str(clip))
    draw = common.ProgressPrinter.__call__

    def press_ctrl_c_at_step_3(self, done, total, extra=None):
        draw(self, done, total, extra)
        if done == 3:
            signal.raise_signal(signal.SIGINT)       # the user presses Ctrl-C while the bar is drawn
    monkeypatch.setattr(common.ProgressPrinter, "__call__", press_ctrl_c_at_step_3)
    out = tmp_path / "s.safetensors"
    rc = main(["adapt", "--generator", str(gen_file), "--target", "sketch", "--iterations", "50",
               "--templates", "single", "--clip", f"{TINY_NAME}:1", "--clip-weights", f"{TINY_NAME}={clip}",
               "--preview-every", "0", "--out", str(out)])
    assert rc == 130
    lines = capsys.readouterr().err.split("\n")
    assert "stopping after this iteration (Ctrl-C again to abort without saving)" in lines
    assert any(line.startswith("interrupted; the 3 iterations trained so far were saved to") for line in lines)
    assert (tmp_path / "s.partial-step3.safetensors").is_file()


def test_info_prints_the_history_as_readable_lines(tmp_path, tiny_G, capsys):
    from nada_ops.stylegan.io import GeneratorHandle
    h = GeneratorHandle(G=tiny_G, name="sketch", source_format="safetensors",
                        provenance={"source_file": "ffhq.pkl", "history": [_adapt_entry("photo", "pencil sketch")]})
    save_generator(h, tmp_path / "sketch.safetensors")
    assert main(["info", str(tmp_path / "sketch.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "  1. NADA adaptation 'photo' -> 'pencil sketch', 300 iterations, final loss 0.6123" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert re.search(r"^\s+settings: batch_size=2, betas=\[0, 0.99\], iterations=300, lambda_global=0, lr=0.002",
                     out, re.M)


def test_a_blend_keeps_the_prompts_of_both_sides(tmp_path, tiny_G, capsys):
    from conftest import randomize
    from nada_ops.stylegan.io import GeneratorHandle
    from nada_ops.stylegan.networks import copy_generator
    for name, target, seed in (("sketch", "pencil sketch", 1), ("pixar", "pixar character", 2)):
        h = GeneratorHandle(G=randomize(copy_generator(tiny_G), seed), name=name, source_format="safetensors",
                            provenance={"source_file": "ffhq.pkl", "history": [_adapt_entry("photo", target)]})
        save_generator(h, tmp_path / f"{name}.safetensors")
    assert main(["interpolate-models", "--a", str(tmp_path / "sketch.safetensors"), "--b",
                 str(tmp_path / "pixar.safetensors"), "--t", "0.25", "--out", str(tmp_path / "mix.safetensors")]) == 0
    hist = load_generator(tmp_path / "mix.safetensors").provenance["history"]
    assert len(hist) == 1 and hist[0]["op"] == "interpolate" and hist[0]["t"] == 0.25
    assert hist[0]["a"]["history"][0]["direction"]["target"] == "pencil sketch"
    assert hist[0]["b"]["history"][0]["direction"]["target"] == "pixar character"
    capsys.readouterr()
    assert main(["info", str(tmp_path / "mix.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "'photo' -> 'pencil sketch'" in out and "'photo' -> 'pixar character'" in out
    # blends of blends stay loadable (nesting is bounded) and still name every prompt
    assert main(["interpolate-models", "--a", str(tmp_path / "mix.safetensors"), "--b",
                 str(tmp_path / "mix.safetensors"), "--t", "0.5", "--out", str(tmp_path / "mix2.safetensors")]) == 0
    assert main(["interpolate-models", "--a", str(tmp_path / "mix2.safetensors"), "--b",
                 str(tmp_path / "mix2.safetensors"), "--t", "0.5", "--out", str(tmp_path / "mix3.safetensors")]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "mix3.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "pencil sketch" in out and "pixar character" in out


def test_a_grid_of_8_seeds_has_no_empty_cell(gen_file, tmp_path):
    from nada_ops.stylegan.sampling import grid_shape
    assert main(["sample", "--generator", str(gen_file), "--seeds", "0-7", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size == (4 * 32, 2 * 32)
    assert [grid_shape(n) for n in (4, 6, 8, 9, 12, 16)] == [(2, 2), (3, 2), (4, 2), (3, 3), (4, 3), (4, 4)]
    assert grid_shape(7) == (4, 2) and grid_shape(5, cols=5) == (5, 1)


def test_wrong_values_are_error_lines(gen_file, tmp_path, capsys):
    out = str(tmp_path / "x.safetensors")
    assert main(["adapt", "--generator", str(gen_file), "--out", out]) == 2
    assert capsys.readouterr().err.startswith("error: give exactly one of --target TEXT or --target-images")
    assert main(["adapt", "--generator", str(gen_file), "--target", "x", "--clip", "ViT-B-32:heavy",
                 "--out", out]) == 2
    assert "error: --clip 'ViT-B-32:heavy'" in capsys.readouterr().err
    assert main(["sample", "--generator", "no-such-model", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "error: no-such-model: file does not exist, and it is not a catalogue name" in err
    assert "python -m nada_ops models" in err
    assert main(["sample", "--generator", "ffhg", "--out", out]) == 1
    assert "did you mean ffhq" in capsys.readouterr().err


def test_interpolate_models_node_keeps_both_sides(comfy, tiny_G):
    from nada_ops.stylegan.io import GeneratorHandle
    a = GeneratorHandle(G=tiny_G, name="sketch", source_format="safetensors",
                        provenance={"history": [_adapt_entry("photo", "pencil sketch")]})
    b = GeneratorHandle(G=tiny_G, name="pixar", source_format="safetensors",
                        provenance={"history": [_adapt_entry("photo", "pixar character")]})
    node = comfy.pack.NODE_CLASS_MAPPINGS["NADAInterpolateModels"]
    with torch.inference_mode():
        (g,) = node().blend(a, b, 0.5)
    (entry,) = g.provenance["history"]
    assert entry["a"]["history"][0]["direction"]["target"] == "pencil sketch"
    assert entry["b"]["history"][0]["direction"]["target"] == "pixar character"
    assert a.provenance["history"] == [_adapt_entry("photo", "pencil sketch")]      # inputs unchanged
    assert "'photo' -> 'pixar character'" in g.describe()
