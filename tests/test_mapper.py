"""Latent mapper (StyleGAN-NADA sec. 4.3): the network against StyleCLIP's formulas, StyleCLIP
checkpoints written in their layout (read safely), our safetensors format, the trainer's losses
(eq. 5), and the command line. Tiny generators and CLIP models; no downloads."""
from __future__ import annotations

import argparse
import math
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import randomize, tiny_config
from nada_ops.clip.tiny import tiny_clip_model
from nada_ops.nada.mapper import (LatentMapper, MapperConfig, MapperFileError, MapperHandle, MapperSettings,
                                  load_mapper, new_mapper, norm_statistics, save_mapper, train_mapper)
from nada_ops.nada.mapper.ranger import Ranger
from nada_ops.nada.mapper.train import MapperGuidance, TargetEntry, mapper_losses, norm_loss
from nada_ops.stylegan.networks import Generator

pytestmark = pytest.mark.usefixtures("one_thread")


def _G(res=32, seed=0):
    torch.manual_seed(seed)
    return randomize(Generator(tiny_config(img_resolution=res)).eval(), seed)


def _ws(G, n=4, seed=123, psi=0.7, mixed=False):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = G.map(torch.randn(n, G.cfg.z_dim, generator=g), None, psi)
    if mixed:   # distinct W+ rows
        ws = ws + 0.3 * torch.randn(ws.shape, generator=g)
    return ws


def _randomized_mapper(cfg, seed=0):
    m = new_mapper(cfg, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 30)   # stored / lr_mul: 0.3 after the gain
    return m


def styleclip_reference(ws, layers: dict, lr_mul=0.01, step=0.1):
    """StyleCLIP's mapper written out from its formulas: per level, PixelNorm over dim 1 of the
    level's block (the W+ entries), 4 x (EqualLinear with fused leaky ReLU); w + 0.1 * M(w)."""
    out = torch.zeros_like(ws)
    bounds = {"coarse": (0, 4), "medium": (4, 8), "fine": (8, ws.shape[1]), "all": (0, ws.shape[1])}
    for name, params in layers.items():
        a, b = bounds[name]
        x = ws[:, a:b]
        x = x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)
        for w, bias in params:
            x = F.linear(x, w * (1 / math.sqrt(w.shape[1])) * lr_mul)
            x = F.leaky_relu(x + bias * lr_mul, 0.2) * math.sqrt(2)
        out[:, a:b] = x
    return ws + step * out


def _layers_of(m: LatentMapper) -> dict:
    return {name: [(getattr(m, name).__getattr__(f"fc{i}").weight, getattr(m, name).__getattr__(f"fc{i}").bias)
                   for i in range(m.cfg.num_layers)] for name in m.cfg.mlps}


# ------------------------------------------------------------------------------ network
@pytest.mark.parametrize("kind,levels", [("levels", ("coarse", "medium", "fine")), ("levels", ("coarse", "fine")),
                                         ("levels", ("fine",)), ("single", ())])
def test_mapper_is_styleclips_formula(kind, levels):
    G = _G(64)                                  # 10 W+ entries: every level has rows
    cfg = MapperConfig.for_generator(G.cfg, levels, kind=kind)
    m = _randomized_mapper(cfg)
    for mixed in (False, True):
        ws = _ws(G, mixed=mixed)
        with torch.no_grad():
            got, ref = m.map(ws), styleclip_reference(ws, _layers_of(m))
        assert (got - ref).abs().max() < 1e-5
        step = (got - ws).abs().amax(dim=(0, 2))
        for name in ("coarse", "medium", "fine"):
            rows = {"coarse": slice(0, 4), "medium": slice(4, 8), "fine": slice(8, 10)}[name]
            moved = kind == "single" or name in levels
            assert bool((step[rows] > 0).all()) == moved, (name, step)   # switched-off levels stay put
    with torch.no_grad():
        assert torch.equal(m.map(ws, 0.0), ws)
        assert torch.allclose(m.map(ws, 2.0) - ws, 2 * (m.map(ws) - ws), atol=1e-6)


def test_pixel_norm_modes_and_resolutions():
    G = _G(32)                                   # 8 entries: no fine level at 32 px
    cfg = MapperConfig.for_generator(G.cfg)
    assert cfg.levels == ("coarse", "medium")
    with pytest.raises(ValueError, match="no W\\+ entries"):
        MapperConfig.for_generator(G.cfg, ("fine",))
    rows = new_mapper(cfg, 0)
    feats = LatentMapper(MapperConfig.for_generator(G.cfg, pixel_norm="features"))
    feats.load_state_dict(rows.state_dict())
    ws = _ws(G)
    assert not torch.allclose(rows.map(ws), feats.map(ws))
    # StyleCLIP's PixelNorm over the entries of a plain W code sees only the signs of w
    ws = torch.sign(ws) * ws.abs().clamp_min(0.05)      # (away from 0, where its epsilon matters)
    assert torch.allclose(rows(ws), rows(torch.sign(ws) * 3.0), atol=1e-4)
    with pytest.raises(ValueError, match="made for W\\+ latents"):
        rows(_ws(_G(64)))


# ------------------------------------------------------------------- StyleCLIP checkpoints
def _styleclip_state(m: LatentMapper, decoder_size=None) -> dict:
    """The state-dict layout of StyleCLIP's StyleCLIPMapper (mapper + decoder) for mapper ``m``."""
    names = {"coarse": "course_mapping", "medium": "medium_mapping", "fine": "fine_mapping"}
    sd = {}
    for name, params in _layers_of(m).items():
        prefix = "mapper.mapping.mapping" if name == "all" else f"mapper.{names[name]}.mapping"
        for i, (w, b) in enumerate(params):
            sd[f"{prefix}.{i + 1}.weight"] = w.detach().clone()
            sd[f"{prefix}.{i + 1}.bias"] = b.detach().clone()
    sd["decoder.style.1.weight"] = torch.randn(4, 4)   # the decoder StyleCLIP stores too (ignored)
    if decoder_size:
        for k in range(int(math.log2(decoder_size)) - 2):
            sd[f"decoder.to_rgbs.{k}.bias"] = torch.zeros(1, 3, 1, 1)
    return sd


def _styleclip_opts(cfg, **kw):
    o = dict(exp_dir="x", mapper_type="SingleMapper" if cfg.kind == "single" else "LevelsMapper",
             no_coarse_mapper="coarse" not in cfg.levels and cfg.kind == "levels",
             no_medium_mapper="medium" not in cfg.levels and cfg.kind == "levels",
             no_fine_mapper="fine" not in cfg.levels and cfg.kind == "levels",
             stylegan_size=2 ** ((cfg.num_ws + 2) // 2), description="a cat", learning_rate=0.5, norm_lambda=0.5,
             checkpoint_path=None, latents_test_path=None)
    o.update(kw)
    return o


@pytest.mark.parametrize("levels,opts_as", [(("coarse", "medium", "fine"), "dict"), (("coarse", "medium"), "namespace"),
                                            ((), "dict-legacy")])
def test_styleclip_checkpoint_gives_the_same_mapped_latents(tmp_path, levels, opts_as):
    G = _G(64)
    cfg = MapperConfig.for_generator(G.cfg, levels, kind="levels" if levels else "single")
    m = _randomized_mapper(cfg, 3)
    opts = _styleclip_opts(cfg)
    path = tmp_path / "mapper.pt"
    obj = {"state_dict": _styleclip_state(m), "opts": argparse.Namespace(**opts) if opts_as == "namespace" else opts}
    torch.save(obj, path, _use_new_zipfile_serialization=opts_as != "dict-legacy")
    h = load_mapper(path)
    assert h.source_format == "styleclip-pt" and h.cfg.kind == cfg.kind and h.cfg.levels == cfg.levels
    assert h.cfg.num_ws == 10 and h.cfg.step_scale == 0.1 and h.cfg.pixel_norm == "rows"
    assert h.provenance["target"]["target"] == "a cat" and h.provenance["styleclip_opts"]["norm_lambda"] == 0.5
    ws = _ws(G, mixed=True)
    with torch.no_grad():
        assert (h.mapper.map(ws) - styleclip_reference(ws, _layers_of(m))).abs().max() < 1e-5
    assert "kind: " in h.describe()


def test_styleclip_checkpoint_size_from_the_decoder(tmp_path):
    cfg = MapperConfig(num_ws=16, w_dim=32)
    path = tmp_path / "m.pt"
    torch.save({"state_dict": _styleclip_state(_randomized_mapper(cfg), decoder_size=512)}, path)   # no opts
    assert load_mapper(path).cfg.num_ws == 16


class _Marker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("problem,match", [
    ("global", "refusing to load global"),
    ("opts-disagree", "no_fine_mapper"),
    ("type-disagree", "mapper_type"),
    ("nan", "NaN"),
    ("int", "floating point"),
    ("not-square", "square"),
    ("stylespace", "StyleSpace"),
    ("gap", "numbered 1..n"),
    ("no-mapper", "no mapper weights"),
    ("not-a-dict", "expected StyleCLIP"),
])
def test_bad_styleclip_checkpoints_are_refused_naming_the_file(tmp_path, problem, match):
    cfg = MapperConfig(num_ws=10, w_dim=8)
    sd = _styleclip_state(_randomized_mapper(cfg))
    opts = _styleclip_opts(cfg)
    marker = tmp_path / "was-executed"
    obj = {"state_dict": sd, "opts": opts}
    if problem == "global":
        obj["opts"] = {"x": _Marker(str(marker))}
    elif problem == "opts-disagree":
        opts["no_fine_mapper"] = True
    elif problem == "type-disagree":
        opts["mapper_type"] = "SingleMapper"
    elif problem == "nan":
        sd["mapper.medium_mapping.mapping.2.bias"][0] = float("nan")
    elif problem == "int":
        sd["mapper.medium_mapping.mapping.2.bias"] = torch.zeros(8, dtype=torch.int64)
    elif problem == "not-square":
        for k in [k for k in sd if k.endswith(".weight") and k.startswith("mapper.")]:
            sd[k] = torch.zeros(8, 9)
    elif problem == "stylespace":
        obj["opts"]["work_in_stylespace"] = True
    elif problem == "gap":
        del sd["mapper.fine_mapping.mapping.3.weight"], sd["mapper.fine_mapping.mapping.3.bias"]
    elif problem == "no-mapper":
        obj["state_dict"] = {"decoder.x": torch.zeros(2)}
    elif problem == "not-a-dict":
        obj = [sd]
    path = tmp_path / "bad.pt"
    torch.save(obj, path)
    with pytest.raises(MapperFileError, match=match) as e:
        load_mapper(path)
    assert "bad.pt" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("content,match", [(b"", "empty"), (b"not a model at all", "not a latent mapper")])
def test_non_mapper_files(tmp_path, content, match):
    p = tmp_path / "x.safetensors"
    p.write_bytes(content)
    with pytest.raises(MapperFileError, match=match):
        load_mapper(p)


# ---------------------------------------------------------------------- our format
def test_safetensors_round_trip(tmp_path):
    G = _G(64)
    cfg = MapperConfig.for_generator(G.cfg, ("coarse", "fine"), step_scale=0.2, pixel_norm="features")
    m = _randomized_mapper(cfg, 5)
    h = MapperHandle(mapper=m, name="cat", provenance={"target": {"kind": "text", "target": "cat"}})
    folder = tmp_path / "models" / "stylegan_mappers"
    folder.mkdir(parents=True)
    save_mapper(h.derive(m, history_entry={"op": "latent_mapper", "iterations_done": 3}), folder / "cat.safetensors")
    assert sorted(os.listdir(folder)) == ["cat.safetensors"]          # atomic: no debris
    back = load_mapper(folder / "cat.safetensors")
    assert back.cfg == cfg and back.source_format == "safetensors"
    assert back.provenance["target"]["target"] == "cat" and back.provenance["history"][-1]["iterations_done"] == 3
    for k, v in m.state_dict().items():
        assert torch.equal(back.mapper.state_dict()[k], v), k
    ws = _ws(G, mixed=True)
    assert torch.equal(back.mapper.map(ws), m.map(ws))
    # tampered files are refused before any network is built
    from safetensors.torch import save_file
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    meta = {"format": "nada-latent-mapper", "format_version": "1", "mapper": cfg.to_json(), "provenance": "{}"}
    bad = dict(sd)
    bad["coarse.fc0.weight"] = torch.zeros(32, 31)
    save_file(bad, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(MapperFileError, match="shape"):
        load_mapper(tmp_path / "shape.safetensors")
    save_file(sd, str(tmp_path / "fmt.safetensors"), metadata={**meta, "format": "nada-stylegan2"})
    with pytest.raises(MapperFileError, match="latent mapper saved by this pack"):
        load_mapper(tmp_path / "fmt.safetensors")
    save_file(sd, str(tmp_path / "arch.safetensors"), metadata={**meta, "mapper": '{"num_ws": 10, "w_dim": 32, '
                                                                               '"kind": "exec"}'})
    with pytest.raises(MapperFileError, match="kind must be one of"):
        load_mapper(tmp_path / "arch.safetensors")


# ------------------------------------------------------------------------------ optimizer
def test_ranger_first_step_is_centralized_momentum_sgd_and_lookahead_syncs():
    p = torch.nn.Parameter(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    opt = Ranger([p], lr=0.5, k=2)
    g = torch.tensor([[1.0, 0.0, 2.0], [3.0, 3.0, 3.0]])
    p.grad = g.clone()
    opt.step()
    gc = g - g.mean(dim=1, keepdim=True)         # gradient centralization
    assert torch.allclose(p.detach(), torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]) - 0.5 * gc)
    fast_before = p.detach().clone()
    p.grad = g.clone()
    opt.step()                                    # k = 2: the weights become slow + 0.5 (fast - slow)
    start = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    m2 = 0.95 * 0.05 * gc + 0.05 * gc
    fast = fast_before - 0.5 * m2 / (1 - 0.95 ** 2)
    assert torch.allclose(p.detach(), start + 0.5 * (fast - start), atol=1e-6)


# ------------------------------------------------------------------------------ training
def _image_target_guidance(G, clip, seed=7):
    """Target: the CLIP embedding of one image of G, so that a mapper can reach it."""
    with torch.no_grad():
        w = G.map(torch.randn(1, G.cfg.z_dim, generator=torch.Generator().manual_seed(seed)), None, 1.0)
        e = clip.encode_generator_images(G.synthesis(w))[0]
    return MapperGuidance((TargetEntry(clip, 1.0, clip.key, e / e.norm()),), {"kind": "image"})


@pytest.fixture(scope="module")
def setup():
    G = _G(32)
    clip = tiny_clip_model(seed=1)
    # lr multiplier 1 instead of StyleCLIP's 0.01: the same mapper, learning fast enough for a test
    cfg = MapperConfig.for_generator(G.cfg, lr_mul=1.0)
    return G, clip, _image_target_guidance(G, clip), cfg, _ws(G, n=16, seed=321)


def _eval(G, m, guidance, ws, s):
    with torch.no_grad():
        loss, terms = mapper_losses(G, m, guidance, ws, s)
    return float(loss), {k: float(v) for k, v in terms.items()}


def test_training_lowers_the_loss_on_unseen_latents_and_leaves_the_generator(setup):
    G, _, guidance, cfg, held_out = setup
    before = {k: v.clone() for k, v in G.state_dict().items()}
    s = MapperSettings(iterations=50, preview_every=25, seed=1)
    steps = []
    r = train_mapper(G, guidance, s, cfg, progress=steps.append)
    assert r.steps_done == 50 and not r.interrupted and r.stop_exception is None
    assert [p.step for p in steps if p.preview is not None] == [25, 50]
    assert steps[-1].preview.shape == (8, 3, 32, 32)          # 4 preview seeds: source row + mapped row
    l0, t0 = _eval(G, new_mapper(cfg, s.seed), guidance, held_out, s)
    l1, t1 = _eval(G, r.mapper, guidance, held_out, s)
    assert l1 < 0.85 * l0 and t1["clip"] < 0.8 * t0["clip"], (l0, t0, l1, t1)
    assert not r.mapper.training and not any(p.requires_grad for p in r.mapper.parameters())
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k
    hist = r.history_entry(s, guidance, "g")
    assert hist["iterations_done"] == 50 and hist["settings"]["lambda_norm"] == 0.2


def test_norm_loss_keeps_the_embedding_norms(setup):
    """eq. 5: with lambda_norm > 0 the CLIP embedding norms of the mapped images change less."""
    G, clip, guidance, cfg, held_out = setup
    change = {}
    for lam in (0.0, 20.0):
        s = MapperSettings(iterations=40, preview_every=0, lambda_norm=lam, seed=2)
        r = train_mapper(G, guidance, s, cfg)
        change[lam] = norm_statistics(G, r.mapper, guidance, held_out)[clip.key]["abs_change"]
    assert change[20.0] < 0.7 * change[0.0], change
    # the two readings of eq. 5 on fixed embeddings: 'norms' ignores a rotation, 'embeddings' does not
    a = torch.tensor([[3.0, 4.0]])
    b = torch.tensor([[4.0, 3.0]])
    assert norm_loss(a, b, "norms") == 0 and norm_loss(a, b, "embeddings") == 2
    assert norm_loss(2 * a, a, "norms") == 25


def test_large_lambda_l2_keeps_the_mapped_latents_close(setup):
    G, _, guidance, cfg, held_out = setup
    dist = {}
    for lam in (0.0, 200.0):
        s = MapperSettings(iterations=30, preview_every=0, lambda_l2=lam, lambda_norm=0.0, seed=3)
        r = train_mapper(G, guidance, s, cfg)
        with torch.no_grad():
            dist[lam] = float((r.mapper.map(held_out) - held_out).abs().mean())
    assert dist[200.0] < 0.5 * dist[0.0], dist
    assert dist[200.0] < 0.02


def test_cancel_keeps_what_was_trained(setup):
    G, _, guidance, cfg, _ = setup

    class Stop(Exception):
        pass

    def progress(info):
        if info.step == 3:
            raise Stop()

    r = train_mapper(G, guidance, MapperSettings(iterations=50, preview_every=0), cfg, progress=progress)
    assert r.interrupted and r.steps_done == 3 and isinstance(r.stop_exception, Stop) and len(r.losses) == 3
    assert any(not torch.equal(a, b) for a, b in zip(r.mapper.state_dict().values(),
                                                      new_mapper(cfg, 0).state_dict().values()))


def test_settings_are_checked():
    for bad in (dict(lr=0), dict(optimizer="sgd"), dict(lambda_clip=0), dict(lambda_l2=-1), dict(norm_loss="x"),
                dict(iterations=0)):
        with pytest.raises(ValueError):
            MapperSettings(**bad).validate()


# ---------------------------------------------------------------------------- command line
def test_cli_train_and_apply(tmp_path, capsys):
    from PIL import Image

    from nada_ops.cli import main
    from nada_ops.clip.tiny import TINY_NAME, build_tiny_open_clip, register_tiny_config
    from nada_ops.latent_tools import load_latents
    from nada_ops.stylegan.io import save_generator
    from safetensors.torch import save_file
    register_tiny_config(tmp_path / "cfg")
    clip_file = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in build_tiny_open_clip(seed=0).state_dict().items()}, str(clip_file))
    g = tmp_path / "adapted.safetensors"
    save_generator(_G(32), g)
    out = tmp_path / "out" / "cat.safetensors"
    rc = main(["mapper", "train", "--generator", str(g), "--target", "cat", "--templates", "single",
               "--clip", f"{TINY_NAME}:1", "--clip-weights", f"{TINY_NAME}={clip_file}", "--iterations", "4",
               "--preview-every", "2", "--save-every", "3", "--lambda-l2", "0.8", "--lambda-norm", "0.5",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    h = load_mapper(out)
    hist = h.provenance["history"][-1]
    assert hist["iterations_done"] == 4 and hist["settings"]["lambda_l2"] == 0.8 and h.cfg.levels == ("coarse",
                                                                                                      "medium")
    assert h.provenance["target"]["target"] == "cat"
    assert load_mapper(tmp_path / "out" / "cat.step000003.safetensors").provenance["history"][-1]["snapshot"]
    assert sorted(os.listdir(tmp_path / "out" / "cat_samples")) == ["step000002.png", "step000004.png"]
    grid, lat_out = tmp_path / "grid.png", tmp_path / "mapped.pt"
    assert main(["mapper", "apply", "--mapper", str(out), "--generator", str(g), "--seeds", "0-2",
                 "--strength", "2", "--out", str(grid), "--latents-out", str(lat_out)]) == 0
    assert Image.open(grid).size == (96, 64)                  # 3 seeds, before / after rows
    lat = load_latents(lat_out)
    assert lat.ws.shape == (3, 8, 32) and lat.info["mapper"]["strength"] == 2.0
    assert main(["mapper", "apply", "--mapper", str(out), "--generator", str(g), "--latents", str(lat_out),
                 "--latents-out", str(tmp_path / "again.pt")]) == 0
    # errors are messages
    assert main(["mapper", "apply", "--mapper", str(tmp_path / "nope.pt"), "--generator", str(g),
                 "--out", str(grid)]) == 1
    assert "nope.pt: file does not exist" in capsys.readouterr().err
    assert main(["mapper", "frobnicate"]) == 2
