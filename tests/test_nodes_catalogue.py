"""ComfyUI side of the catalogue: Load StyleGAN offers catalogue models that are not on disk and
downloads them on first use (ComfyUI's progress bar, Cancel keeps the partial file), Load CLIP's
'auto' fetches the catalogue's OpenAI weights; run inside torch.inference_mode() with the fake
ComfyUI of conftest and the local model server."""
from __future__ import annotations

import os

import pytest
import torch

from nada_ops.clip.tiny import TINY_NAME as TINY_CLIP_ARCH   # what tests/model_server.py registers
from nada_ops.fileio import is_temporary_name

pytestmark = pytest.mark.usefixtures("one_thread")
pytest_plugins = ("model_server",)      # the served / server fixtures

FFHQ = "stylegan2-ffhq-1024x1024.pkl"


def test_load_stylegan_offers_and_downloads_catalogue_models(comfy, server, tiny_G):
    from nada_ops.stylegan.io import save_generator
    save_generator(tiny_G, comfy.stylegan_dir / "mine.safetensors")
    node = comfy.pack.NODE_CLASS_MAPPINGS["NADALoadStyleGAN"]
    choices = node.INPUT_TYPES()["required"]["model"][0]
    assert choices[0] == "mine.safetensors"                       # local files first,
    assert FFHQ in choices and "stylegan-nada/sketch.pt" in choices   # then the catalogue's, not downloaded yet
    assert node.IS_CHANGED(FFHQ) == ""
    with torch.inference_mode():
        gen, info = node().load(FFHQ, "auto", "fp32")
    assert "32x32" in info and gen.source_format == "nvidia-pkl"
    assert (comfy.stylegan_dir / FFHQ).is_file() and comfy.progress      # into models/stylegan, with a progress bar
    n = len(server.requests)
    choices = node.INPUT_TYPES()["required"]["model"][0]
    assert choices.count(FFHQ) == 1 and choices.index(FFHQ) < choices.index("stylegan-nada/sketch.pt")
    with torch.inference_mode():
        node().load(FFHQ, "auto", "fp32")
    assert len(server.requests) == n                                     # from disk the second time
    assert node.IS_CHANGED(FFHQ) != ""


def test_cancel_during_a_download_keeps_a_hidden_partial_file_and_the_next_run_continues(comfy, server,
                                                                                        monkeypatch):
    import importlib
    dl = importlib.import_module(comfy.pack.__name__ + ".nada_ops.catalogue.download")   # the pack's own copy
    monkeypatch.setattr(dl, "CHUNK", 4096)
    node = comfy.pack.NODE_CLASS_MAPPINGS["NADALoadStyleGAN"]
    comfy.interrupt = True                                              # the user presses Cancel
    with torch.inference_mode(), pytest.raises(comfy.mm.InterruptProcessingException):
        node().load(FFHQ, "auto", "fp32")
    assert not (comfy.stylegan_dir / FFHQ).exists()
    listed = node.INPUT_TYPES()["required"]["model"][0]
    assert not any(is_temporary_name(f) for f in listed)
    leftovers = [os.path.join(r, f) for r, _, fs in os.walk(comfy.stylegan_dir) for f in fs]
    assert leftovers and all(is_temporary_name(os.path.relpath(p, comfy.stylegan_dir)) for p in leftovers)
    with torch.inference_mode():
        gen, _ = node().load(FFHQ, "auto", "fp32")
    assert server.requests[-1]["range"] == "bytes=4096-"


def test_offline_comfyui_lists_no_catalogue_models_and_says_what_to_fetch(comfy, server, monkeypatch):
    node = comfy.pack.NODE_CLASS_MAPPINGS["NADALoadStyleGAN"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert FFHQ not in node.INPUT_TYPES()["required"]["model"][0]
    with torch.inference_mode(), pytest.raises(FileNotFoundError) as e:    # e.g. a workflow saved elsewhere
        node().load(FFHQ, "auto", "fp32")
    assert FFHQ in str(e.value) and "HF_HUB_OFFLINE=1" in str(e.value)
    assert str(comfy.stylegan_dir.resolve()) in str(e.value) and server.requests == []


def test_load_clip_auto_fetches_the_catalogue_weights(comfy, server):
    node = comfy.pack.NODE_CLASS_MAPPINGS["NADALoadCLIP"]
    weights = node.INPUT_TYPES()["required"]["weights_a"][0]
    assert "ViT-B-32-openai.safetensors" in weights and weights[0] == "auto"
    with torch.inference_mode():
        (ens,) = node().load("ViT-B-32", "auto", 1.0, "ViT-B-16", "auto", 1.0, "auto", "fp32")
    assert len(ens) == 2 and all(m.name == TINY_CLIP_ARCH for m in ens.models)
    clip_dir = comfy.models_dir / "open_clip"
    assert (clip_dir / "ViT-B-32-openai.safetensors").is_file() and (clip_dir / "ViT-B-16-openai.safetensors").is_file()
    # a catalogue file chosen by name (as the example workflows do) is fetched the same way
    (clip_dir / "ViT-B-16-openai.safetensors").unlink()
    import importlib
    adapt_nodes = importlib.import_module(comfy.pack.__name__ + ".nodes.adapt")
    assert adapt_nodes._resolve_weights("ViT-B-16-openai.safetensors") == str(clip_dir / "ViT-B-16-openai.safetensors")
