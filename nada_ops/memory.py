"""Memory: how much a job will need (so a host such as ComfyUI can make room first), and
out-of-memory errors turned into advice.

The estimates are deliberately simple (parameters + activations that autograd keeps), within
a factor of about 1.5 of what was measured on an H200 for StyleGAN2 config-f at 1024 px
(benchmarks/RESULTS.md: 5.4 GB for a batch-2 training step with ViT-B/32 + ViT-B/16, 17 GB
with adaptive layer selection over 8 codes). They are used to ask the host to unload other
models, never to refuse work.
"""
from __future__ import annotations

import torch

#: Activation values autograd keeps per synthesis output value (fitted to the H200 figures
#: above: about 1.5 GB per 1024 px image kept for backward).
_SAVED_PER_ACTIVATION = 3
#: A forward pass without autograd keeps only a couple of activations alive at a time.
_LIVE_PER_ACTIVATION_NO_GRAD = 2


def generator_parameter_bytes(cfg, dtype_bytes: int = 4) -> int:
    """Bytes of a generator's parameters and persistent buffers (shapes only: nothing is built)."""
    from .stylegan.networks import build_generator
    with torch.device("meta"):
        G = build_generator(cfg)
    return sum(t.numel() for t in list(G.parameters()) + list(G.buffers())) * dtype_bytes


def synthesis_activation_values(cfg) -> int:
    """Values the synthesis network produces per image (all layers, all resolutions)."""
    if getattr(cfg, "family", "stylegan2") == "stylegan3":
        # per layer: the conv output, the upsampled leaky-ReLU input (kept by the reference op)
        # and the output
        total = cfg.input_spec()["channels"] * cfg.input_spec()["size"] ** 2
        for l in cfg.layers():
            conv = l.in_size + l.conv_kernel - 1
            tmp = conv * l.up
            total += l.out_channels * (conv * conv + 2 * tmp * tmp + l.out_size * l.out_size)
        return total
    total = 0
    for res in cfg.block_resolutions:
        convs = 1 if res == 4 else 2
        total += convs * cfg.channels(res) * res * res + cfg.img_channels * res * res
    return total


def module_bytes(module) -> int:
    if module is None:
        return 0
    net = getattr(module, "model", module)
    try:
        return sum(t.numel() * t.element_size() for t in list(net.parameters()) + list(net.buffers()))
    except AttributeError:
        return 0


def training_bytes(cfg, batch: int, clip_models=(), adaptive_codes: int = 0, dtype_bytes: int = 4) -> int:
    """A NADA training run: two generators, gradients and Adam state of the trained one,
    the activations of a batch (plus the adaptive layer-selection probe), the CLIP models."""
    p = generator_parameter_bytes(cfg, dtype_bytes)
    act = synthesis_activation_values(cfg) * dtype_bytes * _SAVED_PER_ACTIVATION
    clip = sum(module_bytes(m) for m in clip_models)
    return 5 * p + (batch + adaptive_codes) * act + 2 * clip


def inversion_bytes(cfg, batch: int, clip_models=(), dtype_bytes: int = 4) -> int:
    p = generator_parameter_bytes(cfg, dtype_bytes)
    act = synthesis_activation_values(cfg) * dtype_bytes * _SAVED_PER_ACTIVATION
    return 2 * p + batch * act + 2 * sum(module_bytes(m) for m in clip_models)


def rendering_bytes(cfg, batch: int, generators: int = 1, dtype_bytes: int = 4) -> int:
    """Rendering (sampling, transitions): the generators (plus one blend) and a batch."""
    p = generator_parameter_bytes(cfg, 4)
    act = synthesis_activation_values(cfg) * dtype_bytes * _LIVE_PER_ACTIVATION_NO_GRAD
    return (generators + 1) * p + batch * act


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA / MPS / CPU allocation failures (they come as different exception types)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc)
        return ("out of memory" in msg.lower() or "can't allocate memory" in msg
                or "DefaultCPUAllocator" in msg)
    return False


class OutOfMemory(RuntimeError):
    """Out of memory, with what to change."""

    def __init__(self, what: str, device, advice: str, cause: BaseException | None = None):
        self.what, self.device, self.advice = what, str(device), advice
        first = str(cause).strip().splitlines()[0][:200] if cause is not None and str(cause).strip() else ""
        super().__init__(f"{what}: out of memory on {device}. {advice}" + (f" ({first})" if first else ""))


def advice_for(job: str) -> str:
    return {
        "training": "Lower batch_size (the paper uses 2), use fewer adaptive codes (n_w) or a smaller k, "
                    "guide with one CLIP model instead of two, or close other graphs that hold models on this "
                    "device.",
        "inversion": "Invert fewer images at once, turn off the CLIP perceptual loss, or use a smaller CLIP model.",
        "rendering": "Lower batch_size, render fewer latents per frame, use fp16 (Load StyleGAN precision) on a "
                     "GPU, or a smaller output.",
    }.get(job, "Use a smaller batch or resolution.")
