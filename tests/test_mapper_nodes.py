"""Latent-mapper nodes called as ComfyUI calls them (inside torch.inference_mode(), fake ComfyUI),
and the dog -> cat example executed as a graph with tiny stand-in models in the real formats."""
import json
import sys

import pytest
import torch

from conftest import ROOT, randomize, tiny_config
from nada_ops.stylegan.io import save_generator
from nada_ops.stylegan.networks import Generator, estimate_w_avg
from workflow_runner import run_workflow

pytestmark = pytest.mark.usefixtures("one_thread")


def _pack_mod(comfy, name):
    __import__(f"{comfy.pack.__name__}.{name}")
    return sys.modules[f"{comfy.pack.__name__}.{name}"]


def _tiny(seed):
    torch.manual_seed(seed)
    G = randomize(Generator(tiny_config()).eval(), seed)
    with torch.no_grad():
        G.mapping.w_avg.copy_(estimate_w_avg(G, 512))
    return G


@pytest.fixture
def setup(comfy):
    save_generator(_tiny(0), comfy.stylegan_dir / "adapted.safetensors")
    m = comfy.pack.NODE_CLASS_MAPPINGS
    tiny = _pack_mod(comfy, "nada_ops.clip.tiny")
    ens_mod = _pack_mod(comfy, "nada_ops.clip.ensemble")
    with torch.inference_mode():
        (gen, _) = m["NADALoadStyleGAN"]().load("adapted.safetensors", "cpu", "fp32")
        clip = ens_mod.ClipEnsemble([(tiny.tiny_clip_model(seed=0), 1.0)])
    return comfy, m, gen, clip


def test_train_apply_save_load_in_inference_mode(setup):
    comfy, m, gen, clip = setup
    before = {k: v.clone() for k, v in gen.G.state_dict().items()}
    with torch.inference_mode():
        mapper, preview, log = m["NADATrainLatentMapper"]().train(
            gen, clip, "cat", iterations=4, lambda_clip=1.0, lambda_l2=0.5, lambda_norm=0.2, coarse=True,
            medium=False, fine=True, seed=1, preview_every=2, templates="single", unique_id="21")
        (lat,) = m["NADASampleW"]().sample(gen, 0, 3, 0.7)
        (mapped,) = m["NADAApplyLatentMapper"]().apply(mapper, lat, 1.0)
        (same,) = m["NADAApplyLatentMapper"]().apply(mapper, lat, 0.0)
        (img,) = m["NADASynthesize"]().render(gen, mapped, "const", 3)
        res = m["NADASaveLatentMapper"]().save(mapper, "cats/cat")
    assert preview.shape == (1, 64, 4 * 32, 3)          # source row + mapped row of 4 preview seeds
    assert "4 iterations" in log and "CLIP embedding norm" in log
    assert mapper.cfg.levels == ("coarse",)             # 32 px: no fine entries, medium switched off
    assert mapped.is_wplus and mapped.ws.shape == lat.ws.shape and img.shape == (3, 32, 32, 3)
    assert torch.equal(same.ws, lat.ws) and not torch.equal(mapped.ws[:, :4], lat.ws[:, :4])
    assert torch.equal(mapped.ws[:, 4:], lat.ws[:, 4:])  # medium entries are not mapped
    for k, v in gen.G.state_dict().items():
        assert torch.equal(v, before[k]), k
    hist = mapper.provenance["history"][-1]
    assert hist["op"] == "latent_mapper" and hist["target"]["target"] == "cat" and hist["iterations_done"] == 4
    # the training panel (same messages as Adapt Generator), only to the client that queued the prompt
    events = [e for e, _ in comfy.messages]
    assert events[0] == "nada.train.start" and events[-1] == "nada.train.end"
    assert any(d.get("preview") for e, d in comfy.messages if e == "nada.train.progress")
    assert set(comfy.message_sids) == {"client-A"} and comfy.freed
    assert _pack_mod(comfy, "nodes.dashboard").history("21")["status"] == "done"
    # saved into models/stylegan_mappers, listed and loaded by Load Latent Mapper
    path = res["result"][0]
    assert path.replace("\\", "/").endswith("stylegan_mappers/cats/cat_00001.safetensors")
    assert m["NADALoadLatentMapper"].INPUT_TYPES()["required"]["mapper_file"][0] == ["cats/cat_00001.safetensors"]
    with torch.inference_mode():
        loaded, info = m["NADALoadLatentMapper"]().load("cats/cat_00001.safetensors", "cpu")
        (again,) = m["NADAApplyLatentMapper"]().apply(loaded, lat, 1.0)
    assert torch.equal(again.ws, mapped.ws) and "target" in info


def test_direction_target_cancel_and_wrong_latents(setup):
    comfy, m, gen, clip = setup
    with torch.inference_mode():
        (direction, _) = m["NADACLIPDirection"]().make(clip, "dog", "cat", "single")
    comfy.interrupt = False
    mm = sys.modules["comfy.model_management"]
    calls = {"n": 0}
    orig = mm.throw_exception_if_processing_interrupted

    def interrupt_at_3():
        calls["n"] += 1
        if calls["n"] == 3:
            raise mm.InterruptProcessingException()
        orig()

    mm.throw_exception_if_processing_interrupted = interrupt_at_3
    try:
        with torch.inference_mode(), pytest.raises(mm.InterruptProcessingException):
            m["NADATrainLatentMapper"]().train(gen, clip, "ignored", iterations=50, lambda_clip=1.0, lambda_l2=0.5,
                                               lambda_norm=0.2, coarse=True, medium=True, fine=True, seed=0,
                                               preview_every=0, direction=direction, unique_id="22")
    finally:
        mm.throw_exception_if_processing_interrupted = orig
    kept = sorted((comfy.models_dir / "stylegan_mappers" / "nada-partial").glob("*.safetensors"))
    assert len(kept) == 1 and "_step3_" in kept[0].name
    h = _pack_mod(comfy, "nodes.dashboard").history("22")
    assert h["status"] == "interrupted" and h["saved"].startswith("nada-partial/")
    from nada_ops.nada.mapper import load_mapper
    prov = load_mapper(kept[0]).provenance
    assert prov["target"]["kind"] == "text" and prov["target"]["target"] == "cat"   # the direction's target side
    with torch.inference_mode():
        mapper, _, _ = m["NADATrainLatentMapper"]().train(gen, clip, "cat", iterations=1, lambda_clip=1.0,
                                                          lambda_l2=0.5, lambda_norm=0.0, coarse=True, medium=True,
                                                          fine=True, seed=0, preview_every=0)
        lat64 = _pack_mod(comfy, "nada_ops.latents").WLatents(ws=torch.zeros(1, 10, 32))
        with pytest.raises(ValueError, match="Apply Latent Mapper"):
            m["NADAApplyLatentMapper"]().apply(mapper, lat64, 1.0)
        with pytest.raises(ValueError, match="at least one"):
            m["NADATrainLatentMapper"]().train(gen, clip, "cat", 1, 1.0, 0.5, 0.2, False, False, False, 0, 0)


# ------------------------------------------------------------------------ the example graph
def test_dog_to_cat_example_graph(comfy, tmp_path):
    """The example as ComfyUI runs it: AFHQ-dog stand-in under the example's file name (our
    safetensors: the loader reads the content, not the name), two tiny CLIP models as safetensors."""
    from safetensors.torch import save_file

    from nada_ops.clip.tiny import build_tiny_open_clip, register_tiny_config
    from nada_ops.nada.mapper import load_mapper
    save_generator(_tiny(0), comfy.stylegan_dir / "afhqdog.pkl")
    clip_dir = comfy.models_dir / "open_clip"
    clip_dir.mkdir(parents=True, exist_ok=True)
    for name, seed in (("tiny-vit", 1), ("tiny-vit-b", 2)):
        register_tiny_config(tmp_path / "cfg", name=name)
        sd = {k: v.contiguous() for k, v in build_tiny_open_clip(seed=seed).state_dict().items()}
        save_file(sd, str(clip_dir / f"{name}.safetensors"))
    wf = json.loads((ROOT / "example_workflows" / "latent_mapper_dog_to_cat.json").read_text(encoding="utf-8"))
    overrides = {
        "NADALoadStyleGAN": {"device": "cpu"},
        "NADALoadCLIP": {"clip_a": "tiny-vit", "weights_a": "tiny-vit.safetensors", "clip_b": "tiny-vit-b",
                         "weights_b": "tiny-vit-b.safetensors", "device": "cpu"},
        "NADALayerFreezeSchedule": {"n_w": 2},
        "NADAAdaptGenerator": {"iterations": 2, "preview_every": 1},
        "NADATrainLatentMapper": {"iterations": 3, "preview_every": 3},
    }
    _, core = run_workflow(wf, comfy.pack.NODE_CLASS_MAPPINGS, overrides)
    before, after = core.saved_images
    assert before.shape == after.shape == (4, 32, 32, 3) and not torch.equal(before, after)
    (saved,) = (comfy.models_dir / "stylegan_mappers").glob("dog_to_cat_*.safetensors")
    h = load_mapper(saved)
    assert h.provenance["target"]["target"] == "cat" and len(h.provenance["history"][-1]["clip_models"]) == 2
    assert list((comfy.stylegan_dir / "nada").glob("dog_to_cat_*.safetensors"))
