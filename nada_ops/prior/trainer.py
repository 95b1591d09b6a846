"""Training the prior (clip2latent sec. 3 and appendix; reference: scripts/train.py with
DALLE2-pytorch's DiffusionPriorTrainer):

- w standardised with the statistics of the pair set (mean, unbiased std per dimension; the
  reference estimates them from 10,000 pairs, here they are exact sums over every shard);
- the condition: the raw CLIP image embedding with LAFITE-style noise (unit-norm embedding
  plus ``cond_noise`` x a random unit vector, renormalised, the original norm restored), then
  the prior's ``cond_norm`` / ``cond_scale``; dropped (hidden from attention) with
  probability ``cond_drop_prob``, for classifier-free guidance;
- a uniform timestep, Gaussian noise, MSE on the predicted x0;
- AdamW (lr 1e-4, weight decay 0.01 on matrices only, eps 1e-6, betas (0.9, 0.999));
- an EMA of the weights (beta 0.9999, every 10 steps after step 1000) is what gets exported.
  The reference meant to copy the online weights into the EMA at step 1000 but its copy is a
  no-op (``state_dict(destination)``), so its EMA starts from the random initialisation; here
  the copy happens.

Checkpoints (``train_state.safetensors`` in the work folder: online + EMA weights, Adam state,
the random generator's state, the position in the data) make a run resumable exactly; the
current prior is exported next to it (``prior.safetensors``), and the best one by validation
(mean CLIP similarity of rendered samples to their conditions, the paper's checkpoint
selection) as ``best.safetensors``.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..fileio import atomic_write
from .config import PriorConfig
from .diffusion import Schedule, training_loss
from .formats import PriorFileError, write_prior
from .model import LatentPrior, new_prior
from .pairs import PairData

STATE_FORMAT = "nada-prior-train"
STATE_VERSION = "1"
STATE_FILE = "train_state.safetensors"
PRIOR_FILE = "prior.safetensors"
BEST_FILE = "best.safetensors"


@dataclass
class PriorTrainSettings:
    steps: int = 500_000          # the paper trains 1M; quality peaks near 500k
    batch: int = 512
    lr: float = 1e-4
    weight_decay: float = 1e-2
    adam_eps: float = 1e-6
    betas: tuple = (0.9, 0.999)
    ema_beta: float = 0.9999
    ema_every: int = 10
    ema_start: int = 1000
    cond_noise: float = 1.0       # LAFITE noise scale (paper: 1.0 best)
    seed: int = 0
    checkpoint_every: int = 5000
    val_every: int = 10_000
    log_every: int = 50

    def validate(self) -> "PriorTrainSettings":
        ints = {"steps": (1, 10 ** 9), "batch": (1, 1 << 20), "ema_every": (1, 10 ** 9), "ema_start": (0, 10 ** 12),
                "seed": (0, 2 ** 63 - 1), "checkpoint_every": (0, 10 ** 12), "val_every": (0, 10 ** 12),
                "log_every": (1, 10 ** 12)}
        for k, (lo, hi) in ints.items():
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"prior training setting '{k}' must be an integer in {lo}..{hi}, got {v!r:.40}")
        for k in ("lr", "weight_decay", "adam_eps", "ema_beta", "cond_noise"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"prior training setting '{k}' must be a finite number >= 0, got {v!r:.40}")
        if not 0 <= self.ema_beta < 1 or self.lr <= 0:
            raise ValueError("ema_beta must be in [0, 1) and lr > 0")
        self.betas = tuple(float(b) for b in self.betas)
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    #: settings that may change when a run is resumed
    RESUMABLE = ("steps", "checkpoint_every", "val_every", "log_every")


def add_condition_noise(x: torch.Tensor, scale: float, generator=None) -> torch.Tensor:
    """LAFITE-style augmentation as clip2latent applies it: keep the norm, move the direction by
    ``scale`` x a random unit vector."""
    if scale == 0:
        return x
    norm = x.norm(dim=-1, keepdim=True)
    u = x / norm
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    u = u + scale * F.normalize(noise, dim=-1)
    return F.normalize(u, dim=-1) * norm


def _no_decay(name: str) -> bool:
    """Parameters without weight decay: everything that is not a matrix in the reference
    (LayerNorm gains, biases, the learned query of a W prior)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("norm", "out_norm", "norm_out", "bias", "query")


def make_optimizer(net, s: PriorTrainSettings) -> torch.optim.AdamW:
    decay = [p for n, p in net.named_parameters() if not _no_decay(n)]
    no_decay = [p for n, p in net.named_parameters() if _no_decay(n)]
    return torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=s.lr,
                             weight_decay=s.weight_decay, betas=s.betas, eps=s.adam_eps)


@dataclass
class TrainProgress:
    step: int
    total: int
    loss: float
    seconds: float
    validation: dict | None = None


@dataclass
class TrainResult:
    prior: LatentPrior
    steps_done: int
    losses: list = field(default_factory=list)
    validations: list = field(default_factory=list)
    seconds: float = 0.0


class _EMA:
    def __init__(self, net, beta: float):
        self.beta = beta
        self.params = None          # started at ema_start

    def start(self, net):
        self.params = {n: p.detach().clone() for n, p in net.named_parameters()}

    @torch.no_grad()
    def update(self, net):
        for n, p in net.named_parameters():
            self.params[n].lerp_(p.detach(), 1.0 - self.beta)


def _export(base: LatentPrior, net, ema: _EMA, provenance: dict) -> LatentPrior:
    """A LatentPrior with the EMA weights (online weights before the EMA starts)."""
    out = copy.deepcopy(net).eval().requires_grad_(False)
    if ema.params is not None:
        with torch.no_grad():
            for n, p in out.named_parameters():
                p.copy_(ema.params[n])
    prov = copy.deepcopy(provenance)
    prov["weights"] = "ema" if ema.params is not None else "online (the EMA had not started)"
    return LatentPrior(net=out, w_mean=base.w_mean.clone(), w_std=base.w_std.clone(), name=base.name,
                       source_format="nada-prior", provenance=prov)


def train_prior(data: PairData, cfg: PriorConfig, settings: PriorTrainSettings, work_dir=None,
                resume: bool = True, device="cpu", provenance: dict | None = None, name: str = "prior",
                progress: Callable[[TrainProgress], None] | None = None,
                validate: Callable[[LatentPrior], dict] | None = None, log=None) -> TrainResult:
    """Train (or continue training) a prior on ``data``.

    ``progress(TrainProgress)`` is called every ``log_every`` steps and may raise to stop: the
    state is then checkpointed (with a work folder) and the exception re-raised.
    ``validate(prior) -> {'score': float, ...}`` runs every ``val_every`` steps and at the end.
    """
    settings = settings.validate()
    device = torch.device(device)
    if data.w_dim != cfg.latent_dim or data.embed_dim != cfg.cond_dim:
        raise ValueError(f"the pairs have w_dim {data.w_dim} / embeddings of {data.embed_dim}; the prior config "
                         f"expects {cfg.latent_dim} / {cfg.cond_dim}")
    if cfg.num_latents != 1:
        raise ValueError("training priors with several latents (W+ groups) is not supported; use num_latents 1")
    if len(data) < settings.batch:
        raise ValueError(f"{len(data)} pairs are fewer than one batch of {settings.batch}")
    state_path = os.path.join(os.fspath(work_dir), STATE_FILE) if work_dir else None
    prov = dict(provenance or {})
    state = None
    if state_path and resume and os.path.exists(state_path):
        state = read_train_state(state_path)
        _check_resume(state, cfg, settings, data, state_path)
    if state is not None:
        base = LatentPrior(net=_net_from(cfg, state["online"]), w_mean=state["w_mean"], w_std=state["w_std"],
                           name=name, provenance=prov)
    else:
        mean, std = data.stats()
        if not (std > 0).all():
            raise ValueError("some dimensions of w never vary in the pairs: cannot standardise")
        base = new_prior(cfg, mean, std, seed=settings.seed, name=name, provenance=prov)
    net = base.net.to(device).train().requires_grad_(True)
    base = LatentPrior(net=net, w_mean=base.w_mean.to(device), w_std=base.w_std.to(device), name=name,
                       provenance=prov)
    opt = make_optimizer(net, settings)
    ema = _EMA(net, settings.ema_beta)
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    step, epoch, batch_in_epoch = 0, 0, 0
    best = {"score": -math.inf, "step": 0}
    losses: list = []
    validations: list = []
    if state is not None:
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        _load_optimizer(opt, net, state["adam"], step)
        if state["ema"] is not None:
            ema.params = {k: v.to(device) for k, v in state["ema"].items()}
        try:
            gen.set_state(state["rng"])
        except (RuntimeError, ValueError):      # saved on another kind of device
            gen.manual_seed(settings.seed + step)
        best = state["meta"].get("best") or best
        validations = list(state["meta"].get("validations") or [])
        if log:
            log(f"resuming at step {step} (epoch {epoch})")
    schedule = Schedule(cfg.num_timesteps, device)
    prov["training"] = {**settings.to_dict(), "pairs": len(data), "data": data.signature()}
    t0 = time.time()
    run_loss, run_n = 0.0, 0

    def save_state():
        if state_path:
            write_train_state(state_path, cfg, settings, net, ema, opt, gen, base, step, epoch, batch_in_epoch,
                              data.signature(), best, validations, prov)
            out = _export(base, net, ema, {**prov, "training": {**prov["training"], "steps_done": step}})
            write_prior(out, os.path.join(os.fspath(work_dir), PRIOR_FILE))

    def run_validation():
        nonlocal best
        if validate is None:
            return None
        out = _export(base, net, ema, prov)
        res = dict(validate(out))
        res["step"] = step
        validations.append(res)
        if log:
            log(f"step {step}: validation " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                        for k, v in res.items()))
        if res.get("score", -math.inf) > best["score"]:
            best = {"score": float(res["score"]), "step": step}
            if work_dir:
                out.provenance["training"] = {**out.provenance["training"], "steps_done": step, "validation": res}
                write_prior(out, os.path.join(os.fspath(work_dir), BEST_FILE))
        return res

    try:
        while step < settings.steps:
            for embed, w in data.batches(settings.batch, epoch, settings.seed, skip=batch_in_epoch):
                embed, w = embed.to(device), w.to(device)
                x0 = base.standardise(w)[:, None]
                cond = base.condition(add_condition_noise(embed, settings.cond_noise, gen))
                b = x0.shape[0]
                keep = torch.rand(b, generator=gen, device=device) < (1.0 - cfg.cond_drop_prob)
                t = torch.randint(0, cfg.num_timesteps, (b,), generator=gen, device=device)
                noise = torch.randn(x0.shape, generator=gen, device=device)
                loss = training_loss(net, schedule, x0, cond, keep, t, noise)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the training loss is {loss.item()} at step {step + 1}: lower the "
                                             "learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                batch_in_epoch += 1
                if ema.params is None and step > settings.ema_start:
                    ema.start(net)
                elif ema.params is not None and step % settings.ema_every == 0:
                    ema.update(net)
                run_loss += loss.item()
                run_n += 1
                val = None
                if settings.val_every and step % settings.val_every == 0 and step < settings.steps:
                    val = run_validation()
                if settings.checkpoint_every and step % settings.checkpoint_every == 0:
                    save_state()
                if step % settings.log_every == 0 or step == settings.steps or val is not None:
                    losses.append((step, run_loss / max(run_n, 1)))
                    if progress is not None:
                        progress(TrainProgress(step, settings.steps, run_loss / max(run_n, 1), time.time() - t0, val))
                    run_loss, run_n = 0.0, 0
                if step >= settings.steps:
                    break
            else:
                epoch += 1
                batch_in_epoch = 0
    except BaseException:
        if step > 0:
            save_state()          # Cancel / Ctrl-C / an error: the run resumes from here
        raise
    run_validation()
    save_state()
    net.eval().requires_grad_(False)
    prov["training"]["steps_done"] = step
    prov["training"]["best"] = best if best["step"] else None
    out = _export(base, net, ema, prov)
    return TrainResult(prior=out, steps_done=step, losses=losses, validations=validations,
                       seconds=time.time() - t0)


# ------------------------------------------------------------------ checkpoints
def _net_from(cfg, sd):
    from .network import PriorNetwork
    net = PriorNetwork(cfg)
    net.load_state_dict(sd, strict=True)
    return net


def write_train_state(path, cfg, settings, net, ema, opt, gen, base, step, epoch, batch_in_epoch, data_sig,
                      best, validations, prov):
    from ..io.safetensors_files import write_safetensors
    tensors = {}
    names = {id(p): n for n, p in net.named_parameters()}
    for n, p in net.named_parameters():
        tensors[f"online.{n}"] = p.detach()
    if ema.params is not None:
        for n, p in ema.params.items():
            tensors[f"ema.{n}"] = p
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                n = names[id(p)]
                tensors[f"adam.{n}.exp_avg"] = st["exp_avg"]
                tensors[f"adam.{n}.exp_avg_sq"] = st["exp_avg_sq"]
    tensors["w_mean"] = base.w_mean
    tensors["w_std"] = base.w_std
    tensors["rng"] = gen.get_state()
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "config": cfg.to_json(),
            "settings": json.dumps(settings.to_dict()), "step": str(step), "epoch": str(epoch),
            "batch_in_epoch": str(batch_in_epoch), "data": json.dumps(data_sig, sort_keys=True, default=str),
            "meta": json.dumps({"best": best, "validations": validations[-200:]}, default=str),
            "provenance": json.dumps(prov, sort_keys=True, default=str)}
    atomic_write(path, lambda tmp: write_safetensors(tmp, tensors, meta))


def read_train_state(path) -> dict:
    """A training checkpoint, validated like any file the pack reads."""
    from ..io.errors import UntrustedFileError
    from ..io.safetensors_files import loads_json, read_safetensors
    try:
        sd, meta = read_safetensors(path)
    except UntrustedFileError as e:
        raise PriorFileError(path, e.problem) from None
    if meta.get("format") != STATE_FORMAT or meta.get("format_version") != STATE_VERSION:
        raise PriorFileError(path, "not a prior training checkpoint of this version of the pack")
    try:
        cfg = PriorConfig.from_dict(loads_json(meta.get("config", ""), "config", path, max_depth=3))
        settings = loads_json(meta.get("settings", ""), "settings", path, max_depth=3)
        data_sig = loads_json(meta.get("data", "{}"), "data", path, max_depth=8)
        extra = loads_json(meta.get("meta", "{}"), "meta", path, max_depth=8)
        step, epoch, bie = (int(meta.get(k, "x")) for k in ("step", "epoch", "batch_in_epoch"))
    except (UntrustedFileError, ValueError, TypeError) as e:
        raise PriorFileError(path, f"broken metadata ({str(e)[:200]})") from None
    from .formats import expected_shapes
    shapes = {k[4:]: s for k, s in expected_shapes(cfg).items() if k.startswith("net.")}
    from .network import PriorNetwork
    with torch.device("meta"):
        params = {n for n, _ in PriorNetwork(cfg).named_parameters()}
    online, ema, adam = {}, {}, {}
    for n in params:
        for prefix, dst in (("online.", online), ("ema.", ema)):
            t = sd.get(prefix + n)
            if t is not None:
                if tuple(t.shape) != shapes[n] or not t.is_floating_point() or not torch.isfinite(t).all():
                    raise PriorFileError(path, f"tensor {prefix + n!r} does not fit the network")
                dst[n] = t.float()
        a, b = sd.get(f"adam.{n}.exp_avg"), sd.get(f"adam.{n}.exp_avg_sq")
        if a is not None and b is not None and a.shape == b.shape == shapes[n]:
            adam[n] = (a.float(), b.float())
    if len(online) != len(params) or ema and len(ema) != len(params):
        raise PriorFileError(path, "the checkpoint misses weights of the network")
    rng = sd.get("rng")
    if rng is None or rng.dtype != torch.uint8 or rng.ndim != 1:
        raise PriorFileError(path, "the checkpoint has no random-generator state")
    mean, std = sd.get("w_mean"), sd.get("w_std")
    want = (cfg.num_latents, cfg.latent_dim)
    if mean is None or std is None or tuple(mean.shape) != want or tuple(std.shape) != want or not (std > 0).all():
        raise PriorFileError(path, "the checkpoint's w statistics are missing or broken")
    return {"cfg": cfg, "settings": settings, "data": data_sig, "meta": extra, "step": step, "epoch": epoch,
            "batch_in_epoch": bie, "online": online, "ema": ema or None, "adam": adam, "rng": rng.clone(),
            "w_mean": mean.float(), "w_std": std.float()}


def _check_resume(state, cfg, settings, data, path):
    if state["cfg"] != cfg:
        raise PriorFileError(path, "this checkpoint trains a prior of another size/config; use another work folder "
                                   "or --no-resume")
    old = dict(state["settings"])
    new = settings.to_dict()
    diff = [k for k in new if k not in PriorTrainSettings.RESUMABLE and old.get(k) != new[k]]
    if diff:
        raise PriorFileError(path, f"the run in this folder used other settings ({', '.join(diff)}); resume with "
                                   "the same settings, or start over in another folder")
    sig = data.signature()
    old_sig = {k: v for k, v in state["data"].items() if k != "pairs"}
    if old_sig != {k: v for k, v in sig.items() if k != "pairs"}:
        raise PriorFileError(path, "the run in this folder was trained on another pair set")


def _load_optimizer(opt, net, adam: dict, step: int):
    names = {id(p): n for n, p in net.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            n = names[id(p)]
            if n in adam:
                a, b = adam[n]
                opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": a.to(p.device).clone(),
                                "exp_avg_sq": b.to(p.device).clone()}
