"""GAN inversion by optimization: real image(s) -> W or W+ latents of a generator.

The method follows NVIDIA's stylegan2-ada projector, with the perceptual term made pluggable
because nothing may be downloaded at run time (the projector's LPIPS/VGG weights are a
download):

- start at ``w_avg`` (or given latents); optimise one w per image (``mode='w'``, broadcast
  to every W+ entry) or one w per W+ entry (``mode='w+'``);
- Adam (betas 0.9, 0.999) with the projector's learning-rate schedule: linear ramp-up over
  the first ``lr_rampup`` of the steps, cosine ramp-down over the last ``lr_rampdown``;
- latent noise annealing: Gaussian noise of std ``w_std * initial_w_noise * max(0, 1 -
  t / w_noise_ramp)^2`` is added to w during the first part of the run (``w_std`` measured
  from mapped samples with a fixed seed) to escape poor local minima;
- optional per-layer noise-map optimization with the projector's regularizer (squared
  autocorrelation of every noise map at shifts of one pixel, on a pyramid down to 8x8,
  weight ``noise_regularize``) and re-normalization of the maps to zero mean / unit variance
  after every step;
- loss per image = ``pixel_weight`` * MSE at the generator's resolution (the photo is
  center-cropped to a square and resized with antialiasing) + ``perceptual_weight`` *
  feature distance + ``noise_regularize`` * noise regularizer.

The perceptual term is any :class:`FeatureDistance`. :class:`ClipFeatureDistance` uses
the pack's CLIP image tower(s): LPIPS-style distances between channel-normalized token
features of several transformer blocks (spatial, so it constrains layout) plus the cosine
distance of the final embeddings. Without a feature extractor the loss is pixel MSE only.

Stopping early: ``progress(step, total, preview)`` may raise (ComfyUI's interrupt, Ctrl-C).
The optimization then stops and :func:`invert` RETURNS the best latents found so far, with
``result.stopped_early = True`` and the exception in ``result.stop_exception``; the caller
decides whether to re-raise it (the ComfyUI node does by default). Errors raised by the
math itself propagate normally.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .latents import WLatents
from .stylegan.networks import Generator, build_generator

ProgressFn = Callable[[int, int, object], None]
INVERSION_MODES = ("w", "w+")
CROP_MODES = ("center", "stretch")


# ---------------------------------------------------------------- perceptual features
class FeatureDistance:
    """Pluggable perceptual distance.  ``features(img)`` maps images (NCHW in [-1, 1],
    differentiable) to any structure; ``distance(fa, fb)`` returns a per-image tensor [N].
    Targets' features are computed once (under no_grad) and reused every step."""

    name = "features"

    def features(self, img: torch.Tensor):
        raise NotImplementedError

    def distance(self, fa, fb) -> torch.Tensor:
        raise NotImplementedError


def _normalize_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.square().sum(dim=-1, keepdim=True) + eps).sqrt()


class ClipFeatureDistance(FeatureDistance):
    """Perceptual distance from CLIP image tower(s) (the pack's :class:`ClipModel`, or a
    :class:`ClipEnsemble` whose weights scale each model's term).

    Per model: mean over ``blocks`` of the LPIPS-style distance between channel-normalized
    token features (``||n(f_a) - n(f_b)||^2`` summed over channels, averaged over tokens),
    plus ``embedding_weight * (1 - cos)`` of the final image embeddings.  ``blocks``: indices
    of transformer blocks of a ViT image tower ('auto' = every other block from the second;
    towers without ``visual.transformer.resblocks`` use the embedding only).  Features are
    captured with forward hooks that are removed again after each call: the shared model is
    not changed."""

    name = "clip"

    def __init__(self, clip, blocks="auto", embedding_weight: float = 1.0):
        self.models = [(m.for_autograd(), w) for m, w in _clip_models(clip)]
        self.blocks = blocks
        self.embedding_weight = float(embedding_weight)

    @staticmethod
    def _resblocks(model) -> list:
        visual = getattr(model.model, "visual", None)
        tr = getattr(visual, "transformer", None)
        blocks = getattr(tr, "resblocks", None)
        return list(blocks) if blocks is not None else []

    def _chosen(self, model) -> list[int]:
        n = len(self._resblocks(model))
        if n == 0:
            return []
        if self.blocks == "auto":
            return list(range(1, n, 2)) or [n - 1]
        return [i if i >= 0 else n + i for i in self.blocks if -n <= i < n]

    def features(self, img: torch.Tensor):
        out = []
        for model, weight in self.models:
            blocks = self._resblocks(model)
            chosen = self._chosen(model)
            captured: dict[int, torch.Tensor] = {}
            handles = []
            for i in chosen:
                def hook(_m, _inp, output, i=i):
                    captured[i] = output[0] if isinstance(output, tuple) else output
                handles.append(blocks[i].register_forward_hook(hook))
            try:
                emb = model.encode_generator_images(img)
            finally:
                for h in handles:
                    h.remove()
            # token features as [N, L, D] (open_clip runs its transformer batch-first unless
            # the module says otherwise; older versions were sequence-first)
            tr = model.model.visual.transformer if chosen else None
            batch_first = getattr(tr, "batch_first", False)
            feats = [captured[i].float() if batch_first else captured[i].float().transpose(0, 1)
                     for i in chosen if i in captured]
            out.append((weight, emb.float(), feats))
        return out

    def distance(self, fa, fb) -> torch.Tensor:
        total = None
        for (weight, ea, la), (_, eb, lb) in zip(fa, fb):
            n = ea.shape[0]
            d = self.embedding_weight * (1 - F.cosine_similarity(ea, eb.expand_as(ea), dim=-1))
            if la:
                layer_terms = []
                for xa, xb in zip(la, lb):     # [N, L, D]: LPIPS-style, averaged over tokens
                    diff = (_normalize_channels(xa) - _normalize_channels(xb)).square().sum(-1)
                    layer_terms.append(diff.reshape(n, -1).mean(1))
                d = d + torch.stack(layer_terms).mean(0)
            d = weight * d
            total = d if total is None else total + d
        return total.clamp_min(0)


def _clip_models(clip) -> list:
    """[(ClipModel, weight)] from a ClipModel, a ClipEnsemble, or a list of either/pairs."""
    if hasattr(clip, "encode_generator_images"):
        return [(clip, 1.0)]
    out = []
    for item in clip:
        if isinstance(item, tuple) and len(item) == 2 and hasattr(item[0], "encode_generator_images"):
            out.append((item[0], float(item[1])))
        elif hasattr(item, "encode_generator_images"):
            out.append((item, 1.0))
        else:
            raise TypeError(f"not a CLIP model: {item!r}")
    if not out:
        raise ValueError("no CLIP model given")
    return out


def make_feature_distance(perceptual) -> FeatureDistance | None:
    """None -> None; a FeatureDistance -> itself; a ClipModel/ClipEnsemble -> CLIP features."""
    if perceptual is None or isinstance(perceptual, FeatureDistance):
        return perceptual
    if hasattr(perceptual, "features") and hasattr(perceptual, "distance"):
        return perceptual
    return ClipFeatureDistance(perceptual)


# ------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class InversionSettings:
    steps: int = 500
    mode: str = "w"                   # 'w' (one w per image) | 'w+' (one w per W+ entry)
    lr: float = 0.1
    lr_rampup: float = 0.05           # fraction of steps
    lr_rampdown: float = 0.25         # fraction of steps
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0    # used only with a feature distance
    optimize_noise: bool = False
    noise_regularize: float = 1e5
    initial_w_noise: float = 0.05
    w_noise_ramp: float = 0.75        # fraction of steps with latent noise
    w_std_samples: int = 4096
    noise_mode: str = "const"         # generator noise when noise maps are not optimised
    crop: str = "center"              # 'center' crop to square, or 'stretch'
    seed: int = 0
    preview_every: int = 0            # 0 = no previews

    def validate(self) -> "InversionSettings":
        if self.mode not in INVERSION_MODES:
            raise ValueError(f"mode must be one of {INVERSION_MODES}, got {self.mode!r}")
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {self.crop!r}")
        if int(self.steps) < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        for name in ("lr", "pixel_weight", "perceptual_weight", "noise_regularize", "initial_w_noise"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {v}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        return self


def learning_rate(step: int, steps: int, s: InversionSettings) -> float:
    """NVIDIA projector schedule: linear ramp-up, cosine ramp-down."""
    t = step / steps
    ramp = min(1.0, (1.0 - t) / s.lr_rampdown) if s.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if s.lr_rampup > 0:
        ramp = ramp * min(1.0, t / s.lr_rampup)
    return s.lr * ramp


def w_noise_scale(step: int, steps: int, s: InversionSettings, w_std: float) -> float:
    if s.w_noise_ramp <= 0:
        return 0.0
    t = step / steps
    return w_std * s.initial_w_noise * max(0.0, 1.0 - t / s.w_noise_ramp) ** 2


def noise_regularization(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image projector regularizer: squared autocorrelation at a shift of one pixel
    (both axes) of every noise map and of its 2x average-pooled versions down to 8x8."""
    total = None
    for nz in noises:
        x = nz
        while True:
            r = (x * torch.roll(x, shifts=1, dims=3)).mean(dim=[1, 2, 3]).square() + \
                (x * torch.roll(x, shifts=1, dims=2)).mean(dim=[1, 2, 3]).square()
            total = r if total is None else total + r
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return total


def prepare_target(images: torch.Tensor, resolution: int, crop: str = "center") -> torch.Tensor:
    """Images NCHW in [-1, 1] of any size -> [N, 3, R, R]: square crop (or stretch), then
    an antialiased bicubic resize to the generator's resolution (values are left as they are
    when no resize is needed)."""
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got {tuple(images.shape)}")
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    # crop and pick channels on a view first: no full-size copy of a large photo
    x = images[:, :3]
    h, w = x.shape[2:]
    if crop == "center" and h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        x = x[:, :, top:top + s, left:left + s]
    x = x.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[2] != resolution or x.shape[3] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False,
                          antialias=True).clamp(-1, 1)   # bicubic rings slightly past the range
    return x.contiguous()


def w_statistics(G: Generator, samples: int = 4096, seed: int = 0) -> tuple[torch.Tensor, float]:
    """(w_avg from the checkpoint, w_std = sqrt(mean ||w - w_avg||^2)) from mapped samples."""
    gen = torch.Generator().manual_seed(int(seed))
    dev = G.w_avg.device
    z = torch.randn([int(samples), G.cfg.z_dim], generator=gen).to(dev)
    c = None
    if G.cfg.c_dim:
        lab = torch.randint(0, G.cfg.c_dim, [int(samples)], generator=gen)
        c = F.one_hot(lab, G.cfg.c_dim).float().to(dev)
    with torch.no_grad():
        w = G.mapping(z, c)
    w_avg = G.w_avg.detach().float().clone()
    w_std = float(((w - w_avg).square().sum(dim=1).mean()).sqrt())
    return w_avg, w_std


def _usable_generator(G: Generator) -> Generator:
    """``G`` itself when it can be differentiated through without side effects; else a
    fresh copy (inference tensors from ComfyUI refuse autograd; parameters that require
    grad would accumulate gradients)."""
    tensors = list(G.parameters()) + list(G.buffers())
    if any(t.is_inference() for t in tensors) or any(p.requires_grad for p in G.parameters()):
        G2 = build_generator(G.cfg).to(G.w_avg.device)
        with torch.no_grad():
            src = dict(G.named_parameters())
            src.update(dict(G.named_buffers()))
            for name, t in list(G2.named_parameters()) + list(G2.named_buffers()):
                t.copy_(src[name])
        return G2.eval().requires_grad_(False)
    return G


# --------------------------------------------------------------------------- result
@dataclass
class InversionResult:
    latents: WLatents                  # best latents, [N, num_ws, w_dim]
    images: torch.Tensor               # reconstruction [N, C, R, R] in [-1, 1] (float32)
    target: torch.Tensor               # the prepared target [N, 3, R, R] in [-1, 1]
    noises: list | None                # optimised noise maps (None unless optimize_noise)
    loss_history: list = field(default_factory=list)     # mean total loss per step
    mse_start: torch.Tensor | None = None                # per-image pixel MSE at the start
    mse_final: torch.Tensor | None = None                # per-image pixel MSE of the result
    steps_done: int = 0
    stopped_early: bool = False
    stop_exception: BaseException | None = None


def invert(G: Generator, images: torch.Tensor, settings: InversionSettings | None = None,
           perceptual=None, init_ws: torch.Tensor | None = None,
           progress: ProgressFn | None = None) -> InversionResult:
    """Invert ``images`` (NCHW in [-1, 1], any size) into ``G``'s latent space.

    ``perceptual``: None, a :class:`FeatureDistance`, or a ClipModel/ClipEnsemble.
    ``init_ws``: start latents [N or 1, num_ws, w_dim] (default: ``w_avg``); in mode 'w' the
    mean over W+ entries is used.  ``progress(step, total, preview_pil_or_None)`` after every
    step; it may raise to stop (see the module doc: best latents so far are returned).
    ``G`` and the inputs are never modified."""
    s = (settings or InversionSettings()).validate()
    with torch.inference_mode(False), torch.enable_grad():
        return _invert(G, images, s, make_feature_distance(perceptual), init_ws, progress)


def _invert(G, images, s: InversionSettings, feat: FeatureDistance | None, init_ws, progress):
    G = _usable_generator(G)
    cfg = G.cfg
    dev = G.w_avg.device
    # Copies (also turns ComfyUI's inference tensors into ordinary ones).
    target = prepare_target(images.detach().clone().to(dev), cfg.img_resolution, s.crop)
    n = target.shape[0]
    if cfg.img_channels == 1:
        target = target.mean(dim=1, keepdim=True)
    w_avg, w_std = w_statistics(G, s.w_std_samples, s.seed)
    gen = torch.Generator(device="cpu").manual_seed(int(s.seed))

    if init_ws is not None:
        w0 = init_ws.detach().clone().float().to(dev)
        if w0.ndim != 3 or w0.shape[1:] != (cfg.num_ws, cfg.w_dim):
            raise ValueError(f"initial latents must be [N, {cfg.num_ws}, {cfg.w_dim}], got {tuple(w0.shape)}")
        if w0.shape[0] == 1:
            w0 = w0.expand(n, -1, -1)
        elif w0.shape[0] != n:
            raise ValueError(f"{w0.shape[0]} initial latents for {n} images: give one or one per image")
        if s.mode == "w":
            w0 = w0.mean(dim=1, keepdim=True)
    else:
        w0 = w_avg.to(dev)[None, None].expand(n, 1 if s.mode == "w" else cfg.num_ws, -1)
    w_opt = w0.clone().contiguous().requires_grad_(True)

    def expand(w):
        return w.expand(-1, cfg.num_ws, -1) if w.shape[1] == 1 else w

    noises = None
    params = [w_opt]
    if s.optimize_noise and G.synthesis.noise_layers():     # (StyleGAN3 has no noise inputs)
        noises = []
        for layer in G.synthesis.noise_layers():
            r = layer.resolution
            noises.append(torch.randn([n, 1, r, r], generator=gen).to(dev).requires_grad_(True))
        params += noises
    def synth(ws, noise_maps):
        return G.synthesis(ws, noise_mode=s.noise_mode, noises=noise_maps).float()

    def pixel_mse(img):
        return (img - target).square().mean(dim=[1, 2, 3])

    with torch.no_grad():
        target_feats = feat.features(target) if (feat is not None and s.perceptual_weight > 0) else None
        start_img = synth(expand(w_opt.detach()), noises)
        mse_start = pixel_mse(start_img)

    opt = torch.optim.Adam(params, lr=s.lr, betas=(0.9, 0.999), eps=1e-8)
    best_loss = torch.full([n], float("inf"), device=dev)
    best_w = expand(w_opt.detach()).clone()
    best_noise = [nz.detach().clone() for nz in noises] if noises is not None else None
    history: list[torch.Tensor] = []
    steps = int(s.steps)
    stopped, stop_exc, done = False, None, 0
    try:
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = learning_rate(step, steps, s)
            sigma = w_noise_scale(step, steps, s, w_std)
            w_eval = w_opt
            if sigma > 0:
                w_eval = w_opt + torch.randn(w_opt.shape, generator=gen).to(dev) * sigma
            img = synth(expand(w_eval), noises)
            loss_i = s.pixel_weight * pixel_mse(img)
            if target_feats is not None:
                loss_i = loss_i + s.perceptual_weight * feat.distance(feat.features(img), target_feats).to(dev)
            if noises is not None and s.noise_regularize > 0:
                loss_i = loss_i + s.noise_regularize * noise_regularization(noises)
            with torch.no_grad():   # best so far: the w evaluated at this step (before its update)
                better = loss_i.detach() < best_loss      # (no host sync: masks, not branches)
                best_loss = torch.where(better, loss_i.detach(), best_loss)
                best_w = torch.where(better[:, None, None], expand(w_opt.detach()), best_w)
                if noises is not None:
                    best_noise = [torch.where(better[:, None, None, None], nz.detach(), bn)
                                  for bn, nz in zip(best_noise, noises)]
            opt.zero_grad(set_to_none=True)
            loss_i.sum().backward()
            opt.step()
            if noises is not None:
                with torch.no_grad():
                    for nz in noises:
                        nz -= nz.mean(dim=[1, 2, 3], keepdim=True)
                        nz *= nz.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
            history.append(loss_i.detach().mean())
            done = step + 1
            if progress is not None:
                preview = None
                if s.preview_every and (done % s.preview_every == 0 or done == steps):
                    preview = _preview(target, img.detach())
                try:
                    progress(done, steps, preview)
                except BaseException as e:  # the caller asks to stop (interrupt, Ctrl-C, ...)
                    stopped, stop_exc = True, e
                    break
    except KeyboardInterrupt as e:          # Ctrl-C in the middle of a step
        stopped, stop_exc = True, e

    # The last update was never evaluated: evaluate it and keep it where it is better.
    with torch.no_grad():
        w_last = expand(w_opt.detach())
        img_last = synth(w_last, noises)
        loss_last = s.pixel_weight * pixel_mse(img_last)
        if target_feats is not None:
            loss_last = loss_last + s.perceptual_weight * feat.distance(feat.features(img_last),
                                                                        target_feats).to(dev)
        if noises is not None and s.noise_regularize > 0:
            loss_last = loss_last + s.noise_regularize * noise_regularization(noises)
        take_last = loss_last <= best_loss
        ws_final = torch.where(take_last[:, None, None], w_last, best_w)
        final_noises = None
        if noises is not None:
            final_noises = [torch.where(take_last[:, None, None, None], nz.detach(), bn)
                            for nz, bn in zip(noises, best_noise)]
        images_out = synth(ws_final, final_noises)
        mse_final = pixel_mse(images_out)

    info = {"op": "invert", "mode": s.mode, "steps": done, "of_steps": steps, "lr": s.lr,
            "perceptual": getattr(feat, "name", None) if target_feats is not None else None,
            "perceptual_weight": s.perceptual_weight if target_feats is not None else 0.0,
            "optimize_noise": s.optimize_noise, "seed": s.seed,
            "mse_start": [round(float(v), 6) for v in mse_start],
            "mse_final": [round(float(v), 6) for v in mse_final]}
    if stopped:
        info["stopped_early"] = True
    lat = WLatents(ws=ws_final.detach().clone(), is_wplus=s.mode == "w+", info=info)
    return InversionResult(latents=lat, images=images_out.detach(), target=target.detach(),
                           noises=[nz.detach() for nz in final_noises] if final_noises is not None else None,
                           loss_history=torch.stack(history).tolist() if history else [],
                           mse_start=mse_start.detach().cpu(),
                           mse_final=mse_final.detach().cpu(), steps_done=done, stopped_early=stopped,
                           stop_exception=stop_exc)


def _preview(target: torch.Tensor, img: torch.Tensor):
    """PIL image: target | current reconstruction (first image of the batch)."""
    from PIL import Image

    from .video import to_uint8_hwc
    pair = torch.cat([target[:1], img[:1].clamp(-1, 1)], dim=0)
    return Image.fromarray(to_uint8_hwc(pair, cols=2))
