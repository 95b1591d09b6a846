"""CLIP guidance library (nada_ops.clip): preprocessing, encoders, templates, directions,
ensembles and weight loading. Tiny random models only; nothing is downloaded."""
import os
import pickle
import zipfile

import pytest
import torch

import nada_ops.clip as nclip
from nada_ops.clip import (ClipEnsemble, ClipWeightsNotFoundError, Direction,
                           IdenticalEmbeddingsError, expand_templates, find_local_weights,
                           get_templates, image_direction, load_clip, model_key, text_direction,
                           text_embedding, to_clip_input)
from nada_ops.clip.tiny import (TINY_NAME, build_tiny_open_clip, register_tiny_config,
                                tiny_clip_model)
from nada_ops.clip.torchscript import is_torchscript_archive, read_torchscript_state_dict

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def tiny():
    return tiny_clip_model(seed=0)


@pytest.fixture(scope="module")
def tiny_registered(tmp_path_factory):
    """The tiny architecture registered with open_clip under TINY_NAME."""
    register_tiny_config(tmp_path_factory.mktemp("tiny_cfg"))
    return TINY_NAME


def _normalize(v):
    return v / v.norm(dim=-1, keepdim=True)


# -- preprocessing ---------------------------------------------------------------------

@pytest.mark.parametrize("value,expected01", [(-1.0, 0.0), (0.0, 0.5), (1.0, 1.0), (1.5, 1.25)])
def test_preprocess_maps_range_without_clamping(value, expected01):
    img = torch.full((2, 3, 64, 64), value)
    out = to_clip_input(img, 32, MEAN, STD)
    assert out.shape == (2, 3, 32, 32)
    for c in range(3):
        want = (expected01 - MEAN[c]) / STD[c]
        torch.testing.assert_close(out[:, c], torch.full_like(out[:, c], want), atol=1e-5, rtol=0)


def test_preprocess_is_differentiable(tiny):
    x = (torch.rand(2, 3, 48, 48) * 2 - 1).requires_grad_(True)
    to_clip_input(x, 32, MEAN, STD).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

    x.grad = None
    emb = tiny.encode_generator_images(x)
    emb.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in tiny.model.parameters())


def test_preprocess_non_square_center_crops():
    img = -torch.ones(1, 3, 32, 64)
    img[..., 16:48] = 1.0  # the central 32 columns
    out = to_clip_input(img, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert out.shape == (1, 3, 32, 32)
    torch.testing.assert_close(out, torch.ones_like(out))
    tall = to_clip_input(torch.zeros(1, 3, 100, 40), 20, MEAN, STD)  # short side 40 -> 20
    assert tall.shape == (1, 3, 20, 20)
    assert to_clip_input(torch.zeros(1, 3, 10, 10), (8, 6), MEAN, STD).shape == (1, 3, 8, 6)


def test_real_images_take_the_generator_path(tiny):
    from PIL import Image
    image = torch.rand(2, 40, 36, 3)  # ComfyUI IMAGE: NHWC in [0, 1]
    via_real = tiny.encode_pil_or_tensor_images(image)
    via_gen = tiny.encode_generator_images(image.permute(0, 3, 1, 2) * 2 - 1)
    torch.testing.assert_close(via_real, via_gen, atol=1e-5, rtol=1e-5)
    rgba = torch.cat([image, torch.ones(2, 40, 36, 1)], dim=-1)
    torch.testing.assert_close(tiny.encode_pil_or_tensor_images(rgba), via_real)
    pil = Image.fromarray((image[0].numpy() * 255).round().astype("uint8"))
    e_pil = tiny.encode_pil_or_tensor_images([pil, image[1]])  # a list; sizes may differ
    assert e_pil.shape == (2, via_real.shape[1])
    with pytest.raises(ValueError):
        tiny.encode_pil_or_tensor_images(torch.rand(2, 3, 40, 36))  # NCHW is not an IMAGE


# -- text --------------------------------------------------------------------------------

def test_text_cache_encodes_each_text_once():
    m = tiny_clip_model(seed=1)
    encoded = []
    original = m.model.encode_text

    def counting(tokens, *a, **kw):
        encoded.append(tokens.shape[0])
        return original(tokens, *a, **kw)

    m.model.encode_text = counting
    e1 = m.encode_text(["a dog", "a cat", "a dog"])
    assert sum(encoded) == 2 and e1.shape == (3, 32)
    torch.testing.assert_close(e1[0], e1[2])
    e2 = m.encode_text(["a cat", "a fox"])
    assert sum(encoded) == 3
    torch.testing.assert_close(e2[0], e1[1])
    m.encode_text("a fox")
    assert sum(encoded) == 3
    text_embedding(m, "a dog", "nada")
    text_embedding(m, "a dog", "nada")
    assert sum(encoded) == 3 + 79


def test_templates_come_from_open_clip():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    assert expand_templates("dog", "single") == ["dog"]
    imagenet = expand_templates("dog", "imagenet")
    nada = expand_templates("dog", "nada")
    assert len(imagenet) == len(OPENAI_IMAGENET_TEMPLATES) == 80
    assert len(nada) == 79 and set(imagenet) - set(nada) == {"a photo of many dog."}
    assert "a bad photo of a dog." in nada
    assert expand_templates("{x}", ["art of {}", lambda c: c.upper()]) == ["art of {x}", "{X}"]
    with pytest.raises(ValueError):
        get_templates("nonsense")


def test_template_average_matches_hand_computation(tiny):
    from open_clip.tokenizer import SimpleTokenizer
    tok = SimpleTokenizer(context_length=77)
    prompts = expand_templates("dog", "nada")
    with torch.no_grad():
        rows = tiny.model.encode_text(tok(prompts))
    assert rows.shape[0] == 79
    want = _normalize(sum(_normalize(r) for r in rows) / len(prompts))
    got = text_embedding(tiny, "dog", "nada")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        single = _normalize(tiny.model.encode_text(tok(["dog"]))[0])
    torch.testing.assert_close(text_embedding(tiny, "dog", "single"), single, atol=1e-5, rtol=1e-5)


# -- directions --------------------------------------------------------------------------

def test_text_direction_is_unit_and_follows_the_spec(tiny):
    d = text_direction(tiny, "photo", "sketch", "nada")
    k = model_key(tiny)
    assert isinstance(d, Direction) and d.keys == [k] and d.kind == "text"
    assert abs(float(d.directions[k].norm()) - 1) < 1e-5
    assert abs(float(d.targets[k].norm()) - 1) < 1e-5
    # dT = norm(mean_t norm(E(tmpl(target))) - mean_t norm(E(tmpl(source))))
    mt = _normalize(tiny.encode_text(expand_templates("sketch", "nada"))).mean(0)
    ms = _normalize(tiny.encode_text(expand_templates("photo", "nada"))).mean(0)
    torch.testing.assert_close(d.directions[k], _normalize(mt - ms), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d.targets[k], text_embedding(tiny, "sketch", "nada"))
    assert d.provenance["source"] == "photo" and d.provenance["target"] == "sketch"
    assert d.provenance["num_templates"] == 79 and d.provenance["models"] == [k]
    dt, tgt = d.for_model(tiny)
    assert dt.shape == tgt.shape == (32,)


def test_identical_texts_raise(tiny):
    with pytest.raises(IdenticalEmbeddingsError):
        text_direction(tiny, "a photo", "a photo ")
    with pytest.raises(IdenticalEmbeddingsError, match="identical"):
        text_direction(tiny, "Photo", "photo", "single")  # same tokens after lower-casing


def test_image_direction_from_image_tensors(tiny):
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 40, 40, 3, generator=g)            # IMAGE, NHWC 0..1
    source = torch.rand(4, 3, 48, 48, generator=g) * 2 - 1     # generator output
    d = image_direction(tiny, target, source)
    k = tiny.key
    assert d.kind == "image" and abs(float(d.directions[k].norm()) - 1) < 1e-5
    mt = _normalize(tiny.encode_pil_or_tensor_images(target)).mean(0)
    ms = _normalize(tiny.encode_generator_images(source)).mean(0)
    torch.testing.assert_close(d.directions[k], _normalize(mt - ms), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d.targets[k], _normalize(mt), atol=1e-5, rtol=1e-5)
    assert d.provenance["num_target_images"] == 3 and d.provenance["num_source_images"] == 4

    real_source = (source.permute(0, 2, 3, 1) + 1) / 2
    d2 = image_direction(tiny, target, real_source, source_layout="image")
    torch.testing.assert_close(d2.directions[k], d.directions[k], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="source_layout"):
        image_direction(tiny, target, real_source)
    with pytest.raises(IdenticalEmbeddingsError):
        image_direction(tiny, target, target, source_layout="image")


def test_direction_over_an_ensemble():
    a, b = tiny_clip_model(seed=2), tiny_clip_model(seed=3)
    ens = ClipEnsemble([(a, 1.0), (b, 0.5)])
    d = text_direction(ens, "dog", "cat", "single")
    assert d.keys == [a.key, b.key]
    assert not torch.allclose(d.directions[a.key], d.directions[b.key])
    with pytest.raises(KeyError):
        d.for_model("ViT-B-32:openai")


# -- ensemble ----------------------------------------------------------------------------

def test_ensemble_never_loads_zero_weight_models():
    calls = []

    def fake_load(name, pretrained=None, **kw):
        calls.append((name, pretrained, kw))
        return tiny_clip_model(seed=len(calls), name=name)

    ens = ClipEnsemble([("ViT-B-32", 1.0), ("ViT-B-16", 0.0), (("RN50", "openai"), 0.5)],
                       load_fn=fake_load, device="cpu")
    assert [c[:2] for c in calls] == [("ViT-B-32", None), ("RN50", "openai")]
    assert calls[0][2] == {"device": "cpu"}
    assert [(m.name, w) for m, w in ens] == [("ViT-B-32", 1.0), ("RN50", 0.5)]
    assert len(ens) == 2 and ens.weight_of(ens.keys[1]) == 0.5
    with pytest.raises(ValueError):
        ClipEnsemble([("ViT-B-32", 0.0)], load_fn=fake_load)
    with pytest.raises(ValueError):
        ClipEnsemble([("ViT-B-32", -1.0)], load_fn=fake_load)
    m = tiny_clip_model(seed=9)
    with pytest.raises(ValueError, match="twice"):
        ClipEnsemble([(m, 1.0), (m, 1.0)])
    assert len(calls) == 2


# -- loading -----------------------------------------------------------------------------

def test_load_open_clip_state_dict_files(tmp_path, tiny_registered):
    from safetensors.torch import save_file
    ref_module = build_tiny_open_clip(seed=5)
    ref = nclip.ClipModel(ref_module, name=tiny_registered)
    sd = {k: v.contiguous() for k, v in ref_module.state_dict().items()}
    save_file(sd, str(tmp_path / "tiny.safetensors"))
    torch.save(sd, str(tmp_path / "tiny.bin"))
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    for fname in ("tiny.safetensors", "tiny.bin"):
        m = load_clip(tiny_registered, pretrained=str(tmp_path / fname))
        assert m.key == f"{TINY_NAME}:{fname}" and not m.model.training
        assert not any(p.requires_grad for p in m.model.parameters())
        torch.testing.assert_close(m.encode_generator_images(x), ref.encode_generator_images(x))
        torch.testing.assert_close(m.encode_text(["a dog"]), ref.encode_text(["a dog"]))

    # found through search_dirs under <dir>/<name>/<tag>/ with open_clip's file name
    tag_dir = tmp_path / "models" / TINY_NAME / "mytag"
    tag_dir.mkdir(parents=True)
    torch.save(sd, str(tag_dir / "open_clip_pytorch_model.bin"))
    m = load_clip(tiny_registered, "mytag", search_dirs=[tmp_path / "nothing", tmp_path / "models"])
    assert m.key == f"{TINY_NAME}:mytag"
    torch.testing.assert_close(m.encode_text(["a dog"]), ref.encode_text(["a dog"]))

    rnd = load_clip(tiny_registered, "random", dtype=torch.float64)
    assert rnd.key == f"{TINY_NAME}:random" and rnd.encode_generator_images(x).shape == (2, 32)


def _write_openai_style_archive(path, seed=0):
    """A TorchScript archive laid out like OpenAI's CLIP releases: a traced model whose
    state dict has OpenAI's keys (+ the metadata entries), fp16-representable weights."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(32, CLIPVisionCfg(layers=1, width=64, patch_size=8, image_size=32),
                     CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
                     quick_gelu=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    mask = model._buffers.pop("attn_mask")  # OpenAI keeps the mask as a plain attribute
    model.attn_mask = mask
    for k, v in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        model.__dict__.pop(k, None)  # open_clip keeps these as plain ints
        model.register_buffer(k, torch.tensor(v))
    img, txt = torch.zeros(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long)
    traced = torch.jit.trace_module(model, {"encode_image": (img,), "encode_text": (txt,)})
    torch.jit.save(traced, str(path))
    return model


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_load_openai_torchscript_archive_without_running_it(tmp_path, monkeypatch):
    import open_clip
    path = tmp_path / "weights.bin"  # detected by content, whatever the extension
    ref_module = _write_openai_style_archive(path)
    assert is_torchscript_archive(path)
    assert not is_torchscript_archive(tmp_path / "missing.pt")

    def no_jit(*a, **kw):
        raise AssertionError("torch.jit.load must not be used")

    with monkeypatch.context() as mp:
        mp.setattr(torch.jit, "load", no_jit)
        m = load_clip("tiny-openai", pretrained=str(path))
    ref = nclip.ClipModel(ref_module, name="ref")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(m.encode_generator_images(x), ref.encode_generator_images(x),
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m.encode_text(["a dog"]), ref.encode_text(["a dog"]),
                               atol=1e-5, rtol=1e-4)
    assert m.mean == MEAN and m.input_size == 32 and m.dtype == torch.float32
    assert not isinstance(m.model, torch.jit.ScriptModule)

    # same weights as open_clip's own (torch.jit.load based) reader
    theirs = open_clip.load_openai_model(str(path), device="cpu").state_dict()
    ours = m.model.state_dict()
    assert set(theirs) == set(ours)
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k].to(ours[k].dtype))


def test_torchscript_reader_refuses_foreign_globals(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
        zf.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
    assert is_torchscript_archive(path)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_torchscript_state_dict(path)
    assert not marker.exists()


def test_find_local_weights(tmp_path):
    d = tmp_path / "clip"
    (d / "ViT-B-32" / "laion2b_s34b_b79k").mkdir(parents=True)
    (d / "ViT-B-16").mkdir()
    (d / "ViT-B-32" / "ViT-B-32.pt").touch()
    (d / "ViT-B-32" / "notes.txt").touch()
    (d / "ViT-B-16" / "open_clip_model.safetensors").touch()
    (d / "ViT-B-32-256.safetensors").touch()
    assert find_local_weights("ViT-B-32", [d]) == d / "ViT-B-32" / "ViT-B-32.pt"
    assert find_local_weights("ViT-B/32", [d], "openai") == d / "ViT-B-32" / "ViT-B-32.pt"
    assert find_local_weights("ViT-B-32", [d], "laion2b_s34b_b79k") is None
    (d / "ViT-B-32" / "laion2b_s34b_b79k" / "open_clip_pytorch_model.bin").touch()
    assert find_local_weights("ViT-B-32", [d], "laion2b_s34b_b79k") == \
        d / "ViT-B-32" / "laion2b_s34b_b79k" / "open_clip_pytorch_model.bin"
    assert find_local_weights("ViT-B-16", [tmp_path / "none", d]) == \
        d / "ViT-B-16" / "open_clip_model.safetensors"
    # 'ViT-B-32-256' is another architecture, not ViT-B-32 weights
    only_256 = tmp_path / "other"
    only_256.mkdir()
    (only_256 / "ViT-B-32-256.safetensors").touch()
    assert find_local_weights("ViT-B-32", [only_256]) is None
    assert find_local_weights("ViT-B-32-256", [only_256]) == only_256 / "ViT-B-32-256.safetensors"
    (only_256 / "ViT-B-32-laion2b_s34b_b79k.safetensors").touch()
    assert find_local_weights("ViT-B-32", [only_256], "laion2b-s34b-b79k") == \
        only_256 / "ViT-B-32-laion2b_s34b_b79k.safetensors"
    assert find_local_weights("ViT-B-32", None) is None


def test_offline_error_names_the_folder(tmp_path, monkeypatch):
    import open_clip.pretrained as ocp

    def offline(*a, **kw):
        raise OSError("network is unreachable")

    monkeypatch.setattr(ocp, "download_pretrained_from_hf", offline)
    monkeypatch.setattr(ocp, "download_pretrained_from_url", offline)
    folder = tmp_path / "models" / "clip"
    folder.mkdir(parents=True)
    for pretrained in ("openai", None):
        with pytest.raises(ClipWeightsNotFoundError) as ei:
            load_clip("ViT-B-32", pretrained, search_dirs=[folder])
        msg = str(ei.value)
        assert str(folder / "ViT-B-32") in msg and "network is unreachable" in msg
        assert "ViT-B-32.pt" in msg
    with pytest.raises(ClipWeightsNotFoundError, match="search_dirs"):
        load_clip("ViT-B-16", "openai")
    with pytest.raises(ValueError, match="laion2b_s34b_b79k"):
        load_clip("ViT-B-32", "no-such-tag", search_dirs=[folder])
    with pytest.raises(ClipWeightsNotFoundError):
        load_clip("ViT-B-32", str(tmp_path / "missing.safetensors"))


def test_open_clip_is_imported_lazily():
    """Importing nada_ops.clip must stay cheap: open_clip (seconds to import) only on use."""
    import ast
    import pathlib
    folder = pathlib.Path(nclip.__file__).parent
    for f in folder.glob("*.py"):
        for node in ast.parse(f.read_text()).body:  # module level only
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "open_clip" for n in names), f.name
