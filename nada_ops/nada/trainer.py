"""The NADA trainer: adapt a StyleGAN2 generator to a new domain with CLIP guidance.

Faithful to the paper (NADA_SPEC.md sec. 4), not to the reference code's bugs:
- G_frozen and G_train share ONE frozen mapping network; both receive the SAME w, the SAME
  style-mixing crossover and the SAME noise every iteration.
- Always frozen: mapping, affine (style) layers, ToRGB layers, the 4x4 constant.
- Adam(lr 0.002, betas (0, 0.99)) as written in the paper (the reference scales both by a
  leftover 0.8 regularisation ratio; ``AdaptSettings.reference_lr_scale`` reproduces that).
- The W+ index -> layer map is the generator's own (config.ws_layer_map).
- Guarded cosine: no NaN at step 0 when the two generators are still identical.
The input generator is never modified; training works on copies.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from ..memory import OutOfMemory, advice_for, is_out_of_memory
from ..stylegan.networks import Generator, copy_generator, style_mix
from .losses import directional_loss, global_loss
from ..precision import Precision, resolve as resolve_precision
from .schedule import (FreezeSchedule, adaptive_mask, adaptive_scores, adaptive_select, all_conv_layer_names,
                       layer_parameters, trainable_layer_names)


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf; the generator keeps the last finite weights."""


@dataclass(frozen=True)
class AdaptSettings:
    iterations: int = 300
    batch_size: int = 2
    lr: float = 0.002
    betas: tuple = (0.0, 0.99)
    reference_lr_scale: bool = False  # True: lr and betas scaled by 0.8 like the reference code
    mixing_prob: float = 0.9
    truncation_psi: float = 1.0       # truncation of the training latents (1 = none)
    noise_mode: str = "random"        # 'random' (shared between both generators) or 'const'
    seed: int = 0
    preview_every: int = 25           # 0 = no previews
    preview_seeds: tuple = (0, 1, 2, 3)
    preview_psi: float = 0.7
    lambda_direction: float = 1.0
    lambda_global: float = 0.0        # ablation: add the global CLIP loss
    precision: str = "auto"           # nada_ops.precision: auto (fast on CUDA, exact elsewhere) / exact / fast / bf16
    capture: str = "auto"             # auto / none / cuda_graph / compile (see RUNTIME below)
    loop: str = "auto"                # auto / host / device (see RUNTIME below)

    def validate(self) -> "AdaptSettings":
        if self.iterations < 1:
            raise ValueError("iterations must be >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not self.lr > 0:
            raise ValueError("learning rate must be > 0")
        if not 0 <= self.mixing_prob <= 1:
            raise ValueError("style-mixing probability must be in [0, 1]")
        if self.noise_mode not in ("random", "const"):
            raise ValueError("training noise_mode must be 'random' or 'const'")
        from ..precision import POLICIES
        if self.precision not in POLICIES:
            raise ValueError(f"precision must be one of {POLICIES}, got {self.precision!r}")
        if self.capture not in CAPTURES:
            raise ValueError(f"capture must be one of {CAPTURES}, got {self.capture!r}")
        if self.loop not in LOOPS:
            raise ValueError(f"loop must be one of {LOOPS}, got {self.loop!r}")
        return self

    def effective_optimizer(self) -> tuple[float, tuple]:
        if self.reference_lr_scale:
            r = 0.8  # reg_ratio of the reference implementation
            return self.lr * r, (self.betas[0] ** r, self.betas[1] ** r)
        return self.lr, tuple(self.betas)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["preview_seeds"] = list(self.preview_seeds)
        return d


# RUNTIME: how the iterations run (never what they compute, beyond the precision policy).
# loop 'host' (the default): the simple loop, latents drawn on the CPU, one host check per
#   iteration; 'device' (CUDA, see below): static shapes, device RNG, no host sync (see _DeviceStep).
# capture 'cuda_graph' (CUDA, with the device loop): the whole iteration in one CUDA graph;
#   'compile': torch.compile'd synthesis and CLIP towers; 'none': eager.  Impossible captures
#   (CPU / MPS for CUDA graphs, the host loop) fall back to 'none' and say so in RunPlan.notes.
#
# Until the device loop and its CUDA graph have run on a GPU (benchmarks/gpu_session.sh runs their
# GPU tests and measures them), 'auto' keeps the host loop, eager, on CUDA too: the loop that has
# trained on GPUs. NADA_GPU_FAST_PATH=1 makes 'auto' choose them (the GPU session sets it);
# loop='device' / capture='cuda_graph' ask for them explicitly. The precision policy is separate
# (auto = fast on CUDA).
CAPTURES = ("auto", "none", "cuda_graph", "compile")
LOOPS = ("auto", "host", "device")


def gpu_fast_path_default() -> bool:
    """Whether 'auto' picks the device loop + CUDA graph on CUDA (see RUNTIME)."""
    import os
    return os.environ.get("NADA_GPU_FAST_PATH", "0").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class RunPlan:
    precision: Precision
    loop: str                      # 'host' | 'device'
    capture: str                   # 'none' | 'cuda_graph' | 'compile' (what ran, after fallbacks)
    ops: str = ""                  # the generator ops' implementation (nada_ops.ops.backend)
    path: str = ""                 # one line: loop + capture as they ran
    notes: list = field(default_factory=list)
    overflow_skips: int = 0        # float16 loss-scale overflows (iteration skipped, scale halved)

    def to_dict(self) -> dict:
        return {"precision": self.precision.describe(), "loop": self.loop, "capture": self.capture,
                "ops": self.ops, "path": self.path, "notes": list(self.notes),
                "overflow_skips": self.overflow_skips}


def plan_run(settings: AdaptSettings, device, cfg=None) -> RunPlan:
    """Resolve settings.precision / loop / capture for ``device`` (see RUNTIME)."""
    from ..ops import backend
    dev = torch.device(device)
    prec = resolve_precision(settings.precision, dev)
    notes = []
    loop = settings.loop
    fast_path = dev.type == "cuda" and gpu_fast_path_default()
    if loop == "auto":
        loop = "device" if fast_path or (dev.type == "cuda" and settings.capture not in ("auto", "none")) \
            else "host"
        if dev.type == "cuda" and loop == "host":
            notes.append("the device loop and CUDA graph have not been verified on a GPU yet: host loop, eager "
                         "(capture='cuda_graph' or NADA_GPU_FAST_PATH=1 to use them)")
    capture = settings.capture
    if capture == "auto":
        capture = "cuda_graph" if (loop == "device" and dev.type == "cuda" and fast_path) else "none"
    if capture != "none" and loop == "host":
        if settings.loop == "host":
            notes.append(f"capture {capture!r} needs the device loop; the host loop ran eagerly")
            capture = "none"
        else:
            loop = "device"
    if capture == "cuda_graph" and dev.type != "cuda":
        notes.append(f"CUDA graphs need a CUDA device (this is {dev.type}); ran eagerly")
        capture = "none"
    if loop == "host" and prec.loss_scale != 1:
        loop = "device"
        notes.append("float16 training needs the device loop (loss scaling)")
    impl = backend.get_impl()
    ops = ("compiled CUDA" if impl != "reference" and dev.type == "cuda" else "reference (PyTorch)") \
        if impl != "compiled" else "compiled CUDA (forced)"
    path = f"{loop} loop, " + {"none": "eager", "cuda_graph": "CUDA graph (whole iteration)",
                               "compile": "torch.compile"}[capture]
    return RunPlan(precision=prec, loop=loop, capture=capture, ops=ops, path=path, notes=notes)



@dataclass
class StepInfo:
    step: int
    total: int
    loss: float
    layers: list | None          # W+ indices trained this step (adaptive), None = schedule's fixed set
    seconds: float
    preview: torch.Tensor | None = None   # [-1,1] NCHW grid rows: source / adapted
    path: str = ""                        # how the iteration ran (RunPlan.path)


@dataclass
class AdaptResult:
    G: Generator                 # the adapted generator (eval, requires_grad False)
    steps_done: int
    interrupted: bool
    losses: list = field(default_factory=list)
    layer_history: list = field(default_factory=list)
    seconds: float = 0.0
    stop_exception: BaseException | None = None   # why training stopped early (re-raise it)
    runtime: dict = field(default_factory=dict)    # RunPlan.to_dict(): precision, loop, capture, ops, notes

    def history_entry(self, direction_provenance: dict, settings: AdaptSettings, schedule: FreezeSchedule,
                      clip_models: list) -> dict:
        return {
            "op": "nada_adapt",
            "direction": direction_provenance,
            "clip_models": clip_models,
            "settings": settings.to_dict(),
            "schedule": schedule.to_dict(),
            "iterations_done": self.steps_done,
            "interrupted": self.interrupted,
            "final_loss": self.losses[-1] if self.losses else None,
        }


ProgressFn = Callable[[StepInfo], None]


def _preview(G_frozen, G_train, ws):
    with torch.no_grad():
        a = G_frozen.synthesis(ws, noise_mode="const")
        b = G_train.synthesis(ws, noise_mode="const")
    return torch.cat([a, b], 0)


SnapshotFn = Callable[[int, Generator, float], None]


def adapt(source: Generator, guidance, settings: AdaptSettings, schedule: FreezeSchedule | None = None,
          progress: ProgressFn | None = None, device=None, snapshot_every: int = 0,
          on_snapshot: SnapshotFn | None = None) -> AdaptResult:
    """Train a copy of ``source`` so that CLIP sees the change described by ``guidance``.

    ``guidance``: a :class:`nada_ops.nada.guidance.Guidance` (CLIP models with weights and,
    per model, the unit direction dT and the unit target embedding for the global loss).
    ``progress(StepInfo)`` is called after every iteration and may raise (e.g. the user
    pressed Cancel): training stops there, the result keeps what was trained so far
    (``interrupted=True``, ``stop_exception`` holds the exception for the caller to re-raise).
    Running out of memory also stops training with what was trained so far kept
    (``stop_exception`` is a :class:`~nada_ops.memory.OutOfMemory` saying what to change).
    ``on_snapshot(step, G_train, loss)`` is called every ``snapshot_every`` iterations (and
    not again for the last one) with the live training generator: save it, do not keep it.
    How the iterations run (precision, host or device loop, CUDA graph) is
    :func:`plan_run`'s choice, reported in ``AdaptResult.runtime``.
    """
    settings = settings.validate()
    schedule = (schedule or FreezeSchedule()).validate(source.cfg)
    cfg = source.cfg
    dev = torch.device(device) if device is not None else source.w_avg.device
    plan = plan_run(settings, dev, cfg)
    with torch.inference_mode(False), torch.enable_grad(), plan.precision.math():
        guidance = guidance.for_training()
        torch.manual_seed(settings.seed)
        if plan.loop == "device":
            gen = torch.Generator(device=dev).manual_seed(settings.seed)
        else:
            gen = torch.Generator().manual_seed(settings.seed)
        G_frozen = copy_generator(source, dev)
        G_train = copy_generator(source, dev)
        G_train.mapping = G_frozen.mapping          # ONE shared, frozen mapping network
        G_frozen.requires_grad_(False)
        G_train.requires_grad_(False)

        if schedule.mode == "all":
            fixed_layers = all_conv_layer_names(cfg)
        elif schedule.mode == "manual":
            fixed_layers = trainable_layer_names(cfg, schedule.indices)
        else:
            fixed_layers = all_conv_layer_names(cfg)   # candidates; chosen per iteration
        params_of = {name: layer_parameters(G_train, [name]) for name in fixed_layers}
        params = [p for ps in params_of.values() for p in ps]
        for p in params:
            p.requires_grad_(True)
        k = schedule.resolve_k(cfg) if schedule.mode == "adaptive" else None

        models = list(guidance.models())   # [(ClipModel, weight, key)]
        prev_ws = None
        if settings.preview_every:
            from ..stylegan.networks import z_from_seeds
            with torch.no_grad():
                zs = z_from_seeds(list(settings.preview_seeds), cfg.z_dim).to(dev)
                c = _labels(cfg, len(settings.preview_seeds), gen, dev)
                prev_ws = G_frozen.map(zs, c, settings.preview_psi)

        result = AdaptResult(G=G_train, steps_done=0, interrupted=False)
        ctx = _Run(G_frozen, G_train, models, guidance, settings, schedule, cfg, k, params_of, params, gen, dev,
                   plan)
        t0 = time.time()
        if plan.loop == "device":
            _device_loop(ctx, result, progress, prev_ws, snapshot_every, on_snapshot, t0)
        else:
            _host_loop(ctx, result, progress, prev_ws, snapshot_every, on_snapshot, t0)
        result.seconds = time.time() - t0
        result.runtime = plan.to_dict()
        G_train.requires_grad_(False)
        G_train.eval()
        # Give the adapted generator its own mapping copy so it is a standalone network.
        G_train.mapping = copy.deepcopy(G_frozen.mapping)
    return result


@dataclass
class _Run:
    """What one training run works with (both loops)."""
    G_frozen: Generator
    G_train: Generator
    models: list
    guidance: object
    settings: AdaptSettings
    schedule: FreezeSchedule
    cfg: object
    k: int | None
    params_of: dict
    params: list
    gen: torch.Generator
    dev: torch.device
    plan: "RunPlan"

    @property
    def synth_kw(self) -> dict:
        return self.plan.precision.synthesis_kwargs(self.cfg)


def _after_step(ctx, result, progress, prev_ws, snapshot_every, on_snapshot, t0, step, loss, chosen) -> bool:
    """Book-keeping after iteration ``step`` (0-based) with its loss: history, snapshot,
    preview, progress. Returns False when training must stop (the progress callback raised)."""
    settings = ctx.settings
    result.steps_done = step + 1
    result.losses.append(loss)
    result.layer_history.append(chosen)
    last = step + 1 == settings.iterations
    if on_snapshot is not None and snapshot_every and (step + 1) % snapshot_every == 0 and not last:
        on_snapshot(step + 1, ctx.G_train, loss)
    preview = None
    if prev_ws is not None and ((step + 1) % settings.preview_every == 0 or last):
        preview = _preview(ctx.G_frozen, ctx.G_train, prev_ws)
    if progress is not None:
        try:
            progress(StepInfo(step + 1, settings.iterations, loss, chosen, time.time() - t0, preview,
                              path=ctx.plan.path))
        except BaseException as e:  # interrupt: keep what was trained, let the caller re-raise
            result.interrupted = True
            result.stop_exception = e
            return False
    return True


def _non_finite(result, step, what):
    result.stop_exception = NonFiniteLossError(
        f"{what} at iteration {step + 1}: training stopped and kept the weights of iteration "
        f"{step}. Lower the learning rate, use fp32, or check the CLIP weights and prompts.")


def _out_of_memory(result, step, dev, e):
    if not is_out_of_memory(e):
        raise e
    result.stop_exception = OutOfMemory(f"Adapt Generator at iteration {step + 1}", dev, advice_for("training"), e)


def _host_loop(ctx, result, progress, prev_ws, snapshot_every, on_snapshot, t0):
    """The simple loop (CPU default): one host sync per check, the layer set chosen on the host."""
    lr, betas = ctx.settings.effective_optimizer()
    opt = torch.optim.Adam(ctx.params, lr=lr, betas=betas)
    for step in range(ctx.settings.iterations):
        try:
            loss, chosen, bad = _train_step(ctx.G_frozen, ctx.G_train, ctx.models, ctx.guidance, ctx.settings,
                                            ctx.schedule, ctx.cfg, ctx.k, ctx.params_of, ctx.params, opt, ctx.gen,
                                            ctx.dev, ctx.plan)
        except BaseException as e:   # noqa: BLE001 - only out-of-memory is handled here
            _out_of_memory(result, step, ctx.dev, e)
            break
        if bad is not None:
            _non_finite(result, step, bad)
            break
        if not _after_step(ctx, result, progress, prev_ws, snapshot_every, on_snapshot, t0, step, loss, chosen):
            break


def _train_step(G_frozen, G_train, models, guidance, settings, schedule, cfg, k, params_of, params, opt, gen,
                dev, plan=None):
    """One iteration. Returns (loss, W+ indices trained or None, None) or, when the loss or a
    gradient is not finite, (nan, chosen, what went wrong) without updating the weights."""
    ws, noises = _training_batch(G_frozen, settings, gen, dev)
    chosen = None
    if schedule.mode == "adaptive":
        chosen, _ = adaptive_select(G_train, models, guidance.targets(), cfg, k, schedule.n_w,
                                    schedule.n_i, schedule.selection_lr, gen, synthesis_kwargs=(
                                        plan.precision.synthesis_kwargs(cfg) if plan is not None else None),
                                    clip_context=plan.precision.clip_autocast if plan is not None else None)
        active = set(trainable_layer_names(cfg, chosen))
        for name, ps in params_of.items():
            for p in ps:
                p.requires_grad_(name in active)

    prec = plan.precision if plan is not None else resolve_precision("exact", dev)
    kw = prec.synthesis_kwargs(cfg)
    with torch.no_grad():
        img_frozen = G_frozen.synthesis(ws, noise_mode=settings.noise_mode, noises=noises, **kw)
        with prec.clip_autocast():
            emb_frozen = {key: m.encode_generator_images(img_frozen) for m, _, key in models}
    img_train = G_train.synthesis(ws, noise_mode=settings.noise_mode, noises=noises, **kw)
    loss = img_train.new_zeros([])
    for m, weight, key in models:
        with prec.clip_autocast():
            emb = m.encode_generator_images(img_train)
        if settings.lambda_direction:
            loss = loss + weight * settings.lambda_direction * directional_loss(
                emb, emb_frozen[key], guidance.direction(key))
        if settings.lambda_global:
            loss = loss + weight * settings.lambda_global * global_loss(emb, guidance.target(key))
    opt.zero_grad(set_to_none=True)
    value = float(loss.item())
    if not math.isfinite(value):
        return value, chosen, f"the loss became {value}"
    loss.backward()
    if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
        opt.zero_grad(set_to_none=True)
        return value, chosen, "the gradients became NaN/Inf"
    opt.step()
    return value, chosen, None


def _labels(cfg, n, gen, dev):
    if not cfg.c_dim:
        return None
    lab = torch.randint(0, cfg.c_dim, [n], generator=gen, device=gen.device)
    return torch.nn.functional.one_hot(lab, cfg.c_dim).float().to(dev)


def _training_batch(G_frozen: Generator, s: AdaptSettings, gen: torch.Generator, dev):
    """One batch of W+ codes (+ per-layer noise) shared by both generators."""
    cfg = G_frozen.cfg
    b = s.batch_size
    with torch.no_grad():
        z = torch.randn([b, cfg.z_dim], generator=gen).to(dev)
        c = _labels(cfg, b, gen, dev)
        ws = G_frozen.map(z, c, s.truncation_psi)
        if s.mixing_prob > 0 and torch.rand([], generator=gen).item() < s.mixing_prob:
            z2 = torch.randn([b, cfg.z_dim], generator=gen).to(dev)
            ws2 = G_frozen.map(z2, c, s.truncation_psi)
            crossover = int(torch.randint(1, cfg.num_ws, [], generator=gen))
            ws = style_mix(ws, ws2, crossover)
        noises = G_frozen.make_noises(b, gen, device="cpu") if s.noise_mode == "random" else None
        if noises is not None:
            noises = [n.to(dev) for n in noises]
    return ws, noises




# ----------------------------------------------------------------------------- device loop
# The iteration as the GPU wants it: everything (latents, style-mixing crossover, per-layer
# noise, the adaptive layer choice, the finiteness check, the optimizer step, the loss history)
# stays on the device with static shapes, so that nothing waits for the host and the whole
# iteration can be captured in ONE CUDA graph.  The host reads the results one iteration late
# (while the next one runs), except before previews, snapshots and the last iteration.

NO_PROBLEM, LOSS_NOT_FINITE, GRADS_NOT_FINITE, OVERFLOW_SKIPPED = 0, 1, 2, 3
#: Iterations run eagerly before a CUDA graph is captured (optimizer state, cuDNN / cuBLAS
#: plans and the compiled extension are set up by then).
GRAPH_WARMUP = 3
#: Loss-scale growth: double after this many iterations without overflow (float16 only).
SCALE_GROWTH_INTERVAL = 200


class _DeviceStep:
    """One static-shape training iteration (callable; capturable in a CUDA graph)."""

    def __init__(self, ctx: _Run):
        self.ctx = ctx
        cfg, dev, s = ctx.cfg, ctx.dev, ctx.settings
        self.adaptive = ctx.schedule.mode == "adaptive"
        self.layer_names = list(ctx.params_of)
        lr, betas = s.effective_optimizer()
        betas = (float(betas[0]), float(betas[1]))
        kw = dict(lr=float(lr), betas=betas, fused=True)
        if dev.type == "cuda":
            kw["capturable"] = True
        # Adaptive: one optimizer per candidate layer, each skipped (found_inf) when its layer is not
        # chosen this iteration: exactly the update of an optimizer that never saw the layer (Adam's
        # state and step count untouched), with a per-iteration choice that is only device data.
        groups = [ctx.params_of[n] for n in self.layer_names] if self.adaptive else [ctx.params]
        self.opts = [torch.optim.Adam(ps, **kw) for ps in groups]
        self.skips = [torch.zeros([], device=dev) for _ in self.opts]
        for o, f in zip(self.opts, self.skips):
            o.found_inf = f
        scale = ctx.plan.precision.loss_scale
        self.scaling = scale != 1
        self.scale = torch.full([1], float(scale), device=dev)
        self.growth = torch.zeros([1], dtype=torch.int32, device=dev)
        self.failed = torch.zeros([], dtype=torch.bool, device=dev)
        self.idx = torch.zeros([1], dtype=torch.long, device=dev)
        n = s.iterations
        self.hist_loss = torch.full([n], float("nan"), device=dev)
        self.hist_code = torch.zeros([n], dtype=torch.uint8, device=dev)
        self.hist_sel = torch.zeros([n, cfg.num_ws], dtype=torch.bool, device=dev) if self.adaptive else None
        if self.adaptive:
            from ..nada.schedule import trainable_layer_names
            drive = torch.zeros([len(self.layer_names), cfg.num_ws])
            for i in range(cfg.num_ws):
                for name in trainable_layer_names(cfg, [i]):
                    drive[self.layer_names.index(name), i] = 1
            self.drive = drive.to(dev)
        self.capturing = False

    def zero_grad(self):
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def __call__(self):
        ctx = self.ctx
        s, cfg, prec = ctx.settings, ctx.cfg, ctx.plan.precision
        kw = ctx.synth_kw
        ws, noises = _training_batch_static(ctx.G_frozen, s, ctx.gen, ctx.dev)
        sel = None
        if self.adaptive:
            sc = ctx.schedule
            scores = adaptive_scores(ctx.G_train, ctx.models, ctx.guidance.targets(), cfg, sc.n_w, sc.n_i,
                                     sc.selection_lr, ctx.gen, synthesis_kwargs=kw,
                                     clip_context=prec.clip_autocast, loss_scale=self.scale if self.scaling else 1.0)
            sel = adaptive_mask(scores, ctx.k)
        with torch.no_grad():
            img_frozen = ctx.G_frozen.synthesis(ws, noise_mode=s.noise_mode, noises=noises, **kw)
            with prec.clip_autocast():
                emb_frozen = {key: m.encode_generator_images(img_frozen) for m, _, key in ctx.models}
        img_train = ctx.G_train.synthesis(ws, noise_mode=s.noise_mode, noises=noises, **kw)
        loss = _clip_loss(ctx, img_train, emb_frozen)
        if not self.capturing:
            self.zero_grad()
        (loss * self.scale if self.scaling else loss).backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ctx.params]
        found = torch.zeros([1], device=ctx.dev)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, self.scale.reciprocal())
        grads_bad = found[0] > 0
        loss_d = loss.detach().float()
        loss_bad = ~torch.isfinite(loss_d)
        fatal = grads_bad & (self.scale[0] <= 1) if self.scaling else grads_bad
        fail_now = loss_bad | fatal
        code = torch.where(loss_bad, LOSS_NOT_FINITE,
                           torch.where(fatal, GRADS_NOT_FINITE, torch.where(grads_bad, OVERFLOW_SKIPPED, NO_PROBLEM)))
        self.failed.logical_or_(fail_now)
        skip = self.failed | grads_bad
        if self.adaptive:
            active = (self.drive @ sel.float()) > 0            # [layers]
            for i, f in enumerate(self.skips):
                f.copy_((skip | ~active[i]).float())
        else:
            self.skips[0].copy_(skip.float())
        for o in self.opts:
            o.step()
        if self.scaling:
            torch._amp_update_scale_(self.scale, self.growth, found, 2.0, 0.5, SCALE_GROWTH_INTERVAL)
        self.hist_loss.index_copy_(0, self.idx, loss_d.reshape(1))
        self.hist_code.index_copy_(0, self.idx, code.to(torch.uint8).reshape(1))
        if sel is not None:
            self.hist_sel.index_copy_(0, self.idx, sel.reshape(1, -1))
        self.idx.add_(1)

    def read(self, step: int):
        """(loss, code, chosen W+ indices or None) of iteration ``step`` (waits for it)."""
        loss = float(self.hist_loss[step])
        code = int(self.hist_code[step])
        chosen = None
        if self.hist_sel is not None:
            chosen = torch.nonzero(self.hist_sel[step]).flatten().tolist()
        return loss, code, chosen


def _clip_loss(ctx, img_train, emb_frozen):
    s, prec = ctx.settings, ctx.plan.precision
    loss = img_train.new_zeros([], dtype=torch.float32)
    for m, weight, key in ctx.models:
        with prec.clip_autocast():
            emb = m.encode_generator_images(img_train)
        if s.lambda_direction:
            loss = loss + weight * s.lambda_direction * directional_loss(emb, emb_frozen[key],
                                                                         ctx.guidance.direction(key))
        if s.lambda_global:
            loss = loss + weight * s.lambda_global * global_loss(emb, ctx.guidance.target(key))
    return loss


def _training_batch_static(G_frozen: Generator, s: AdaptSettings, gen: torch.Generator, dev):
    """As :func:`_training_batch`, without a host decision: drawn on ``gen``'s device, the
    style-mixing coin and crossover are device tensors (a crossover of num_ws = no mixing), so
    the shapes and the kernels are the same every iteration.  With mixing probability 0 the
    random draws are those of :func:`_training_batch` (same seed -> same batches)."""
    cfg = G_frozen.cfg
    b = s.batch_size
    gd = gen.device
    with torch.no_grad():
        z = torch.randn([b, cfg.z_dim], generator=gen, device=gd).to(dev)
        c = _labels(cfg, b, gen, dev)
        ws = G_frozen.map(z, c, s.truncation_psi)
        if s.mixing_prob > 0:
            coin = torch.rand([], generator=gen, device=gd)
            z2 = torch.randn([b, cfg.z_dim], generator=gen, device=gd).to(dev)
            ws2 = G_frozen.map(z2, c, s.truncation_psi)
            cross = torch.randint(1, cfg.num_ws, [], generator=gen, device=gd)
            cross = torch.where(coin < s.mixing_prob, cross, torch.full_like(cross, cfg.num_ws)).to(dev)
            ws = style_mix(ws, ws2, cross.expand(b))
        noises = G_frozen.make_noises(b, gen, device=gd) if s.noise_mode == "random" else None
        if noises is not None:
            noises = [n.to(dev) for n in noises]
    return ws, noises


def _needs_host(ctx, step, snapshot_every, on_snapshot, prev_ws) -> bool:
    """Must the host see iteration ``step`` before the next one starts (weights read)?"""
    s = ctx.settings
    n = step + 1
    return (n == s.iterations or (prev_ws is not None and n % s.preview_every == 0)
            or (on_snapshot is not None and snapshot_every and n % snapshot_every == 0))


def _device_loop(ctx, result, progress, prev_ws, snapshot_every, on_snapshot, t0):
    plan = ctx.plan
    try:
        step_fn = _DeviceStep(ctx)
    except BaseException as e:   # noqa: BLE001
        _out_of_memory(result, 0, ctx.dev, e)
        return
    runner = _Runner(step_fn, plan)
    pending = None          # iteration launched, not read yet
    n = ctx.settings.iterations

    def finish(step) -> bool:
        loss, code, chosen = step_fn.read(step)
        if code == OVERFLOW_SKIPPED:
            plan.overflow_skips += 1
        if code in (LOSS_NOT_FINITE, GRADS_NOT_FINITE):
            # The failed flag is sticky: no update was applied from this iteration on.
            _non_finite(result, step, f"the loss became {loss}" if code == LOSS_NOT_FINITE
                        else "the gradients became NaN/Inf")
            return False
        return _after_step(ctx, result, progress, prev_ws, snapshot_every, on_snapshot, t0, step, loss, chosen)

    for step in range(n):
        try:
            runner.run(step)
        except BaseException as e:   # noqa: BLE001 - only out-of-memory is handled here
            if pending is not None and is_out_of_memory(e):
                finish(pending)
            _out_of_memory(result, step, ctx.dev, e)
            return
        if pending is not None and not finish(pending):
            if result.interrupted:
                # Cancelled while this iteration was already running: it was applied, so count it
                # (the result's weights are those of steps_done iterations).
                loss, code, chosen = step_fn.read(step)
                if code not in (LOSS_NOT_FINITE, GRADS_NOT_FINITE):
                    result.steps_done = step + 1
                    result.losses.append(loss)
                    result.layer_history.append(chosen)
            return
        pending = None
        if _needs_host(ctx, step, snapshot_every, on_snapshot, prev_ws):
            if not finish(step):
                return
        else:
            pending = step
    if pending is not None:
        finish(pending)


class _Runner:
    """Runs the iterations: eagerly, through a CUDA graph (after GRAPH_WARMUP eager ones), or
    with torch.compile'd pieces; falls back to eager when capture fails, and records what ran."""

    def __init__(self, step_fn: _DeviceStep, plan: "RunPlan"):
        self.step_fn, self.plan = step_fn, plan
        self.graph = None
        self.side = None
        if plan.capture == "compile":
            self._compile()

    def _compile(self):
        ctx = self.step_fn.ctx
        try:
            _compile_pieces(ctx)
            self.plan.path = "device loop, torch.compile (synthesis + CLIP towers)"
        except Exception as e:   # noqa: BLE001 - fall back, and say so
            self.plan.capture = "none"
            self.plan.notes.append(f"torch.compile failed ({type(e).__name__}: {e}); ran eagerly")
            self.plan.path = "device loop, eager"

    def run(self, step: int):
        if self.plan.capture != "cuda_graph":
            self.step_fn()
            return
        if self.graph is not None:
            self.graph.replay()
            return
        if step < GRAPH_WARMUP or self.step_fn.ctx.settings.iterations - step < 2:
            # warm-up (on a side stream, as torch's whole-network capture recipe does)
            if self.side is None:
                self.side = torch.cuda.Stream()
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                self.step_fn()
            torch.cuda.current_stream().wait_stream(self.side)
            return
        self._capture()
        if self.graph is not None:
            self.graph.replay()
        else:
            self.step_fn()

    def _capture(self):
        sf = self.step_fn
        torch.cuda.synchronize()
        try:
            g = torch.cuda.CUDAGraph()
            g.register_generator_state(sf.ctx.gen)
            sf.zero_grad()
            sf.capturing = True
            with torch.cuda.graph(g):
                sf()
            self.graph = g
            self.plan.path = "device loop, CUDA graph (whole iteration)"
        except Exception as e:   # noqa: BLE001 - fall back, and say so
            self.graph = None
            self.plan.capture = "none"
            self.plan.notes.append(f"CUDA graph capture failed ({type(e).__name__}: {e}); ran eagerly")
            self.plan.path = "device loop, eager"
            torch.cuda.synchronize()
        finally:
            sf.capturing = False


def _compile_pieces(ctx):
    """capture='compile': the two synthesis networks and the CLIP image towers through
    torch.compile (static shapes); the backward pass and the optimizer step stay eager."""
    ctx.G_train.synthesis.forward = torch.compile(ctx.G_train.synthesis.forward, dynamic=False)
    ctx.G_frozen.synthesis.forward = torch.compile(ctx.G_frozen.synthesis.forward, dynamic=False)
    compiled = []
    for m, w, key in ctx.models:
        m2 = copy.copy(m)              # the caller's ClipModel is never modified
        m2.model = copy.copy(m.model)
        m2.model.encode_image = torch.compile(m.model.encode_image, dynamic=False)
        compiled.append((m2, w, key))
    ctx.models = compiled
