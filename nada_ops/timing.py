"""Rough run-time estimates, told to the user before a long job starts (the command line warns
when ``adapt`` or ``invert`` would run for a long time on a CPU).

Each estimate times a forward pass of the networks involved (batch 1, no gradients) on the
device in use, a second time when the first was short (the first call pays one-time costs),
and multiplies it by a number of forward-pass equivalents per iteration. In theory an iteration
is 4 of them per image (frozen forward, trained forward, backward ~2) and a layer-selection code
3; measured on a CPU (2 threads, 64 px generator with config-f widths, ViT-B/32; 2026-12) an
iteration cost 1.9 per image and 1.2 per code (batching and the backward are cheaper than
counted), so those measured factors are used (for inversion the theoretical 3 per image is
scaled by the same ratio: 1.4, not measured separately). The figures are a guide; the command line
replaces them by the measured time per iteration as soon as the first iterations have run.
"""
from __future__ import annotations

import time

import torch


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


#: A first call shorter than this is timed again (warm) and the shorter time is used.
RETIME_BELOW_S = 5.0


def _timed(fn, device) -> float:
    best = None
    for _ in range(2):
        with torch.no_grad():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
        t = time.perf_counter() - t0
        best = t if best is None else min(best, t)
        if t >= RETIME_BELOW_S:
            break
    return best


def generator_forward_seconds(G, device=None) -> float:
    """Seconds for one image through the synthesis network (no gradients)."""
    device = device or G.w_avg.device
    ws = G.mapping.w_avg.detach().reshape(1, 1, -1).repeat(1, G.cfg.num_ws, 1).to(device)
    return _timed(lambda: G.synthesis(ws, noise_mode="const"), device)


def clip_forward_seconds(model) -> float:
    """Seconds for one generator-sized image through a CLIP image tower (incl. preprocessing)."""
    size = model.input_size if isinstance(model.input_size, int) else max(model.input_size)
    img = torch.zeros(1, 3, size, size, device=model.device)
    return _timed(lambda: model.encode_generator_images(img), model.device)


#: Forward-pass equivalents (see the module text): per image of a NADA batch (frozen forward,
#: trained forward and backward, for the generator and each CLIP model), per layer-selection
#: code (forward and backward), per image of an inversion step (forward and backward).
PASSES_PER_IMAGE = 1.9
PASSES_PER_CODE = 1.2
PASSES_PER_INVERSION_IMAGE = 1.4


def adapt_iteration_seconds(t_generator: float, t_clips, batch: int, adaptive_codes: int = 0) -> float:
    """One NADA iteration from single-image forward times of the generator and the CLIP models."""
    t = t_generator + float(sum(t_clips))
    return batch * PASSES_PER_IMAGE * t + adaptive_codes * PASSES_PER_CODE * t


def invert_step_seconds(t_generator: float, n_images: int, t_clip: float = 0.0) -> float:
    """One inversion step: forward + backward of the generator (and of CLIP for the perceptual loss)."""
    return n_images * PASSES_PER_INVERSION_IMAGE * (t_generator + t_clip)
