"""Nodes: clip2latent priors (text -> latents for a generator and every generator adapted from it)."""
from __future__ import annotations

import os

import torch

from . import _comfy as C

PRIOR = "NADA_PRIOR"
PRIOR_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth")


def _prior_files():
    return [f for f in C.list_files(C.PRIOR_FOLDER) if f.lower().endswith(PRIOR_EXTENSIONS)]


def _pick_clip(clip, prior):
    """The CLIP model of the ensemble the prior was trained with (by architecture and size)."""
    models = clip.models if hasattr(clip, "models") else [clip]
    want = prior.clip_name
    dim = prior.cfg.cond_dim
    fits = [m for m in models if m.embed_dim == dim and (want is None or m.name == want)]
    if fits:
        return fits[0]
    have = ", ".join(f"{m.name} ({m.embed_dim}-d)" for m in models)
    raise ValueError(f"the prior {prior.name!r} was trained with CLIP {want or '?'} ({dim}-d embeddings); Load CLIP "
                     f"gives {have}: load that CLIP model (weight > 0) in Load CLIP")


class NADALoadPrior:
    DESCRIPTION = ("Load a clip2latent prior from models/stylegan_priors: this pack's .safetensors (made by "
                   "'python -m nada_ops prior train' or Train Prior + Save Prior) or a released clip2latent .ckpt "
                   "with its .yaml beside it. Files are read as data: nothing in them is executed.")
    CATEGORY = C.CATEGORY + "/prior"
    RETURN_TYPES = (PRIOR, "STRING")
    RETURN_NAMES = ("prior", "info")
    OUTPUT_TOOLTIPS = ("The prior: CLIP embedding -> latents of the generator it was trained on (and of every "
                       "generator adapted from it).", "What the prior is and how it was made.")
    SEARCH_ALIASES = C.aliases("clip2latent", "prior", "text to image", "diffusion prior", "load prior")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (_prior_files(), {"tooltip": "A prior file in models/stylegan_priors (.safetensors, or a "
                                                  "clip2latent .ckpt with its .yaml)."}),
            "device": (C.device_choices(), {"default": "auto", "tooltip": "auto = ComfyUI's main device."}),
        }, "optional": {
            "weights": (["ema", "online"], {"default": "ema",
                                            "tooltip": "clip2latent .ckpt files hold both: ema (what clip2latent "
                                                       "samples with) or the online weights."}),
        }}

    @classmethod
    def IS_CHANGED(cls, model, device="auto", weights="ema"):
        try:
            st = os.stat(C.full_path(C.PRIOR_FOLDER, model))
        except (OSError, ImportError):
            return ""
        return f"{st.st_mtime_ns}-{st.st_size}"

    def load(self, model, device="auto", weights="ema"):
        from ..nada_ops.prior.formats import load_prior
        p = load_prior(C.full_path(C.PRIOR_FOLDER, model), device=C.torch_device(device), weights=weights)
        return (p, p.describe())


class NADATextToLatents:
    DESCRIPTION = ("clip2latent: a prompt -> W latents through a diffusion prior, with classifier-free guidance, a "
                   "few respaced steps, truncation, optional style mixing of the fine layers, and CLIP re-ranking "
                   "(draw N candidates per image, keep the best). The latents render with the source generator "
                   "and with every generator adapted from it (Synthesize Images).")
    CATEGORY = C.CATEGORY + "/prior"
    RETURN_TYPES = (C.LATENTS, "STRING")
    RETURN_NAMES = ("latents", "info")
    OUTPUT_TOOLTIPS = ("W latents (as W+), images_per_prompt per prompt line, for Synthesize Images with any "
                       "generator of the source's latent space.",
                       "Settings and the CLIP similarity of each kept latent to its prompt.")
    SEARCH_ALIASES = C.aliases("clip2latent", "text to image", "prompt", "text to latent", "prior", "txt2img")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prior": (PRIOR, {"tooltip": "From Load Prior (or Train Prior)."}),
            "clip": (C.CLIP, {"tooltip": "Load CLIP with the CLIP model the prior was trained with (ViT-B/32 for "
                                         "the paper's priors); it embeds the prompt and ranks the candidates."}),
            "generator": (C.GENERATOR, {"tooltip": "The source generator the prior was trained on: it renders the "
                                                   "candidates for re-ranking and gives the W+ size."}),
            "prompt": ("STRING", {"default": "a photograph of a smiling woman with curly red hair", "multiline": True,
                                  "tooltip": "One prompt per line. The paper prefixes prompts with 'A photograph "
                                             "of'."}),
            "images_per_prompt": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Latents kept per prompt."}),
            "candidates": ("INT", {"default": 16, "min": 1, "max": 64,
                                   "tooltip": "Latents drawn per kept one; the best by CLIP similarity to the "
                                              "prompt is kept (paper: 16). 1 = no re-ranking (fastest)."}),
            "guidance": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                   "tooltip": "Classifier-free guidance ('super conditioning'): 1 = none, 2 = the "
                                              "paper's choice; higher follows the prompt more, with less variety."}),
            "steps": ("INT", {"default": 25, "min": 1, "max": 1000,
                              "tooltip": "Diffusion steps (respaced from 1000). 4-25 is plenty; 4 is fastest."}),
            "truncation": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                     "tooltip": "Move the latents towards the mean w (1 = none; 0.7 = cleaner, "
                                                "less varied)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1, "control_after_generate": True,
                             "tooltip": "Seed of the diffusion noise (and of the mixing latents)."}),
        }, "optional": {
            "respacing": (["auto", "reference", "even"], {"default": "auto",
                          "tooltip": "reference = clip2latent's own schedule (steps must divide 1000); even = "
                                     "evenly spaced steps from the last one with the matching variance; auto = "
                                     "reference when steps divides 1000, else even."}),
            "mix_crossover": ("INT", {"default": -1, "min": -1, "max": 32,
                                      "tooltip": "Style mixing: W+ entries from this index on come from a random "
                                                 "latent (e.g. 8 at 1024 px: colours and fine texture vary); -1 = "
                                                 "off."}),
        }}

    def run(self, prior, clip, generator, prompt, images_per_prompt, candidates, guidance, steps, truncation, seed,
            respacing="auto", mix_crossover=-1):
        from ..nada_ops.memory import rendering_bytes
        from ..nada_ops.prior.sampler import text_to_latents
        prompts = [ln.strip() for ln in str(prompt).splitlines() if ln.strip()]
        if not prompts:
            raise ValueError("Text to Latents: write a prompt (one per line)")
        if len(prompts) > 64:
            raise ValueError(f"Text to Latents: {len(prompts)} prompt lines; at most 64")
        T = prior.cfg.num_timesteps
        if respacing == "auto":
            respacing = "reference" if T % steps == 0 else "even"
        if steps > T:
            raise ValueError(f"the prior has {T} timesteps: steps must be at most {T}")
        model = _pick_clip(clip, prior)
        bar = C.Progress(100)
        phases = {"sampling": (0, 60 if candidates > 1 else 100), "ranking": (60, 40)}

        def progress(what, i, n):
            start, span = phases.get(what, (0, 100))
            bar(start + int(span * i / max(n, 1)), 100)

        with C.heavy_work("Text to Latents", generator.device, rendering_bytes(generator.cfg, 8), "rendering"):
            res = text_to_latents(prior, model, prompts, generator.G, images_per_prompt, candidates, guidance, steps,
                                  respacing, truncation, None if mix_crossover < 0 else mix_crossover,
                                  seed=seed, rerank=candidates > 1, score=True, progress=progress)
        res.latents.info["generator"] = generator.name
        return (res.latents, res.describe())


class NADATrainPrior:
    DESCRIPTION = ("Train a small clip2latent prior for a generator inside ComfyUI: makes the (CLIP image "
                   "embedding, w) pairs in memory, then trains. For the paper's scale (1M pairs, 500k steps) use "
                   "the command line ('python -m nada_ops prior make-pairs / train'), which streams pairs to disk "
                   "and resumes.")
    CATEGORY = C.CATEGORY + "/prior"
    RETURN_TYPES = (PRIOR, "STRING")
    RETURN_NAMES = ("prior", "log")
    OUTPUT_TOOLTIPS = ("The trained prior (EMA weights once the EMA has started).",
                       "Pairs, steps, time, loss and the validation similarity of the run.")
    SEARCH_ALIASES = C.aliases("clip2latent", "train prior", "diffusion prior", "text to image")
    FUNCTION = "train"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (C.GENERATOR, {"tooltip": "The source generator (not modified)."}),
            "clip": (C.CLIP, {"tooltip": "Its first model embeds the images (the paper: ViT-B/32)."}),
            "pairs": ("INT", {"default": 20000, "min": 256, "max": 200000,
                              "tooltip": "Training pairs made in memory (paper: 1M, made by the command line)."}),
            "steps": ("INT", {"default": 5000, "min": 1, "max": 1000000, "tooltip": "Training steps."}),
            "batch_size": ("INT", {"default": 256, "min": 8, "max": 4096, "tooltip": "Pairs per step (paper: 512)."}),
            "learning_rate": ("FLOAT", {"default": 3e-4, "min": 1e-6, "max": 1e-2, "step": 1e-5,
                                        "tooltip": "AdamW (paper: 1e-4 for 1M steps; small runs learn faster with "
                                                   "3e-4)."}),
            "size": (["small", "tiny", "mid"], {"default": "small",
                                                "tooltip": "mid = the paper's 48.8M-parameter network; small = 6 "
                                                           "layers (23M); tiny = 2 narrow layers (tests)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1, "control_after_generate": False,
                             "tooltip": "Seed of the pairs and the training (same seed = same prior)."}),
        }, "optional": {
            "cond_noise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.05,
                                     "tooltip": "LAFITE noise on the image embeddings so that text works (paper: "
                                                "1.0 best)."}),
        }}

    def train(self, generator, clip, pairs, steps, batch_size, learning_rate, size, seed, cond_noise=1.0):
        from ..nada_ops.prior.config import PriorConfig
        from ..nada_ops.prior.pairs import clip_info, generator_info, pairs_in_memory
        from ..nada_ops.prior.sampler import ClipValidator
        from ..nada_ops.prior.trainer import PriorTrainSettings, train_prior
        model = clip.models[0] if hasattr(clip, "models") else clip
        total = pairs + steps
        bar = C.Progress(total)
        log = []
        with torch.inference_mode(False), C.heavy_work("Train Prior", generator.device, 0, ""):
            with torch.no_grad():
                data = pairs_in_memory(generator.G, model, pairs, seed=seed, batch=16,
                                       progress=lambda d, t: bar(d, total))
                held = pairs_in_memory(generator.G, model, 16, seed=seed + 7919, batch=16)
            cfg = PriorConfig.preset(size, latent_dim=generator.cfg.w_dim, cond_dim=model.embed_dim, cond_norm="l2")
            s = PriorTrainSettings(steps=steps, batch=min(batch_size, pairs), lr=learning_rate, seed=seed,
                                   cond_noise=cond_noise, ema_beta=0.999 if steps >= 5000 else 0.99, ema_every=1,
                                   ema_start=steps // 5, checkpoint_every=0, val_every=0,
                                   log_every=max(1, min(50, steps // 20)))
            prov = {"generator": generator_info(generator), "clip": clip_info(model)}
            validate = ClipValidator(generator.G, model, (), held.embed, steps=25, seed=seed)
            res = train_prior(data, cfg, s, device=generator.device, provenance=prov,
                              name=f"{generator.name}-prior", validate=validate,
                              progress=lambda p: bar(pairs + p.step, total), log=log.append)
        val = res.validations[-1] if res.validations else {}
        text = (f"{pairs} pairs, {res.steps_done} steps in {res.seconds:.1f}s, final loss "
                f"{res.losses[-1][1]:.4f}" if res.losses else f"{res.steps_done} steps")
        if val:
            text += f"; CLIP similarity of samples to held-out image embeddings {val.get('image_similarity', 0):.4f}"
        return (res.prior, text)


class NADASavePrior:
    DESCRIPTION = "Save a prior as this pack's .safetensors into models/stylegan_priors (Load Prior lists it)."
    CATEGORY = C.CATEGORY + "/prior"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the saved prior.",)
    SEARCH_ALIASES = C.aliases("clip2latent", "save prior", "export prior")
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prior": (PRIOR, {"tooltip": "From Train Prior (or Load Prior, to convert a clip2latent .ckpt)."}),
            "filename_prefix": ("STRING", {"default": "prior",
                                           "tooltip": "Name under models/stylegan_priors; a counter is appended, "
                                                      "existing files are never overwritten."}),
        }}

    def save(self, prior, filename_prefix):
        from ..nada_ops.prior.formats import write_prior
        from .generator import unique_path
        folder = C.first_folder(C.PRIOR_FOLDER)
        path = unique_path(folder, filename_prefix, ".safetensors")
        write_prior(prior, path)
        rel = os.path.relpath(path, folder).replace(os.sep, "/")
        return {"ui": {"text": [f"saved models/stylegan_priors/{rel}"]}, "result": (path,)}


NODE_CLASS_MAPPINGS = {
    "NADALoadPrior": NADALoadPrior,
    "NADATextToLatents": NADATextToLatents,
    "NADATrainPrior": NADATrainPrior,
    "NADASavePrior": NADASavePrior,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "NADALoadPrior": "Load Prior (StyleGAN-NADA)",
    "NADATextToLatents": "Text to Latents (StyleGAN-NADA)",
    "NADATrainPrior": "Train Prior (StyleGAN-NADA)",
    "NADASavePrior": "Save Prior (StyleGAN-NADA)",
}
