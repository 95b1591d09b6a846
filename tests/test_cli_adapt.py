import os

import pytest
import torch

from nada_ops.cli import main
from nada_ops.clip.tiny import TINY_NAME, build_tiny_open_clip, register_tiny_config
from nada_ops.stylegan.io import load_generator, save_generator


@pytest.fixture
def tiny_clip_file(tmp_path):
    register_tiny_config(tmp_path / "cfg")
    path = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in build_tiny_open_clip(seed=0).state_dict().items()}, str(path))
    return path


def test_adapt_cli_text(tmp_path, tiny_G, tiny_clip_file, capsys):
    g = tmp_path / "src.safetensors"
    save_generator(tiny_G, g)
    out = tmp_path / "out" / "sketch.safetensors"
    rc = main(["adapt", "--generator", str(g), "--source", "photo", "--target", "pencil sketch",
               "--iterations", "4", "--templates", "single", "--clip", f"{TINY_NAME}:1",
               "--clip-weights", f"{TINY_NAME}={tiny_clip_file}", "--preview-every", "2", "--mixing", "0",
               "--schedule", "adaptive", "--k", "3", "--n-w", "2", "--save-every", "3", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    snap = load_generator(tmp_path / "out" / "sketch.step000003.safetensors")   # --save-every 3
    assert snap.provenance["history"][-1]["iterations_done"] == 3
    h = load_generator(out)
    hist = h.provenance["history"][-1]
    assert hist["direction"]["target"] == "pencil sketch" and hist["iterations_done"] == 4
    assert hist["schedule"]["k"] == 3
    samples = sorted(os.listdir(tmp_path / "out" / "sketch_samples"))
    assert samples == ["step000002.png", "step000004.png"]
    assert any(not torch.equal(a, b) for a, b in zip(h.G.state_dict().values(), tiny_G.state_dict().values()))


def test_adapt_cli_images_and_errors(tmp_path, tiny_G, tiny_clip_file, capsys):
    from PIL import Image
    g = tmp_path / "src.safetensors"
    save_generator(tiny_G, g)
    imgdir = tmp_path / "targets"
    imgdir.mkdir()
    for i in range(2):
        Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy()).save(imgdir / f"t{i}.png")
    out = tmp_path / "fs.safetensors"
    rc = main(["adapt", "--generator", str(g), "--target-images", str(imgdir), "--num-source-samples", "2",
               "--iterations", "2", "--clip", f"{TINY_NAME}:1", "--clip-weights", f"{TINY_NAME}={tiny_clip_file}",
               "--preview-every", "0", "--out", str(out)])
    assert rc == 0
    assert load_generator(out).provenance["history"][-1]["direction"]["kind"] == "image"
    assert main(["adapt", "--generator", str(g), "--out", str(out)]) == 2
    assert "error: give exactly one of --target" in capsys.readouterr().err
