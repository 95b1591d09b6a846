"""The StyleGAN3 example workflow executed as ComfyUI executes it (tests/workflow_runner.py):
inside torch.inference_mode(), with a tiny StyleGAN3 written as an NVIDIA pickle (real structure)
under the example's own file name and tiny open_clip models in models/open_clip."""
import json

import pytest
import torch

from conftest import ROOT
from nada_ops.stylegan.io import load_generator
from nada_ops.stylegan.networks import estimate_w_avg
from nada_ops.video import probe_video
from sg3_helpers import tiny_sg3
from workflow_runner import run_workflow
from writers.nvidia_pickle import write_stylegan3_pickle

pytestmark = pytest.mark.usefixtures("one_thread")
SG3_SOURCE = "stylegan3-t-ffhqu-256x256.pkl"


def test_stylegan3_example_graph(comfy, tmp_path):
    from safetensors.torch import save_file

    from nada_ops.clip.tiny import build_tiny_open_clip, register_tiny_config
    # 64 px (so that the 'fine' group of the example's preset has a trainable layer), 4 layers
    G = tiny_sg3("t", seed=11, img_resolution=64, num_layers=4, num_critical=1, margin_size=2)
    with torch.no_grad():
        G.mapping.w_avg.copy_(estimate_w_avg(G, 256))
    write_stylegan3_pickle(G, comfy.stylegan_dir / SG3_SOURCE, tmp_path / "module_src_was_executed")
    clip_dir = comfy.models_dir / "open_clip"
    clip_dir.mkdir(parents=True, exist_ok=True)
    for name, seed in (("tiny-vit", 1), ("tiny-vit-b", 2)):
        register_tiny_config(tmp_path / "cfg", name=name)
        save_file({k: v.contiguous() for k, v in build_tiny_open_clip(seed=seed).state_dict().items()},
                  str(clip_dir / f"{name}.safetensors"))
    wf = json.loads((ROOT / "example_workflows" / "stylegan3_adaptation.json").read_text(encoding="utf-8"))
    overrides = {
        "NADALoadStyleGAN": {"device": "cpu"},
        "NADALoadCLIP": {"clip_a": "tiny-vit", "weights_a": "tiny-vit.safetensors", "clip_b": "tiny-vit-b",
                         "weights_b": "tiny-vit-b.safetensors", "device": "cpu"},
        "NADAAdaptGenerator": {"iterations": 2, "preview_every": 1},
        "NADARenderTransition": {"frames": 3},
    }
    results, core = run_workflow(wf, comfy.pack.NODE_CLASS_MAPPINGS, overrides)
    src, adapted = core.saved_images
    assert src.shape == adapted.shape == (4, 64, 64, 3) and not torch.equal(src, adapted)
    (saved,) = (comfy.stylegan_dir / "nada").glob("stylegan3_watercolor_*.safetensors")
    h = load_generator(saved)
    assert h.family == "stylegan3"
    hist = h.provenance["history"][-1]
    assert hist["direction"]["target"] == "watercolor painting"
    assert hist["schedule"]["preset"].startswith("StyleGAN3: fine layers") and hist["schedule"]["indices"] == [4, 5]
    changed = {k.rsplit(".", 1)[0] for k, v in h.G.state_dict().items() if not torch.equal(v, G.state_dict()[k])}
    assert changed == {"synthesis.L3_64_4"}                    # the fine layers only (ToRGB frozen)
    (video,) = core.videos
    assert probe_video(video.get_stream_source())["frames"] == 3
    assert not (tmp_path / "module_src_was_executed").exists()
