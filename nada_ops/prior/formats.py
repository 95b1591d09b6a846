"""Prior files: this pack's own format (safetensors + metadata) and clip2latent's released
checkpoints (``.ckpt`` + a ``.yaml`` beside it).

Our format (``format`` = ``nada-prior``, ``format_version`` = ``1``):

- tensors: ``net.<name>`` for every weight of :class:`~.network.PriorNetwork`, ``w_mean`` and
  ``w_std`` ([num_latents, latent_dim]: the statistics w is standardised with);
- metadata (strings): ``config`` (JSON of :class:`~.config.PriorConfig`), ``provenance`` (JSON:
  ``generator`` (name, file, resolution, w_dim, num_ws), ``clip`` (name, pretrained, key,
  embed_dim), ``training`` (settings, steps, pairs, validation), ``weights`` ('ema' / 'online'),
  ``notes``), ``name``.

clip2latent checkpoints (``torch.save({"state_dict": DiffusionPriorTrainer.state_dict()})``)
hold the online prior (``diffusion_prior.*``, again under ``ema_diffusion_prior.online_model.*``),
its EMA copy (``ema_diffusion_prior.ema_model.*``), two EMA counters and a step counter: plain
tensors in ordered dicts, read with the pack's bounded torch-file reader and no extra global.
The architecture is read off the tensor shapes; the ``.yaml`` beside the file (read by the
pack's small YAML subset reader, never by a YAML library) adds the settings shapes cannot
tell (condition dropout, scales, W+ groups, CLIP model) and is checked against the shapes.
"""
from __future__ import annotations

import json
import math
import os
import re

import torch

from ..fileio import atomic_write
from ..io.errors import UntrustedFileError, describe, path_text
from ..io.safetensors_files import format_problem, loads_json, read_safetensors_data, read_safetensors_header
from ..io.tensors import FLOAT_DTYPES
from .config import PriorConfig, PriorConfigError
from .diffusion import cosine_betas
from .model import LatentPrior
from .network import PriorNetwork, rotary_frequencies

FORMAT_NAME = "nada-prior"
FORMAT_VERSION = "1"
REFERENCE_FORMAT = "clip2latent-ckpt"
MAX_PROVENANCE_DEPTH = 16
PRIOR_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth")


class PriorFileError(ValueError):
    """A prior file cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = path_text(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# ====================================================================== our format
def prior_state(prior: LatentPrior) -> dict[str, torch.Tensor]:
    sd = {f"net.{k}": v for k, v in prior.net.state_dict().items()}
    sd["w_mean"] = prior.w_mean
    sd["w_std"] = prior.w_std
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in sd.items()}


def write_prior(prior: LatentPrior, path) -> None:
    """Save ``prior`` atomically as this pack's .safetensors."""
    from ..io.safetensors_files import write_safetensors
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": prior.cfg.to_json(),
            "provenance": json.dumps(prior.provenance, sort_keys=True, default=str), "name": str(prior.name)}
    sd = prior_state(prior)
    atomic_write(path, lambda tmp: write_safetensors(tmp, sd, meta))


def expected_shapes(cfg: PriorConfig) -> dict[str, tuple]:
    with torch.device("meta"):
        net = PriorNetwork(cfg)
    out = {f"net.{k}": tuple(v.shape) for k, v in net.state_dict().items()}
    out["w_mean"] = out["w_std"] = (cfg.num_latents, cfg.latent_dim)
    return out


def _meta_json(meta, key, path, max_depth, default=None):
    text = meta.get(key, default)
    if text is None:
        raise PriorFileError(path, f"metadata field {key!r} is missing")
    try:
        return loads_json(text, f"metadata field {key!r}", path, max_depth=max_depth)
    except UntrustedFileError as e:
        raise PriorFileError(path, e.problem) from None


def read_prior_file(path, device="cpu") -> LatentPrior:
    """Read this pack's prior format: metadata, config and every tensor's name, shape and
    dtype are checked before the data is read; values must be finite, std > 0."""
    from ..io.torch_files import open_untrusted
    try:
        with open_untrusted(path) as (fh, budget):
            header = read_safetensors_header(fh, path, budget)
            meta = header.metadata
            problem = format_problem(meta, FORMAT_NAME, FORMAT_VERSION, "a prior")
            if problem:
                raise PriorFileError(path, problem)
            try:
                cfg = PriorConfig.from_dict(_meta_json(meta, "config", path, 3), where="metadata field 'config'")
            except (PriorConfigError, TypeError) as e:
                raise PriorFileError(path, str(e)) from None
            prov = _meta_json(meta, "provenance", path, MAX_PROVENANCE_DEPTH, "{}")
            if not isinstance(prov, dict):
                raise PriorFileError(path, "metadata field 'provenance' is not a JSON object")
            expected = expected_shapes(cfg)
            need = sum(math.prod(s) for s in expected.values()) * 2
            if need > header.data_size:
                raise PriorFileError(path, f"the declared network needs at least {need:,} bytes of weights; the file "
                                           f"holds {header.data_size:,}")
            got = header.entries
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            if missing or extra:
                raise PriorFileError(path, f"tensors do not fit the declared network: missing {describe(missing[:4], 200)}"
                                           f", unexpected {describe(extra[:4], 200)}")
            for k, shape in expected.items():
                dtype, s, _, _ = got[k]
                if s != shape:
                    raise PriorFileError(path, f"tensor {k!r} has shape {list(s)}, the config expects {list(shape)}")
                if dtype not in FLOAT_DTYPES:
                    raise PriorFileError(path, f"tensor {k!r} has dtype {dtype}; weights must be floating point")
            sd = read_safetensors_data(fh, header, budget)
    except UntrustedFileError as e:
        raise PriorFileError(path, e.problem) from None
    sd = {k: v.float() for k, v in sd.items()}
    name = meta.get("name") or os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return _build(path, cfg, {k[4:]: v for k, v in sd.items() if k.startswith("net.")}, sd["w_mean"],
                  sd["w_std"], str(name)[:200], FORMAT_NAME, prov, device)


def _build(path, cfg, net_sd, mean, std, name, fmt, prov, device) -> LatentPrior:
    for k, v in list(net_sd.items()) + [("w_mean", mean), ("w_std", std)]:
        if not torch.isfinite(v).all():
            raise PriorFileError(path, f"tensor {k!r} contains NaN or Inf values")
    if not (std > 0).all():
        raise PriorFileError(path, "w_std has values <= 0 (the standardisation statistics are broken)")
    net = PriorNetwork(cfg)
    try:
        net.load_state_dict(net_sd, strict=True)
    except RuntimeError as e:
        raise PriorFileError(path, f"weights do not fit the network: {str(e)[:400]}") from None
    net.eval().requires_grad_(False)
    prov = dict(prov)
    prov.setdefault("source_file", os.path.basename(os.fspath(path)))
    return LatentPrior(net=net.to(device), w_mean=mean.reshape(cfg.num_latents, cfg.latent_dim).to(device),
                       w_std=std.reshape(cfg.num_latents, cfg.latent_dim).to(device), name=name,
                       source_format=fmt, provenance=prov)


# ====================================================================== clip2latent checkpoints
#: Prefixes of the trainer's state dict: EMA weights (what clip2latent samples with) and online weights.
TRAINER_PREFIXES = {"ema": "ema_diffusion_prior.ema_model.", "online": "diffusion_prior."}
_SCHEDULE_BUFFERS = {"betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                     "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                     "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                     "posterior_mean_coef1", "posterior_mean_coef2"}
_LAYER = re.compile(r"^net\.causal_transformer\.layers\.(\d{1,4})\.(.+)$")
# reference name inside a layer -> (our name, kind)
_LAYER_MAP = {
    "0.norm.gamma": "attn.norm", "0.null_kv": "attn.null_kv", "0.to_q.weight": "attn.to_q",
    "0.to_kv.weight": "attn.to_kv", "0.to_out.0.weight": "attn.to_out", "0.to_out.1.gamma": "attn.out_norm",
    "1.0.gamma": "ff.norm", "1.1.weight": "ff.proj_in", "1.5.weight": "ff.proj_out",
}
_ZERO_BETAS = {"0.norm.beta", "0.to_out.1.beta", "1.0.beta"}
_TOP_MAP = {"net.to_time_embeds.0.weight": "time_embed", "net.learned_query": "query",
            "net.causal_transformer.rel_pos_bias.relative_attention_bias.weight": "rel_pos_bias",
            "net.causal_transformer.norm.gamma": "norm_out",
            "net.causal_transformer.project_out.weight": "project_out"}


def find_config_beside(path) -> str | None:
    stem = os.path.splitext(os.fspath(path))[0]
    for ext in (".yaml", ".yml"):
        if os.path.isfile(stem + ext):
            return stem + ext
    return None


def read_reference_checkpoint(path, config_path=None, weights: str = "ema", device="cpu") -> LatentPrior:
    """A clip2latent ``.ckpt`` as a :class:`LatentPrior` (EMA weights by default, as clip2latent
    samples). ``config_path``: its ``.yaml`` (default: the same name beside the checkpoint)."""
    from ..io.pickles import AllowList
    from ..io.torch_files import read_torch_file
    if weights not in TRAINER_PREFIXES:
        raise ValueError(f"weights must be one of {sorted(TRAINER_PREFIXES)}")
    try:
        # What the file holds: dicts / OrderedDicts of tensors (torch's own rebuild functions);
        # nothing beyond the bounded reader's torch allow-list is accepted.
        obj = read_torch_file(path, allow=AllowList(), what="the clip2latent checkpoint")
    except UntrustedFileError as e:
        raise PriorFileError(path, e.problem) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise PriorFileError(path, f"holds {describe(obj)}; a clip2latent checkpoint is a dict with a 'state_dict'")
    sd = obj["state_dict"]
    for k, v in sd.items():
        if type(k) is not str or not isinstance(v, torch.Tensor):
            raise PriorFileError(path, f"state_dict entry {describe(k)} is {describe(v)}, not a tensor")
    prefix = TRAINER_PREFIXES[weights]
    own = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    notes = []
    if not own:
        if any(k.startswith("net.") for k in sd):          # a bare LatentPrior state dict
            own, prefix = dict(sd), ""
            notes.append("a bare prior state dict (no trainer, no EMA)")
        else:
            raise PriorFileError(path, f"no tensors under {prefix!r}: not a clip2latent DiffusionPriorTrainer "
                                       f"checkpoint (first keys: {describe(list(sd)[:4], 200)})")
    yaml_path = config_path or find_config_beside(path)
    ycfg = None
    if yaml_path:
        from .yaml_subset import parse_yaml
        with open(yaml_path, "rb") as fh:
            raw = fh.read(512 * 1024 + 1)
        ycfg = parse_yaml(raw, yaml_path)
    cfg, net_sd, mean, std, extra_notes, prov_cfg = reference_to_ours(path, own, ycfg)
    notes += extra_notes
    if weights == "online":
        notes.append("online (non-EMA) weights")
    prov = {"source_file": os.path.basename(os.fspath(path)), "weights": weights,
            "config_file": os.path.basename(yaml_path) if yaml_path else None, "notes": notes, **prov_cfg}
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return _build(path, cfg, net_sd, mean, std, name, REFERENCE_FORMAT, prov, device)


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def reference_to_ours(path, own: dict, ycfg: dict | None):
    """Map a reference LatentPrior state dict (keys relative to the prior) to our network."""
    def fail(msg):
        raise PriorFileError(path, msg)

    def need(key, ndim):
        t = own.get(key)
        if t is None:
            fail(f"tensor {key!r} is missing")
        if t.ndim != ndim or not t.is_floating_point():
            fail(f"tensor {key!r} has shape {list(t.shape)} / dtype {t.dtype}; expected a {ndim}-d float tensor")
        return t

    te = need("net.to_time_embeds.0.weight", 2)
    T, dim = int(te.shape[0]), int(te.shape[1])
    rel = need("net.causal_transformer.rel_pos_bias.relative_attention_bias.weight", 2)
    buckets, heads = int(rel.shape[0]), int(rel.shape[1])
    q = need("net.learned_query", 1 if own["net.learned_query"].ndim == 1 else 2)
    num_latents = 1 if q.ndim == 1 else int(q.shape[0])
    layer_ids = sorted({int(m.group(1)) for k in own for m in [_LAYER.match(k)] if m})
    if not layer_ids or layer_ids != list(range(len(layer_ids))):
        fail(f"transformer layers are not numbered 0..N-1 (found {describe(layer_ids[:8])})")
    depth = len(layer_ids)
    dim_head = int(need("net.causal_transformer.layers.0.0.null_kv", 2).shape[1])
    ff_inner = int(need("net.causal_transformer.layers.0.1.5.weight", 2).shape[1])
    if dim <= 0 or ff_inner % dim:
        fail(f"feed-forward width {ff_inner} is not a multiple of the width {dim}")
    freqs = own.get("net.causal_transformer.layers.0.0.rotary_emb.freqs")
    rotary_dim = 2 * int(freqs.numel()) if freqs is not None else min(32, dim_head)
    notes = []
    net = _get(ycfg, "model", "network") or {}
    diff = _get(ycfg, "model", "diffusion") or {}
    data = _get(ycfg, "data") or {}
    for key, have in (("dim", dim), ("depth", depth), ("heads", heads), ("dim_head", dim_head),
                      ("num_timesteps", T)):
        if key in net and net[key] != have:
            fail(f"the config says model.network.{key} = {describe(net[key])} but the tensors have {have}")
    if "timesteps" in diff and diff["timesteps"] != T:
        fail(f"the config says model.diffusion.timesteps = {describe(diff['timesteps'])}, the tensors have {T}")
    if diff.get("predict_x_start", True) is not True:
        fail("the config says predict_x_start: false (noise prediction); clip2latent priors predict x0")
    if diff.get("beta_schedule", "cosine") != "cosine":
        fail(f"beta schedule {describe(diff.get('beta_schedule'))} is not supported (clip2latent uses cosine)")
    for k in ("sampling_clamp_l2norm", "training_clamp_l2norm", "init_image_embed_l2norm"):
        if diff.get(k):
            fail(f"model.diffusion.{k} is set; clip2latent priors never use it and it is not supported")
    required = {"ff_mult": ff_inner // dim, "normformer": False, "rotary_emb": True, "final_proj": True,
                "norm_out": True, "num_time_embeds": 1, "num_image_embeds": 1, "num_text_embeds": 1}
    for k, want in required.items():
        if k in net and net[k] != want:
            fail(f"model.network.{k} = {describe(net[k])}: an architecture this reader does not reproduce "
                 f"(needs {want})")
    n_yaml = data.get("n_latents", num_latents)
    if n_yaml != num_latents:
        fail(f"the config says data.n_latents = {describe(n_yaml)}, the learned query holds {num_latents}")
    repeats = data.get("latent_repeats")
    if repeats is not None and (not isinstance(repeats, list) or not all(type(r) is int for r in repeats)):
        fail(f"data.latent_repeats must be a list of integers, got {describe(repeats)}")

    def num(v, key, default):
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            fail(f"{key} must be a number, got {describe(v)}")
        return float(v)

    try:
        cfg = PriorConfig(dim=dim, depth=depth, heads=heads, dim_head=dim_head, ff_mult=ff_inner // dim,
                          num_timesteps=T, num_latents=num_latents, latent_dim=dim, cond_dim=dim,
                          rotary_dim=rotary_dim, rel_pos_buckets=buckets,
                          cond_drop_prob=num(diff.get("cond_drop_prob"), "model.diffusion.cond_drop_prob", 0.2),
                          latent_scale=num(diff.get("image_embed_scale"), "model.diffusion.image_embed_scale", 1.0),
                          cond_scale=num(diff.get("text_embed_scale"), "model.diffusion.text_embed_scale", 1.0),
                          cond_norm="raw",
                          latent_repeats=tuple(repeats) if repeats and (len(repeats) > 1 or num_latents > 1) else ()
                          ).validate("the checkpoint's architecture")
    except PriorConfigError as e:
        fail(str(e))
    if ycfg is None:
        notes.append("no .yaml beside the checkpoint: condition dropout 0.2 and scales 1.0 of clip2latent's own "
                     "configs assumed, W repeated to every W+ entry")

    # the tensors, by name
    out: dict[str, torch.Tensor] = {}
    known = set(_TOP_MAP) | {"latent_mean", "latent_std", "embed_mean", "embed_std"} | _SCHEDULE_BUFFERS
    known |= {"net.causal_transformer.norm.beta"}
    for k, ours in _TOP_MAP.items():
        out[ours] = need(k, own[k].ndim if k in own else 1)
    out["query"] = out["query"].reshape(num_latents, dim)
    for i in range(depth):
        base = f"net.causal_transformer.layers.{i}."
        for ref, ours in _LAYER_MAP.items():
            t = own.get(base + ref)
            if t is None:
                fail(f"tensor {base + ref!r} is missing")
            out[f"layers.{i}.{ours}"] = t
            known.add(base + ref)
        for ref in _ZERO_BETAS:
            t = own.get(base + ref)
            known.add(base + ref)
            if t is not None and (not t.is_floating_point() or t.abs().max() != 0):
                fail(f"LayerNorm offset {base + ref!r} is not zero (the reference keeps it at zero)")
        fk = base + "0.rotary_emb.freqs"
        known.add(fk)
        f = own.get(fk)
        if f is not None and (f.shape != (rotary_dim // 2,) or
                              not torch.allclose(f.float(), rotary_frequencies(rotary_dim), rtol=1e-5, atol=0)):
            fail(f"rotary frequencies {fk!r} are not the standard 1/10000^(2i/d) ones")
    beta = own.get("net.causal_transformer.norm.beta")
    if beta is not None and (not beta.is_floating_point() or beta.abs().max() != 0):
        fail("the final LayerNorm offset is not zero")
    unknown = sorted(k for k in own if k not in known)
    if unknown:
        fail(f"tensors this reader does not know: {describe(unknown[:5], 300)} (another prior architecture?)")
    betas = own.get("betas")
    if betas is not None:
        if betas.shape != (T,) or not torch.allclose(betas.double(), cosine_betas(T), atol=1e-6, rtol=0):
            fail("its noise schedule ('betas') is not the cosine schedule of "
                 f"{T} steps")
    if "embed_mean" in own:
        notes.append("condition statistics (embed_mean/std) present but not applied: clip2latent does not apply "
                     "them either (its normalise_data result is discarded)")
    mean = need("latent_mean", own["latent_mean"].ndim if "latent_mean" in own else 1)
    std = need("latent_std", own["latent_std"].ndim if "latent_std" in own else 1)
    if mean.numel() != num_latents * dim or std.numel() != num_latents * dim:
        fail(f"latent_mean / latent_std have {mean.numel()} / {std.numel()} values; expected {num_latents * dim}")
    shapes = expected_shapes(cfg)
    for k, t in out.items():
        if tuple(t.shape) != shapes[f"net.{k}"]:
            fail(f"tensor for {k!r} has shape {list(t.shape)}, expected {list(shapes['net.' + k])}")
        if not t.is_floating_point():
            fail(f"tensor for {k!r} has dtype {t.dtype}")
    out = {k: v.float().clone() for k, v in out.items()}
    clip_variant = data.get("clip_variant")
    prov = {"reference_config": {k: v for k, v in {
        "n_latents": num_latents, "latent_repeats": repeats, "embed_noise_scale": data.get("embed_noise_scale"),
        "sg_pkl": data.get("sg_pkl"), "clip_variant": clip_variant}.items() if v is not None}}
    if isinstance(clip_variant, str):
        from ..clip.models import canonical_name
        prov["clip"] = {"name": canonical_name(clip_variant), "pretrained": "openai", "embed_dim": dim}
    elif ycfg is None:
        prov["clip"] = {"embed_dim": dim}
    if isinstance(data.get("sg_pkl"), str):
        prov["generator"] = {"file": data["sg_pkl"].rsplit("/", 1)[-1][:200]}
    return cfg, out, mean.float().clone(), std.float().clone(), notes, prov


# ====================================================================== any prior file
def load_prior(path, device="cpu", weights: str = "ema") -> LatentPrior:
    """Load a prior: this pack's .safetensors, or a clip2latent .ckpt (torch.save) with its .yaml
    beside it. The format is detected from the content."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise PriorFileError(p, "file does not exist" if not os.path.exists(p) else "is not a file")
    with open(p, "rb") as fh:
        head = fh.read(16)
    if len(head) >= 9 and head[8:9] == b"{" and head[:4] != b"PK\x03\x04":
        return read_prior_file(p, device)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return read_reference_checkpoint(p, weights=weights, device=device)
    raise PriorFileError(p, "not a prior file: expected this pack's .safetensors or a clip2latent .ckpt "
                            f"(first bytes {head[:8].hex()})")
