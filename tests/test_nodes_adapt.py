"""AdaptGenerator & friends called as ComfyUI calls them (inside torch.inference_mode())."""
import os
import sys

import pytest
import torch

from nada_ops.stylegan.io import load_generator, save_generator


def _pack_mod(comfy, name):
    __import__(f"{comfy.pack.__name__}.{name}")
    return sys.modules[f"{comfy.pack.__name__}.{name}"]


@pytest.fixture
def setup(comfy, tiny_G):
    save_generator(tiny_G, comfy.stylegan_dir / "tiny.safetensors")
    m = comfy.pack.NODE_CLASS_MAPPINGS
    tiny = _pack_mod(comfy, "nada_ops.clip.tiny")
    ens_mod = _pack_mod(comfy, "nada_ops.clip.ensemble")
    with torch.inference_mode():
        (gen, _) = m["NADALoadStyleGAN"]().load("tiny.safetensors", "cpu", "fp32")
        clip = ens_mod.ClipEnsemble([(tiny.tiny_clip_model(seed=0), 1.0)])
        (direction, info) = m["NADACLIPDirection"]().make(clip, "photo", "pencil sketch", "single")
    assert "pencil sketch" in info
    return comfy, m, gen, clip, direction


def test_adapt_node_in_inference_mode(setup):
    comfy, m, gen, clip, direction = setup
    before = {k: v.clone() for k, v in gen.G.state_dict().items()}
    with torch.inference_mode():
        (sched,) = m["NADALayerFreezeSchedule"]().make("custom", "adaptive", 3, 2, 1, "")
        out_gen, preview, log = m["NADAAdaptGenerator"]().adapt(
            gen, clip, direction, iterations=4, batch_size=2, learning_rate=0.002, mixing_prob=0.9, seed=1,
            preview_every=2, schedule=sched, unique_id="17")
        (lat,) = m["NADASampleW"]().sample(out_gen, 0, 2, 0.7)
        (img,) = m["NADASynthesize"]().render(out_gen, lat, "const", 2)
    assert img.shape == (2, 32, 32, 3)
    assert preview.shape == (1, 64, 4 * 32, 3)   # source row + adapted row of 4 preview seeds
    assert "4 iterations" in log
    for k, v in gen.G.state_dict().items():
        assert torch.equal(v, before[k]), k          # input never mutated
    hist = out_gen.provenance["history"][-1]
    assert hist["op"] == "nada_adapt" and hist["direction"]["target"] == "pencil sketch"
    assert hist["settings"]["iterations"] == 4 and hist["schedule"]["mode"] == "adaptive"
    # progress on the node; the preview goes to the node's panel only (not twice on the node)
    assert comfy.progress and all(p[2] is None for p in comfy.progress)
    assert any(d.get("preview") for e, d in comfy.messages if e == "nada.train.progress")
    assert set(comfy.message_sids) == {"client-A"}      # only the browser that queued the prompt
    assert comfy.freed and comfy.freed[0][0] > 0         # asked ComfyUI to make room first
    events = [e for e, _ in comfy.messages]
    assert events[0] == "nada.train.start" and events[-1] == "nada.train.end"
    prog = [d for e, d in comfy.messages if e == "nada.train.progress"]
    assert prog[-1]["step"] == 4 and prog[-1]["node"] == "17" and len(prog[-1]["layers"]) == 3
    dash = _pack_mod(comfy, "nodes.dashboard")
    h = dash.history("17")
    assert h["status"] == "done" and len(h["points"]) == 4
    # saving records the adaptation in the file's metadata
    out = m["NADASaveGenerator"]().save(out_gen, "adapted")
    prov = load_generator(out["result"][0]).provenance
    assert prov["history"][-1]["direction"]["source"] == "photo"


def test_same_inputs_same_result(setup):
    comfy, m, gen, clip, direction = setup
    node = m["NADAAdaptGenerator"]
    assert not hasattr(node, "IS_CHANGED")  # ComfyUI's cache decides: an unchanged graph does not retrain
    with torch.inference_mode():
        a = node().adapt(gen, clip, direction, 3, 2, 0.002, 0.0, 5, 0)[0]
        b = node().adapt(gen, clip, direction, 3, 2, 0.002, 0.0, 5, 0)[0]
        c = node().adapt(gen, clip, direction, 3, 2, 0.002, 0.0, 6, 0)[0]
    sa, sb, sc = a.G.state_dict(), b.G.state_dict(), c.G.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def _cancel_at(comfy, monkeypatch, n):
    """The user presses Cancel: ComfyUI's interrupt check raises at its n-th call."""
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        if calls["n"] == n:
            raise comfy.mm.InterruptProcessingException()

    monkeypatch.setattr(comfy.mm, "throw_exception_if_processing_interrupted", check)


def test_interrupt_saves_partial_and_reraises(setup, monkeypatch):
    comfy, m, gen, clip, direction = setup
    _cancel_at(comfy, monkeypatch, 3)
    with torch.inference_mode(), pytest.raises(comfy.mm.InterruptProcessingException):
        m["NADAAdaptGenerator"]().adapt(gen, clip, direction, 50, 2, 0.002, 0.0, 0, 0, unique_id="9")
    partial = comfy.stylegan_dir / "nada-partial"
    files = os.listdir(partial)
    assert len(files) == 1 and "step3" in files[0]
    h = load_generator(partial / files[0])
    assert h.provenance["history"][-1]["interrupted"] is True
    assert h.provenance["history"][-1]["iterations_done"] == 3
    assert _pack_mod(comfy, "nodes.dashboard").history("9")["status"] == "interrupted"


def test_image_direction_node(setup):
    comfy, m, gen, clip, direction = setup
    targets = torch.rand(3, 40, 40, 3)
    with torch.inference_mode():
        (d, info) = m["NADACLIPDirection"]().make(clip, "", "", "single", target_images=targets, generator=gen,
                                                  num_source_samples=4)
    assert d.provenance["kind"] == "image" and d.provenance["num_target_images"] == 3
    with pytest.raises(ValueError, match="generator"):
        m["NADACLIPDirection"]().make(clip, "", "", "single", target_images=targets)


def test_schedule_node(setup):
    comfy, m, gen, clip, direction = setup
    node = m["NADALayerFreezeSchedule"]()
    (s,) = node.make("custom", "manual", 3, 8, 1, "coarse, 6")
    assert s.resolve(gen.cfg).indices == (0, 1, 2, 6)
    (p,) = node.make("animal / large shape (adaptive k=3)", "all", 3, 8, 1, "")
    assert p.mode == "adaptive" and p.k == 3
    with pytest.raises(ValueError, match="unknown group"):
        node.make("custom", "manual", 3, 8, 1, "bogus")


def test_image_guided_chain_trains_under_inference_mode(setup):
    """The chain of the image-guided example as ComfyUI runs it: CLIP Direction encodes the
    target images inside inference mode (filling the CLIP model's caches), then Adapt
    Generator trains through the SAME CLIP object. Nothing made under inference mode may
    reach autograd (regression: 'Inference tensors cannot be saved for backward')."""
    comfy, m, gen, clip, _ = setup
    targets = torch.rand(2, 40, 48, 3)
    with torch.inference_mode():
        (d, _) = m["NADACLIPDirection"]().make(clip, "", "", "single", target_images=targets, generator=gen,
                                                num_source_samples=2)
        assert any(t.is_inference() for pair in clip.models[0]._stats_cache.values() for t in pair)
        out, preview, log = m["NADAAdaptGenerator"]().adapt(gen, clip, d, 2, 2, 0.002, 0.0, 0, 1)
        (s,) = m["NADALayerFreezeSchedule"]().make("custom", "adaptive", 2, 2, 1, "")
        out2, _, _ = m["NADAAdaptGenerator"]().adapt(gen, clip, d, 2, 2, 0.002, 0.5, 0, 0, schedule=s)
    assert "2 iterations" in log
    assert any(not torch.equal(a, b) for a, b in zip(out.G.state_dict().values(), gen.G.state_dict().values()))
    assert not any(t.is_inference() for t in out2.G.state_dict().values())


def test_clip_for_autograd_leaves_no_inference_tensor():
    from nada_ops.clip.tiny import tiny_clip_model
    with torch.inference_mode():
        m = tiny_clip_model(seed=0)
        m.encode_text(["a photo"])
        m.encode_generator_images(torch.zeros(1, 3, 32, 32))
    assert m.has_inference_tensors()
    m2 = m.for_autograd()
    assert m2 is not m and not m2.has_inference_tensors() and m.has_inference_tensors()
    x = torch.zeros(1, 3, 32, 32, requires_grad=True)
    (m2.encode_generator_images(x).sum() + m2.encode_text(["a photo"]).sum()).backward()
    assert x.grad is not None
    assert m2.for_autograd() is m2


def test_snapshots_are_saved_listed_and_reported(setup):
    comfy, m, gen, clip, direction = setup
    with torch.inference_mode():
        out, _, log = m["NADAAdaptGenerator"]().adapt(gen, clip, direction, 5, 2, 0.002, 0.0, 0, 0,
                                                      save_every=2, unique_id="31")
    h = _pack_mod(comfy, "nodes.dashboard").history("31")
    files = [s["file"] for s in h["snapshots"]]
    assert [s["step"] for s in h["snapshots"]] == [2, 4] and all(f.startswith("nada-snapshots/") for f in files)
    assert "snapshots:" in log and files[0] in log
    listed = m["NADALoadStyleGAN"].INPUT_TYPES()["required"]["model"][0]
    assert set(files) <= set(listed)                  # Load StyleGAN offers them
    (snap, _) = m["NADALoadStyleGAN"]().load(files[1], "cpu", "fp32")
    hist = snap.provenance["history"][-1]
    assert hist["iterations_done"] == 4 and hist["snapshot"] is True
    assert any(e == "nada.train.snapshot" for e, _ in comfy.messages)


def test_cancel_names_the_saved_file_in_panel_and_log(setup, caplog, monkeypatch):
    comfy, m, gen, clip, direction = setup
    _cancel_at(comfy, monkeypatch, 2)
    with torch.inference_mode(), pytest.raises(comfy.mm.InterruptProcessingException), caplog.at_level("WARNING"):
        m["NADAAdaptGenerator"]().adapt(gen, clip, direction, 50, 2, 0.002, 0.0, 0, 0, unique_id="12")
    h = _pack_mod(comfy, "nodes.dashboard").history("12")
    assert h["status"] == "interrupted" and h["saved"].startswith("nada-partial/")
    assert h["saved"] in h["message"]
    end = [d for e, d in comfy.messages if e == "nada.train.end"][-1]
    assert end["saved"] == h["saved"]
    assert any(h["saved"].split("/")[-1] in r.getMessage() for r in caplog.records)   # the server log names it


def test_out_of_memory_in_training_keeps_work_and_says_what_to_change(setup, monkeypatch):
    comfy, m, gen, clip, direction = setup
    import importlib
    T = importlib.import_module(f"{comfy.pack.__name__}.nada_ops.nada.trainer")
    real = T._train_step
    calls = {"n": 0}

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(*a, **k)

    monkeypatch.setattr(T, "_train_step", failing)
    with torch.inference_mode(), pytest.raises(RuntimeError) as ei:
        m["NADAAdaptGenerator"]().adapt(gen, clip, direction, 10, 2, 0.002, 0.0, 0, 0, unique_id="13")
    msg = str(ei.value)
    assert "out of memory" in msg and "batch_size" in msg and "nada-partial/" in msg
    assert "iterations trained so far" in msg
    assert comfy.empty_cache_calls > 0
    h = _pack_mod(comfy, "nodes.dashboard").history("13")
    assert h["status"] == "error" and h["saved"]
