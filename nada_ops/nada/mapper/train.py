"""Latent-mapper "mining" (StyleGAN-NADA sec. 4.3): train a StyleCLIP mapper on an ADAPTED
generator so that every latent is moved to where the generator shows the target text.

Loss per batch of fresh latents w (no dataset: codes are sampled from the generator's own
mapping network each iteration, truncated with psi 0.7 as StyleCLIP samples its training set):

    w' = w + step_scale * M(w)
    L  = lambda_clip * L_CLIP(G(w'), t) + lambda_l2 * L_L2 + lambda_norm * L_norm

- ``L_CLIP``: 1 - cos(E_I(G(w')), E_T(t)), mean over the batch, weighted sum over the CLIP
  models (StyleCLIP/NADA's code: ViT-B/32 + ViT-B/16, weight 1 each);
- ``L_L2``: mean over all entries of (w' - w)^2. The papers write ``||M(w)||_2``; StyleCLIP's
  and NADA's code compute this mean squared error, and their lambdas are calibrated for it;
- ``L_norm`` (eq. 5): the paper's text says the term keeps the CLIP image-embedding NORMS from
  changing (their growth comes with artefacts such as open mouths and tongues), and NADA's code
  computes ``mean((|E_I(G(w))| - |E_I(G(w'))|)^2)``: ``norm_loss='norms'``, the default.
  Read literally as the squared distance of the embeddings,
  ``mean(|E_I(G(w)) - E_I(G(w'))|^2)`` (``norm_loss='embeddings'``), the term would pull the
  mapped images' embeddings back to the source's, against the CLIP loss itself, and constrain
  far more than the norm. Weighted sum over the CLIP models (NADA's code: ViT-B/32 only).

Defaults follow the paper (Appendix I: lambda_L2 0.5, lambda_norm 0.2) and, where it is
silent, StyleCLIP's mapper training that NADA runs: Ranger, lr 0.5, batch 2, truncation 0.7,
constant noise. NADA's code defaults differ (lambda_L2 0.8, lambda_norm 0.5, plus a face
identity loss with weight 0.1): the lambdas are settings; the identity loss needs a face
recognition network (ArcFace IR-SE50) and means nothing for animals, and is left out.

The generator is never modified (a frozen copy renders); the progress callback may raise
(Cancel): training stops and the result keeps the mapper trained so far.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from ...memory import OutOfMemory, is_out_of_memory
from ...stylegan.networks import copy_generator, z_from_seeds
from ..losses import global_loss
from .network import LatentMapper, MapperConfig, copy_mapper, new_mapper
from .ranger import Ranger

OPTIMIZERS = ("ranger", "adam")
NORM_LOSSES = ("norms", "embeddings")
MEMORY_ADVICE = ("Lower batch_size (the paper uses 2), guide with one CLIP model instead of two, or close other "
                 "graphs that hold models on this device.")


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf; the mapper keeps the last finite weights."""


@dataclass(frozen=True)
class MapperSettings:
    iterations: int = 10000
    batch_size: int = 2
    optimizer: str = "ranger"
    lr: float = 0.5
    lambda_clip: float = 1.0
    lambda_l2: float = 0.5
    lambda_norm: float = 0.2
    norm_loss: str = "norms"
    truncation_psi: float = 0.7       # of the training latents (StyleCLIP: 0.7)
    noise_mode: str = "const"         # StyleCLIP trains with the generator's constant noise
    seed: int = 0
    preview_every: int = 50           # 0 = no previews
    preview_seeds: tuple = (0, 1, 2, 3)
    preview_psi: float = 0.7

    def validate(self) -> "MapperSettings":
        if int(self.iterations) < 1:
            raise ValueError("iterations must be >= 1")
        if int(self.batch_size) < 1:
            raise ValueError("batch_size must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError("learning rate must be > 0")
        for name in ("lambda_clip", "lambda_l2", "lambda_norm"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.lambda_clip == 0:
            raise ValueError("lambda_clip must be > 0: without the CLIP loss the mapper learns nothing")
        if self.norm_loss not in NORM_LOSSES:
            raise ValueError(f"norm_loss must be one of {NORM_LOSSES}, got {self.norm_loss!r}")
        if self.noise_mode not in ("const", "random"):
            raise ValueError("training noise_mode must be 'const' or 'random'")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preview_seeds"] = list(self.preview_seeds)
        return d


# ---------------------------------------------------------------------------- guidance
@dataclass(frozen=True)
class TargetEntry:
    model: object            # nada_ops.clip.models.ClipModel
    weight: float
    key: str
    target: torch.Tensor     # unit target embedding


@dataclass(frozen=True)
class MapperGuidance:
    """CLIP models with weights and, per model, the unit embedding of the target."""
    entries: tuple
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if not any(e.weight for e in self.entries):
            raise ValueError("the mapper needs at least one CLIP model with a non-zero weight")

    def models(self):
        return [e.model for e in self.entries]

    def keys(self) -> list[str]:
        return [f"{e.key} (weight {e.weight:g})" for e in self.entries]

    def for_training(self) -> "MapperGuidance":
        """A copy autograd can use (see :meth:`nada_ops.clip.models.ClipModel.for_autograd`);
        call outside inference mode."""
        return MapperGuidance(tuple(TargetEntry(e.model.for_autograd(), e.weight, e.key, e.target.detach().clone())
                                    for e in self.entries), dict(self.provenance))


def text_guidance(models_with_weights, text: str, templates="nada") -> MapperGuidance:
    """Target = the template-averaged text embedding of ``text`` for each CLIP model."""
    from ...clip.direction import text_embedding
    if not str(text).strip():
        raise ValueError("the target text is empty")
    entries = []
    with torch.no_grad():
        for model, weight in models_with_weights:
            if weight:
                entries.append(TargetEntry(model, float(weight), model.key,
                                           text_embedding(model, text, templates).float()))
    from ...clip.templates import templates_label
    return MapperGuidance(tuple(entries), {"kind": "text", "target": text, "templates": templates_label(templates)})


def direction_guidance(models_with_weights, direction) -> MapperGuidance:
    """Target = the target side of a CLIP direction (its text, or its mean target image embedding)."""
    entries = []
    for model, weight in models_with_weights:
        if weight:
            _, t = direction.for_model(model)
            entries.append(TargetEntry(model, float(weight), model.key, t.detach().float()))
    prov = {k: v for k, v in direction.provenance.items() if k != "models"}
    return MapperGuidance(tuple(entries), prov)


# ------------------------------------------------------------------------------ losses
def norm_loss(emb_mapped: torch.Tensor, emb_source: torch.Tensor, mode: str = "norms") -> torch.Tensor:
    """Eq. 5 (see the module doc): 'norms' = mean((|e_src| - |e_map|)^2), 'embeddings' = mean(|e_src - e_map|^2)."""
    a, b = emb_mapped.float(), emb_source.float()
    if mode == "norms":
        return (b.norm(dim=-1) - a.norm(dim=-1)).square().mean()
    if mode == "embeddings":
        return (b - a).square().sum(dim=-1).mean()
    raise ValueError(f"norm_loss must be one of {NORM_LOSSES}, got {mode!r}")


def latent_l2(mapped: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """StyleCLIP's L2 term: mean over all entries of (w' - w)^2."""
    return (mapped - ws).square().mean()


# ------------------------------------------------------------------------------ trainer
@dataclass
class MapperStep:
    step: int
    total: int
    loss: float
    terms: dict                         # clip, l2, norm (unweighted)
    seconds: float
    preview: torch.Tensor | None = None  # [-1,1] NCHW: top row G(w), bottom row G(w')


@dataclass
class MapperResult:
    mapper: LatentMapper                # eval, requires_grad False
    steps_done: int
    interrupted: bool
    losses: list = field(default_factory=list)
    terms: list = field(default_factory=list)
    seconds: float = 0.0
    stop_exception: BaseException | None = None

    def history_entry(self, settings: MapperSettings, guidance: MapperGuidance, generator_name: str = "") -> dict:
        return {"op": "latent_mapper", "target": guidance.provenance, "clip_models": guidance.keys(),
                "settings": settings.to_dict(), "generator": generator_name, "iterations_done": self.steps_done,
                "interrupted": self.interrupted, "final_loss": self.losses[-1] if self.losses else None,
                "final_terms": self.terms[-1] if self.terms else None}


ProgressFn = Callable[[MapperStep], None]
SnapshotFn = Callable[[int, LatentMapper, float], None]


def _labels(cfg, n, gen, dev):
    if not cfg.c_dim:
        return None
    lab = torch.randint(0, cfg.c_dim, [n], generator=gen)
    return torch.nn.functional.one_hot(lab, cfg.c_dim).float().to(dev)


def training_latents(G, settings: MapperSettings, gen: torch.Generator, dev) -> torch.Tensor:
    """One batch of fresh W+ latents (z ~ N(0, I) from ``gen``, mapped, truncated)."""
    cfg = G.cfg
    with torch.no_grad():
        z = torch.randn([settings.batch_size, cfg.z_dim], generator=gen).to(dev)
        return G.map(z, _labels(cfg, settings.batch_size, gen, dev), settings.truncation_psi)


def mapper_losses(G, mapper: LatentMapper, guidance: MapperGuidance, ws: torch.Tensor, settings: MapperSettings,
                  noises=None) -> tuple[torch.Tensor, dict]:
    """(weighted total loss, unweighted terms) for one batch ``ws``; differentiable w.r.t. the mapper."""
    need_source = settings.lambda_norm > 0
    emb_src = {}
    if need_source:
        with torch.no_grad():
            img = G.synthesis(ws, noise_mode=settings.noise_mode, noises=noises)
            emb_src = {e.key: e.model.encode_generator_images(img) for e in guidance.entries}
    mapped = mapper.map(ws)
    img_m = G.synthesis(mapped, noise_mode=settings.noise_mode, noises=noises)
    clip = img_m.new_zeros([])
    norm = img_m.new_zeros([])
    for e in guidance.entries:
        emb = e.model.encode_generator_images(img_m)
        clip = clip + e.weight * global_loss(emb, e.target)
        if need_source:
            norm = norm + e.weight * norm_loss(emb, emb_src[e.key], settings.norm_loss)
    l2 = latent_l2(mapped, ws.float())
    loss = settings.lambda_clip * clip + settings.lambda_l2 * l2 + settings.lambda_norm * norm
    return loss, {"clip": clip.detach(), "l2": l2.detach(), "norm": norm.detach()}


def make_optimizer(params, settings: MapperSettings):
    if settings.optimizer == "ranger":
        return Ranger(params, lr=settings.lr)
    return torch.optim.Adam(params, lr=settings.lr)


def _preview(G, mapper, ws):
    with torch.no_grad():
        return torch.cat([G.synthesis(ws, noise_mode="const"), G.synthesis(mapper.map(ws), noise_mode="const")], 0)


def train_mapper(G, guidance: MapperGuidance, settings: MapperSettings, config: MapperConfig | None = None,
                 progress: ProgressFn | None = None, device=None, snapshot_every: int = 0,
                 on_snapshot: SnapshotFn | None = None, initial: LatentMapper | None = None) -> MapperResult:
    """Train a latent mapper for generator ``G`` (the adapted one; not modified).

    ``config``: the mapper architecture (default: all three levels, StyleCLIP's layers);
    ``initial``: continue from this mapper's weights (copied) instead of a fresh one.
    ``progress(MapperStep)`` is called after every iteration and may raise (Cancel): training
    stops, ``interrupted`` is set and ``stop_exception`` holds the exception for the caller to
    re-raise. Out of memory and NaN/Inf also stop training with the mapper trained so far kept
    (``stop_exception`` says what happened). ``on_snapshot(step, mapper, loss)`` every
    ``snapshot_every`` iterations (not for the last one) with the live mapper: save it, do not
    keep it."""
    settings = settings.validate()
    cfg_g = G.cfg
    if initial is not None:
        config = initial.cfg
    config = (config or MapperConfig.for_generator(cfg_g)).validate()
    if config.num_ws != cfg_g.num_ws or config.w_dim != cfg_g.w_dim:
        raise ValueError(f"the mapper is made for {config.num_ws} W+ entries of {config.w_dim} features, the "
                         f"generator has {cfg_g.num_ws} of {cfg_g.w_dim}")
    dev = torch.device(device) if device is not None else G.w_avg.device
    with torch.inference_mode(False), torch.enable_grad():
        guidance = guidance.for_training()
        gen = torch.Generator().manual_seed(int(settings.seed))
        G_frozen = copy_generator(G, dev).requires_grad_(False)
        mapper = copy_mapper(initial, dev) if initial is not None else new_mapper(config, settings.seed, dev)
        mapper.train().requires_grad_(True)
        params = list(mapper.parameters())
        opt = make_optimizer(params, settings)
        prev_ws = None
        if settings.preview_every:
            with torch.no_grad():
                zs = z_from_seeds(list(settings.preview_seeds), cfg_g.z_dim).to(dev)
                c = _labels(cfg_g, len(settings.preview_seeds), torch.Generator().manual_seed(0), dev)
                prev_ws = G_frozen.map(zs, c, settings.preview_psi)

        result = MapperResult(mapper=mapper, steps_done=0, interrupted=False)
        t0 = time.time()
        for step in range(settings.iterations):
            try:
                ws = training_latents(G_frozen, settings, gen, dev)
                noises = None
                if settings.noise_mode == "random":   # the same noise for G(w) and G(w')
                    noises = [n.to(dev) for n in G_frozen.make_noises(ws.shape[0], gen, device="cpu")]
                loss, terms = mapper_losses(G_frozen, mapper, guidance, ws, settings, noises)
                value = float(loss.item())
                bad = None
                opt.zero_grad(set_to_none=True)
                if not math.isfinite(value):
                    bad = f"the loss became {value}"
                else:
                    loss.backward()
                    if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
                        bad = "the gradients became NaN/Inf"
                        opt.zero_grad(set_to_none=True)
                    else:
                        opt.step()
                del loss
            except BaseException as e:  # noqa: BLE001 - only out-of-memory is handled here
                if not is_out_of_memory(e):
                    raise
                result.stop_exception = OutOfMemory(f"Train Latent Mapper at iteration {step + 1}", dev,
                                                    MEMORY_ADVICE, e)
                break
            if bad is not None:
                result.stop_exception = NonFiniteLossError(
                    f"{bad} at iteration {step + 1}: training stopped and kept the mapper of iteration {step}. "
                    "Lower the learning rate or check the CLIP weights and the target.")
                break
            result.steps_done = step + 1
            result.losses.append(value)
            result.terms.append({k: float(v) for k, v in terms.items()})
            last = step + 1 == settings.iterations
            if on_snapshot is not None and snapshot_every and (step + 1) % snapshot_every == 0 and not last:
                on_snapshot(step + 1, mapper, value)
            preview = None
            if prev_ws is not None and ((step + 1) % settings.preview_every == 0 or last):
                preview = _preview(G_frozen, mapper, prev_ws)
            if progress is not None:
                try:
                    progress(MapperStep(step + 1, settings.iterations, value, result.terms[-1],
                                        time.time() - t0, preview))
                except BaseException as e:  # interrupt: keep what was trained, let the caller re-raise
                    result.interrupted = True
                    result.stop_exception = e
                    break
        result.seconds = time.time() - t0
        mapper.eval().requires_grad_(False)
    return result


# --------------------------------------------------------------------------- statistics
def norm_statistics(G, mapper: LatentMapper, guidance: MapperGuidance, ws: torch.Tensor,
                    noise_mode: str = "const") -> dict:
    """How the mapper changes the CLIP image-embedding norms (what eq. 5 constrains), per model
    and averaged over the latents ``ws``: mean norm of the source images, of the mapped images,
    and mean |change|."""
    out = {}
    ws = ws.to(G.w_avg.device)
    with torch.no_grad():
        img = G.synthesis(ws, noise_mode=noise_mode)
        img_m = G.synthesis(mapper.map(ws), noise_mode=noise_mode)
        for e in guidance.entries:
            a = e.model.encode_generator_images(img).norm(dim=-1)
            b = e.model.encode_generator_images(img_m).norm(dim=-1)
            out[e.key] = {"source_norm": float(a.mean()), "mapped_norm": float(b.mean()),
                          "abs_change": float((b - a).abs().mean())}
    return out
