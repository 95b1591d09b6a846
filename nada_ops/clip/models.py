"""Frozen CLIP models: loading (local files first, open_clip downloads where possible)
and encoding (generator images, real ``IMAGE`` tensors, cached text).

open_clip is imported lazily (it takes seconds to import), so importing this module is
cheap.
"""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from .preprocess import to_clip_input

__all__ = [
    "ClipModel", "ClipWeightsNotFoundError", "load_clip", "find_local_weights", "model_key",
    "RANDOM_WEIGHTS", "DEFAULT_PRETRAINED",
]

log = logging.getLogger(__name__)

#: ``pretrained`` value that builds the architecture with random weights (benchmarks).
RANDOM_WEIGHTS = "random"
#: Tag tried when ``pretrained`` is None and no local file is found (the paper's weights).
DEFAULT_PRETRAINED = "openai"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: File names open_clip / the Hugging Face hub use for a model folder's weights.
GENERIC_WEIGHT_NAMES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin",
)
# OpenAI CLIP image statistics (also open_clip.constants.OPENAI_DATASET_MEAN/STD); kept here
# so that this module does not import open_clip at import time.
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

PathLike = Union[str, os.PathLike]


class ClipWeightsNotFoundError(FileNotFoundError):
    """No local weights file and the download failed (or was not possible)."""


def canonical_name(name: str) -> str:
    """open_clip architecture name: OpenAI's 'ViT-B/32' -> 'ViT-B-32'."""
    return name.strip().replace("/", "-")


def _clean_tag(tag: str) -> str:
    return tag.strip().lower().replace("-", "_")


class ClipModel:
    """A frozen open_clip model plus what is needed to feed it.

    Attributes: ``name`` (architecture), ``pretrained`` (tag, weights file name, or None),
    ``input_size`` (int, or (h, w) for non-square towers), ``mean``/``std`` (tuples),
    ``device``, ``dtype``, ``model`` (the open_clip module, eval mode, no grad on its
    parameters), ``tokenizer``.

    All ``encode_*`` methods return RAW (unnormalized) float32 embeddings of shape
    (N, embed_dim); normalizing is the caller's business (see ``direction.py``).
    """

    def __init__(self, model: torch.nn.Module, name: str, pretrained: Optional[str] = None,
                 tokenizer=None, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, input_size=None,
                 dtype: Optional[torch.dtype] = None):
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.name = name
        self.pretrained = pretrained
        first = next(model.parameters())
        self.device = first.device
        self.dtype = dtype if dtype is not None else first.dtype
        visual = getattr(model, "visual", model)
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        self.mean = tuple(float(v) for v in (mean or cfg.get("mean")
                                             or getattr(visual, "image_mean", None) or _OPENAI_MEAN))
        self.std = tuple(float(v) for v in (std or cfg.get("std")
                                            or getattr(visual, "image_std", None) or _OPENAI_STD))
        size = input_size or getattr(visual, "image_size", None) or cfg.get("size") or 224
        if not isinstance(size, int):
            size = tuple(int(s) for s in size)
            if size[0] == size[1]:
                size = size[0]
        self.input_size = size
        self.tokenizer = tokenizer if tokenizer is not None else _default_tokenizer(model, name)
        self._text_cache: Dict[str, torch.Tensor] = {}
        self._stats_cache: Dict[Tuple[torch.device, torch.dtype], Tuple[torch.Tensor, torch.Tensor]] = {}

    # -- bookkeeping -------------------------------------------------------------------
    @property
    def key(self) -> str:
        return model_key(self)

    @property
    def embed_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[-1])
        return int(self.encode_text([""]).shape[-1])

    def __repr__(self):
        return (f"ClipModel({self.key!r}, input_size={self.input_size}, device={self.device}, "
                f"dtype={self.dtype})")

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "ClipModel":
        """Move the model (in place) and its text cache; returns self."""
        if device is not None:
            device = torch.device(device)
        self.model.to(device=device, dtype=dtype)
        if device is not None:
            self.device = device
            self._text_cache = {k: v.to(device) for k, v in self._text_cache.items()}
        if dtype is not None:
            self.dtype = dtype
        self._stats_cache.clear()
        return self

    def clear_text_cache(self) -> None:
        self._text_cache.clear()

    def _stats(self, ref: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        k = (ref.device, ref.dtype)
        s = self._stats_cache.get(k)
        if s is None or (s[0].is_inference() and not torch.is_inference_mode_enabled()):
            # Built (again) outside inference mode when the cached pair is an inference tensor:
            # a node running under ComfyUI's inference mode (CLIP Direction) must not leave a
            # tensor here that a later node trains through (autograd refuses to save it).
            s = (torch.tensor(self.mean, device=ref.device, dtype=ref.dtype),
                 torch.tensor(self.std, device=ref.device, dtype=ref.dtype))
            self._stats_cache[k] = s
        return s

    def has_inference_tensors(self) -> bool:
        """True when weights, buffers or caches hold tensors made under ``torch.inference_mode()``."""
        ts = list(self.model.parameters()) + list(self.model.buffers()) + list(self._text_cache.values())
        ts += [t for pair in self._stats_cache.values() for t in pair]
        return any(t.is_inference() for t in ts)

    def for_autograd(self) -> "ClipModel":
        """This model, or a copy of it, that autograd can back-propagate through.

        Everything created inside ComfyUI's ``torch.inference_mode()`` (weights loaded by
        Load CLIP, cached text embeddings, normalisation constants) is an inference tensor,
        which autograd refuses to save for backward. The copy has ordinary weights (the
        same values) and empty caches; the original is never modified. Call it outside
        inference mode (the trainer and the inverter do).
        """
        if not self.has_inference_tensors():
            return self
        with torch.inference_mode(False):
            clone = copy.copy(self)
            net = copy.deepcopy(self.model)
            with torch.no_grad():
                net.load_state_dict({k: v.clone() for k, v in self.model.state_dict().items()}, assign=True)
            net.requires_grad_(False)
            clone.model = net
            clone._text_cache = {k: v.clone() for k, v in self._text_cache.items()}
            clone._stats_cache = {}
        return clone

    # -- images ------------------------------------------------------------------------
    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """Generator output (NCHW, [-1, 1]) -> this model's normalized input (differentiable)."""
        img = img.to(self.device)
        mean, std = self._stats(img)
        return to_clip_input(img, self.input_size, mean, std)

    def encode_generator_images(self, img: torch.Tensor) -> torch.Tensor:
        """Raw image embeddings of generator outputs (NCHW in [-1, 1]).

        Differentiable with respect to ``img`` (the model itself is frozen); runs under
        whatever grad mode the caller has set.
        """
        x = self.preprocess(img).to(self.dtype)
        return self.model.encode_image(x).float()

    def encode_pil_or_tensor_images(self, images, batch_size: int = 32) -> torch.Tensor:
        """Raw image embeddings of real images.

        ``images``: a ComfyUI ``IMAGE`` tensor (N, H, W, C) float in [0, 1] (C = 3; 4 drops
        alpha, 1 is repeated), a single (H, W, C) tensor, a PIL image, or a list of those
        (sizes may differ). Each image is mapped to [-1, 1] and goes through the same
        ``to_clip_input`` path as generator images. Differentiable when the input requires
        grad; wrap in ``torch.no_grad()`` when it does not matter.
        """
        out = []
        for batch in _iter_real_image_batches(images, batch_size):
            out.append(self.encode_generator_images(batch.to(self.device) * 2.0 - 1.0))
        if not out:
            raise ValueError("no images given")
        return torch.cat(out, dim=0)

    # -- text --------------------------------------------------------------------------
    def encode_text(self, texts: Union[str, Sequence[str]], batch_size: int = 256) -> torch.Tensor:
        """Raw text embeddings (N, D), float32, no grad.

        Each distinct text is encoded once per model and cached (key: the exact string).
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("no texts given")
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            with torch.no_grad():
                for i in range(0, len(missing), batch_size):
                    chunk = missing[i:i + batch_size]
                    tokens = self.tokenizer(chunk).to(self.device)
                    emb = self.model.encode_text(tokens).float()
                    for t, e in zip(chunk, emb):
                        self._text_cache[t] = e.detach()
        out = torch.stack([self._text_cache[t] for t in texts])
        if out.is_inference() and not torch.is_inference_mode_enabled():
            out = out.clone()   # an ordinary tensor: usable in a graph that is back-propagated
        return out


def _default_tokenizer(model: torch.nn.Module, name: str):
    import open_clip
    from open_clip.model import get_model_tokenize_cfg

    ctx = get_model_tokenize_cfg(model).get("context_length")
    schema = name.startswith(("hf-hub:", "local-dir:"))
    if schema or open_clip.get_model_config(name) is not None:
        return open_clip.get_tokenizer(name, context_length=ctx)
    # Unregistered names (e.g. an OpenAI archive loaded under a custom name): CLIP's BPE
    # tokenizer, bundled with open_clip.
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer(context_length=ctx or 77)


def _to_nhwc_tensor(img) -> torch.Tensor:
    if isinstance(img, torch.Tensor):
        t = img
    else:
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover
            Image = None
        if Image is not None and isinstance(img, Image.Image):
            import numpy as np
            arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
            t = torch.from_numpy(arr)
        else:
            raise TypeError(f"unsupported image type {type(img).__name__}; expected an IMAGE "
                            "tensor (N, H, W, C) in [0, 1] or a PIL image")
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an IMAGE tensor (N, H, W, C) with C in (1, 3, 4), got shape "
                         f"{tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float() / 255.0
    if t.shape[-1] == 4:
        t = t[..., :3]
    elif t.shape[-1] == 1:
        t = t.expand(*t.shape[:-1], 3)
    return t.permute(0, 3, 1, 2)


def _iter_real_image_batches(images, batch_size: int):
    """Yields NCHW [0, 1] batches from an IMAGE tensor, PIL image or list of those."""
    items = images if isinstance(images, (list, tuple)) else [images]
    for item in items:
        t = _to_nhwc_tensor(item)
        for i in range(0, t.shape[0], batch_size):
            yield t[i:i + batch_size]


def model_key(model: Union[ClipModel, str], pretrained: Optional[str] = None) -> str:
    """Stable identifier of a CLIP model: 'ViT-B-32' or 'ViT-B-32:openai'.

    For weights loaded from a file the file name (not the full path) is used, so the key
    is the same on every machine: 'ViT-B-32:ViT-B-32.pt'.
    """
    if isinstance(model, ClipModel):
        name, pretrained = model.name, model.pretrained
    else:
        name = model
    return f"{name}:{pretrained}" if pretrained else name


# -- finding local weights -------------------------------------------------------------

def _other_arch_prefixes(name: str) -> List[str]:
    """Registered architectures whose name extends ``name`` ('ViT-B-32-256' for 'ViT-B-32')."""
    try:
        import open_clip
        models = open_clip.list_models()
    except Exception:  # pragma: no cover
        models = []
    low = name.lower()
    return [m.lower() for m in models if m.lower() != low and m.lower().startswith(low)]


def _name_matches(stem: str, name: str, others: List[str]) -> bool:
    s, low = stem.lower(), name.lower()
    if not s.startswith(low):
        return False
    rest = s[len(low):]
    if rest and rest[0] not in "-_.@ ":
        return False
    return not any(s.startswith(o) and (len(s) == len(o) or s[len(o)] in "-_.@ ") for o in others)


def _weight_files(folder: Path) -> List[Path]:
    try:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    except OSError:
        return []


def _pick_in_model_folder(folder: Path, name: str, tag: Optional[str], others, generic_ok: bool):
    files = _weight_files(folder)
    exact, named, generic = [], [], []
    for p in files:
        if not _name_matches(p.stem, name, others):
            if generic_ok and p.name in GENERIC_WEIGHT_NAMES:
                generic.append(p)
            continue
        if p.stem.lower() == name.lower():
            exact.append(p)
        else:
            named.append(p)
    if tag is None:
        generic.sort(key=lambda p: GENERIC_WEIGHT_NAMES.index(p.name))
        return (exact + generic + named)[:1]
    ctag = _clean_tag(tag)
    tagged = [p for p in named if ctag in _clean_tag(p.stem[len(name):])]
    if tagged:
        return tagged[:1]
    if ctag == "openai":  # OpenAI publishes its weights as '<arch>.pt'
        return exact[:1]
    return []


def find_local_weights(name: str, search_dirs: Optional[Iterable[PathLike]],
                       pretrained: Optional[str] = None) -> Optional[Path]:
    """Find a weights file for architecture ``name`` in ``search_dirs``; None if none.

    Looked at, for each dir ``D`` in order: ``D/<name>/<tag>/`` (any weights file, the
    open_clip/HF names preferred), ``D/<name>/`` and ``D/`` itself. Files recognised:
    ``<name>.pt`` (OpenAI's archives, e.g. ``ViT-B-32.pt``), ``<name>*.safetensors|.bin|
    .pt|.pth`` (e.g. ``ViT-B-32-laion2b_s34b_b79k.safetensors``; names of other
    architectures such as ``ViT-B-32-256`` are not mistaken for ``ViT-B-32``), and inside
    ``D/<name>/`` the generic names ``open_clip_model.safetensors``,
    ``open_clip_pytorch_model.bin``...

    With a tag (``pretrained='laion2b_s34b_b79k'``) only files that can be told to hold
    that tag qualify: the tag in the file name, or any file in ``D/<name>/<tag>/``;
    ``<name>.pt`` counts as tag 'openai'. Without a tag the first match wins (exact name,
    then generic names, then other named files).
    """
    if not search_dirs:
        return None
    name = canonical_name(name)
    others = _other_arch_prefixes(name)
    for d in search_dirs:
        if d is None:
            continue
        d = Path(d)
        if not d.is_dir():
            continue
        if pretrained:
            tag_dirs = [d / name / pretrained]
            if _clean_tag(pretrained) != pretrained:
                tag_dirs.append(d / name / _clean_tag(pretrained))
            for td in tag_dirs:
                files = _weight_files(td)
                if files:
                    files.sort(key=lambda p: (GENERIC_WEIGHT_NAMES.index(p.name)
                                              if p.name in GENERIC_WEIGHT_NAMES else 99, p.name))
                    return files[0]
        for folder, generic_ok in ((d / name, True), (d, False)):
            found = _pick_in_model_folder(folder, name, pretrained, others, generic_ok)
            if found:
                return found[0]
    return None


def _where_to_put(name: str, tag: Optional[str], search_dirs) -> str:
    dirs = [Path(d) for d in (search_dirs or []) if d is not None]
    tag_txt = tag or DEFAULT_PRETRAINED
    if not dirs:
        return ("No folder to search was given: pass the weights file path as `pretrained`, "
                "or a folder holding it as `search_dirs`.")
    folder = dirs[0] / name
    examples = [f"'{name}-{tag_txt}.safetensors'",
                f"'{tag_txt}/open_clip_pytorch_model.bin'"]
    if _clean_tag(tag_txt) == "openai":
        examples.insert(0, f"OpenAI's '{name}.pt'")
    return (f"Put the weights into the folder {folder} (e.g. {', or '.join(examples)} inside "
            f"it); searched: {', '.join(str(d) for d in dirs)}.")


# -- loading ---------------------------------------------------------------------------

def _path_suggests_openai(path: Path) -> bool:
    return "openai" in path.name.lower() or "openai" in path.parent.name.lower()


def _resolve_weights(name: str, pretrained: Optional[str], search_dirs, cache_dir
                     ) -> Tuple[Path, Optional[str], Dict[str, Any]]:
    """(weights file, tag or None, open_clip pretrained cfg of the tag or {})."""
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    if pretrained is not None and os.path.isfile(pretrained):
        return Path(pretrained), None, {}
    if pretrained is not None and os.path.isdir(pretrained):
        found = find_local_weights(name, [pretrained])
        if found is None:
            raise ClipWeightsNotFoundError(
                f"No weights for CLIP '{name}' in folder {pretrained}. "
                + _where_to_put(name, None, [pretrained]))
        return found, None, {}

    tag = pretrained
    found = find_local_weights(name, search_dirs, tag)
    if found is not None:
        return found, tag, (get_pretrained_cfg(name, tag) if tag else {})
    if tag is None:
        tags = list_pretrained_tags_by_model(name)
        if not tags:
            raise ClipWeightsNotFoundError(
                f"No local weights for CLIP '{name}' and open_clip knows no pretrained tag for it. "
                + _where_to_put(name, None, search_dirs))
        tag = DEFAULT_PRETRAINED if DEFAULT_PRETRAINED in tags else tags[0]
    cfg = get_pretrained_cfg(name, tag)
    if not cfg:
        looks_like_path = any(sep in tag for sep in ("/", "\\")) or tag.lower().endswith(WEIGHT_SUFFIXES)
        if looks_like_path:
            raise ClipWeightsNotFoundError(f"CLIP weights file not found: {tag}")
        raise ValueError(f"Unknown pretrained tag '{tag}' for CLIP '{name}'. open_clip knows: "
                         f"{list_pretrained_tags_by_model(name)}; or pass a weights file path.")
    from ..catalogue.download import offline_reason
    why = offline_reason()
    if why:   # fail at once, before open_clip / huggingface_hub try the network
        raise ClipWeightsNotFoundError(
            f"No local weights for CLIP '{name}' / '{tag}' and downloads are off ({why}). "
            + _where_to_put(name, tag, search_dirs))
    import open_clip.pretrained as ocp
    try:
        target = ocp.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as e:  # network errors come in many types
        raise ClipWeightsNotFoundError(
            f"Could not download CLIP weights '{name}' / '{tag}' ({type(e).__name__}: {e}). "
            + _where_to_put(name, tag, search_dirs)) from e
    if not target or not os.path.isfile(target):
        raise ClipWeightsNotFoundError(
            f"open_clip returned no file for CLIP weights '{name}' / '{tag}'. "
            + _where_to_put(name, tag, search_dirs))
    return Path(target), tag, cfg


def _load_weights_file(name: str, path: Path, quick_gelu: Optional[bool], tag_cfg: Dict[str, Any],
                       cache_dir) -> torch.nn.Module:
    """Build the model for a local weights file. The file is untrusted: it is read with the
    pack's bounded readers (never ``torch.load``/``torch.jit.load``), and its tensors are
    compared with the architecture (built on the meta device) before the real model is
    allocated; problems are a ``ValueError`` naming the file."""
    from open_clip.model import set_model_preprocess_cfg

    from ..io.errors import UntrustedFileError
    from .torchscript import build_openai_clip, is_torchscript_archive, read_torchscript_state_dict

    if is_torchscript_archive(path):
        # OpenAI's JIT archives: read the tensors (no TorchScript is compiled or run) and
        # build a regular open_clip model; OpenAI trained with QuickGELU.
        try:
            sd = read_torchscript_state_dict(path)
            model = build_openai_clip(sd, quick_gelu=True if quick_gelu is None else quick_gelu, path=path)
        except UntrustedFileError as e:
            raise ValueError(f"{path} is a TorchScript archive but not a readable OpenAI CLIP model: "
                             f"{e.problem}") from None
        size = model.visual.image_size
        set_model_preprocess_cfg(model, {
            "size": size, "mode": "RGB", "mean": _OPENAI_MEAN, "std": _OPENAI_STD,
            "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0})
        return model
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get("quick_gelu", False)) or _path_suggests_openai(path)
    force_pp = {k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg} or None
    return _load_open_clip_state_dict(name, path, quick_gelu, force_pp)


class _DropRandomInitNotice(logging.Filter):
    """open_clip logs 'initialized randomly' when a model is built without weights; here
    the weights are loaded right after, so the notice would mislead."""

    def filter(self, record):
        return "initialized randomly" not in str(record.msg)


def _create_open_clip(name: str, quick_gelu: bool, force_pp, device):
    import inspect

    import open_clip
    kw = {}
    params = inspect.signature(open_clip.create_model).parameters
    for flag in ("pretrained_image", "pretrained_text", "pretrained_hf"):  # no downloads of tower weights
        if flag in params:
            kw[flag] = False
    root = logging.getLogger()
    quiet = _DropRandomInitNotice()
    root.addFilter(quiet)
    try:
        return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu,
                                      force_preprocess_cfg=force_pp, device=device, **kw)
    finally:
        root.removeFilter(quiet)


def read_state_dict_file(path) -> Dict[str, torch.Tensor]:
    """The tensors of an open_clip weights file (.safetensors, or a torch.save .bin/.pt/.pth,
    optionally wrapped in ``{'state_dict': ...}`` and/or prefixed ``module.``), read with the
    pack's bounded readers. Raises ``UntrustedFileError`` naming the file."""
    from ..io.errors import UntrustedFileError, describe
    from ..io.safetensors_files import read_safetensors
    from ..io.torch_files import read_torch_file

    with open(os.fspath(path), "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK"):
        sd, _ = read_safetensors(path)
    else:
        sd = read_torch_file(path, what="the weights file")
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise UntrustedFileError(path, f"holds {describe(sd)}, expected a state dict of tensors")
    for k, v in sd.items():
        if type(k) is not str or not isinstance(v, torch.Tensor):
            raise UntrustedFileError(path, f"entry {describe(k)} is {describe(v)}; a state dict maps names to tensors")
    if sd and next(iter(sd)).startswith("module"):
        sd = {k[7:]: v for k, v in sd.items()}
    return sd


def _load_open_clip_state_dict(name: str, path: Path, quick_gelu: bool, force_pp) -> torch.nn.Module:
    from open_clip.model import resize_pos_embed, resize_text_pos_embed

    from ..io.errors import UntrustedFileError, describe

    def fail(problem):
        raise ValueError(f"{path}: cannot be loaded as open_clip architecture '{name}': {problem}") from None

    try:
        sd = read_state_dict_file(path)
    except UntrustedFileError as e:
        fail(e.problem)
    # The architecture comes from open_clip's own config for `name`; build it on the meta
    # device and bring the file's state dict into its layout the way open_clip does.
    try:
        with torch.device("meta"):
            meta = _create_open_clip(name, quick_gelu, force_pp, "meta")
    except Exception as e:  # noqa: BLE001 - unknown names, bad configs
        raise RuntimeError(f"Could not build open_clip architecture '{name}': {e}") from e
    try:
        sd = _to_open_clip_layout(meta, sd)
        resize_pos_embed(sd, meta)
        resize_text_pos_embed(sd, meta)
    except Exception as e:  # noqa: BLE001 - malformed tensors
        fail(f"its tensors do not fit ({type(e).__name__}: {str(e)[:200]})")
    expected = meta.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        fail(f"missing tensors {describe(missing[:5], 300)}, unexpected tensors {describe(unexpected[:5], 300)}")
    for k, ref in expected.items():
        t = sd[k]
        if tuple(t.shape) != tuple(ref.shape):
            fail(f"tensor {k!r} has shape {list(t.shape)}, the architecture expects {list(ref.shape)}")
        if ref.is_floating_point() and not t.is_floating_point():
            fail(f"tensor {k!r} has dtype {t.dtype}; weights must be floating point")
    del meta
    model = _create_open_clip(name, quick_gelu, force_pp, "cpu")
    model.load_state_dict(sd, strict=True)
    return model


def _to_open_clip_layout(model, sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The state-dict conversions open_clip's ``load_checkpoint`` applies (its own functions)."""
    from open_clip.model import convert_to_custom_text_state_dict
    try:
        from open_clip.convert import convert_state_dict
    except ImportError:  # pragma: no cover - older open_clip
        def convert_state_dict(_model, d):
            return d

    sd = convert_state_dict(model, dict(sd))
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    for key in ("logit_scale", "logit_bias"):
        ref = getattr(model, key, None)
        if key in sd and isinstance(ref, torch.Tensor) and ref.ndim != sd[key].ndim:
            if sd[key].numel() != ref.numel():
                raise ValueError(f"{key} has {sd[key].numel()} values, expected {ref.numel()}")
            sd[key] = sd[key].reshape(ref.shape)
    if "logit_bias" not in sd and getattr(model, "logit_bias", None) is not None and "logit_scale" in sd:
        sd["logit_bias"] = torch.zeros_like(sd["logit_scale"])
    position_id_key = "text.transformer.embeddings.position_ids"
    if position_id_key in sd and not hasattr(model, position_id_key):
        del sd[position_id_key]
    return sd


def load_clip(name: str, pretrained: Optional[str] = None, device: Union[str, torch.device] = "cpu",
              dtype: torch.dtype = torch.float32, cache_dir: Optional[PathLike] = None,
              search_dirs: Optional[Iterable[PathLike]] = None,
              quick_gelu: Optional[bool] = None) -> ClipModel:
    """Load a frozen CLIP model.

    Args:
        name: open_clip architecture ('ViT-B-32', 'ViT-B-16', 'RN50', ...; 'ViT-B/32' works).
        pretrained: one of
            - a weights file: OpenAI TorchScript archive (detected by content; read as
              data, see ``torchscript.py``) or an open_clip state dict
              (.safetensors/.bin/.pt/.pth, read by open_clip with ``weights_only``);
            - a folder holding such a file (see :func:`find_local_weights`);
            - an open_clip tag ('openai', 'laion2b_s34b_b79k'): a matching file in
              ``search_dirs`` is used if present, else open_clip downloads it (into
              ``cache_dir``); if that fails a :class:`ClipWeightsNotFoundError` names the
              folder to put the file in;
            - None: any local file for ``name`` in ``search_dirs``, else the 'openai' tag;
            - ``'random'``: random weights (benchmarks only).
        device, dtype: where/how the model runs (the whole model is cast to ``dtype``).
        quick_gelu: activation override; default: True for OpenAI archives and for tags
            (or file/folder names) that say 'openai', else the architecture's default.
            OpenAI's weights give wrong embeddings with plain GELU.

    Returns a :class:`ClipModel` in eval mode whose parameters do not require grad.
    """
    import open_clip

    name = canonical_name(name)
    if pretrained is not None:
        pretrained = os.fspath(pretrained)
    if pretrained == RANDOM_WEIGHTS:
        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=bool(quick_gelu))
        label = RANDOM_WEIGHTS
    else:
        path, tag, cfg = _resolve_weights(name, pretrained, search_dirs, cache_dir)
        log.info("loading CLIP %s from %s", name, path)
        model = _load_weights_file(name, path, quick_gelu, cfg, cache_dir)
        label = tag or path.name
    model.to(device=device, dtype=dtype)
    return ClipModel(model, name=name, pretrained=label, dtype=dtype)
