"""Issue 11 on the CPU: the precision policy, the device loop (static shapes, device RNG, no host
sync, the fused finiteness guard, masked adaptive layers), the run-plan fallbacks, the W+ probe's
memory and the grouped modulated convolution.  The GPU versions are in test_speed_gpu.py."""
import pytest
import torch

from conftest import randomize, tiny_config
from clip_helpers import tiny_guidance
from nada_ops.nada import trainer as T
from nada_ops.nada.schedule import FreezeSchedule, adaptive_scores
from nada_ops.nada.trainer import AdaptSettings, NonFiniteLossError, adapt, plan_run
from nada_ops.precision import POLICIES, resolve
from nada_ops.stylegan.networks import Generator, modulated_conv2d

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def guidance():
    return tiny_guidance()


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return randomize(Generator(tiny_config()))


BASE = dict(iterations=5, preview_every=0, mixing_prob=0.0)


def _sd(G):
    return {k: v.detach().clone() for k, v in G.state_dict().items()}


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a.G.state_dict().values(), b.G.state_dict().values()))


def _update(r, G):
    ref = G.state_dict()
    return torch.cat([(v - ref[k]).flatten() for k, v in r.G.state_dict().items() if k.startswith("synthesis.")])


# ------------------------------------------------------------------------------ the policy
def test_policy_names_and_auto():
    assert POLICIES == ("auto", "exact", "fast", "bf16")
    cpu = resolve("auto", "cpu")
    assert cpu.name == "exact" and not cpu.tf32 and cpu.clip_dtype is None
    assert cpu.synthesis_kwargs(tiny_config()) == {}          # exact: the calls of before
    gpu = resolve("auto", "cuda")
    assert gpu.name == "fast" and gpu.tf32 and gpu.clip_dtype == torch.float16
    assert gpu.synthesis_kwargs(tiny_config()) == {"dtype": torch.float16, "num_fp16_res": 4, "fp16_clamp": 256.0}
    assert resolve("fast", "cpu").synthesis_dtype == torch.bfloat16          # what a CPU runs
    assert resolve("bf16", "cuda").clip_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve("fp8", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        AdaptSettings(precision="fp8").validate()


def test_tf32_switches_are_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with resolve("fast", "cuda").math():
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with resolve("exact", "cuda").math():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_plan_selection_and_fallbacks(monkeypatch):
    s = AdaptSettings()
    p = plan_run(s, "cpu")
    assert (p.precision.name, p.loop, p.capture) == ("exact", "host", "none") and p.path == "host loop, eager"
    p = plan_run(AdaptSettings(capture="cuda_graph"), "cpu")
    assert p.loop == "device" and p.capture == "none" and "CUDA graphs need a CUDA device" in p.notes[0]
    p = plan_run(AdaptSettings(capture="compile"), "cpu")
    assert (p.loop, p.capture) == ("device", "compile")
    p = plan_run(AdaptSettings(capture="compile", loop="host"), "cpu")
    assert (p.loop, p.capture) == ("host", "none") and "needs the device loop" in p.notes[0]
    # on CUDA, 'auto' keeps the host loop, eager, until the fast path has been verified on a GPU
    monkeypatch.delenv("NADA_GPU_FAST_PATH", raising=False)
    p = plan_run(s, "cuda")
    assert (p.precision.name, p.loop, p.capture) == ("fast", "host", "none") and "not been verified" in p.notes[0]
    p = plan_run(AdaptSettings(capture="cuda_graph"), "cuda")
    assert (p.loop, p.capture) == ("device", "cuda_graph")
    monkeypatch.setenv("NADA_GPU_FAST_PATH", "1")
    p = plan_run(s, "cuda")
    assert (p.precision.name, p.loop, p.capture) == ("fast", "device", "cuda_graph") and not p.notes
    p = plan_run(AdaptSettings(precision="exact", capture="none"), "cuda")
    assert (p.precision.name, p.loop, p.capture) == ("exact", "device", "none")
    with pytest.raises(ValueError, match="capture must be one of"):
        AdaptSettings(capture="graph").validate()


# ------------------------------------------------------------------------------ the generator
@pytest.mark.parametrize("up", [1, 2])
def test_grouped_modulated_conv_equals_activation_scaling(up):
    g = torch.Generator().manual_seed(up)
    x = torch.randn(3, 8, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 8, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    from nada_ops.ops import setup_filter
    f = setup_filter([1, 3, 3, 1]).double()
    for demod in (True, False):
        a = modulated_conv2d(x, w, s, demodulate=demod, up=up, resample_filter=f)
        b = modulated_conv2d(x, w, s, demodulate=demod, up=up, resample_filter=f, fused=True)
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-6, atol=1e-6)   # (dcoefs: float32 in both)
        ga = torch.autograd.grad(a.square().sum(), [x, w, s])
        gb = torch.autograd.grad(b.square().sum(), [x, w, s])
        for u, v in zip(ga, gb):
            assert torch.allclose(u, v, atol=1e-5, rtol=1e-5)


def test_reduced_precision_blocks_are_the_top_resolutions(G, monkeypatch):
    from nada_ops.stylegan import networks as N
    G64 = randomize(Generator(tiny_config(img_resolution=64)))
    seen = {}
    real = N.SynthesisBlock.forward

    def spy(self, x, img, ws, noise_mode, noises, dtype, clamp=None, fused=False, channels_last=False):
        seen[self.res] = (dtype, clamp, channels_last)
        return real(self, x, img, ws, noise_mode, noises, dtype, clamp, fused, channels_last)

    monkeypatch.setattr(N.SynthesisBlock, "forward", spy)
    ws = G64.map(torch.randn(2, 32))
    out = G64.synthesis(ws, dtype=torch.bfloat16, num_fp16_res=2, fp16_clamp=256.0, channels_last=True)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert {r: v[0] for r, v in seen.items()} == {4: torch.float32, 8: torch.float32, 16: torch.float32,
                                                  32: torch.bfloat16, 64: torch.bfloat16}
    assert seen[64] == (torch.bfloat16, 256.0, True) and seen[8] == (torch.float32, None, False)
    ref = G64.synthesis(ws)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    seen.clear()
    G64.synthesis(ws, dtype=torch.bfloat16)            # no num_fp16_res: every block, as before
    assert all(v[0] == torch.bfloat16 and v[1] is None for v in seen.values())


# ------------------------------------------------------------------------------ the device loop
@pytest.mark.parametrize("sched", [FreezeSchedule(), FreezeSchedule(mode="adaptive", k=3, n_w=2)],
                         ids=["all", "adaptive"])
def test_device_loop_follows_the_host_loop(G, guidance, sched):
    """Same seed, no mixing: the same batches (device RNG on the CPU = today's draws), the same
    layer choices; only fused Adam's rounding differs."""
    a = adapt(G, guidance, AdaptSettings(**BASE, loop="host"), sched)
    b = adapt(G, guidance, AdaptSettings(**BASE, loop="device"), sched)
    assert a.runtime["loop"] == "host" and b.runtime["loop"] == "device" and b.runtime["capture"] == "none"
    assert b.runtime["path"] == "device loop, eager"
    assert a.layer_history == b.layer_history
    assert max(abs(x - y) for x, y in zip(a.losses, b.losses)) < 1e-4
    assert _max_diff(a, b) < 5e-4


def test_device_loop_is_deterministic_and_mixes_on_the_device(G, guidance, monkeypatch):
    s = dict(BASE, mixing_prob=1.0, loop="device")
    a = adapt(G, guidance, AdaptSettings(**s, seed=3))
    b = adapt(G, guidance, AdaptSettings(**s, seed=3))
    c = adapt(G, guidance, AdaptSettings(**s, seed=4))
    assert a.losses == b.losses and _max_diff(a, b) == 0 and a.losses != c.losses
    # both generators get the same (mixed) W+ and noise, and nothing is read back per iteration
    from nada_ops.stylegan.networks import SynthesisNetwork
    calls = []
    real = SynthesisNetwork.forward

    def spy(self, ws, noise_mode="const", noises=None, **kw):
        calls.append((ws.detach().clone(), [n.clone() for n in noises]))
        return real(self, ws, noise_mode, noises, **kw)

    def no_item(self):
        raise AssertionError("host sync in the device loop")

    monkeypatch.setattr(SynthesisNetwork, "forward", spy)
    monkeypatch.setattr(T._DeviceStep, "read", lambda self, step: (0.5, 0, None))
    monkeypatch.setattr(torch.Tensor, "item", no_item)
    adapt(G, guidance, AdaptSettings(**{**s, "iterations": 3}))
    assert len(calls) == 6
    for i in range(0, 6, 2):
        assert torch.equal(calls[i][0], calls[i + 1][0])
        assert all(torch.equal(x, y) for x, y in zip(calls[i][1], calls[i + 1][1]))
        assert not torch.equal(calls[i][0][:, 0], calls[i][0][:, -1])


def test_device_loop_nan_stops_with_the_last_finite_weights(G, guidance, monkeypatch):
    real = T.directional_loss
    n = {"calls": 0}

    def nan_from_third(*a, **k):
        n["calls"] += 1
        out = real(*a, **k)
        return out * float("nan") if n["calls"] >= 3 else out

    monkeypatch.setattr(T, "directional_loss", nan_from_third)
    r = adapt(G, guidance, AdaptSettings(**BASE, loop="device"))
    assert isinstance(r.stop_exception, NonFiniteLossError) and "iteration 3" in str(r.stop_exception)
    assert r.steps_done == 2 and len(r.losses) == 2
    monkeypatch.setattr(T, "directional_loss", real)
    two = adapt(G, guidance, AdaptSettings(**{**BASE, "iterations": 2}, loop="device"))
    assert _max_diff(r, two) == 0


def test_device_loop_nan_gradients_are_caught_by_the_fused_check(G, guidance, monkeypatch):
    """A finite loss whose gradients are not finite: no update is applied."""
    real = T._clip_loss

    class _InfGrad(torch.autograd.Function):
        @staticmethod
        def forward(c, x):
            return x * 0

        @staticmethod
        def backward(c, g):
            return g * float("inf")

    monkeypatch.setattr(T, "_clip_loss", lambda ctx, img, emb: real(ctx, img, emb) + _InfGrad.apply(
        ctx.G_train.synthesis.b4.conv1.weight.sum()))
    before = _sd(G)
    r = adapt(G, guidance, AdaptSettings(**BASE, loop="device"))
    assert isinstance(r.stop_exception, NonFiniteLossError) and "gradients" in str(r.stop_exception)
    assert r.steps_done == 0
    assert all(torch.equal(v, before[k]) for k, v in r.G.state_dict().items())


def test_device_loop_interrupt_snapshot_and_preview(G, guidance):
    snaps, seen = {}, []

    def keep(step, G_train, loss):
        snaps[step] = (_sd(G_train), loss)

    class Stop(Exception):
        pass

    def progress(info):
        seen.append((info.step, info.preview is not None, info.path))
        if info.step == 4:
            raise Stop()

    s = dict(BASE, iterations=8, preview_every=2, loop="device")
    r = adapt(G, guidance, AdaptSettings(**s), progress=progress, snapshot_every=3, on_snapshot=keep)
    assert r.interrupted and isinstance(r.stop_exception, Stop)
    assert [x[0] for x in seen] == [1, 2, 3, 4] and [x[1] for x in seen] == [False, True, False, True]
    assert seen[0][2] == "device loop, eager"
    # the result holds exactly steps_done iterations (a preview step is read before the next starts)
    assert r.steps_done == 4
    ref = adapt(G, guidance, AdaptSettings(**{**s, "iterations": 4, "preview_every": 0}))
    assert _max_diff(r, ref) == 0
    three = adapt(G, guidance, AdaptSettings(**{**s, "iterations": 3, "preview_every": 0}))
    assert all(torch.equal(v, snaps[3][0][k]) for k, v in three.G.state_dict().items())
    assert snaps[3][1] == r.losses[2]


def test_cancel_between_reads_counts_the_running_iteration(G, guidance):
    class Stop(Exception):
        pass

    def progress(info):
        if info.step == 2:
            raise Stop()

    s = dict(BASE, iterations=6, loop="device")
    r = adapt(G, guidance, AdaptSettings(**s), progress=progress)
    # iteration 3 was already running when iteration 2 was reported: it counts, weights match
    assert r.interrupted and r.steps_done == 3
    ref = adapt(G, guidance, AdaptSettings(**{**s, "iterations": 3}))
    assert _max_diff(r, ref) == 0


SCALE = 2.0 ** 120


def test_dynamic_loss_scale_skips_overflowing_iterations(G, guidance, monkeypatch):
    """float16-style loss scaling (here on bf16, CPU): an absurd initial scale overflows, the
    iteration is skipped (no update, counted), the scale halves until the gradients fit."""
    real = T.resolve_precision
    monkeypatch.setattr(T, "resolve_precision", lambda n, d: real("fast", d).with_options(
        loss_scale=SCALE, num_fp16_res=0, clip_dtype=None))
    before = _sd(G)
    r = adapt(G, guidance, AdaptSettings(**{**BASE, "iterations": 8}, precision="fast"))
    assert r.stop_exception is None and r.steps_done == 8
    assert 1 <= r.runtime["overflow_skips"] < 8 and "loss scale" in r.runtime["precision"]
    assert any(not torch.equal(v, before[k]) for k, v in r.G.state_dict().items())


# ------------------------------------------------------------------------------ fast follows exact
def _follow(G, guidance, prec, n=10):
    base = dict(iterations=n, preview_every=0, mixing_prob=0.0, loop="device")
    e = adapt(G, guidance, AdaptSettings(**base, precision="exact"))
    f = prec(base)
    de, df = _update(e, G), _update(f, G)
    loss_gap = max(abs(a - b) for a, b in zip(e.losses, f.losses))
    return loss_gap, ((de - df).norm() / de.norm()).item(), torch.nn.functional.cosine_similarity(de, df, 0).item()


#: Stated tolerance of the fast policy against exact, 10 iterations, fixed seed, random weights
#: (tiny networks; the directional loss differences two embeddings of nearly equal images, so
#: reduced-precision CLIP adds noise to dI).  float16 (the GPU's fast): the loss within 0.1 of exact
#: at every iteration, the weight update pointing the same way (cosine >= 0.93) with a relative
#: difference <= 0.35 (measured on this CPU: 0.04, 0.975, 0.22).  bfloat16 (8 bits of mantissa, the
#: CPU's fast): 0.25, 0.85, 0.6 (measured: 0.18, 0.90, 0.44).
FOLLOW_FP16 = (0.1, 0.93, 0.35)
FOLLOW_BF16 = (0.25, 0.85, 0.6)


def test_fast_follows_exact_on_cpu(guidance):
    torch.manual_seed(0)
    G64 = randomize(Generator(tiny_config(img_resolution=64)))

    def fast_bf16(base):
        return adapt(G64, guidance, AdaptSettings(**base, precision="fast"))

    gap, rel, cos = _follow(G64, guidance, fast_bf16)
    assert gap < FOLLOW_BF16[0] and cos > FOLLOW_BF16[1] and rel < FOLLOW_BF16[2], (gap, rel, cos)


def test_float16_policy_follows_exact_on_cpu(guidance, monkeypatch):
    """The GPU's float16 arithmetic (float16 CLIP autocast + float16 top resolutions, clamp 256),
    run on the CPU."""
    torch.manual_seed(0)
    G64 = randomize(Generator(tiny_config(img_resolution=64)))
    real = T.resolve_precision
    monkeypatch.setattr(T, "resolve_precision", lambda n, d: real("fast", d).with_options(
        clip_dtype=torch.float16, synthesis_dtype=torch.float16) if n == "fast" else real(n, d))

    def fast_fp16(base):
        r = adapt(G64, guidance, AdaptSettings(**base, precision="fast"))
        assert "fp16" in r.runtime["precision"]
        return r

    gap, rel, cos = _follow(G64, guidance, fast_fp16)
    assert gap < FOLLOW_FP16[0] and cos > FOLLOW_FP16[1] and rel < FOLLOW_FP16[2], (gap, rel, cos)


# ------------------------------------------------------------------------------ the W+ probe
def _saved_bytes(fn):
    total = {"n": 0}

    def pack(t):
        total["n"] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total["n"]


def test_w_probe_keeps_one_forward_for_the_codes_only(G, guidance):
    """The probe saves what the gradient of the W+ codes needs, whether or not the weights are
    trainable (the device loop keeps every candidate layer trainable), computes no weight
    gradient, and keeps less than a training forward at the same batch."""
    models = guidance.for_training().models()
    targets = guidance.targets()
    cfg = G.cfg
    Gt = Generator(cfg)
    Gt.load_state_dict(G.state_dict())
    Gt.requires_grad_(False)

    def probe():
        adaptive_scores(Gt, models, targets, cfg, 4, 1, 0.01, torch.Generator().manual_seed(0))

    frozen = _saved_bytes(probe)
    Gt.synthesis.requires_grad_(True)
    trainable = _saved_bytes(probe)
    assert trainable == frozen > 0
    assert all(p.grad is None for p in Gt.parameters())
    assert all(p.requires_grad for p in Gt.synthesis.parameters())        # restored

    def training_forward():
        ws = Gt.map(torch.randn(4, cfg.z_dim)).requires_grad_(True)
        img = Gt.synthesis(ws)
        for m, _, _ in models:
            m.encode_generator_images(img).sum()

    assert frozen < _saved_bytes(training_forward)


# ------------------------------------------------------------------------------ the node
OLD_ADAPT_WIDGETS = ["iterations", "batch_size", "learning_rate", "mixing_prob", "seed", "preview_every",
                     "reference_lr_scale", "lambda_global", "training_noise", "save_every"]


def test_old_workflows_keep_their_adapt_widgets(comfy):
    """ComfyUI maps a saved node's widgets_values by position: the precision widget comes after
    every widget an older workflow saved, so those keep their meaning (and precision its default)."""
    from workflow_runner import builder
    cls = comfy.pack.NODE_CLASS_MAPPINGS["NADAAdaptGenerator"]
    widgets = builder().node_widgets(cls)
    names = [n for n, _ in widgets]
    assert names[:len(OLD_ADAPT_WIDGETS)] == OLD_ADAPT_WIDGETS
    assert widgets[len(OLD_ADAPT_WIDGETS):] == [("precision", "auto")]
    old_values = [300, 2, 0.002, 0.9, 0, 25, False, 0.0, "random", 100]   # text_adaptation.json before
    mapped = dict(zip(names, old_values))
    assert mapped["save_every"] == 100 and "precision" not in mapped


# ------------------------------------------------------------------------------ rendering with a policy
def test_renderers_take_the_policy_and_load_styleGAN_offers_it(G, comfy, tmp_path):
    """Synthesize, inversion previews and transition videos render through one rule
    (precision.synthesis_call): no policy = the handle's dtype as before; a policy = its reduced
    top resolutions (bfloat16 on a CPU), close to exact. Load StyleGAN's 'fast' only applies on a
    GPU; old workflows' 'fp32' / 'fp16' keep their meaning."""
    from nada_ops.precision import synthesis_call
    from nada_ops.stylegan.io import save_generator
    from nada_ops.stylegan.sampling import synthesize
    from nada_ops.video import render_transition
    ws = G.map(torch.randn(2, G.cfg.z_dim, generator=torch.Generator().manual_seed(1))).detach()
    kw, _ = synthesis_call(G, None, torch.float32)
    assert kw == {"dtype": torch.float32}
    exact = synthesize(G, ws)
    fast = synthesize(G, ws, precision="fast")
    assert not torch.equal(exact, fast) and (exact - fast).abs().max() < 0.5 * exact.abs().max()
    assert torch.equal(synthesize(G, ws, precision="exact"), exact)
    frames_exact = render_transition([G, G], ws, 2, collect=True)
    frames_fast = render_transition([G, G], ws, 2, collect=True, precision="fast")
    assert frames_exact.shape == frames_fast.shape and not torch.equal(frames_exact, frames_fast)
    assert (frames_exact - frames_fast).abs().max() < 0.25

    cls = comfy.pack.NODE_CLASS_MAPPINGS["NADALoadStyleGAN"]
    choices = cls.INPUT_TYPES()["required"]["precision"][0]
    assert choices[:2] == ["fp32", "fp16"] and "fast" in choices
    save_generator(G, comfy.models_dir / "stylegan" / "g.safetensors")
    with torch.inference_mode():
        handle, _ = cls().load("g.safetensors", "cpu", "fast")
    assert handle.precision is None and handle.dtype == torch.float32    # a CPU renders exactly
