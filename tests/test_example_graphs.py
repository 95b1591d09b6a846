"""Every example workflow executed as ComfyUI executes it (tests/workflow_runner.py): the whole
node chain inside torch.inference_mode(), each node's outputs shared by all its consumers, with
tiny stand-in models written in the real formats under the examples' own file names."""
import json

import pytest
import torch

from conftest import ROOT, randomize, tiny_config
from nada_ops.stylegan.io import load_generator, save_generator
from nada_ops.stylegan.networks import Generator, estimate_w_avg
from nada_ops.video import probe_video
from workflow_runner import run_workflow

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE = "stylegan2-ffhq-1024x1024.pkl"
ADAPTED = "nada/pencil_sketch_00001.safetensors"


def _tiny(seed):
    torch.manual_seed(seed)
    G = randomize(Generator(tiny_config()).eval(), seed)
    with torch.no_grad():
        G.mapping.w_avg.copy_(estimate_w_avg(G, 512))
    return G


@pytest.fixture
def env(comfy, tmp_path):
    """Stand-ins under the examples' file names: a tiny generator written as the source file (our
    safetensors: the loader detects the format from the content, not the name), and two tiny
    open_clip architectures with safetensors weights in models/open_clip."""
    from safetensors.torch import save_file

    from nada_ops.clip.tiny import build_tiny_open_clip, register_tiny_config
    save_generator(_tiny(0), comfy.stylegan_dir / SOURCE)
    clip_dir = comfy.models_dir / "open_clip"
    clip_dir.mkdir(parents=True, exist_ok=True)
    for name, seed in (("tiny-vit", 1), ("tiny-vit-b", 2)):
        register_tiny_config(tmp_path / "cfg", name=name)
        sd = {k: v.contiguous() for k, v in build_tiny_open_clip(seed=seed).state_dict().items()}
        save_file(sd, str(clip_dir / f"{name}.safetensors"))
    comfy.nodes = comfy.pack.NODE_CLASS_MAPPINGS
    return comfy


def _overrides(wf):
    clip = {}
    for n in wf["nodes"]:
        if n["type"] == "NADALoadCLIP":
            two = n["widgets_values"][3] != "none"
            clip = {"clip_a": "tiny-vit", "weights_a": "tiny-vit.safetensors", "device": "cpu",
                    **({"clip_b": "tiny-vit-b", "weights_b": "tiny-vit-b.safetensors"} if two else {})}
    return {
        "NADALoadStyleGAN": {"device": "cpu"},
        "NADALoadCLIP": clip,
        "NADACLIPDirection": {"num_source_samples": 2},
        "NADALayerFreezeSchedule": {"n_w": 2},
        "NADAAdaptGenerator": {"iterations": 2, "preview_every": 1},
        "NADALoadImages": {"size": 48},
        "NADAInvertImage": {"steps": 3, "preview_every": 0},
        "NADARenderTransition": {"frames": 4},
    }


def _load(name):
    return json.loads((ROOT / "example_workflows" / f"{name}.json").read_text(encoding="utf-8"))


def test_text_adaptation_graph(env):
    wf = _load("text_adaptation")
    results, core = run_workflow(wf, env.nodes, _overrides(wf))
    src, adapted = core.saved_images
    assert src.shape == adapted.shape == (4, 32, 32, 3) and not torch.equal(src, adapted)
    saved = list((env.stylegan_dir / "nada").glob("photo_to_zombie_*.safetensors"))
    assert len(saved) == 1
    hist = load_generator(saved[0]).provenance["history"][-1]
    assert hist["direction"]["target"] == "zombie" and len(hist["clip_models"]) == 2


def test_image_guided_graph_makes_the_generator_the_other_examples_load(env):
    """The image-guided example (the one that crashed in a real ComfyUI: image directions then
    training through the same CLIP object under inference mode)."""
    wf = _load("image_guided_adaptation")
    results, core = run_workflow(wf, env.nodes, _overrides(wf))
    (adapted,) = core.saved_images
    assert adapted.shape == (4, 32, 32, 3)
    h = load_generator(env.stylegan_dir / ADAPTED)       # exactly the file the next examples use
    d = h.provenance["history"][-1]["direction"]
    assert d["kind"] == "image" and d["num_target_images"] == 4


def test_invert_graph(env):
    save_generator(_tiny(1), env.stylegan_dir / ADAPTED)
    wf = _load("invert_photo_to_adapted")
    results, core = run_workflow(wf, env.nodes, _overrides(wf))
    recon, in_adapted = core.saved_images
    assert recon.shape == in_adapted.shape == (1, 32, 32, 3)


def test_transition_graph_feeds_core_save_video(env):
    save_generator(_tiny(1), env.stylegan_dir / ADAPTED)
    wf = _load("transition_video")
    results, core = run_workflow(wf, env.nodes, _overrides(wf))
    (video,) = core.videos
    info = probe_video(video.get_stream_source())
    assert info["frames"] == 4 and info["codec"] == "h264"
    import av
    with av.open(video.get_stream_source()) as c:
        meta = dict(c.metadata)
    assert json.loads(meta["workflow"])["nodes"] and "prompt" in meta   # embedded like core Save Video
    assert str(video.get_stream_source()).startswith(str(env.base / "temp"))   # save_format none: temp file
