"""Seeds -> W/W+ latents -> images, batched; image layout helpers."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..latents import WLatents
from .networks import Generator, style_mix, z_from_seeds

ProgressFn = Callable[[int, int, object], None]


def sample_latents(G: Generator, seeds, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                   class_idx: int | None = None, mix_seeds=None, mix_crossover: int | None = None) -> WLatents:
    """NVIDIA-compatible seeds -> W+ latents (truncated with the checkpoint's w_avg).

    With ``mix_seeds`` (one per seed, or one for all) the W+ entries from ``mix_crossover``
    on come from the mixing seed's w (style mixing)."""
    cfg = G.cfg
    seeds = list(seeds)
    dev = G.w_avg.device
    c = None
    if cfg.c_dim > 0:
        if class_idx is None or class_idx < 0:
            raise ValueError(f"the generator is class-conditional with {cfg.c_dim} classes: choose a class label")
        if class_idx >= cfg.c_dim:
            raise ValueError(f"class label {class_idx} is out of range 0..{cfg.c_dim - 1}")
        c = F.one_hot(torch.full([len(seeds)], class_idx), cfg.c_dim).float().to(dev)
    elif class_idx not in (None, -1, 0):
        raise ValueError("a class label was given but the generator is not class-conditional (c_dim=0)")
    with torch.no_grad():
        z = z_from_seeds(seeds, cfg.z_dim).to(dev)
        ws = G.map(z, c, truncation_psi, truncation_cutoff)
        info = {"seeds": seeds, "truncation_psi": truncation_psi}
        if mix_seeds is not None and len(list(mix_seeds)) > 0:
            mix_seeds = list(mix_seeds)
            if len(mix_seeds) == 1:
                mix_seeds = mix_seeds * len(seeds)
            if len(mix_seeds) != len(seeds):
                raise ValueError(f"{len(mix_seeds)} mixing seeds for {len(seeds)} seeds: give one or one per seed")
            if mix_crossover is None:
                raise ValueError("style mixing needs a crossover index")
            if not 0 <= mix_crossover <= cfg.num_ws:
                raise ValueError(f"crossover {mix_crossover} outside 0..{cfg.num_ws}")
            ws2 = G.map(z_from_seeds(mix_seeds, cfg.z_dim).to(dev), c, truncation_psi, truncation_cutoff)
            ws = style_mix(ws, ws2, mix_crossover)
            info.update(mix_seeds=mix_seeds, mix_crossover=mix_crossover)
    return WLatents(ws=ws, is_wplus=mix_seeds is not None, info=info)


def input_transform_for(G, translate=(0.0, 0.0), rotate: float = 0.0) -> torch.Tensor | None:
    """The StyleGAN3 input transform for an image translation (x, y; 1 = the image's width) and
    rotation (degrees), as NVIDIA's ``gen_images.py`` / visualiser apply it; None when both are 0
    (the generator's stored transform is used).  A StyleGAN2 generator has no Fourier input: a
    non-zero request is an error."""
    tx, ty = (float(v) for v in translate)
    rot = float(rotate)
    if tx == 0 and ty == 0 and rot == 0:
        return None
    if getattr(G.cfg, "family", "stylegan2") != "stylegan3":
        raise ValueError("translate / rotate move the Fourier-feature input of StyleGAN3 generators; this is a "
                         "StyleGAN2 generator (set them to 0)")
    from .networks_sg3 import input_transform
    return input_transform((tx, ty), rot)


def synthesize(G: Generator, ws: torch.Tensor, noise_mode: str = "const", batch_size: int = 8,
               dtype: torch.dtype = torch.float32, progress: ProgressFn | None = None,
               noise_seed: int | None = None, transform: torch.Tensor | None = None,
               precision: str | None = None) -> torch.Tensor:
    """W+ [N, num_ws, w_dim] -> images [N, C, H, W] in [-1, 1] (float32, on G's device).

    ``precision`` (``nada_ops.precision``: 'auto' / 'exact' / 'fast' / 'bf16'): the policy's
    synthesis settings and TF32 switches replace ``dtype``; None keeps ``dtype`` as given.

    ``transform`` (StyleGAN3 only; [3, 3] or [N, 3, 3], see :func:`input_transform_for`) moves
    the Fourier input for this call.  ``progress(done, total, None)`` is called after each batch
    and may raise to stop."""
    n = ws.shape[0]
    out = []
    gen = None
    if transform is not None and getattr(G.cfg, "family", "stylegan2") != "stylegan3":
        raise ValueError("an input transform needs a StyleGAN3 generator")
    if transform is not None and transform.ndim == 3 and transform.shape[0] not in (1, n):
        raise ValueError(f"{transform.shape[0]} input transforms for {n} latents: give one or one per latent")
    if noise_mode == "random" and noise_seed is not None:
        gen = torch.Generator(device=G.w_avg.device).manual_seed(int(noise_seed))
    from ..precision import synthesis_call
    kw_prec, tf32_ctx = synthesis_call(G, precision, dtype)
    with torch.no_grad(), tf32_ctx:
        for i in range(0, n, batch_size):
            chunk = ws[i:i + batch_size].to(G.w_avg.device)
            noises = G.make_noises(chunk.shape[0], gen) if gen is not None else None
            kw = {}
            if transform is not None:
                kw["transform"] = transform[i:i + batch_size] if transform.ndim == 3 and transform.shape[0] > 1 \
                    else transform
            kw.update(kw_prec)
            img = G.synthesis(chunk, noise_mode=noise_mode, noises=noises, **kw)
            out.append(img.float())
            if progress is not None:
                progress(min(i + batch_size, n), n, None)
    return torch.cat(out, dim=0)


def to_comfy_image(img: torch.Tensor) -> torch.Tensor:
    """[-1,1] NCHW -> ComfyUI IMAGE: float32 [N, H, W, C] in 0..1 on the CPU (3 channels)."""
    x = (img.float().clamp(-1, 1) + 1) / 2
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.permute(0, 2, 3, 1).contiguous().cpu()


def from_comfy_image(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [N, H, W, C] 0..1 -> [-1, 1] NCHW (RGB, alpha dropped)."""
    if image.ndim != 4:
        raise ValueError(f"IMAGE must be [N, H, W, C], got {tuple(image.shape)}")
    x = image[..., :3].permute(0, 3, 1, 2).float()
    return x * 2 - 1


def grid_shape(n: int, cols: int | None = None) -> tuple[int, int]:
    """(cols, rows) for ``n`` images: ``cols`` if given; else the layout with the fewest empty
    cells among those between square and 4:1 wide, the one closest to 4:3 first (8 -> 4x2,
    not 3x3 with a black cell; 12 -> 4x3; 7 -> 4x2 with one empty cell)."""
    if n <= 0:
        return max(cols or 1, 1), 0
    if cols:
        return cols, math.ceil(n / cols)
    best = None
    for c in range(1, n + 1):
        r = math.ceil(n / c)
        if not 1 <= c / r <= 4 and not (n <= 2 and c == n):
            continue
        key = (r * c - n, abs(math.log((c / r) / (4 / 3))))
        if best is None or key < best[0]:
            best = (key, c, r)
    if best is None:                                   # (cannot happen: c = ceil(sqrt(n)) qualifies)
        c = math.ceil(math.sqrt(n))
        return c, math.ceil(n / c)
    return best[1], best[2]


def make_grid(img: torch.Tensor, cols: int | None = None) -> torch.Tensor:
    """[N, C, H, W] -> one [C, rows*H, cols*W] grid (layout: :func:`grid_shape`)."""
    n, c, h, w = img.shape
    cols, rows = grid_shape(n, cols)
    grid = img.new_zeros([c, rows * h, cols * w]) - 1
    for i in range(n):
        r, k = divmod(i, cols)
        grid[:, r * h:(r + 1) * h, k * w:(k + 1) * w] = img[i]
    return grid


def save_image_grid(img: torch.Tensor, path, cols: int | None = None) -> None:
    """Save [-1,1] NCHW images as one PNG grid (atomic)."""
    from PIL import Image

    from ..fileio import atomic_write
    grid = make_grid(img.detach().float().cpu(), cols)
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    pil = Image.fromarray(arr)
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))
