"""clip2latent end to end on the CPU with a tiny generator and a tiny CLIP: pairs (in memory and
in resumable shards on disk), training that learns, exact resume, sampling with re-ranking and
style mixing, and the command line."""
import os

import pytest
import torch

from conftest import randomize, tiny_config
from nada_ops.clip.tiny import TINY_NAME, build_tiny_open_clip, register_tiny_config, tiny_clip_model
from nada_ops.prior.config import PriorConfig
from nada_ops.prior.formats import PriorFileError, load_prior
from nada_ops.prior.pairs import PairsError, ShardedPairs, make_pairs, pairs_in_memory
from nada_ops.prior.sampler import clip_scores, text_to_latents
from nada_ops.prior.trainer import PriorTrainSettings, train_prior
from nada_ops.stylegan.networks import Generator, estimate_w_avg

pytestmark = pytest.mark.usefixtures("one_thread")


def _G(seed=0):
    torch.manual_seed(seed)
    G = randomize(Generator(tiny_config()).eval(), seed)
    with torch.no_grad():
        G.mapping.w_avg.copy_(estimate_w_avg(G, 512))
    return G


@pytest.fixture(scope="module")
def G():
    return _G(0)


@pytest.fixture(scope="module")
def clip():
    return tiny_clip_model(seed=1)


def _settings(**kw):
    base = dict(steps=250, batch=64, lr=2e-3, ema_beta=0.99, ema_every=1, ema_start=50, checkpoint_every=0,
                val_every=0, log_every=50)
    base.update(kw)
    return PriorTrainSettings(**base)


def test_a_tiny_prior_learns(G, clip):
    """The issue's figure: after a few seconds of training the prior's samples are measurably
    closer in CLIP space to their conditions (held-out image embeddings) than random latents."""
    data = pairs_in_memory(G, clip, 768, seed=0, batch=256)
    held = pairs_in_memory(G, clip, 48, seed=99, batch=48)
    cfg = PriorConfig.preset("tiny", latent_dim=32, cond_dim=32, depth=1, cond_norm="l2")
    seen = []
    res = train_prior(data, cfg, _settings(steps=150, lr=3e-3, ema_start=30), name="tiny",
                      progress=lambda p: seen.append(p.step), provenance={"clip": {"name": clip.name}})
    assert seen == [50, 100, 150] and res.steps_done == 150
    assert res.losses[-1][1] < 0.8 * res.losses[0][1]
    prior = res.prior
    assert prior.provenance["weights"] == "ema" and not any(p.requires_grad for p in prior.net.parameters())
    w = prior.sample_w(held.embed, guidance=2.0, steps=25, respacing="even", generator=torch.Generator().manual_seed(0))
    ws = prior.to_wplus(w, G.cfg.num_ws)
    sim_prior = clip_scores(G, clip, ws, held.embed).mean()
    with torch.no_grad():
        w_rand = G.map(torch.randn(48, 32, generator=torch.Generator().manual_seed(5)))
    sim_rand = clip_scores(G, clip, w_rand, held.embed).mean()
    assert sim_prior > sim_rand + 0.02, (float(sim_prior), float(sim_rand))
    # ... and closer in W to the latents that made the conditions
    assert (w[:, 0] - held.w).norm(dim=1).mean() < 0.95 * (w_rand[:, 0] - held.w).norm(dim=1).mean()


def test_pairs_on_disk_resume_extend_and_refuse_another_set(tmp_path, G, clip):
    out = tmp_path / "pairs"
    stop = {"at": 150}

    def progress(done, total):
        if done >= stop["at"]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_pairs(G, clip, out, 300, shard_size=128, batch=64, seed=3, progress=progress)
    assert sorted(os.listdir(out)) == ["manifest.json", "pairs_000000.safetensors"]      # no debris
    first = ShardedPairs(out)
    assert len(first) == 128
    m = make_pairs(G, clip, out, 300, shard_size=128, batch=64, seed=3)                   # resume
    assert m["count"] == 300 and len(ShardedPairs(out)) == 300
    shard0 = (out / "pairs_000000.safetensors").read_bytes()
    make_pairs(G, clip, out, 400, shard_size=128, batch=64, seed=3)                       # extend: 300 -> 400
    data = ShardedPairs(out)
    assert len(data) == 400 and [n for _, n in data.shards] == [128, 128, 128, 16]
    assert (out / "pairs_000000.safetensors").read_bytes() == shard0
    # the pairs are what the generator and CLIP make, and the stats are exact
    from nada_ops.prior.pairs import shard_seed
    z = torch.randn(128, 32, generator=torch.Generator().manual_seed(shard_seed(3, 1)))[:5]
    with torch.no_grad():
        w = G.map(z)
        e = clip.encode_generator_images(G.synthesis(w))
    d1 = data._read(data.shards[1][0])
    assert torch.allclose(d1["w"][:5], w[:, 0], atol=1e-6) and torch.allclose(d1["embed"][:5], e, atol=1e-5)
    allw = torch.cat([data._read(p)["w"] for p, _ in data.shards]).double()
    mean, std = data.stats()
    assert torch.allclose(mean.double(), allw.mean(0), atol=1e-6) and torch.allclose(std.double(), allw.std(0), atol=1e-6)
    batches = list(data.batches(64, epoch=0, seed=1))
    assert len(batches) == 6 and all(b[0].shape == (64, 32) for b in batches)
    with pytest.raises(PairsError, match="another seed"):
        make_pairs(G, clip, out, 400, shard_size=128, batch=64, seed=4)


def test_training_resumes_exactly(tmp_path, G, clip):
    make_pairs(G, clip, tmp_path / "pairs", 320, shard_size=128, batch=160, seed=0)
    data = ShardedPairs(tmp_path / "pairs", mix=2)
    cfg = PriorConfig.preset("tiny", 32, 32, dim=32, dim_head=16, depth=1)
    s = _settings(steps=24, batch=32, ema_start=4, log_every=4, checkpoint_every=10)
    straight = train_prior(data, cfg, s, work_dir=tmp_path / "a")

    def stop(p):
        if p.step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_prior(data, cfg, s, work_dir=tmp_path / "b", progress=stop)
    assert sorted(os.listdir(tmp_path / "b")) == ["prior.safetensors", "train_state.safetensors"]
    assert load_prior(tmp_path / "b" / "prior.safetensors").provenance["training"]["steps_done"] == 12
    resumed = train_prior(data, cfg, s, work_dir=tmp_path / "b", log=lambda t: None)
    for a, b in zip(straight.prior.net.state_dict().values(), resumed.prior.net.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(PriorFileError, match="other settings \\(lr\\)"):
        train_prior(data, cfg, _settings(steps=30, batch=32, ema_start=4, lr=1e-3), work_dir=tmp_path / "b")


def test_text_to_latents_reranks_mixes_and_drives_other_generators(G, clip):
    cfg = PriorConfig.preset("tiny", 32, 32, dim=32, dim_head=16, depth=1)
    from nada_ops.prior.model import new_prior
    prior = new_prior(cfg, G.w_avg.clone(), torch.ones(32), seed=1, provenance={"clip": {"name": clip.name}})
    kw = dict(per_prompt=2, candidates=3, guidance=2.0, steps=4, seed=7)
    all3 = text_to_latents(prior, clip, ["a cat", "a dog"], G, **dict(kw, candidates=3), rerank=False, score=True)
    res = text_to_latents(prior, clip, ["a cat", "a dog"], G, **kw)
    assert res.latents.ws.shape == (4, G.cfg.num_ws, 32) and not res.latents.is_wplus
    # the kept latent of each group of candidates is the one CLIP ranks best
    ws_all = prior.to_wplus(prior.sample_w(clip.encode_text(["a cat", "a dog"]).repeat_interleave(6, 0), 2.0, 4,
                                           generator=torch.Generator().manual_seed(7)), G.cfg.num_ws)
    sc = clip_scores(G, clip, ws_all, clip.encode_text(["a cat", "a dog"]).repeat_interleave(6, 0)).view(4, 3)
    assert torch.allclose(res.scores, sc.max(1).values, atol=1e-5)
    assert torch.allclose(res.latents.ws, ws_all.view(4, 3, G.cfg.num_ws, 32)[torch.arange(4), sc.argmax(1)])
    assert all3.latents.batch == 4 and "'a dog': CLIP similarity" in res.describe()
    mixed = text_to_latents(prior, clip, "a cat", G, per_prompt=2, candidates=1, steps=4, seed=7, mix_crossover=4)
    plain = text_to_latents(prior, clip, "a cat", G, per_prompt=2, candidates=1, steps=4, seed=7)
    assert mixed.latents.is_wplus and torch.equal(mixed.latents.ws[:, :4], plain.latents.ws[:, :4])
    assert not torch.equal(mixed.latents.ws[:, 4:], plain.latents.ws[:, 4:])
    # the same latents render with any generator of the latent space (an "adapted" one here)
    from nada_ops.stylegan.sampling import synthesize
    assert synthesize(_G(1), res.latents.ws).shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="need the generator"):
        text_to_latents(prior, clip, "a cat", None, candidates=2, num_ws=8)
    with pytest.raises(ValueError, match="at most 16384"):
        text_to_latents(prior, clip, ["a", "b"], G, per_prompt=100, candidates=100)


def test_prior_command_line(tmp_path, G, capsys):
    from safetensors.torch import save_file

    from nada_ops.cli import main
    from nada_ops.stylegan.io import save_generator
    register_tiny_config(tmp_path / "cfg")
    save_file({k: v.contiguous() for k, v in build_tiny_open_clip(seed=1).state_dict().items()},
              str(tmp_path / "tiny.safetensors"))
    save_generator(G, tmp_path / "g.safetensors")
    g = str(tmp_path / "g.safetensors")
    clip = ["--clip", TINY_NAME, "--clip-weights", str(tmp_path / "tiny.safetensors"), "--device", "cpu"]
    assert main(["prior", "make-pairs", "--generator", g, "--out", str(tmp_path / "pairs"), "--count", "200",
                 "--shard-size", "100", "--batch", "100"] + clip) == 0
    work = tmp_path / "work"
    train = ["prior", "train", "--pairs", str(tmp_path / "pairs"), "--work", str(work), "--size", "tiny",
             "--batch", "32", "--ema-start", "2", "--checkpoint-every", "5", "--val-every", "6",
             "--val-images", "4", "--val-prompt", "a face", "--generator", g] + clip
    assert main(train + ["--steps", "6"]) == 0
    assert main(train + ["--steps", "9", "--out", str(tmp_path / "final.safetensors")]) == 0      # resumes
    err = capsys.readouterr().err
    assert "resuming at step 6" in err and "text_similarity" in err
    p = load_prior(tmp_path / "final.safetensors")
    assert p.provenance["training"]["steps_done"] == 9 and p.provenance["clip"]["name"] == TINY_NAME
    assert p.provenance["generator"]["num_ws"] == 8 and sorted(os.listdir(work)) == [
        "best.safetensors", "prior.safetensors", "train_state.safetensors"]
    grid = tmp_path / "grid.png"
    assert main(["prior", "sample", "--prior", str(tmp_path / "final.safetensors"), "--generator", g,
                 "--also", g, "--prompt", "a smiling face", "--per-prompt", "2", "--candidates", "2",
                 "--steps", "4", "--out", str(grid), "--latents-out", str(tmp_path / "l.pt")] + clip) == 0
    from PIL import Image
    assert Image.open(grid).size == (2 * 32, 2 * 32)
    assert main(["prior", "info", str(tmp_path / "final.safetensors")]) == 0
    assert "tiny-vit" in capsys.readouterr().out
    assert main(["prior", "train", "--pairs", str(tmp_path / "nothing"), "--work", str(work)] + clip) == 1
    assert "no manifest.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prior", "sample", "--prior", "x", "--generator", g, "--prompt", "p", "--out", "o.png",
              "--candidates", "100000"])
