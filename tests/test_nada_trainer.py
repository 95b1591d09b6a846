"""NADA trainer on a tiny generator + tiny open_clip model (CPU, no downloads)."""
import pytest
import torch

from conftest import randomize, tiny_config
from nada_ops.nada.guidance import Guidance, GuidanceEntry
from nada_ops.nada.schedule import (FreezeSchedule, adaptive_select, group_indices, schedule_from_options,
                                    trainable_layer_names)
from nada_ops.nada.trainer import AdaptSettings, NonFiniteLossError, adapt
from nada_ops.stylegan.config import ws_layer_map
from nada_ops.stylegan.networks import Generator, z_from_seeds

from clip_helpers import tiny_guidance


@pytest.fixture(scope="module")
def guidance():
    return tiny_guidance()


@pytest.fixture
def G():
    torch.manual_seed(0)
    return randomize(Generator(tiny_config()))


FAST = dict(iterations=4, preview_every=0, batch_size=2)


def _sd(G):
    return {k: v.detach().clone() for k, v in G.state_dict().items()}


def test_frozen_parts_unchanged_and_input_untouched(G, guidance):
    before = _sd(G)
    r = adapt(G, guidance, AdaptSettings(**FAST, mixing_prob=0.9), FreezeSchedule())
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), f"input generator modified: {k}"
    after = r.G.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    for k in before:
        always_frozen = k.startswith("mapping.") or ".affine." in k or ".torgb." in k or k.endswith(".const") \
            or k.endswith("noise_const")
        if always_frozen:
            assert k not in changed, f"always-frozen parameter changed: {k}"
    assert any(k.endswith("conv1.weight") for k in changed)
    assert r.steps_done == 4 and not r.interrupted


def test_manual_schedule_trains_only_chosen_layers(G, guidance):
    before = _sd(G)
    sched = FreezeSchedule(mode="manual", indices=(2,))
    r = adapt(G, guidance, AdaptSettings(**FAST), sched)
    changed = {k.rsplit(".", 1)[0] for k, v in r.G.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(trainable_layer_names(G.cfg, [2])) == {"synthesis.b8.conv1"}


def test_adaptive_selection_picks_most_moved_indices(G):
    """Constructed case: only the layers driven by W+ indices 2 and 5 see w (other affines
    are zeroed), so only those entries get gradients and move."""
    cfg = G.cfg
    keep = {l for i in (2, 5) for l in ws_layer_map(cfg)[i]}
    with torch.no_grad():
        for name, mod in G.named_modules():
            if name.startswith("synthesis.b") and name.count(".") == 2 and name not in keep:
                mod.affine.weight.zero_()

    class Lin:
        def __init__(self):
            self.p = torch.randn(3 * 32 * 32, 8, generator=torch.Generator().manual_seed(3))

        def encode_generator_images(self, img):
            return img.flatten(1) @ self.p

    m = Lin()
    target = torch.nn.functional.normalize(torch.randn(8), dim=0)
    top, scores = adaptive_select(G, [(m, 1.0, "lin")], {"lin": target}, cfg, k=2, n_w=4, n_i=1, lr=0.01,
                                  gen=torch.Generator().manual_seed(0))
    assert top == [2, 5]
    assert scores[[0, 1, 3, 4, 6, 7]].abs().max() == 0
    # the layers then trained are the generator's own map (index 5 -> b16.torgb (frozen) + b32.conv0)
    assert trainable_layer_names(cfg, top) == ["synthesis.b8.conv1", "synthesis.b32.conv0"]


def test_adaptive_training_runs_and_records_layers(G, guidance):
    r = adapt(G, guidance, AdaptSettings(**FAST), FreezeSchedule(mode="adaptive", k=3, n_w=2))
    assert all(len(l) == 3 for l in r.layer_history)


def test_pairing_same_w_crossover_and_noise(G, guidance, monkeypatch):
    """With mixing probability 1, both generators receive identical W+ (same crossover) and noise."""
    import nada_ops.nada.trainer as T
    calls = []
    orig = T.Generator.__call__

    from nada_ops.stylegan.networks import SynthesisNetwork
    real_forward = SynthesisNetwork.forward

    def spy(self, ws, noise_mode="const", noises=None, dtype=torch.float32):
        calls.append((ws.detach().clone(), [n.clone() for n in noises] if noises else None))
        return real_forward(self, ws, noise_mode, noises, dtype)

    monkeypatch.setattr(SynthesisNetwork, "forward", spy)
    adapt(G, guidance, AdaptSettings(iterations=3, preview_every=0, mixing_prob=1.0), FreezeSchedule())
    assert len(calls) == 6
    for i in range(0, 6, 2):
        (wa, na), (wb, nb) = calls[i], calls[i + 1]
        assert torch.equal(wa, wb)
        assert all(torch.equal(x, y) for x, y in zip(na, nb))
        # it IS a mix: rows are not constant over W+ indices
        assert not torch.equal(wa[:, 0], wa[:, -1])


def test_loss_decreases(G, guidance):
    r = adapt(G, guidance, AdaptSettings(iterations=30, preview_every=0, mixing_prob=0.0, lr=0.01),
              FreezeSchedule())
    first = sum(r.losses[:5]) / 5
    last = sum(r.losses[-5:]) / 5
    assert last < first - 0.02, r.losses


def test_determinism(G, guidance):
    a = adapt(G, guidance, AdaptSettings(**FAST, seed=7), FreezeSchedule())
    b = adapt(G, guidance, AdaptSettings(**FAST, seed=7), FreezeSchedule())
    c = adapt(G, guidance, AdaptSettings(**FAST, seed=8), FreezeSchedule())
    assert a.losses == b.losses
    assert all(torch.equal(x, y) for x, y in zip(a.G.state_dict().values(), b.G.state_dict().values()))
    assert a.losses != c.losses


def test_interrupt_keeps_partial(G, guidance):
    class Stop(Exception):
        pass

    def progress(info):
        if info.step == 2:
            raise Stop()

    before = _sd(G)
    r = adapt(G, guidance, AdaptSettings(iterations=50, preview_every=0), FreezeSchedule(), progress=progress)
    assert r.interrupted and r.steps_done == 2 and isinstance(r.stop_exception, Stop)
    assert any(not torch.equal(v, before[k]) for k, v in r.G.state_dict().items())


def test_nan_detection(G, guidance):
    bad = Guidance([GuidanceEntry(e.model, float("nan"), e.key, e.direction, e.target) for e in guidance.entries])
    r = adapt(G, bad, AdaptSettings(**FAST), FreezeSchedule())
    assert isinstance(r.stop_exception, NonFiniteLossError)
    assert "iteration 1" in str(r.stop_exception)
    assert r.steps_done == 0


def test_inside_inference_mode(G, guidance):
    with torch.inference_mode():
        Gi = Generator(G.cfg)
        Gi.load_state_dict(G.state_dict())   # inference tensors, as an upstream loader node makes them
        r = adapt(Gi, guidance, AdaptSettings(**FAST), FreezeSchedule())
    assert r.steps_done == 4


def test_latent_alignment(G, guidance):
    """After a short adaptation, the same w in source and adapted generators gives images more
    similar to each other than to other w's."""
    r = adapt(G, guidance, AdaptSettings(iterations=10, preview_every=0, lr=0.005), FreezeSchedule())
    z = z_from_seeds(range(6), 32)
    with torch.no_grad():
        a = G(z, truncation_psi=0.8)
        b = r.G(z, truncation_psi=0.8)
    d = torch.cdist(a.flatten(1), b.flatten(1))
    for i in range(6):
        others = torch.cat([d[i, :i], d[i, i + 1:]])
        assert d[i, i] < others.min()


def test_group_indices(G):
    cfg = G.cfg
    assert group_indices(cfg, ["coarse"]) == [0, 1, 2]
    assert group_indices(cfg, ["middle"]) == [3, 4, 5, 6, 7]
    big = tiny_config(img_resolution=256, channel_base=4096)
    assert group_indices(big, ["fine"])[0] == 7 and group_indices(big, ["fine"])[-1] == big.num_ws - 1
    with pytest.raises(ValueError, match="out of range"):
        FreezeSchedule(mode="manual", indices=(99,)).validate(cfg)


def test_snapshots_every_n_iterations_hold_the_weights_of_that_iteration(G, guidance):
    snaps = {}

    def keep(step, G_train, loss):
        snaps[step] = (_sd(G_train), loss)

    r = adapt(G, guidance, AdaptSettings(**{**FAST, "iterations": 5}), snapshot_every=2, on_snapshot=keep)
    assert sorted(snaps) == [2, 4]                 # not the last iteration: that is the result itself
    assert snaps[2][1] == r.losses[1] and snaps[4][1] == r.losses[3]
    short = adapt(G, guidance, AdaptSettings(**{**FAST, "iterations": 4}))
    assert all(torch.equal(v, snaps[4][0][k]) for k, v in short.G.state_dict().items())


def test_out_of_memory_stops_and_keeps_what_was_trained(G, guidance, monkeypatch):
    import nada_ops.nada.trainer as T
    from nada_ops.memory import OutOfMemory
    real = T._train_step
    calls = {"n": 0}

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*a, **k)

    monkeypatch.setattr(T, "_train_step", failing)
    r = adapt(G, guidance, AdaptSettings(**FAST))
    assert r.steps_done == 2 and not r.interrupted
    assert isinstance(r.stop_exception, OutOfMemory)
    msg = str(r.stop_exception)
    assert "iteration 3" in msg and "batch_size" in msg and "20.00 GiB" in msg
    assert r.stop_exception.__traceback__ is None     # holds no frames (and no tensors) of the failed step
    two = adapt(G, guidance, AdaptSettings(**{**FAST, "iterations": 2}))
    assert all(torch.equal(v, two.G.state_dict()[k]) for k, v in r.G.state_dict().items())


def test_schedule_from_command_line_options(tiny_G):
    """adapt --schedule / job files: manual groups and W+ indices combined, adaptive with the
    paper's 2/3 when k is not given, all by default."""
    cfg = tiny_G.cfg
    s = schedule_from_options(cfg, "manual", "fine, 1")
    assert s.mode == "manual" and s.indices == tuple(sorted(set(group_indices(cfg, ["fine"])) | {1}))
    s.validate(cfg)
    a = schedule_from_options(cfg, "adaptive", k=None, n_w=4, n_i=2)
    assert (a.k, a.k_fraction, a.n_w, a.n_i) == (None, 2 / 3, 4, 2)
    assert schedule_from_options(cfg, "adaptive", k=3).k == 3
    assert schedule_from_options(cfg, "all") == FreezeSchedule()
