"""Nodes: load CLIP, make a CLIP direction, choose the layer schedule, adapt a generator."""
from __future__ import annotations

import logging
import os

import torch

from . import _comfy as C

log = logging.getLogger("stylegan_nada")

CLIP_ARCHS = ["ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "RN50", "RN101", "RN50x4", "none"]
AUTO_WEIGHTS = "auto"
TAGS = ["openai", "laion2b_s34b_b79k", "laion2b_s34b_b88k", "random (benchmark only)"]


def _weights_choices():
    local = C.list_files(C.CLIP_FOLDER)
    return [AUTO_WEIGHTS] + local + TAGS + [f for f in C.catalogue_files(C.CLIP_FOLDER) if f not in local]


def _clip_search_dirs():
    try:
        return C.folder_paths().get_folder_paths(C.CLIP_FOLDER)
    except (ImportError, KeyError):
        return []


def _resolve_weights(choice: str):
    if choice == AUTO_WEIGHTS:
        return None
    if choice.startswith("random"):
        return "random"
    if choice in TAGS:
        return choice
    return C.model_path_or_download(C.CLIP_FOLDER, choice)   # a catalogue file is downloaded on first use


def _auto_weights(arch: str):
    """'auto': a local file for ``arch`` in models/open_clip, else the catalogue's OpenAI weights
    (downloaded into models/open_clip once, with ComfyUI's progress bar), else open_clip's own
    download. Returns (architecture to build, weights file or None)."""
    from ..nada_ops.catalogue import clip_entry, clip_weights_for
    progress = C.download_progress(f"CLIP {arch}") if clip_entry(arch) is not None else None
    return clip_weights_for(arch, _clip_search_dirs(), progress=progress,
                            log=lambda m: log.info("%s", m))


class NADALoadCLIP:
    DESCRIPTION = ("Load up to two CLIP models (open_clip) with loss weights. The paper guides with ViT-B/32 and "
                   "ViT-B/16 together. Weights come from models/open_clip (OpenAI .pt archives or open_clip "
                   ".safetensors/.bin); 'auto' uses a local file for the architecture, else downloads OpenAI's "
                   "weights for ViT-B-32 / ViT-B-16 from the pack's catalogue into models/open_clip (once), else "
                   "open_clip's 'openai' download. Models with weight 0 are not loaded.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.CLIP,)
    RETURN_NAMES = ("clip",)
    OUTPUT_TOOLTIPS = ('The CLIP model(s) with their loss weights, for CLIP Direction, Adapt Generator and Invert Image.',)
    SEARCH_ALIASES = C.aliases('load clip', 'open_clip', 'vit-b/32', 'vit-b/16', 'guidance')
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        w = _weights_choices()
        return {"required": {
            "clip_a": (CLIP_ARCHS, {"default": "ViT-B-32", "tooltip": "First CLIP architecture."}),
            "weights_a": (w, {"default": AUTO_WEIGHTS,
                              "tooltip": "Weights file in models/open_clip, a tag, or a catalogue file not downloaded "
                                         "yet (downloaded on first use); auto = a local file, else the catalogue's."}),
            "weight_a": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                   "tooltip": "Loss weight of the first model (0 = not loaded)."}),
            "clip_b": (CLIP_ARCHS, {"default": "ViT-B-16", "tooltip": "Second CLIP architecture ('none' = off)."}),
            "weights_b": (w, {"default": AUTO_WEIGHTS, "tooltip": "Weights of the second model (as weights_a)."}),
            "weight_b": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                   "tooltip": "The paper uses ViT-B/16 too for shape changes; 0 for speed."}),
            "device": (C.device_choices(), {"default": "auto", "tooltip": "auto = ComfyUI's main device."}),
            "precision": (["fp32", "fp16"], {"default": "fp32",
                                             "tooltip": "fp16 halves CLIP memory on GPU; fp32 on CPU."}),
        }}

    def load(self, clip_a, weights_a, weight_a, clip_b, weights_b, weight_b, device="auto", precision="fp32"):
        from ..nada_ops.clip.ensemble import ClipEnsemble
        from ..nada_ops.clip.models import load_clip
        dev = C.torch_device(device)
        dtype = torch.float16 if precision == "fp16" and dev.type == "cuda" else torch.float32
        specs = []
        for arch, wfile, weight in ((clip_a, weights_a, weight_a), (clip_b, weights_b, weight_b)):
            if arch == "none" or weight == 0:
                continue
            if wfile == AUTO_WEIGHTS:
                build, weights = _auto_weights(arch)
            else:
                build, weights = arch, _resolve_weights(wfile)
            specs.append(({"name": build, "pretrained": weights}, weight))
        if not specs:
            raise ValueError("Load CLIP: choose at least one CLIP model with a non-zero weight")
        ens = ClipEnsemble(specs, load_fn=load_clip, device=dev, dtype=dtype, search_dirs=_clip_search_dirs())
        return (ens,)


class NADACLIPDirection:
    DESCRIPTION = ("The change to learn, as a direction in CLIP space. Text: source -> target description "
                   "(e.g. 'photo' -> 'pencil sketch'), averaged over prompt templates. Images (few-shot): "
                   "connect target_images; the source side is then N generated samples of the generator "
                   "(or source_images if connected).")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.DIRECTION, "STRING")
    RETURN_NAMES = ("direction", "info")
    OUTPUT_TOOLTIPS = ('The change as a unit direction in CLIP space, per CLIP model (with how it was made).', 'How the direction was made (kind, prompts or image counts, models).')
    SEARCH_ALIASES = C.aliases('clip direction', 'text direction', 'image direction', 'prompt', 'few-shot', 'target')
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": (C.CLIP, {"tooltip": "From Load CLIP; the direction is computed for each of its models."}),
            "source_text": ("STRING", {"default": "photo", "tooltip": "What the generator makes now."}),
            "target_text": ("STRING", {"default": "pencil sketch", "tooltip": "What it should make."}),
            "templates": (["nada", "imagenet", "single"], {"default": "nada",
                          "tooltip": "nada = the 79 ImageNet templates the paper averages; single = raw prompt."}),
        }, "optional": {
            "target_images": ("IMAGE", {"tooltip": "Few-shot: example images of the target domain "
                                                   "(replaces target_text)."}),
            "source_images": ("IMAGE", {"tooltip": "Optional real source-domain images; default: generated."}),
            "generator": (C.GENERATOR, {"tooltip": "Source generator, for generated source samples "
                                                   "(image directions)."}),
            "num_source_samples": ("INT", {"default": 16, "min": 1, "max": 256,
                                           "tooltip": "N_s generated source samples (paper: 16)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1, "control_after_generate": False,
                             "tooltip": "Seed of the generated source samples (image directions)."}),
        }}

    def make(self, clip, source_text, target_text, templates, target_images=None, source_images=None,
             generator=None, num_source_samples=16, seed=0):
        from ..nada_ops.clip.direction import image_direction, text_direction
        if target_images is None:
            d = text_direction(clip, source_text, target_text, templates)
        elif source_images is not None:
            d = image_direction(clip, target_images, source_images, source_layout="image")
        else:
            if generator is None:
                raise ValueError("CLIP Direction from images: connect the source generator (its samples are the "
                                 "source side) or source_images")
            from ..nada_ops.stylegan.sampling import sample_latents, synthesize
            seeds = [(seed + i) % 2 ** 32 for i in range(num_source_samples)]
            lat = sample_latents(generator.G, seeds, 1.0)
            imgs = synthesize(generator.G, lat.ws, "const", 8)
            d = image_direction(clip, target_images, imgs, source_layout="generator")
        info = ", ".join(f"{k}={v}" for k, v in d.provenance.items())
        return (d, info)


class NADALayerFreezeSchedule:
    DESCRIPTION = ("Which synthesis layers AdaptGenerator trains. all: every conv (texture/style changes). "
                   "adaptive: each iteration the paper's top-k selection (k=2/3 of the layers for small shape "
                   "changes, 3 for animals). manual: only the layers driven by chosen W+ indices or groups.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.SCHEDULE,)
    RETURN_NAMES = ("schedule",)
    OUTPUT_TOOLTIPS = ('Which layers Adapt Generator trains (all, adaptive top-k per iteration, or manual).',)
    SEARCH_ALIASES = C.aliases('freeze', 'layer freezing', 'layers', 'adaptive', 'top-k')
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        from ..nada_ops.nada.schedule import PRESETS
        return {"required": {
            "preset": (["custom"] + list(PRESETS), {"default": "custom",
                       "tooltip": "Paper settings per kind of change; overrides mode and k. StyleGAN3 (16 W+ "
                                  "entries, 14 trainable layers): " + "; ".join(
                                      f"{name}: {p['stylegan3']}" for name, p in PRESETS.items())}),
            "mode": (["all", "adaptive", "manual"], {"default": "all",
                     "tooltip": "custom preset only. all: every conv (texture/style); adaptive: the paper's "
                                "per-iteration top-k selection (shape changes); manual: manual_layers."}),
            "k": ("INT", {"default": 12, "min": 1, "max": 18,
                          "tooltip": "adaptive: W+ indices trained per iteration (18 = all at 1024px)."}),
            "n_w": ("INT", {"default": 8, "min": 1, "max": 64, "tooltip": "adaptive: codes sampled (paper: 8)."}),
            "n_i": ("INT", {"default": 1, "min": 1, "max": 10,
                            "tooltip": "adaptive: latent optimisation steps (paper: 1)."}),
            "manual_layers": ("STRING", {"default": "coarse,middle",
                                         "tooltip": "manual: groups coarse/middle/fine and/or W+ indices, "
                                                    "e.g. 'coarse,9,10'."}),
        }}

    def make(self, preset, mode, k, n_w, n_i, manual_layers):
        from ..nada_ops.nada.schedule import PRESETS, FreezeSchedule
        if preset != "custom":
            p = PRESETS[preset]
            if p["mode"] == "manual":
                return (ManualSchedule(groups=tuple(p["groups"]), indices=(), preset=preset),)
            return (FreezeSchedule(mode=p["mode"], k=p.get("k"), k_fraction=p.get("k_fraction"), n_w=n_w, n_i=n_i,
                                   preset=preset).validate(),)
        if mode == "manual":
            parts = [s.strip() for s in manual_layers.split(",") if s.strip()]
            groups = tuple(p for p in parts if not p.isdigit())
            idx = tuple(int(p) for p in parts if p.isdigit())
            bad = [g for g in groups if g not in ("coarse", "middle", "fine")]
            if bad:
                raise ValueError(f"manual_layers: unknown group(s) {bad}; use coarse, middle, fine or W+ indices")
            return (ManualSchedule(groups=groups, indices=idx),)
        return (FreezeSchedule(mode=mode, k=k if mode == "adaptive" else None, n_w=n_w, n_i=n_i).validate(),)


class ManualSchedule:
    """Groups are resolved against the generator's own layer map at training time."""

    def __init__(self, groups: tuple, indices: tuple, preset: str = ""):
        self.groups = groups
        self.indices = indices
        self.preset = preset

    def resolve(self, cfg):
        from ..nada_ops.nada.schedule import FreezeSchedule, group_indices
        idx = sorted(set(group_indices(cfg, self.groups)) | set(self.indices))
        return FreezeSchedule(mode="manual", indices=tuple(idx), preset=self.preset).validate(cfg)


class NADAAdaptGenerator:
    DESCRIPTION = ("Train a copy of the generator towards the CLIP direction (StyleGAN-NADA). Both generators get "
                   "the same latents, style-mixing and noise; mapping, style affines and ToRGB stay frozen. "
                   "The panel on the node shows the loss curve, ETA and the latest preview (top row: source, "
                   "bottom: adapted). save_every keeps intermediate generators (the paper: train long, pick the "
                   "best). Cancel stops within one iteration; what was trained so far is saved to "
                   "models/stylegan/nada-partial/ so it can be loaded.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.GENERATOR, "IMAGE", "STRING")
    RETURN_NAMES = ("generator", "preview", "log")
    OUTPUT_TOOLTIPS = ("The adapted generator (same latent space as the source: the same latents give the same "
                       "identity in the new domain).",
                       "The last preview grid: top row the source, bottom row the adapted generator.",
                       "Iterations, time and final loss of the run.")
    SEARCH_ALIASES = C.aliases("train", "adapt", "fine-tune", "finetune", "clip guided", "text guided",
                               "zero-shot", "few-shot")
    FUNCTION = "adapt"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (C.GENERATOR, {"tooltip": "The source model (not modified; a copy is trained)."}),
            "clip": (C.CLIP, {"tooltip": "CLIP guidance (paper: ViT-B/32 + ViT-B/16)."}),
            "direction": (C.DIRECTION, {"tooltip": "The change to learn, from CLIP Direction."}),
            "iterations": ("INT", {"default": 300, "min": 1, "max": 100000,
                                   "tooltip": "Paper: 50-300 style/texture, 150-400 identity, ~2000 animals."}),
            "batch_size": ("INT", {"default": 2, "min": 1, "max": 64, "tooltip": "Paper: 2."}),
            "learning_rate": ("FLOAT", {"default": 0.002, "min": 1e-5, "max": 0.1, "step": 0.0005,
                                        "tooltip": "Adam, betas (0, 0.99). Paper: 0.002."}),
            "mixing_prob": ("FLOAT", {"default": 0.9, "min": 0.0, "max": 1.0, "step": 0.05,
                                      "tooltip": "Style mixing: 0.9 for most face styles, 0 for sketches, "
                                                 "cubism and animals."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1, "control_after_generate": False,
                             "tooltip": "Same seed + same inputs = same result (an unchanged graph does "
                                        "not retrain)."}),
            "preview_every": ("INT", {"default": 25, "min": 0, "max": 10000, "tooltip": "0 = no previews."}),
        }, "optional": {
            "schedule": (C.SCHEDULE, {"tooltip": "Layer freezing; default: all layers."}),
            "reference_lr_scale": ("BOOLEAN", {"default": False,
                                               "tooltip": "Scale lr and betas by 0.8 like the paper's reference "
                                                          "code (its leftover regularisation ratio)."}),
            "lambda_global": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                        "tooltip": "Ablation: add the global CLIP loss (adversarial alone)."}),
            "training_noise": (["random", "const"], {"default": "random",
                               "tooltip": "Per-pixel noise during training (the same for both generators)."}),
            "save_every": ("INT", {"default": 0, "min": 0, "max": 100000,
                                   "tooltip": "Save the generator every N iterations into models/stylegan/"
                                              "nada-snapshots/<run>/ (0 = off). Snapshots are listed in Load "
                                              "StyleGAN and kept when the run stops early."}),
            "precision": (["auto", "exact", "fast", "bf16"], {"default": "auto",
                          "tooltip": "Arithmetic of the training step. auto = fast on a CUDA GPU, exact elsewhere. "
                                     "exact: float32 everywhere (TF32 off), for verification. fast: TF32, CLIP in "
                                     "float16 and the top 4 resolutions of the generator in float16 (NVIDIA's "
                                     "settings), float32 master weights; several times quicker on a GPU. bf16: as "
                                     "fast with bfloat16."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def adapt(self, generator, clip, direction, iterations, batch_size, learning_rate, mixing_prob, seed,
              preview_every, schedule=None, reference_lr_scale=False, lambda_global=0.0, training_noise="random",
              save_every=0, precision="auto", unique_id=None):
        from ..nada_ops.memory import training_bytes
        from ..nada_ops.nada.guidance import guidance_from
        from ..nada_ops.nada.schedule import FreezeSchedule
        from ..nada_ops.nada.trainer import AdaptSettings, adapt
        from ..nada_ops.stylegan.sampling import make_grid, to_comfy_image
        from .dashboard import TrainingReporter

        cfg = generator.cfg
        if isinstance(schedule, ManualSchedule):
            schedule = schedule.resolve(cfg)
        schedule = (schedule or FreezeSchedule()).validate(cfg)
        settings = AdaptSettings(iterations=iterations, batch_size=batch_size, lr=learning_rate,
                                 reference_lr_scale=reference_lr_scale, mixing_prob=mixing_prob, seed=seed,
                                 preview_every=preview_every, lambda_global=lambda_global,
                                 noise_mode=training_noise, precision=precision).validate()
        guidance = guidance_from(clip, direction)
        bar = C.Progress(iterations)
        rep = TrainingReporter(unique_id, iterations, cfg.num_ws, settings.to_dict())
        last_preview = {"img": None}
        snapshots = Snapshots(generator, direction, settings, schedule, guidance, rep, save_every)

        def progress(info):
            pil = None
            if info.preview is not None:
                last_preview["img"] = info.preview
                pil = _to_pil(make_grid(info.preview, cols=info.preview.shape[0] // 2))
            rep.step(info.step, info.loss, info.seconds, info.layers, pil)
            bar(info.step, info.total)   # the preview is shown by the node's panel, not twice

        device = generator.device
        C.make_room(training_bytes(cfg, batch_size, [m for m, _, _ in guidance.models()],
                                   adaptive_codes=schedule.n_w if schedule.mode == "adaptive" else 0), device)
        try:
            result = adapt(generator.G, guidance, settings, schedule, progress=progress,
                           snapshot_every=save_every, on_snapshot=snapshots)
        except BaseException as e:
            rep.end("error", 0, str(e))
            C.soft_empty_cache()
            raise
        entry = result.history_entry(direction.provenance, settings, schedule, list(guidance_keys(guidance)))
        handle = generator.derive(result.G, name=f"{generator.name}-nada", history_entry=entry)
        if result.stop_exception is not None:
            C.soft_empty_cache()
            saved = _save_partial(handle, result.steps_done) if result.steps_done > 0 else ""
            status = "interrupted" if result.interrupted else "error"
            exc = result.stop_exception
            kept = (f"The {result.steps_done} iterations trained so far were saved to models/stylegan/{saved} "
                    "(Load StyleGAN lists it)." if saved else "")
            # the panel lists the snapshots itself; the error text names them too
            snaps = f" Snapshots: {', '.join(snapshots.files)}." if snapshots.files else ""
            if saved:
                log.warning("Adapt Generator (node %s) stopped at iteration %d/%d (%s): partial generator saved "
                            "to %s", unique_id, result.steps_done, iterations, status,
                            os.path.join(C.first_folder(C.STYLEGAN_FOLDER), saved))
            if result.interrupted:
                rep.end(status, result.steps_done, kept or "cancelled", saved=saved)
                raise exc
            message = str(exc)
            if (kept or snaps) and exc.args and isinstance(exc.args[0], str):
                exc.args = (f"{exc.args[0]} {kept}{snaps}",) + exc.args[1:]   # our own error: say what was kept
            rep.end(status, result.steps_done, f"{message} {kept}".strip(), saved=saved)
            raise exc
        rep.end("done", result.steps_done)
        C.soft_empty_cache()
        preview = last_preview["img"]
        if preview is None:
            preview = torch.zeros(2, 3, cfg.img_resolution, cfg.img_resolution)
        cols = preview.shape[0] // 2
        grid = make_grid(preview, cols=cols)[None]
        log_text = (f"{result.steps_done} iterations in {result.seconds:.1f}s, final loss "
                    f"{result.losses[-1]:.4f}" if result.losses else "no iterations")
        if result.runtime:
            log_text += f"\nprecision {result.runtime['precision']}; {result.runtime['path']}"
        if snapshots.files:
            log_text += "\nsnapshots: " + ", ".join(snapshots.files)
        return (handle, to_comfy_image(grid).to(C.intermediate_device()), log_text)


class Snapshots:
    """Saves the live training generator every N iterations (called by the trainer) into
    models/stylegan/nada-snapshots/<source>-<target>-<run>/step<N>.safetensors."""

    def __init__(self, generator, direction, settings, schedule, guidance, reporter, every: int):
        self.generator, self.direction, self.settings = generator, direction, settings
        self.schedule, self.guidance, self.rep, self.every = schedule, guidance, reporter, int(every or 0)
        self.files: list[str] = []
        target = direction.provenance.get("target") or direction.provenance.get("kind", "images")
        self.folder = f"nada-snapshots/{generator.name}-{_slug(str(target))}-{reporter.run[:6]}"

    def __call__(self, step, G_train, loss):
        from ..nada_ops.stylegan.io import save_generator
        try:
            root = C.first_folder(C.STYLEGAN_FOLDER)
        except (ImportError, KeyError, RuntimeError):
            return
        entry = {"op": "nada_adapt", "direction": self.direction.provenance,
                 "clip_models": guidance_keys(self.guidance), "settings": self.settings.to_dict(),
                 "schedule": self.schedule.to_dict(), "iterations_done": int(step), "interrupted": False,
                 "final_loss": float(loss), "snapshot": True}
        handle = self.generator.derive(G_train, name=f"{self.generator.name}-nada-step{step}", history_entry=entry)
        rel = f"{self.folder}/step{int(step):06d}.safetensors"
        save_generator(handle, os.path.join(root, *rel.split("/")))
        self.files.append(rel)
        self.rep.snapshot(step, loss, rel)


def _slug(text: str, limit: int = 32) -> str:
    import re
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return (s or "target")[:limit]


def guidance_keys(guidance):
    return [f"{k} (weight {w:g})" for _, w, k in guidance.models()]


def _to_pil(grid):
    from PIL import Image
    arr = ((grid.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def _save_partial(handle, steps) -> str:
    """Keep what was trained: models/stylegan/nada-partial/<name>_step<N>_xxxxx.safetensors.
    Returns the path relative to models/stylegan ("" when there is no models folder)."""
    from ..nada_ops.stylegan.io import save_generator
    from .generator import unique_path
    try:
        folder = C.first_folder(C.STYLEGAN_FOLDER)
    except (ImportError, KeyError, RuntimeError):
        return ""
    path = unique_path(folder, f"nada-partial/{handle.name}_step{steps}", ".safetensors")
    save_generator(handle, path)
    return os.path.relpath(path, folder).replace(os.sep, "/")


NODE_CLASS_MAPPINGS = {
    "NADALoadCLIP": NADALoadCLIP,
    "NADACLIPDirection": NADACLIPDirection,
    "NADALayerFreezeSchedule": NADALayerFreezeSchedule,
    "NADAAdaptGenerator": NADAAdaptGenerator,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "NADALoadCLIP": "Load CLIP (StyleGAN-NADA)",
    "NADACLIPDirection": "CLIP Direction (StyleGAN-NADA)",
    "NADALayerFreezeSchedule": "Layer Freeze Schedule (StyleGAN-NADA)",
    "NADAAdaptGenerator": "Adapt Generator (StyleGAN-NADA)",
}
