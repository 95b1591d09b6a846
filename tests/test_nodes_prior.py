"""The prior nodes inside torch.inference_mode() as ComfyUI runs them (fake ComfyUI), and the
text_to_image_prior example executed as a graph with tiny stand-ins under its own file names."""
import json

import pytest
import torch

from conftest import ROOT
from nada_ops.prior.config import PriorConfig
from nada_ops.prior.formats import load_prior, write_prior
from nada_ops.prior.model import new_prior
from nada_ops.stylegan.io import save_generator
from prior_helpers import reference_state_dict, reference_yaml, trainer_checkpoint
from test_example_graphs import _overrides, _tiny, env  # noqa: F401  (the examples' stand-in models)
from workflow_runner import run_workflow

pytestmark = pytest.mark.usefixtures("one_thread")

PRIOR_FILE = "stylegan2-ffhq-1024x1024-vitb32.safetensors"


def _stand_in_prior(G, clip_name, cond_dim=32, seed=0):
    cfg = PriorConfig.preset("tiny", latent_dim=G.cfg.w_dim, cond_dim=cond_dim, dim=32, dim_head=16, depth=1)
    return new_prior(cfg, G.w_avg.clone(), torch.ones(G.cfg.w_dim), seed=seed, name="stand-in",
                     provenance={"clip": {"name": clip_name, "embed_dim": cond_dim},
                                 "generator": {"num_ws": G.cfg.num_ws}})


def test_text_to_image_prior_graph(env):  # noqa: F811  (the fixture imported above)
    """Prompt -> latents -> the source and two adapted generators (the example, as shipped)."""
    save_generator(_tiny(1), env.stylegan_dir / "nada" / "pencil_sketch_00001.safetensors")
    save_generator(_tiny(2), env.stylegan_dir / "nada" / "photo_to_zombie_00001.safetensors")
    prior_dir = env.models_dir / "stylegan_priors"
    prior_dir.mkdir(parents=True, exist_ok=True)
    write_prior(_stand_in_prior(_tiny(0), "tiny-vit"), prior_dir / PRIOR_FILE)
    wf = json.loads((ROOT / "example_workflows" / "text_to_image_prior.json").read_text(encoding="utf-8"))
    over = _overrides(wf)
    over["NADALoadPrior"] = {"device": "cpu"}
    over["NADATextToLatents"] = {"images_per_prompt": 2, "candidates": 2, "steps": 4}
    results, core = run_workflow(wf, env.nodes, over)
    src, sketch, zombie = core.saved_images
    assert src.shape == sketch.shape == zombie.shape == (2, 32, 32, 3)
    assert not torch.equal(src, sketch) and not torch.equal(sketch, zombie)
    t2l = next(n for n in wf["nodes"] if n["type"] == "NADATextToLatents")
    lat, info = results[str(t2l["id"])]
    assert lat.ws.shape == (2, 8, 32) and "CLIP similarity" in info and "smiling woman" in info


def test_nodes_in_inference_mode(comfy, tiny_G, tmp_path):
    from nada_ops.clip.ensemble import ClipEnsemble
    from nada_ops.clip.tiny import tiny_clip_model
    m = comfy.pack.NODE_CLASS_MAPPINGS
    save_generator(tiny_G, comfy.stylegan_dir / "src.safetensors")
    prior_dir = comfy.models_dir / "stylegan_priors"
    prior_dir.mkdir(parents=True, exist_ok=True)
    # a clip2latent checkpoint (+ yaml) of a 32-d model, in their layout
    ref = reference_state_dict(dim=32, depth=1, heads=2, dim_head=16, seed=5)
    torch.save(trainer_checkpoint(ref, ref), prior_dir / "c2l.ckpt")
    (prior_dir / "c2l.yaml").write_text(reference_yaml(dim=32, depth=1, heads=2, dim_head=16, repeats=(8,)),
                                        encoding="utf-8")
    assert set(m["NADALoadPrior"].INPUT_TYPES()["required"]["model"][0]) == {"c2l.ckpt"}
    clip_b = tiny_clip_model(seed=2, name="tiny-b")
    with torch.inference_mode():
        clip = ClipEnsemble([(clip_b, 1.0), (tiny_clip_model(seed=1), 1.0)])
        gen, _ = m["NADALoadStyleGAN"]().load("src.safetensors", "cpu", "fp32")
        prior, info = m["NADALoadPrior"]().load("c2l.ckpt", "cpu")
        assert "clip2latent-ckpt" in info and "ViT-B-32" in info
        with pytest.raises(ValueError, match="trained with CLIP ViT-B-32"):
            m["NADATextToLatents"]().run(prior, clip, gen, "a face", 1, 1, 2.0, 4, 1.0, 0)
        # Train Prior: small run in memory, under inference mode (training on fresh copies)
        n0 = len(comfy.progress)
        trained, log = m["NADATrainPrior"]().train(gen, clip, 256, 12, 64, 3e-3, "tiny", 0)
        assert "256 pairs, 12 steps" in log and "held-out image embeddings" in log
        assert comfy.progress[-1][0] == 256 + 12 and len(comfy.progress) > n0
        assert trained.provenance["clip"]["name"] == "tiny-b" and not trained.net.time_embed.is_inference()
        lat, text = m["NADATextToLatents"]().run(trained, clip, gen, "a cat\n\na dog", 2, 3, 2.0, 7, 0.8, 1,
                                                 respacing="auto", mix_crossover=4)
        assert lat.ws.shape == (4, 8, 32) and lat.is_wplus and "'a dog'" in text and "even" in text
        img, = m["NADASynthesize"]().render(gen, lat, "const", 4)
        assert img.shape == (4, 32, 32, 3)
        out = m["NADASavePrior"]().save(trained, "mine/prior")
        assert out["ui"]["text"] == ["saved models/stylegan_priors/mine/prior_00001.safetensors"]
        again, _ = m["NADALoadPrior"]().load("mine/prior_00001.safetensors", "cpu")
        for a, b in zip(again.net.state_dict().values(), trained.net.state_dict().values()):
            assert torch.equal(a, b)
        with pytest.raises(ValueError, match="write a prompt"):
            m["NADATextToLatents"]().run(trained, clip, gen, " \n ", 1, 1, 2.0, 4, 1.0, 0)
        comfy.interrupt = True
        with pytest.raises(comfy.mm.InterruptProcessingException):
            m["NADATrainPrior"]().train(gen, clip, 256, 50, 64, 3e-3, "tiny", 0)
    assert load_prior(out["result"][0]).name == trained.name
