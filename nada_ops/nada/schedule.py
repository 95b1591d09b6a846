"""Which synthesis layers are trained: all, manual groups / W+ indices, or the paper's
adaptive top-k selection (sec. 4.2).  The W+ index -> layer map (and which layers are never
trained) comes from ``nada_ops.stylegan.config`` (the one place that knows it, for StyleGAN2 and
StyleGAN3 alike)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..stylegan.config import StyleGAN2Config, frozen_layers, ws_index_resolution, ws_layer_map
from .losses import global_loss

MODES = ("all", "adaptive", "manual")

# Paper presets (Table 3 / sec. 4.2 and the supplement): k, iterations, mixing.  The paper's
# settings are for StyleGAN2; ``stylegan3`` says what fits a StyleGAN3 generator (16 W+ entries at
# every resolution, of which 14 drive trainable layers: the Fourier input and ToRGB stay frozen).
PRESETS = {
    "texture / style (all layers)": dict(
        mode="all", k=None, iterations=300, mixing=0.9,
        stylegan3="fits: all 14 layers; StyleGAN3 styles settle in about the same iterations"),
    "sketch / painting (all layers, no mixing)": dict(
        mode="all", k=None, iterations=300, mixing=0.0,
        stylegan3="fits: all 14 layers"),
    "identity / small shape (adaptive, 2/3 of layers)": dict(
        mode="adaptive", k_fraction=2 / 3, iterations=300, mixing=0.9,
        stylegan3="fits: k = 11 of 16 entries per iteration"),
    "animal / large shape (adaptive k=3)": dict(
        mode="adaptive", k=3, iterations=2000, mixing=0.0,
        stylegan3="fits with more iterations: StyleGAN3's middle layers carry less of the shape than StyleGAN2's "
                  "coarse ones, so allow 2000-3000 and watch the previews"),
    "StyleGAN3: fine layers only (keep pose and geometry)": dict(
        mode="manual", groups=("fine",), iterations=300, mixing=0.0, families=("stylegan3",),
        stylegan3="StyleGAN3 only: trains the layers above 32 px bandwidth (textures, colours), keeping what "
                  "the coarse layers and the Fourier input decide (pose, layout, the equivariance to the input "
                  "transform)"),
}


def preset_fits(name: str, cfg) -> str | None:
    """None when preset ``name`` applies to ``cfg``'s family, else why not."""
    p = PRESETS[name]
    fam = getattr(cfg, "family", "stylegan2")
    families = p.get("families", ("stylegan2", "stylegan3"))
    if fam not in families:
        return f"layer preset {name!r} is for {' / '.join(families)} generators, this one is {fam}"
    return None


@dataclass(frozen=True)
class FreezeSchedule:
    """mode 'all': every synthesis conv is trained; 'manual': only the layers driven by
    ``indices``; 'adaptive': each iteration pick the top-k W+ indices as in the paper."""
    mode: str = "all"
    k: int | None = None          # adaptive: number of W+ indices trained per iteration
    k_fraction: float | None = None   # adaptive: k as a fraction of num_ws (when k is None)
    n_w: int = 8                  # adaptive: codes sampled for the selection
    n_i: int = 1                  # adaptive: latent optimisation steps
    selection_lr: float = 0.01    # adaptive: SGD step size of the latent optimisation
    indices: tuple = ()           # manual: W+ indices
    preset: str = ""

    def validate(self, cfg: StyleGAN2Config | None = None) -> "FreezeSchedule":
        if self.mode not in MODES:
            raise ValueError(f"layer schedule mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "manual" and not self.indices:
            raise ValueError("manual layer schedule: choose at least one W+ index or group")
        if self.n_w < 1 or self.n_i < 1:
            raise ValueError("adaptive layer schedule: N_w and N_i must be >= 1")
        if cfg is not None:
            if self.preset in PRESETS:
                why = preset_fits(self.preset, cfg)
                if why:
                    raise ValueError(why)
            n = cfg.num_ws
            bad = [i for i in self.indices if not 0 <= i < n]
            if bad:
                raise ValueError(f"W+ indices {bad} out of range for a {cfg.img_resolution}px generator "
                                 f"(0..{n - 1})")
            if self.mode == "adaptive":
                k = self.resolve_k(cfg)
                if not 1 <= k <= n:
                    raise ValueError(f"adaptive k={k} out of range 1..{n}")
        return self

    def resolve_k(self, cfg: StyleGAN2Config) -> int:
        if self.k is not None:
            return min(int(self.k), cfg.num_ws)
        if self.k_fraction is not None:
            return max(1, round(cfg.num_ws * self.k_fraction))
        return cfg.num_ws

    def to_dict(self) -> dict:
        d = asdict(self)
        d["indices"] = list(self.indices)
        return d


def group_indices(cfg: StyleGAN2Config, groups) -> list[int]:
    """'coarse' (4-8 px), 'middle' (16-32 px), 'fine' (64 px and up) -> W+ indices.

    The resolution of an index is :func:`~nada_ops.stylegan.config.ws_index_resolution`
    (StyleGAN3: twice the layer's cutoff, which grows geometrically): each group takes the
    indices nearest its octaves (boundaries at sqrt(8 * 16) and sqrt(32 * 64) px, a value on a
    boundary counts as the finer group)."""
    res_of_index = ws_index_resolution(cfg)
    # StyleGAN3's cutoffs can fall exactly on a boundary: ties go to the finer group, whatever
    # the float rounding.
    lo, hi = (8 * 16) ** 0.5 * (1 - 1e-9), (32 * 64) ** 0.5 * (1 - 1e-9)
    out = []
    for g in groups:
        if g == "coarse":
            out += [i for i, r in enumerate(res_of_index) if r < lo]
        elif g == "middle":
            out += [i for i, r in enumerate(res_of_index) if lo <= r < hi]
        elif g == "fine":
            out += [i for i, r in enumerate(res_of_index) if r >= hi]
        else:
            raise ValueError(f"unknown layer group {g!r}: use coarse, middle, fine")
    return sorted(set(out))


def schedule_from_options(cfg, mode: str, layers: str = "", k: int | None = None, n_w: int = 8,
                          n_i: int = 1) -> "FreezeSchedule":
    """The schedule the command line and job files describe: ``mode`` all / adaptive (k, or the
    paper's 2/3 of the W+ entries) / manual (``layers``: coarse / middle / fine and/or W+
    indices, comma-separated)."""
    if mode == "manual":
        parts = [p.strip() for p in layers.split(",") if p.strip()]
        idx = {int(p) for p in parts if p.isdigit()}
        idx |= set(group_indices(cfg, [p for p in parts if not p.isdigit()]))
        return FreezeSchedule(mode="manual", indices=tuple(sorted(idx)))
    if mode == "adaptive":
        return FreezeSchedule(mode="adaptive", k=k, k_fraction=None if k else 2 / 3, n_w=n_w, n_i=n_i)
    return FreezeSchedule()


def trainable_layer_names(cfg: StyleGAN2Config, indices) -> list[str]:
    """Synthesis layers driven by the given W+ indices, without the always-frozen ones
    (ToRGB; StyleGAN3's Fourier input): :func:`~nada_ops.stylegan.config.frozen_layers`."""
    m = ws_layer_map(cfg)
    frozen = frozen_layers(cfg)
    names = []
    for i in sorted(set(int(i) for i in indices)):
        names += [l for l in m[i] if l not in frozen]
    return names


def all_conv_layer_names(cfg: StyleGAN2Config) -> list[str]:
    return trainable_layer_names(cfg, range(cfg.num_ws))


# Per synthesis conv: what is trained (StyleGAN3 layers have no noise). The affine (style)
# layer is always frozen.
TRAINED_PARAM_SUFFIXES = ("weight", "bias", "noise_strength")


def layer_parameters(G, layer_names) -> list[torch.nn.Parameter]:
    mods = dict(G.named_modules())
    out = []
    for name in layer_names:
        mod = mods[name]
        for s in TRAINED_PARAM_SUFFIXES:
            p = mod._parameters.get(s)
            if p is not None:
                out.append(p)
    return out


def adaptive_select(G_train, models_weights, targets: dict, cfg: StyleGAN2Config, k: int, n_w: int, n_i: int,
                    lr: float, gen: torch.Generator, noise_mode: str = "const", synthesis_kwargs: dict | None = None,
                    clip_context=None) -> tuple[list[int], torch.Tensor]:
    """Paper sec. 4.2: sample N_w codes, repeat to W+, take N_i SGD steps of the GLOBAL loss
    towards the target with the weights fixed, score each W+ index by mean |change|, return
    the top-k indices (sorted) and the scores [num_ws].

    ``targets``: model key -> unit target embedding (text, or mean target images)."""
    scores = adaptive_scores(G_train, models_weights, targets, cfg, n_w, n_i, lr, gen, noise_mode,
                             synthesis_kwargs=synthesis_kwargs, clip_context=clip_context)
    top = torch.topk(scores, k).indices.sort().values.tolist()
    return top, scores


def adaptive_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k W+ indices of ``scores`` as a bool mask [num_ws], on the device (no host sync).
    Non-finite scores (an overflow in a reduced-precision probe) count as no change."""
    s = torch.nan_to_num(scores.float(), nan=0.0, posinf=0.0, neginf=0.0)
    return torch.zeros_like(s, dtype=torch.bool).scatter_(0, torch.topk(s, k).indices, True)


def adaptive_scores(G_train, models_weights, targets: dict, cfg: StyleGAN2Config, n_w: int, n_i: int, lr: float,
                    gen: torch.Generator, noise_mode: str = "const", synthesis_kwargs: dict | None = None,
                    clip_context=None, loss_scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """The W+ probe of :func:`adaptive_select`: mean |change| per W+ index [num_ws], on the device.

    What it keeps for the backward pass is one forward of the synthesis network (+ CLIP) at
    batch ``n_w`` whose only leaf requiring grad is the W+ codes: the generator's weights are
    switched to ``requires_grad=False`` for the probe (no weight gradients computed, none of the
    tensors only a weight gradient needs saved) and each step's graph is freed by
    ``torch.autograd.grad`` before the next.  ``loss_scale`` (reduced precision) multiplies the
    loss before the backward pass and divides the gradient after it.  Draws its codes from ``gen``
    on ``gen``'s device, never syncs with the host."""
    dev = G_train.w_avg.device
    gdev = gen.device if gen is not None else torch.device("cpu")
    synthesis_kwargs = synthesis_kwargs or {}
    with torch.no_grad():
        z = torch.randn([n_w, cfg.z_dim], generator=gen, device=gdev).to(dev)
        c = None
        if cfg.c_dim:
            lab = torch.randint(0, cfg.c_dim, [n_w], generator=gen, device=gdev)
            c = torch.nn.functional.one_hot(lab, cfg.c_dim).float().to(dev)
        w0 = G_train.mapping(z, c).unsqueeze(1).repeat(1, cfg.num_ws, 1)
    params = list(G_train.parameters())
    req = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    ws = w0
    try:
        for _ in range(n_i):
            ws = ws.detach().requires_grad_(True)
            img = G_train.synthesis(ws, noise_mode=noise_mode, **synthesis_kwargs)
            loss = 0.0
            for model, weight, key in models_weights:
                if clip_context is not None:
                    with clip_context():
                        emb = model.encode_generator_images(img)
                else:
                    emb = model.encode_generator_images(img)
                loss = loss + weight * global_loss(emb, targets[key])
            if isinstance(loss_scale, torch.Tensor) or loss_scale != 1:
                (g,) = torch.autograd.grad(loss * loss_scale, [ws])
                g = g / loss_scale
            else:
                (g,) = torch.autograd.grad(loss, [ws])
            del img, loss
            ws = ws.detach().add(g, alpha=-lr)      # plain SGD, as torch.optim.SGD(lr) computes it
    finally:
        for p, r in zip(params, req):
            p.requires_grad_(r)
    return (ws.detach() - w0).abs().mean(dim=(0, 2))
