"""Load any supported generator checkpoint (format detected from content) and save ours.

``load_generator(path)`` -> :class:`GeneratorHandle`, the small value object passed
between nodes.  Model files are untrusted: no reader executes code from a file.
"""
from __future__ import annotations

import copy
import os
import struct
from dataclasses import dataclass, field, replace

import torch

from .config import StyleGAN2Config
from .formats import CheckpointError, ReadResult
from .networks import Generator, build_generator, copy_generator, estimate_w_avg

W_AVG_ESTIMATE_SAMPLES = 8192
W_AVG_ESTIMATE_SEED = 0

_PICKLE_PROTOCOL_BYTES = {2, 3, 4, 5}
# torch's legacy (non-zip) serialization starts with a pickled magic number.
_TORCH_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def detect_format(path) -> str:
    """'safetensors' | 'torch-zip' | 'torch-legacy' | 'pickle', from the first bytes."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise CheckpointError(p, "file does not exist")
    if os.path.isdir(p):
        raise CheckpointError(p, "is a folder, expected a model file")
    size = os.path.getsize(p)
    if size == 0:
        raise CheckpointError(p, "file is empty")
    with open(p, "rb") as fh:
        head = fh.read(64)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head[0] == 0x80 and len(head) > 1 and head[1] in _PICKLE_PROTOCOL_BYTES:
        if _TORCH_LEGACY_MAGIC in head[:20]:
            return "torch-legacy"
        return "pickle"
    raise CheckpointError(p, "not a recognised StyleGAN checkpoint: expected an NVIDIA .pkl pickle, a "
                             "rosinality/StyleGAN-NADA .pt (torch.save) or this pack's .safetensors "
                             f"(first bytes: {head[:8].hex()})")


def read_checkpoint(path) -> ReadResult:
    """Read a checkpoint of any supported format into a :class:`ReadResult`."""
    kind = detect_format(path)
    try:
        if kind == "safetensors":
            from .formats.safetensors_io import read_safetensors_generator
            return read_safetensors_generator(path)
        if kind in ("torch-zip", "torch-legacy"):
            from .formats.rosinality_pt import read_rosinality
            return read_rosinality(path)
    except CheckpointError:
        what = clip_model_kind(path)
        if what is None:
            raise
        raise CheckpointError(path, f"this is {what}, not a StyleGAN generator. CLIP models belong in "
                                    "models/open_clip: in ComfyUI choose it in Load CLIP; on the command line "
                                    "pass it with --clip-weights NAME=FILE (or its folder with --clip-dir)") from None
    from .formats.nvidia_pkl import read_nvidia_pickle
    try:
        return read_nvidia_pickle(path)
    except CheckpointError as e:
        if "TensorFlow-era StyleGAN pickle" not in e.problem:
            raise
    from .formats.nvidia_tf_pkl import read_nvidia_tf_pickle   # the original StyleGAN2 release's pickles
    return read_nvidia_tf_pickle(path)


def clip_model_kind(path) -> str | None:
    """What kind of CLIP model ``path`` holds ('an OpenAI CLIP model (TorchScript archive)', ...),
    or None when it is not one. Read with the bounded readers; any reading problem -> None."""
    try:
        from ..clip.torchscript import is_torchscript_archive
        if is_torchscript_archive(path):
            return "an OpenAI CLIP model (a TorchScript archive such as ViT-B-32.pt)"
        from ..clip.models import read_state_dict_file
        keys = list(read_state_dict_file(path))
    except Exception:                     # noqa: BLE001 - not readable as CLIP weights either
        return None
    has_image = any(k.startswith(("visual.", "vision_model.")) for k in keys)
    has_text = any(k.startswith(("text.", "text_model.", "token_embedding", "transformer.resblocks"))
                   or k in ("text_projection", "positional_embedding") for k in keys)
    return "a CLIP model (open_clip / OpenAI weights)" if has_image and has_text else None


@dataclass(frozen=True)
class GeneratorHandle:
    """A loaded generator with its architecture and provenance.  Immutable by convention:
    consumers never modify ``G``; training works on :meth:`clone_generator`."""
    G: Generator
    name: str
    source_format: str
    provenance: dict = field(default_factory=dict)
    dtype: torch.dtype = torch.float32
    #: a :mod:`nada_ops.precision` policy for rendering ('fast': NVIDIA's fp16 top resolutions
    #: with clamping, TF32); None = ``dtype`` for every block
    precision: str | None = None

    @property
    def cfg(self) -> StyleGAN2Config:          # or a StyleGAN3Config
        return self.G.cfg

    @property
    def family(self) -> str:
        """'stylegan2' or 'stylegan3'."""
        return self.G.cfg.family

    @property
    def device(self) -> torch.device:
        return self.G.w_avg.device

    def clone_generator(self, device=None, requires_grad: bool = False) -> Generator:
        """A fresh copy with ordinary (non-inference) tensors, safe to train."""
        with torch.inference_mode(False):
            return copy_generator(self.G, device).requires_grad_(requires_grad)

    def derive(self, G: Generator, name: str | None = None, history_entry: dict | None = None,
               history: list | None = None) -> "GeneratorHandle":
        """A new handle for ``G`` (e.g. adapted/interpolated), recording what was done:
        ``history_entry`` is appended to this handle's history; ``history`` replaces it (a blend
        records both sides' histories inside its own entry, :func:`nada_ops.provenance.blend_entry`)."""
        prov = copy.deepcopy(self.provenance)
        if history is not None:
            prov["history"] = copy.deepcopy(list(history))
        if history_entry is not None:
            prov.setdefault("history", []).append(history_entry)
        return replace(self, G=G, name=name or self.name, provenance=prov)

    def describe(self) -> str:
        c = self.cfg
        lines = [
            f"name: {self.name}",
            f"format: {self.source_format}",
        ]
        if c.family == "stylegan3":
            kind = {"stylegan3-t": "StyleGAN3 config T (translation equivariant)",
                    "stylegan3-r": "StyleGAN3 config R (rotation equivariant)"}.get(c.architecture, c.architecture)
            inp = c.input_spec()
            lines += [
                f"architecture: {kind}",
                f"resolution: {c.img_resolution}x{c.img_resolution}, {c.img_channels} channels",
                f"z_dim {c.z_dim}, w_dim {c.w_dim}, c_dim {c.c_dim}, mapping layers {c.num_mapping_layers}",
                f"synthesis: {c.num_layers} layers + ToRGB ({c.num_critical} critically sampled), channel_base "
                f"{c.channel_base}, channel_max {c.channel_max}, {c.conv_kernel}x{c.conv_kernel} convs, "
                f"{'radial' if c.use_radial_filters else 'separable'} downsampling filters, margin {c.margin_size} px, "
                f"output scale {c.output_scale:g}",
                f"input: {inp['channels']} Fourier features, {inp['size']}px, sampling rate {inp['sampling_rate']:g}, "
                f"bandwidth {inp['bandwidth']:g}",
                "layers: " + ", ".join(
                    f"{l.name} (rate {l.out_sampling_rate}, cutoff {l.out_cutoff:.3g}, up {l.up}/down {l.down})"
                    for l in c.layers()),
                f"num_ws (W+ entries): {c.num_ws} (0: Fourier input, 1-{c.num_layers}: layers L0-L{c.num_layers - 1}, "
                f"{c.num_ws - 1}: ToRGB)",
            ]
        else:
            lines += [
                f"resolution: {c.img_resolution}x{c.img_resolution}, {c.img_channels} channels",
                f"z_dim {c.z_dim}, w_dim {c.w_dim}, c_dim {c.c_dim}, mapping layers {c.num_mapping_layers}",
                "channels: " + ", ".join(f"{r}:{c.channels(r)}" for r in c.block_resolutions),
                f"num_ws (W+ entries): {c.num_ws}",
            ]
        lines += [
            f"conv_clamp: {c.conv_clamp}",
            f"parameters: {sum(p.numel() for p in self.G.parameters()):,}",
        ]
        wa = self.provenance.get("w_avg")
        if wa:
            lines.append(f"w_avg: {wa}")
        hist = self.provenance.get("history", [])
        if hist:
            from ..provenance import format_history
            lines.append("history:")
            lines += format_history(hist)
        return "\n".join(lines)


def generator_from_read(res: ReadResult, path, device="cpu") -> tuple[Generator, dict]:
    for name, t in res.state_dict.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise CheckpointError(path, f"tensor {name!r} is not a floating-point tensor; integer weights are refused")
    G = build_generator(res.cfg)
    try:
        G.load_state_dict(res.state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(path, f"weights do not fit the architecture: {str(e)[:500]}") from None
    prov = dict(res.provenance)
    prov.setdefault("source_file", os.path.basename(os.fspath(path)))
    prov.setdefault("source_format", res.format)
    if not res.w_avg_in_checkpoint:
        with torch.no_grad():
            G.mapping.w_avg.copy_(estimate_w_avg(G, W_AVG_ESTIMATE_SAMPLES, W_AVG_ESTIMATE_SEED))
        prov["w_avg"] = (f"estimated from {W_AVG_ESTIMATE_SAMPLES} mapped samples (seed {W_AVG_ESTIMATE_SEED}); "
                         "the checkpoint stores no average latent")
    # Every parameter AND buffer, non-persistent ones (the resampling filters) included.
    for name, t in list(G.named_parameters()) + list(G.named_buffers()):
        if not t.is_floating_point():
            raise CheckpointError(path, f"tensor {name!r} has dtype {t.dtype}, expected floating point")
        if not torch.isfinite(t).all():
            raise CheckpointError(path, f"tensor {name!r} contains NaN or Inf values")
    G.eval().requires_grad_(False)
    return G.to(device), prov


def load_generator(path, device="cpu", dtype: torch.dtype = torch.float32) -> GeneratorHandle:
    """Load a StyleGAN2 or StyleGAN3 generator from an NVIDIA .pkl, a rosinality/NADA .pt or our
    .safetensors."""
    res = read_checkpoint(path)
    G, prov = generator_from_read(res, path, device)
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return GeneratorHandle(G=G, name=name, source_format=res.format, provenance=prov, dtype=dtype)


def save_generator(handle_or_G, path, provenance: dict | None = None) -> None:
    """Save as this pack's .safetensors (atomic), with architecture + provenance metadata."""
    from .formats.safetensors_io import write_safetensors_generator
    if hasattr(handle_or_G, "G") and hasattr(handle_or_G, "provenance"):
        G = handle_or_G.G
        prov = dict(handle_or_G.provenance)
        if provenance:
            prov.update(provenance)
    else:
        G, prov = handle_or_G, dict(provenance or {})
    write_safetensors_generator(G, path, prov)
