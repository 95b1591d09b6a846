"""clip2latent priors: the network and the sampler against an independent float64 implementation
of the reference computation, clip2latent checkpoints (written from code in their layout) and
their YAML, this pack's prior format, and refusals of broken or hostile files.

(The pack was also compared with clip2latent's and DALLE2-pytorch's own code run locally with
random weights: see README, "Verification".)"""
import math
import pickle

import pytest
import torch

from nada_ops.prior.config import PriorConfig, PriorConfigError
from nada_ops.prior.diffusion import Schedule, cosine_betas, guided_prediction, training_loss
from nada_ops.prior.formats import PriorFileError, load_prior, read_prior_file, write_prior
from nada_ops.prior.model import new_prior
from nada_ops.prior.network import PriorNetwork
from nada_ops.prior.yaml_subset import YamlError, parse_yaml
from prior_helpers import (reference_chain, reference_forward, reference_state_dict, reference_yaml,
                           trainer_checkpoint)

pytestmark = pytest.mark.usefixtures("one_thread")

DIMS = dict(dim=16, depth=2, heads=2, dim_head=8)


@pytest.fixture(scope="module")
def ref_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("c2l")
    ema, online = reference_state_dict(seed=1, **DIMS), reference_state_dict(seed=2, **DIMS)
    torch.save(trainer_checkpoint(ema, online), d / "faces.ckpt")
    (d / "faces.yaml").write_text(reference_yaml(**DIMS, repeats=(8,)), encoding="utf-8")
    return d, ema, online


def test_presets_have_the_reference_sizes():
    mid = PriorConfig.preset("mid", 512, 512)
    assert (mid.dim, mid.depth, mid.heads, mid.dim_head, mid.rotary_dim) == (512, 12, 12, 64, 32)
    # DALLE2-pytorch 0.2.38 counts 48,767,872 parameters for clip2latent's 'mid' network
    assert mid.parameter_count() == 48_767_872
    assert PriorConfig.preset("small", 512, 512).parameter_count() == 23_198_720
    with torch.device("meta"):
        assert sum(p.numel() for p in PriorNetwork(PriorConfig.preset("small", 512, 512)).parameters()) == 23_198_720
        wide = PriorConfig.preset("tiny", 512, 768)            # ViT-L/14 embeddings: an input projection
        assert sum(p.numel() for p in PriorNetwork(wide).parameters()) == wide.parameter_count()


@pytest.mark.parametrize("keep", [True, False])
def test_network_matches_the_float64_reference(ref_files, keep):
    d, ema, _ = ref_files
    prior = load_prior(d / "faces.ckpt")
    g = torch.Generator().manual_seed(3)
    x, c = torch.randn(3, 1, 16, generator=g), torch.randn(3, 16, generator=g) * 4
    t = torch.tensor([0, 517, 999])
    with torch.no_grad():
        ours = prior.net.double()(x.double(), t, c.double(), torch.full((3,), keep))
        prior.net.float()
    for i in range(3):
        ref = reference_forward(ema, x[i], t[i], c[i], keep, heads=2, dim_head=8)
        assert (ours[i] - ref).abs().max() < 1e-10
    with torch.no_grad():     # float32 against the same
        ours32 = prior.net(x, t, c, torch.full((3,), keep))
    ref0 = reference_forward(ema, x[0], t[0], c[0], keep, heads=2, dim_head=8)
    assert (ours32[0].double() - ref0).abs().max() < 2e-5


def test_wplus_network_matches_the_reference(tmp_path):
    """clip2latent's WPlusPriorNetwork: n latents in, n learned queries out."""
    ema = reference_state_dict(seed=4, n_latents=3, **DIMS)
    torch.save(trainer_checkpoint(ema, ema), tmp_path / "w3.ckpt")
    (tmp_path / "w3.yaml").write_text(reference_yaml(**DIMS, repeats=(2, 2, 4), n_latents=3), encoding="utf-8")
    prior = load_prior(tmp_path / "w3.ckpt")
    assert prior.cfg.num_latents == 3 and prior.cfg.latent_repeats == (2, 2, 4)
    x, c = torch.randn(1, 3, 16), torch.randn(1, 16)
    with torch.no_grad():
        ours = prior.net.double()(x.double(), torch.tensor([40]), c.double())
    ref = reference_forward(ema, x[0], 40, c[0], True, heads=2, dim_head=8)
    assert (ours[0] - ref).abs().max() < 1e-10
    w = torch.randn(2, 3, 16)
    assert torch.equal(prior.to_wplus(w, 8)[:, [0, 1, 2, 3, 4, 7]], w[:, [0, 0, 1, 1, 2, 2]])


def test_checkpoint_reading_uses_the_ema_weights_and_the_yaml(ref_files):
    d, ema, online = ref_files
    p = load_prior(d / "faces.ckpt")
    assert p.source_format == "clip2latent-ckpt" and p.provenance["config_file"] == "faces.yaml"
    assert torch.equal(p.net.time_embed, ema["net.to_time_embeds.0.weight"])
    assert torch.equal(p.w_mean[0], ema["latent_mean"]) and p.cfg.cond_drop_prob == 0.2
    assert p.clip_name == "ViT-B-32" and p.provenance["generator"]["file"] == "stylegan2-ffhq-1024x1024.pkl"
    on = load_prior(d / "faces.ckpt", weights="online")
    assert torch.equal(on.net.time_embed, online["net.to_time_embeds.0.weight"])
    assert p.cfg.cond_norm == "raw" and p.cfg.latent_repeats == ()      # [num_ws] of the generator
    assert "ViT-B-32" in p.describe() and "48" not in p.describe().split("parameters")[0][-3:]


def test_respaced_sampling_matches_the_reference_chain(ref_files):
    """clip2latent's set_timestep_skip + p_sample_loop (4 steps, guidance 2, truncation 0.7),
    with the same noise, against the float64 chain written from the description."""
    d, ema, _ = ref_files
    prior = load_prior(d / "faces.ckpt")
    c = torch.randn(2, 16, generator=torch.Generator().manual_seed(9)) * 3
    steps, gs, psi = 4, 2.0, 0.7
    w = prior.sample_w(c, guidance=gs, steps=steps, truncation=psi, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    x_init = torch.randn(2, 1, 16, generator=g)
    noises = [torch.randn(2, 1, 16, generator=g) for _ in range(steps)]

    def predict(x, t):
        out = []
        for i in range(2):
            pc = reference_forward(ema, x[i, 0], t, c[i], True, 2, 8)
            pu = reference_forward(ema, x[i, 0], t, c[i], False, 2, 8)
            out.append(pu + (pc - pu) * gs)
        return torch.stack(out)

    x = reference_chain(predict, x_init, noises, 1000, 1000 // steps)
    mean, std = ema["latent_mean"].double(), ema["latent_std"].double()
    ref = x[:, 0] * std + mean
    ref = mean + psi * (ref - mean)
    assert (w[:, 0].double() - ref).abs().max() < 5e-5


def test_even_respacing_and_the_loss():
    S = Schedule(1000)
    ts, c1, c2, lv = S.sampling_plan(7, "even")
    assert ts.tolist() == [999, 832, 666, 500, 333, 166, 0]
    acp = torch.cumprod(1 - cosine_betas(1000), 0)
    a, ap = acp[832], acp[666]              # step 832 -> 666 of the respaced chain
    beta = 1 - a / ap
    assert abs(float(lv[1]) - math.log(beta * (1 - ap) / (1 - a))) < 1e-5
    assert abs(float(c1[1]) - float(beta * ap.sqrt() / (1 - a))) < 1e-6
    with pytest.raises(ValueError, match="divides 1000"):
        S.sampling_plan(7, "reference")
    cfg = PriorConfig.preset("tiny", 8, 8, dim=16, dim_head=8)
    net = PriorNetwork(cfg)
    x0, c = torch.randn(4, 1, 8), torch.randn(4, 8)
    t, noise = torch.tensor([0, 10, 500, 999]), torch.randn(4, 1, 8)
    keep = torch.tensor([True, False, True, True])
    xt = S.sqrt_acp[t].view(-1, 1, 1) * x0 + S.sqrt_one_minus_acp[t].view(-1, 1, 1) * noise
    assert torch.allclose(training_loss(net, S, x0, c, keep, t, noise), ((net(xt, t, c, keep) - x0) ** 2).mean())
    # guidance: one batched pass equals the two passes of the reference
    g = guided_prediction(net, xt, t, c, 3.0)
    pc, pu = net(xt, t, c, torch.ones(4, dtype=torch.bool)), net(xt, t, c, torch.zeros(4, dtype=torch.bool))
    assert torch.allclose(g, pu + 3 * (pc - pu), atol=1e-6)


def test_our_format_round_trip_and_provenance(tmp_path):
    cfg = PriorConfig.preset("tiny", 12, 20, dim=16, dim_head=8, cond_norm="l2", latent_repeats=())
    p = new_prior(cfg, torch.randn(12), torch.rand(12) + 0.5, seed=3, name="mine",
                  provenance={"clip": {"name": "ViT-B-32", "embed_dim": 20}, "generator": {"num_ws": 6}})
    write_prior(p, tmp_path / "p.safetensors")
    q = load_prior(tmp_path / "p.safetensors")
    assert q.cfg == cfg and q.name == "mine" and q.clip_name == "ViT-B-32"
    for a, b in zip(p.net.state_dict().values(), q.net.state_dict().values()):
        assert torch.equal(a, b)
    c = torch.randn(3, 20)
    w1 = p.sample_w(c, 2.0, 5, "even", generator=torch.Generator().manual_seed(0))
    w2 = q.sample_w(c, 2.0, 5, "even", generator=torch.Generator().manual_seed(0))
    assert torch.equal(w1, w2) and w1.shape == (3, 1, 12)
    assert p.to_wplus(w1, 6).shape == (3, 6, 12)
    with pytest.raises(ValueError, match="20-d CLIP"):
        p.sample_w(torch.randn(1, 16))


def _write_raw_safetensors(path, tensors, meta):
    from safetensors.torch import save_file
    save_file(tensors, str(path), metadata=meta)


def test_our_format_refuses_broken_files(tmp_path):
    import json
    cfg = PriorConfig.preset("tiny", 8, 8, dim=16, dim_head=8)
    p = new_prior(cfg, torch.zeros(8), torch.ones(8))
    write_prior(p, tmp_path / "ok.safetensors")
    from nada_ops.prior.formats import prior_state
    sd = prior_state(p)
    meta = {"format": "nada-prior", "format_version": "1", "config": cfg.to_json(), "provenance": "{}"}
    bad = dict(sd)
    bad["w_std"] = torch.zeros(1, 8)
    _write_raw_safetensors(tmp_path / "std.safetensors", bad, meta)
    with pytest.raises(PriorFileError, match="std.safetensors: w_std has values <= 0"):
        read_prior_file(tmp_path / "std.safetensors")
    bad = dict(sd)
    bad["net.project_out"] = torch.full((16, 16), float("nan"))
    _write_raw_safetensors(tmp_path / "nan.safetensors", bad, meta)
    with pytest.raises(PriorFileError, match="NaN"):
        read_prior_file(tmp_path / "nan.safetensors")
    huge = dict(json.loads(cfg.to_json()), dim=8192, depth=128)          # refused before anything is built
    _write_raw_safetensors(tmp_path / "huge.safetensors", sd, dict(meta, config=json.dumps(huge)))
    with pytest.raises(PriorFileError, match="bytes of weights"):
        read_prior_file(tmp_path / "huge.safetensors")
    _write_raw_safetensors(tmp_path / "cfg.safetensors", sd, dict(meta, config=json.dumps(dict(huge, heads=10 ** 9))))
    with pytest.raises(PriorFileError, match="'heads' must be an integer"):
        read_prior_file(tmp_path / "cfg.safetensors")
    _write_raw_safetensors(tmp_path / "gen.safetensors", sd, {"format": "nada-stylegan2"})
    with pytest.raises(PriorFileError, match="is this a prior saved by this pack"):
        load_prior(tmp_path / "gen.safetensors")


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_reference_checkpoints_refuse_code_and_foreign_layouts(tmp_path, ref_files, capsys):
    d, ema, _ = ref_files
    ck = trainer_checkpoint(ema, ema)
    ck["cfg"] = _Boom()
    torch.save(ck, tmp_path / "code.ckpt")
    with pytest.raises(PriorFileError, match="code.ckpt"):
        load_prior(tmp_path / "code.ckpt")
    assert "must never run" not in capsys.readouterr().out
    with open(tmp_path / "pickle.ckpt", "wb") as fh:
        pickle.dump({"state_dict": {"x": _Boom()}}, fh, protocol=2)
    with pytest.raises(PriorFileError):
        load_prior(tmp_path / "pickle.ckpt")
    torch.save({"state_dict": {"generator.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(PriorFileError, match="not a clip2latent DiffusionPriorTrainer"):
        load_prior(tmp_path / "other.ckpt")
    odd = dict(ema)
    odd["net.causal_transformer.layers.0.0.norm.beta"] = torch.ones(16)
    torch.save(trainer_checkpoint(odd, odd), tmp_path / "beta.ckpt")
    with pytest.raises(PriorFileError, match="LayerNorm offset"):
        load_prior(tmp_path / "beta.ckpt")
    odd = dict(ema)
    odd["betas"] = torch.linspace(1e-4, 0.02, 1000)
    torch.save(trainer_checkpoint(odd, odd), tmp_path / "linear.ckpt")
    with pytest.raises(PriorFileError, match="not the cosine schedule"):
        load_prior(tmp_path / "linear.ckpt")
    torch.save(trainer_checkpoint(ema, ema), tmp_path / "bad.ckpt")
    (tmp_path / "bad.yaml").write_text(reference_yaml(**dict(DIMS, depth=3)), encoding="utf-8")
    with pytest.raises(PriorFileError, match="model.network.depth = 3 but the tensors have 2"):
        load_prior(tmp_path / "bad.ckpt")
    # no yaml: the architecture from the shapes, clip2latent's settings assumed (and said)
    torch.save(trainer_checkpoint(ema, ema), tmp_path / "bare.ckpt")
    p = load_prior(tmp_path / "bare.ckpt")
    assert p.cfg.dim == 16 and any("no .yaml" in n for n in p.provenance["notes"])


def test_yaml_subset():
    doc = parse_yaml(reference_yaml(**DIMS))
    assert doc["model"]["diffusion"]["image_embed_dim"] == 16 and doc["model"]["diffusion"]["timesteps"] == 1000
    assert doc["train"]["max_it"] == 1_000_000 and doc["train"]["lr"] == 1e-4 and doc["resume"] is None
    assert doc["data"]["latent_repeats"] == [8] and doc["model"]["diffusion"]["beta_schedule"] == "cosine"
    assert doc["data"]["sg_pkl"].startswith("https://") and doc["data"]["path"].endswith("{00000..99}.tar")
    assert parse_yaml("a: [1, 2.5, x]\nb: 'it''s'\nc: {}\n") == {"a": [1, 2.5, "x"], "b": "it's", "c": {}}
    assert parse_yaml("a: ${b}/x\nb: 3\n") == {"a": "3/x", "b": 3}
    for bad, msg in (("a: !!python/object:os.system ls\n", "tags"), ("a: &x 1\nb: *x\n", "anchors"),
                     ("a: |\n  text\n", "block scalars"), ("a: ${a}\n", "too deep"), ("a: ${nope}\n", "missing key"),
                     ("a: 1\na: 2\n", "twice"), ("- 1\n", "not a mapping"), ("a: 1\n---\nb: 2\n", "several"),
                     ("a:\n\t- 1\n", "tab")):
        with pytest.raises(YamlError, match=msg):
            parse_yaml(bad, "c.yaml")
    # exponential expansion through interpolations is bounded
    lines = ["a0: [" + ", ".join(["1"] * 30) + "]"]
    lines += [f"a{i}: [" + ", ".join([f"${{a{i - 1}}}"] * 30) + "]" for i in range(1, 6)]
    with pytest.raises(YamlError, match="expands to more than"):
        parse_yaml("\n".join(lines))


def test_config_validation():
    with pytest.raises(PriorConfigError, match="latent_repeats"):
        PriorConfig(num_latents=2, latent_repeats=(1, 2, 3)).validate()
    with pytest.raises(PriorConfigError, match="cond_norm"):
        PriorConfig(cond_norm="zscore").validate()
    cfg = PriorConfig.preset("tiny", 8, 8)
    with pytest.raises(PriorConfigError, match="give 18 W\\+ entries"):
        cfg.replace(latent_repeats=(18,)).wplus_repeats(14)
    p = new_prior(cfg.replace(cond_drop_prob=0.0), torch.zeros(8), torch.ones(8))
    with pytest.raises(ValueError, match="without dropping the condition"):
        p.sample_w(torch.randn(1, 8), guidance=2.0, steps=4)
