"""Test-side helpers for clip2latent priors: files in clip2latent's own checkpoint layout
(written from code, random weights) and an independent float64 implementation of the
reference computation, written from its description (per head, complex rotations, explicit
T5 buckets) to check the pack's network and its reading of reference checkpoints."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

TRAINER = "ema_diffusion_prior.ema_model."


def reference_state_dict(dim=16, depth=2, heads=2, dim_head=8, T=1000, n_latents=1, seed=0, ff_mult=4):
    """A DALLE2-pytorch 0.2.38 / clip2latent LatentPrior state dict (names and shapes as theirs)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=0.3: torch.randn(*s, generator=g) * scale  # noqa: E731
    rd = min(32, dim_head)
    sd = OrderedDict()
    from nada_ops.prior.diffusion import cosine_betas
    betas = cosine_betas(T)
    acp = torch.cumprod(1 - betas, 0)
    sd["betas"] = betas.float()
    sd["alphas_cumprod"] = acp.float()
    sd["latent_mean"] = r(dim) if n_latents == 1 else r(n_latents, dim)
    sd["latent_std"] = (torch.rand(dim if n_latents == 1 else (n_latents, dim), generator=g) + 0.5)
    sd["net.learned_query"] = r(dim, scale=1.0) if n_latents == 1 else r(n_latents, dim, scale=1.0)
    sd["net.to_time_embeds.0.weight"] = r(T, dim, scale=1.0)
    sd["net.causal_transformer.rel_pos_bias.relative_attention_bias.weight"] = r(32, heads, scale=1.0)
    freqs = 1.0 / (10000 ** (torch.arange(0, rd, 2)[: rd // 2].float() / rd))
    for i in range(depth):
        b = f"net.causal_transformer.layers.{i}."
        sd[b + "0.null_kv"] = r(2, dim_head, scale=1.0)
        sd[b + "0.norm.gamma"] = 1 + r(dim, scale=0.1)
        sd[b + "0.norm.beta"] = torch.zeros(dim)
        sd[b + "0.to_q.weight"] = r(heads * dim_head, dim)
        sd[b + "0.to_kv.weight"] = r(2 * dim_head, dim)
        sd[b + "0.rotary_emb.freqs"] = freqs.clone()
        sd[b + "0.to_out.0.weight"] = r(dim, heads * dim_head)
        sd[b + "0.to_out.1.gamma"] = 1 + r(dim, scale=0.1)
        sd[b + "0.to_out.1.beta"] = torch.zeros(dim)
        sd[b + "1.0.gamma"] = 1 + r(dim, scale=0.1)
        sd[b + "1.0.beta"] = torch.zeros(dim)
        sd[b + "1.1.weight"] = r(2 * ff_mult * dim, dim)
        sd[b + "1.5.weight"] = r(dim, ff_mult * dim)
    sd["net.causal_transformer.norm.gamma"] = 1 + r(dim, scale=0.1)
    sd["net.causal_transformer.norm.beta"] = torch.zeros(dim)
    sd["net.causal_transformer.project_out.weight"] = r(dim, dim)
    return sd


def trainer_checkpoint(ema: OrderedDict, online: OrderedDict) -> dict:
    """``{"state_dict": DiffusionPriorTrainer.state_dict()}`` as clip2latent's Checkpointer saves it."""
    sd = OrderedDict()
    for k, v in online.items():
        sd["diffusion_prior." + k] = v
    for k, v in online.items():
        sd["ema_diffusion_prior.online_model." + k] = v
    for k, v in ema.items():
        sd[TRAINER + k] = v
    sd["ema_diffusion_prior.initted"] = torch.tensor([0.0])
    sd["ema_diffusion_prior.step"] = torch.tensor([1234.0])
    sd["step"] = torch.tensor([1234.0])
    return {"state_dict": sd}


def reference_yaml(dim=16, depth=2, heads=2, dim_head=8, T=1000, repeats=(8,), n_latents=1, drop=0.2) -> str:
    """The hydra/OmegaConf config clip2latent saves beside a checkpoint (interpolations unresolved)."""
    reps = "\n".join(f"  - {r}" for r in repeats)
    return f"""logging: wandb
wandb_project: clip2latent
wandb_entity: null
name: null
device: cuda:0
resume: null
train:
  znorm_embed: false
  znorm_latent: true
  max_it: 1_000_000
  lr: 1.0e-4
  weight_decay: 0.01
  ema_beta: 0.9999
model:
  network:
    dim: {dim}
    num_timesteps: {T}
    depth: {depth}
    dim_head: {dim_head}
    heads: {heads}
  diffusion:
    image_embed_dim: ${{model.network.dim}}
    timesteps: ${{model.network.num_timesteps}}
    cond_drop_prob: {drop}
    image_embed_scale: 1.0
    text_embed_scale: 1.0
    beta_schedule: "cosine"   # comment
    predict_x_start: true
data:
  bs: 512
  format: webdataset
  path: data/webdataset/sg2-ffhq-1024-clip/{{00000..99}}.tar
  embed_noise_scale: 1.0
  sg_pkl: https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/stylegan2-ffhq-1024x1024.pkl
  clip_variant: ViT-B/32
  n_latents: {n_latents}
  latent_dim: {dim}
  latent_repeats:
{reps}
  val_text_samples: text/face-val.txt
"""


# ------------------------------------------------------------------ float64 reference computation
def _bucket(d: int, num_buckets=32, max_distance=128) -> int:
    d = max(d, 0)
    exact = num_buckets // 2
    if d < exact:
        return d
    return min(num_buckets - 1, exact + int(math.log(d / exact) / math.log(max_distance / exact) * (num_buckets - exact)))


def _ln(x, g):
    m = x.mean(-1, keepdim=True)
    v = ((x - m) ** 2).mean(-1, keepdim=True)
    return (x - m) / torch.sqrt(v + 1e-5) * g


def _rotate(x, pos, rd):
    """Rotate feature pairs (2j, 2j+1), j < rd/2, by pos x f_j (as complex numbers), with the
    reference's float32 frequencies f_j = 1 / 10000^(2j/rd)."""
    out = x.clone()
    freqs = 1.0 / (10000 ** (torch.arange(0, rd, 2).float() / rd))
    for j in range(rd // 2):
        theta = pos * float(freqs[j])
        z = complex(float(x[2 * j]), float(x[2 * j + 1])) * complex(math.cos(theta), math.sin(theta))
        out[2 * j], out[2 * j + 1] = z.real, z.imag
    return out


def reference_forward(sd, x, t, c, keep, heads, dim_head):
    """The reference prior network for ONE sample in float64, from its description:
    tokens [c, time(t), x_1..x_n, q_1..q_n]; per layer x += attn(x); x += ff(x)."""
    sd = {k: v.double() for k, v in sd.items()}
    q_learn = sd["net.learned_query"].reshape(-1, sd["net.learned_query"].shape[-1])
    nl = q_learn.shape[0]
    xs = x.double().reshape(nl, -1)
    toks = torch.cat([c.double()[None], sd["net.to_time_embeds.0.weight"][int(t)][None], xs, q_learn])
    n = toks.shape[0]
    rel = sd["net.causal_transformer.rel_pos_bias.relative_attention_bias.weight"]
    rd = min(32, dim_head)
    depth = len({k.split(".")[3] for k in sd if k.startswith("net.causal_transformer.layers.")})
    for i in range(depth):
        b = f"net.causal_transformer.layers.{i}."
        h = _ln(toks, sd[b + "0.norm.gamma"])
        kv = h @ sd[b + "0.to_kv.weight"].T
        ks = [sd[b + "0.null_kv"][0]] + [_rotate(kv[m, :dim_head], m, rd) for m in range(n)]
        vs = [sd[b + "0.null_kv"][1]] + [kv[m, dim_head:] for m in range(n)]
        qall = h @ sd[b + "0.to_q.weight"].T
        out = torch.zeros(n, heads * dim_head, dtype=torch.float64)
        for qi in range(n):
            for hh in range(heads):
                q = _rotate(qall[qi, hh * dim_head:(hh + 1) * dim_head] * dim_head ** -0.5, qi, rd)
                scores, vals = [], []
                for j in range(n + 1):                       # key j: 0 = null, m + 1 = token m
                    if j >= 1 and (j - 1 > qi or (j == 1 and not keep)):
                        continue
                    scores.append(float(q @ ks[j]) + float(rel[_bucket(qi - j), hh]))
                    vals.append(vs[j])
                w = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0)
                out[qi, hh * dim_head:(hh + 1) * dim_head] = sum(wi * vi for wi, vi in zip(w, vals))
        toks = toks + _ln(out @ sd[b + "0.to_out.0.weight"].T, sd[b + "0.to_out.1.gamma"])
        hf = _ln(toks, sd[b + "1.0.gamma"]) @ sd[b + "1.1.weight"].T
        a, gate = hf.chunk(2, dim=-1)
        toks = toks + (a * gate * torch.sigmoid(gate)) @ sd[b + "1.5.weight"].T
    out = _ln(toks, sd["net.causal_transformer.norm.gamma"]) @ sd["net.causal_transformer.project_out.weight"].T
    return out[-nl:]


def reference_chain(predict, x_init, noises, T, skip):
    """clip2latent's respaced ancestral sampling in float64 from its description: timesteps
    T - skip, ..., skip, 0; the mean uses the respaced chain, the noise the FULL chain's
    posterior variance at t. ``predict(x, t)`` -> x0."""
    s = 0.008
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas_full = [min(1 - f(i + 1) / f(i), 0.999) for i in range(T)]
    acp_full, p = [], 1.0
    for b in betas_full:
        p *= 1 - b
        acp_full.append(p)
    ts = list(range(0, T, skip))
    acp = [acp_full[t] for t in ts]
    x = x_init.double()
    for k, noise in zip(range(len(ts) - 1, -1, -1), noises):
        t = ts[k]
        a, a_prev = acp[k], (acp[k - 1] if k > 0 else 1.0)
        beta = 1 - a / a_prev
        c1 = beta * math.sqrt(a_prev) / (1 - a)
        c2 = (1 - a_prev) * math.sqrt(1 - beta) / (1 - a)
        fa_prev = acp_full[t - 1] if t > 0 else 1.0
        var = betas_full[t] * (1 - fa_prev) / (1 - acp_full[t])
        x0 = predict(x, t)
        mean = c1 * x0 + c2 * x
        x = mean + (math.sqrt(max(var, 1e-20)) * noise.double() if t > 0 else 0)
    return x
