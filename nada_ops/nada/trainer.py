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
from .schedule import (FreezeSchedule, adaptive_select, all_conv_layer_names, layer_parameters,
                       trainable_layer_names)


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


@dataclass
class StepInfo:
    step: int
    total: int
    loss: float
    layers: list | None          # W+ indices trained this step (adaptive), None = schedule's fixed set
    seconds: float
    preview: torch.Tensor | None = None   # [-1,1] NCHW grid rows: source / adapted


@dataclass
class AdaptResult:
    G: Generator                 # the adapted generator (eval, requires_grad False)
    steps_done: int
    interrupted: bool
    losses: list = field(default_factory=list)
    layer_history: list = field(default_factory=list)
    seconds: float = 0.0
    stop_exception: BaseException | None = None   # why training stopped early (re-raise it)

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
    """
    settings = settings.validate()
    schedule = (schedule or FreezeSchedule()).validate(source.cfg)
    cfg = source.cfg
    dev = torch.device(device) if device is not None else source.w_avg.device
    with torch.inference_mode(False), torch.enable_grad():
        guidance = guidance.for_training()
        torch.manual_seed(settings.seed)
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
        lr, betas = settings.effective_optimizer()
        opt = torch.optim.Adam(params, lr=lr, betas=betas)
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
        t0 = time.time()
        for step in range(settings.iterations):
            try:
                loss, chosen, bad = _train_step(G_frozen, G_train, models, guidance, settings, schedule, cfg, k,
                                                params_of, params, opt, gen, dev)
            except BaseException as e:   # noqa: BLE001 - only out-of-memory is handled here
                if not is_out_of_memory(e):
                    raise
                result.stop_exception = OutOfMemory(
                    f"Adapt Generator at iteration {step + 1}", dev, advice_for("training"), e)
                break
            if bad is not None:
                result.stop_exception = NonFiniteLossError(
                    f"{bad} at iteration {step + 1}: training stopped and kept the weights of iteration "
                    f"{step}. Lower the learning rate, use fp32, or check the CLIP weights and prompts.")
                break

            result.steps_done = step + 1
            result.losses.append(loss)
            result.layer_history.append(chosen)
            last = step + 1 == settings.iterations
            if on_snapshot is not None and snapshot_every and (step + 1) % snapshot_every == 0 and not last:
                on_snapshot(step + 1, G_train, loss)
            preview = None
            if prev_ws is not None and ((step + 1) % settings.preview_every == 0 or last):
                preview = _preview(G_frozen, G_train, prev_ws)
            if progress is not None:
                try:
                    progress(StepInfo(step + 1, settings.iterations, result.losses[-1], chosen,
                                      time.time() - t0, preview))
                except BaseException as e:  # interrupt: keep what was trained, let the caller re-raise
                    result.interrupted = True
                    result.stop_exception = e
                    break
        result.seconds = time.time() - t0
        G_train.requires_grad_(False)
        G_train.eval()
        # Give the adapted generator its own mapping copy so it is a standalone network.
        G_train.mapping = copy.deepcopy(G_frozen.mapping)
    return result


def _train_step(G_frozen, G_train, models, guidance, settings, schedule, cfg, k, params_of, params, opt, gen,
                dev):
    """One iteration. Returns (loss, W+ indices trained or None, None) or, when the loss or a
    gradient is not finite, (nan, chosen, what went wrong) without updating the weights."""
    ws, noises = _training_batch(G_frozen, settings, gen, dev)
    chosen = None
    if schedule.mode == "adaptive":
        chosen, _ = adaptive_select(G_train, models, guidance.targets(), cfg, k, schedule.n_w,
                                    schedule.n_i, schedule.selection_lr, gen)
        active = set(trainable_layer_names(cfg, chosen))
        for name, ps in params_of.items():
            for p in ps:
                p.requires_grad_(name in active)

    with torch.no_grad():
        img_frozen = G_frozen.synthesis(ws, noise_mode=settings.noise_mode, noises=noises)
        emb_frozen = {key: m.encode_generator_images(img_frozen) for m, _, key in models}
    img_train = G_train.synthesis(ws, noise_mode=settings.noise_mode, noises=noises)
    loss = img_train.new_zeros([])
    for m, weight, key in models:
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
    lab = torch.randint(0, cfg.c_dim, [n], generator=gen)
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


