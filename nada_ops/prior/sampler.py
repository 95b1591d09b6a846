"""Text -> latents with a prior (clip2latent's inference, ``Clip2StyleGAN.forward``):

1. the prompt's CLIP text embedding is the condition (the prior was trained on image
   embeddings; CLIP's shared space and the training noise make text work);
2. ``candidates`` latents per wanted image are sampled with classifier-free guidance
   ("super conditioning") over a respaced chain of ``steps`` steps;
3. optional truncation towards the mean w, optional style mixing of the W+ entries from
   ``mix_crossover`` on with a random latent of the generator;
4. with a generator and candidates > 1: every candidate is rendered, embedded with CLIP and
   the best per wanted image (highest cosine similarity to the prompt) is kept (the paper
   draws 16 and keeps the best).

The latents work with ANY generator that shares the source's latent space (StyleGAN-NADA
keeps it): render them with the adapted generators too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..latents import WLatents
from .model import LatentPrior

#: Most latents one request may draw (prompts x per prompt x candidates); each candidate is rendered.
MAX_SAMPLES = 16384


@dataclass
class TextToLatents:
    latents: WLatents
    scores: torch.Tensor | None          # CLIP cosine similarity of each kept latent to its prompt
    info: dict = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"{self.latents.batch} latents from {len(self.info.get('prompts', []))} prompt(s), "
                 f"guidance {self.info.get('guidance')}, {self.info.get('steps')} steps ({self.info.get('respacing')}), "
                 f"truncation {self.info.get('truncation')}, candidates {self.info.get('candidates')}"]
        if self.scores is not None:
            per = self.info.get("per_prompt", 1)
            for i, p in enumerate(self.info.get("prompts", [])):
                s = self.scores[i * per:(i + 1) * per]
                lines.append(f"{p!r}: CLIP similarity " + ", ".join(f"{float(v):.3f}" for v in s))
        return "\n".join(lines)


@torch.no_grad()
def clip_scores(G, clip_model, ws: torch.Tensor, text_embeds: torch.Tensor, batch: int = 8,
                noise_mode: str = "const", progress=None) -> torch.Tensor:
    """Cosine similarity between the CLIP embedding of each rendered latent and its text embedding."""
    from ..stylegan.sampling import synthesize
    out = []
    for i in range(0, ws.shape[0], batch):
        img = synthesize(G, ws[i:i + batch], noise_mode, batch)
        e = clip_model.encode_generator_images(img)
        out.append(F.cosine_similarity(e.float(), text_embeds[i:i + batch].to(e.device).float(), dim=-1).cpu())
        if progress is not None:
            progress(min(i + batch, ws.shape[0]), ws.shape[0])
    return torch.cat(out)


def text_to_latents(prior: LatentPrior, clip_model, prompts, G=None, per_prompt: int = 1, candidates: int = 1,
                    guidance: float = 1.0, steps: int = 25, respacing: str = "reference",
                    truncation: float = 1.0, mix_crossover: int | None = None, mix_psi: float = 1.0,
                    seed: int = 0, rerank: bool = True, score: bool = False, num_ws: int | None = None,
                    render_batch: int = 8, noise_mode: str = "const", progress=None) -> TextToLatents:
    """Latents for ``prompts`` (a string or a list). ``G`` (the source generator, or any generator
    of its latent space) is needed for re-ranking, style mixing and scores; ``num_ws`` otherwise."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = [str(p) for p in prompts]
    if not prompts or any(not p.strip() for p in prompts):
        raise ValueError("give a non-empty prompt")
    if per_prompt < 1 or candidates < 1:
        raise ValueError("per_prompt and candidates must be >= 1")
    if len(prompts) * per_prompt * candidates > MAX_SAMPLES:
        raise ValueError(f"{len(prompts)} prompt(s) x {per_prompt} image(s) x {candidates} candidate(s) = "
                         f"{len(prompts) * per_prompt * candidates} latents to draw and render; at most {MAX_SAMPLES}")
    if G is not None:
        if G.cfg.w_dim != prior.cfg.latent_dim:
            raise ValueError(f"the prior makes {prior.cfg.latent_dim}-d latents; the generator's w_dim is "
                             f"{G.cfg.w_dim} (was the prior trained for this generator?)")
        num_ws = G.cfg.num_ws
    if num_ws is None:
        num_ws = (prior.provenance.get("generator") or {}).get("num_ws")
        if not isinstance(num_ws, int):
            raise ValueError("connect the generator (the prior does not record its number of W+ entries)")
    if (mix_crossover is not None or (rerank and candidates > 1) or score) and G is None:
        raise ValueError("style mixing, re-ranking and scores need the generator")
    dev = prior.device
    text = clip_model.encode_text(prompts).float()
    n_keep = len(prompts) * per_prompt
    total = n_keep * candidates
    cond = text.repeat_interleave(per_prompt * candidates, dim=0)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    steps_cb = None
    if progress is not None:
        steps_cb = lambda i, n: progress("sampling", i, n)  # noqa: E731
    w = prior.sample_w(cond, guidance, steps, respacing, truncation, gen, steps_cb)
    ws = prior.to_wplus(w, num_ws)
    is_wplus = prior.cfg.num_latents > 1
    info = {"prompts": prompts, "per_prompt": per_prompt, "candidates": candidates, "guidance": guidance,
            "steps": steps, "respacing": respacing, "truncation": truncation, "seed": int(seed),
            "prior": prior.name}
    if mix_crossover is not None:
        from ..stylegan.networks import style_mix
        if not 0 <= mix_crossover <= num_ws:
            raise ValueError(f"mix_crossover {mix_crossover} outside 0..{num_ws}")
        zg = torch.Generator().manual_seed(int(seed) + 1)
        z = torch.randn(total, G.cfg.z_dim, generator=zg).to(G.w_avg.device)
        with torch.no_grad():
            ws_mix = G.map(z, None, mix_psi)
        ws = style_mix(ws.to(ws_mix.device), ws_mix, mix_crossover)
        is_wplus = True
        info.update(mix_crossover=mix_crossover, mix_psi=mix_psi)
    scores = None
    if G is not None and ((rerank and candidates > 1) or score):
        ws = ws.to(G.w_avg.device)
        sc_cb = (lambda i, n: progress("ranking", i, n)) if progress is not None else None
        s = clip_scores(G, clip_model, ws, cond, render_batch, noise_mode, sc_cb)
        if rerank and candidates > 1:
            best = s.view(n_keep, candidates).argmax(dim=1)
            idx = torch.arange(n_keep) * candidates + best
            ws, s = ws[idx.to(ws.device)], s[idx]
        elif candidates > 1:
            ws, s = ws[::candidates], s[::candidates]
        scores = s
    elif candidates > 1:
        ws = ws[::candidates]
    info["scores"] = [round(float(v), 4) for v in scores] if scores is not None else None
    lat = WLatents(ws=ws.detach(), is_wplus=is_wplus, info={"op": "prior_text_to_latents", **info})
    return TextToLatents(latents=lat, scores=scores, info=info)


class ClipValidator:
    """The paper's checkpoint selection: sample latents for fixed conditions (prompts, and/or
    held-out image embeddings), render, embed with CLIP, mean cosine similarity to the condition."""

    def __init__(self, G, clip_model, prompts=(), image_embeds: torch.Tensor | None = None, guidance: float = 1.0,
                 steps: int = 25, respacing: str = "reference", seed: int = 0, batch: int = 8):
        self.G, self.clip, self.guidance, self.steps = G, clip_model, guidance, steps
        self.respacing, self.seed, self.batch = respacing, seed, batch
        self.prompts = [p for p in prompts if p.strip()]
        self.text = clip_model.encode_text(self.prompts).float() if self.prompts else None
        self.images = image_embeds.float() if image_embeds is not None else None

    def __call__(self, prior: LatentPrior) -> dict:
        out = {}
        gen = torch.Generator(device=prior.device).manual_seed(self.seed)
        for key, cond in (("text_similarity", self.text), ("image_similarity", self.images)):
            if cond is None:
                continue
            respacing = self.respacing
            if respacing == "reference" and prior.cfg.num_timesteps % self.steps:
                respacing = "even"
            w = prior.sample_w(cond, self.guidance if prior.guidance_possible else 1.0, self.steps, respacing, 1.0, gen)
            ws = prior.to_wplus(w, self.G.cfg.num_ws).to(self.G.w_avg.device)
            out[key] = float(clip_scores(self.G, self.clip, ws, cond, self.batch).mean())
        out["score"] = out.get("text_similarity", out.get("image_similarity", 0.0))
        return out
