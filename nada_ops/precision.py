"""The precision policy: which arithmetic the trainer, the sampler, the nodes and the command
line use.  The ONE place that knows it (ARCHITECTURE.md).

Named settings (``POLICIES``):

``exact``
    float32 everywhere, TF32 off: for verification, and what the pack computed before the
    policy existed (the default on CPU and MPS).
``fast``
    the GPU default: TF32 matrix products and convolutions; the CLIP image towers under
    autocast in float16 (bfloat16 on a CPU); the top ``num_fp16_res`` = 4 resolutions of the
    StyleGAN2 synthesis network in float16 with their activations clamped to +-256, as NVIDIA's
    networks run them (``num_fp16_res=4, conv_clamp=256``).  The trained weights and Adam's state
    stay float32 (the fp32 master weights).  Like NVIDIA's generator training (and the official
    StyleGAN-NADA code's float16 CLIP) the loss is not scaled by default; ``loss_scale`` > 1
    turns on dynamic loss scaling (scale before the backward pass, divide it out in the
    optimizer, skip the iteration and halve the scale on overflow).  On a CPU, where float16
    is slow or missing, ``fast`` means bfloat16.
``bf16``
    as ``fast`` with bfloat16 instead of float16 (float32's range).
``auto``
    ``fast`` on CUDA, ``exact`` elsewhere.

A :class:`Precision` only describes; :meth:`Precision.math` applies the TF32 switches for the
duration of a ``with`` block and puts them back afterwards, :meth:`Precision.clip_autocast`
is the context the CLIP towers run in and :meth:`Precision.synthesis_kwargs` the arguments of
a synthesis call.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch

POLICIES = ("auto", "exact", "fast", "bf16")
#: NVIDIA's settings for its StyleGAN2/3 networks.
NUM_FP16_RES = 4
FP16_CONV_CLAMP = 256.0


@dataclass(frozen=True)
class Precision:
    name: str                                   # 'exact' | 'fast' | 'bf16'
    device_type: str = "cpu"
    tf32: bool = False                          # TF32 matmul + cuDNN convolutions
    clip_dtype: torch.dtype | None = None       # autocast dtype of the CLIP towers (None: the model's own)
    synthesis_dtype: torch.dtype = torch.float32   # dtype of the top synthesis resolutions
    num_fp16_res: int = 0                       # how many top resolutions run in synthesis_dtype
    conv_clamp: float | None = None             # clamp of the reduced-precision layers
    loss_scale: float = 1.0                     # initial loss scale (1: none)
    fused_modconv: bool = False                 # modulated conv as grouped conv (NVIDIA's per-sample weights)
    channels_last: bool = False                 # reduced-precision synthesis blocks in channels_last

    @property
    def reduced(self) -> bool:
        return self.clip_dtype is not None or self.num_fp16_res > 0

    def with_options(self, **kw) -> "Precision":
        """A copy with some fields changed (benchmarks: ``fused_modconv``, ``channels_last``...)."""
        return replace(self, **kw)

    # -------------------------------------------------------------------- contexts
    @contextlib.contextmanager
    def math(self):
        """TF32 on (fast) or off (exact) inside the block; the previous switches come back after."""
        if self.device_type != "cuda":
            yield
            return
        prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev

    def clip_autocast(self):
        """The context a CLIP image tower runs in (autocast, without its weight cache so that the
        block can be captured in a CUDA graph; the towers' weights are frozen anyway)."""
        if self.clip_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.clip_dtype, cache_enabled=False)

    def synthesis_kwargs(self, cfg) -> dict:
        """Keyword arguments of ``G.synthesis(...)`` for this policy ({} for exact: unchanged calls)."""
        if getattr(cfg, "family", "stylegan2") == "stylegan3":
            # StyleGAN3 layers know their own fp16 flag (NVIDIA's num_fp16_res = 4) and clamp.
            return {"dtype": self.synthesis_dtype} if self.num_fp16_res > 0 else {}
        kw = {}
        if self.num_fp16_res > 0 and self.synthesis_dtype != torch.float32:
            kw.update(dtype=self.synthesis_dtype, num_fp16_res=self.num_fp16_res, fp16_clamp=self.conv_clamp)
        if self.fused_modconv:
            kw["fused_modconv"] = True
        if self.channels_last:
            kw["channels_last"] = True
        return kw

    def describe(self) -> str:
        if self.name == "exact":
            return "exact (float32, TF32 off)"
        parts = []
        if self.tf32:
            parts.append("TF32")
        if self.clip_dtype is not None:
            parts.append(f"CLIP {_short(self.clip_dtype)} autocast")
        if self.num_fp16_res:
            parts.append(f"synthesis top {self.num_fp16_res} resolutions {_short(self.synthesis_dtype)} "
                         f"(clamp {self.conv_clamp:g})")
        if self.loss_scale != 1:
            parts.append(f"loss scale {self.loss_scale:g} (dynamic)")
        if self.fused_modconv:
            parts.append("grouped modulated conv")
        if self.channels_last:
            parts.append("channels_last")
        return f"{self.name} ({', '.join(parts) or 'float32'})"

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.describe()}


def _short(dt: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dt, str(dt))


def resolve(name: str | None, device) -> Precision:
    """The policy ``name`` ('auto' / 'exact' / 'fast' / 'bf16'; None = 'auto') for ``device``.

    On a CPU, float16 arithmetic is slow or missing: ``fast`` there means bfloat16 (what a CPU
    runs), so the CPU tests exercise the same code paths as a GPU's ``fast``."""
    name = (name or "auto").strip().lower()
    if name not in POLICIES:
        raise ValueError(f"precision must be one of {POLICIES}, got {name!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    dt = dev.type
    if name == "auto":
        name = "fast" if dt == "cuda" else "exact"
    if name == "exact":
        return Precision("exact", device_type=dt)
    low = torch.float16 if (name == "fast" and dt == "cuda") else torch.bfloat16
    return Precision(name, device_type=dt, tf32=dt == "cuda", clip_dtype=low, synthesis_dtype=low,
                     num_fp16_res=NUM_FP16_RES, conv_clamp=FP16_CONV_CLAMP,
                     loss_scale=1.0)


def synthesis_call(G, precision: str | None, dtype: torch.dtype = torch.float32):
    """``(kwargs for G.synthesis, math context)`` for rendering with ``G``: the policy's
    synthesis settings and TF32 switches when ``precision`` is given, else ``dtype`` alone
    (unchanged calls). One rule for every renderer (sampling, inversion previews, videos)."""
    if precision is None:
        return {"dtype": dtype}, contextlib.nullcontext()
    pol = resolve(precision, G.w_avg.device)
    return pol.synthesis_kwargs(G.cfg), pol.math()
