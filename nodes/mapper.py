"""Nodes: latent-mapper "mining" (StyleGAN-NADA sec. 4.3): train a StyleCLIP latent mapper on an
adapted generator, apply it to latents, save and load mappers (models/stylegan_mappers)."""
from __future__ import annotations

import logging
import os

import torch

from . import _comfy as C

log = logging.getLogger("stylegan_nada")

#: A trained or loaded latent mapper (nada_ops.nada.mapper.MapperHandle).
MAPPER = "NADA_LATENT_MAPPER"


def _mapper_folder() -> str:
    return C.first_folder(C.MAPPER_FOLDER)


class NADATrainLatentMapper:
    DESCRIPTION = ("Latent-mapper 'mining' (StyleGAN-NADA sec. 4.3): for large shape changes (dog -> cat) an adapted "
                   "generator still makes some source-like images. This trains a StyleCLIP latent mapper on the "
                   "ADAPTED generator that moves every latent to where it shows the target: CLIP loss towards the "
                   "target + lambda_L2 (stay close to w) + lambda_norm (eq. 5: keep the CLIP embedding norms, which "
                   "grow with artefacts such as open mouths). Latents are sampled fresh every iteration (no "
                   "dataset). The panel shows the loss curve and the preview (top row: w, bottom row: mapped). "
                   "Cancel keeps what was trained in models/stylegan_mappers/nada-partial/.")
    CATEGORY = C.CATEGORY + "/mapper"
    RETURN_TYPES = (MAPPER, "IMAGE", "STRING")
    RETURN_NAMES = ("mapper", "preview", "log")
    OUTPUT_TOOLTIPS = ("The trained latent mapper (Apply Latent Mapper, Save Latent Mapper).",
                       "The last preview grid: top row the generator's images, bottom row the same latents mapped.",
                       "Iterations, time, final loss terms and how the CLIP embedding norms changed.")
    SEARCH_ALIASES = C.aliases("latent mapper", "mapper", "styleclip", "mining", "train mapper", "dog to cat",
                               "shape change")
    FUNCTION = "train"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (C.GENERATOR, {"tooltip": "The ADAPTED generator (e.g. Adapt Generator's output); it is "
                                                   "not modified."}),
            "clip": (C.CLIP, {"tooltip": "CLIP guidance (StyleGAN-NADA's mapper: ViT-B/32 + ViT-B/16)."}),
            "target_text": ("STRING", {"default": "cat", "tooltip": "What every image should show (the "
                                                                   "adaptation's target, e.g. 'cat'). Ignored when "
                                                                   "a direction is connected."}),
            "iterations": ("INT", {"default": 10000, "min": 1, "max": 1000000,
                                   "tooltip": "Training iterations (StyleCLIP's default is 50,000; watch the "
                                              "preview and Cancel when it looks right: the mapper is kept)."}),
            "lambda_clip": ("FLOAT", {"default": 1.0, "min": 0.001, "max": 100.0, "step": 0.1,
                                      "tooltip": "Weight of the CLIP loss towards the target."}),
            "lambda_l2": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1000.0, "step": 0.05,
                                    "tooltip": "Weight of the latent L2 term (stay close to w). Paper: 0.5; "
                                               "StyleGAN-NADA's code: 0.8."}),
            "lambda_norm": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 1000.0, "step": 0.05,
                                      "tooltip": "Weight of the embedding-norm loss (eq. 5). Paper: 0.2; "
                                                 "StyleGAN-NADA's code: 0.5; 0 = off."}),
            "coarse": ("BOOLEAN", {"default": True, "tooltip": "Map W+ entries 0-3 (pose, head shape)."}),
            "medium": ("BOOLEAN", {"default": True, "tooltip": "Map W+ entries 4-7 (features)."}),
            "fine": ("BOOLEAN", {"default": True, "tooltip": "Map W+ entries 8 and up (colours, fur, texture)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1, "control_after_generate": False,
                             "tooltip": "Initial weights and training latents (same seed + inputs = same mapper; "
                                        "an unchanged graph does not retrain)."}),
            "preview_every": ("INT", {"default": 50, "min": 0, "max": 100000, "tooltip": "0 = no previews."}),
        }, "optional": {
            "direction": (C.DIRECTION, {"tooltip": "Optional: train towards the target side of this CLIP Direction "
                                                   "(its text, or its example images) instead of target_text."}),
            "templates": (["nada", "imagenet", "single"], {"default": "nada",
                          "tooltip": "Text embedding: nada = averaged over the paper's 79 prompt templates; "
                                     "single = the raw text (StyleCLIP's code)."}),
            "optimizer": (["ranger", "adam"], {"default": "ranger",
                          "tooltip": "StyleCLIP trains mappers with Ranger (RAdam + Lookahead) at lr 0.5."}),
            "learning_rate": ("FLOAT", {"default": 0.5, "min": 1e-5, "max": 10.0, "step": 0.01,
                                        "tooltip": "StyleCLIP: 0.5 (Ranger); weights use a 0.01 lr multiplier."}),
            "batch_size": ("INT", {"default": 2, "min": 1, "max": 64, "tooltip": "StyleCLIP: 2."}),
            "truncation_psi": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.05,
                                         "tooltip": "Truncation of the training latents (StyleCLIP: 0.7)."}),
            "norm_loss": (["norms", "embeddings"], {"default": "norms",
                          "tooltip": "Eq. 5 as the paper's text and code use it: the squared difference of the "
                                     "embedding NORMS (norms); or the squared distance of the embeddings "
                                     "(embeddings: a much stronger constraint)."}),
            "save_every": ("INT", {"default": 0, "min": 0, "max": 1000000,
                                   "tooltip": "Save the mapper every N iterations into models/stylegan_mappers/"
                                              "nada-snapshots/<run>/ (0 = off)."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def train(self, generator, clip, target_text, iterations, lambda_clip, lambda_l2, lambda_norm, coarse, medium,
              fine, seed, preview_every, direction=None, templates="nada", optimizer="ranger", learning_rate=0.5,
              batch_size=2, truncation_psi=0.7, norm_loss="norms", save_every=0, unique_id=None):
        from ..nada_ops.memory import training_bytes
        from ..nada_ops.nada.mapper import MapperConfig, MapperHandle, MapperSettings, norm_statistics, train_mapper
        from ..nada_ops.nada.mapper.train import direction_guidance, text_guidance
        from ..nada_ops.stylegan.sampling import make_grid, to_comfy_image
        from .adapt import _to_pil
        from .dashboard import TrainingReporter

        cfg = generator.cfg
        levels = [l for l, on in (("coarse", coarse), ("medium", medium), ("fine", fine)) if on]
        if not levels:
            raise ValueError("Train Latent Mapper: switch on at least one of coarse, medium, fine")
        config = MapperConfig.for_generator(cfg, levels)
        settings = MapperSettings(iterations=iterations, batch_size=batch_size, optimizer=optimizer,
                                  lr=learning_rate, lambda_clip=lambda_clip, lambda_l2=lambda_l2,
                                  lambda_norm=lambda_norm, norm_loss=norm_loss, truncation_psi=truncation_psi,
                                  seed=seed, preview_every=preview_every).validate()
        pairs = list(clip)
        guidance = direction_guidance(pairs, direction) if direction is not None \
            else text_guidance(pairs, target_text, templates)
        bar = C.Progress(iterations)
        rep = TrainingReporter(unique_id, iterations, cfg.num_ws, {**settings.to_dict(), "levels": levels})
        last_preview = {"img": None}
        name = f"{generator.name}-{_slug(_target_label(guidance))}"
        base = MapperHandle(mapper=None, name=name, source_format="safetensors",
                            provenance={"generator": generator.name, "target": guidance.provenance})
        snapshots = _Snapshots(base, settings, guidance, rep, save_every)

        def progress(info):
            pil = None
            if info.preview is not None:
                last_preview["img"] = info.preview
                pil = _to_pil(make_grid(info.preview, cols=info.preview.shape[0] // 2))
            rep.step(info.step, info.loss, info.seconds, None, pil)
            bar(info.step, info.total)

        C.make_room(training_bytes(cfg, batch_size, guidance.models()), generator.device)
        try:
            result = train_mapper(generator.G, guidance, settings, config, progress=progress,
                                  snapshot_every=save_every, on_snapshot=snapshots)
        except BaseException as e:
            rep.end("error", 0, str(e))
            C.soft_empty_cache()
            raise
        entry = result.history_entry(settings, guidance, generator.name)
        handle = base.derive(result.mapper, history_entry=entry)
        if result.stop_exception is not None:
            C.soft_empty_cache()
            saved = _save_partial(handle, result.steps_done) if result.steps_done > 0 else ""
            status = "interrupted" if result.interrupted else "error"
            exc = result.stop_exception
            kept = (f"The {result.steps_done} iterations trained so far were saved to models/stylegan_mappers/"
                    f"{saved} (Load Latent Mapper lists it)." if saved else "")
            if saved:
                log.warning("Train Latent Mapper (node %s) stopped at iteration %d/%d (%s): partial mapper saved to "
                            "%s", unique_id, result.steps_done, iterations, status,
                            os.path.join(_mapper_folder(), saved))
            if result.interrupted:
                rep.end(status, result.steps_done, kept or "cancelled", saved=saved)
                raise exc
            message = str(exc)
            if kept and exc.args and isinstance(exc.args[0], str):
                exc.args = (f"{exc.args[0]} {kept}",) + exc.args[1:]
            rep.end(status, result.steps_done, f"{message} {kept}".strip(), saved=saved)
            raise exc
        rep.end("done", result.steps_done)
        preview = last_preview["img"]
        if preview is None:
            preview = torch.zeros(2, cfg.img_channels, cfg.img_resolution, cfg.img_resolution)
        grid = make_grid(preview, cols=preview.shape[0] // 2)[None]
        t = result.terms[-1]
        text = (f"{result.steps_done} iterations in {result.seconds:.1f}s, final loss {result.losses[-1]:.4f} "
                f"(clip {t['clip']:.4f}, l2 {t['l2']:.5f}, norm {t['norm']:.4f})")
        try:
            from ..nada_ops.stylegan.sampling import sample_latents
            ws = sample_latents(generator.G, list(settings.preview_seeds), settings.preview_psi).ws
            with torch.inference_mode():
                stats = norm_statistics(generator.G, result.mapper, guidance, ws)
            text += "\nCLIP embedding norm (preview seeds), source -> mapped: " + "; ".join(
                f"{k}: {v['source_norm']:.3f} -> {v['mapped_norm']:.3f}" for k, v in stats.items())
        except (RuntimeError, ValueError) as e:   # statistics are informative only
            log.debug("norm statistics failed: %s", e)
        if snapshots.files:
            text += "\nsnapshots: " + ", ".join(snapshots.files)
        C.soft_empty_cache()
        return (handle, to_comfy_image(grid).to(C.intermediate_device()), text)


def _target_label(guidance) -> str:
    p = guidance.provenance
    return str(p.get("target") or p.get("kind") or "target")


def _slug(text: str, limit: int = 32) -> str:
    from .adapt import _slug as slug
    return slug(text, limit)


class _Snapshots:
    """Saves the live mapper every N iterations into
    models/stylegan_mappers/nada-snapshots/<name>-<run>/step<N>.safetensors."""

    def __init__(self, base, settings, guidance, reporter, every: int):
        self.base, self.settings, self.guidance, self.rep = base, settings, guidance, reporter
        self.every = int(every or 0)
        self.files: list[str] = []
        self.folder = f"nada-snapshots/{base.name}-{reporter.run[:6]}"

    def __call__(self, step, mapper, loss):
        from ..nada_ops.nada.mapper import save_mapper
        try:
            root = _mapper_folder()
        except (ImportError, KeyError, RuntimeError):
            return
        entry = {"op": "latent_mapper", "target": self.guidance.provenance, "clip_models": self.guidance.keys(),
                 "settings": self.settings.to_dict(), "iterations_done": int(step), "final_loss": float(loss),
                 "snapshot": True}
        rel = f"{self.folder}/step{int(step):06d}.safetensors"
        save_mapper(self.base.derive(mapper, name=f"{self.base.name}-step{step}", history_entry=entry),
                    os.path.join(root, *rel.split("/")))
        self.files.append(rel)
        self.rep.snapshot(step, loss, rel)


def _save_partial(handle, steps) -> str:
    """Keep what was trained: models/stylegan_mappers/nada-partial/<name>_step<N>_xxxxx.safetensors."""
    from ..nada_ops.nada.mapper import save_mapper
    from .generator import unique_path
    try:
        folder = _mapper_folder()
    except (ImportError, KeyError, RuntimeError):
        return ""
    path = unique_path(folder, f"nada-partial/{handle.name}_step{steps}", ".safetensors")
    save_mapper(handle, path)
    return os.path.relpath(path, folder).replace(os.sep, "/")


class NADAApplyLatentMapper:
    DESCRIPTION = ("Move latents with a latent mapper: w' = w + 0.1 * strength * M(w) (StyleCLIP's step). Render "
                   "the result with the generator the mapper was trained on (or any generator of the same "
                   "architecture). strength 0 = the latents unchanged, 1 = as trained, more = further.")
    CATEGORY = C.CATEGORY + "/mapper"
    RETURN_TYPES = (C.LATENTS,)
    RETURN_NAMES = ("latents",)
    OUTPUT_TOOLTIPS = ("The mapped latents (W+), one per input latent.",)
    SEARCH_ALIASES = C.aliases("apply mapper", "latent mapper", "styleclip", "mining", "edit latents")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mapper": (MAPPER, {"tooltip": "From Train Latent Mapper or Load Latent Mapper."}),
            "latents": (C.LATENTS, {"tooltip": "W/W+ latents of the generator the mapper was trained on (Sample W, "
                                               "Invert Image, ...)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05,
                                   "tooltip": "Scales the mapper's step (1 = as trained, 0 = no change)."}),
        }}

    def apply(self, mapper, latents, strength):
        from ..nada_ops.latents import WLatents
        from ..nada_ops.nada.mapper.network import MapperConfigError
        try:
            mapper.cfg.check_latents(latents.ws)
        except MapperConfigError as e:
            raise ValueError(f"Apply Latent Mapper: {e}") from None
        dev = mapper.device
        with torch.no_grad():
            ws = mapper.mapper.map(latents.ws.to(dev), strength).to(latents.ws.device)
        info = dict(latents.info)
        info["mapper"] = {"name": mapper.name, "strength": float(strength)}
        return (WLatents(ws=ws, is_wplus=True, info=info),)


class NADASaveLatentMapper:
    DESCRIPTION = ("Save a latent mapper as this pack's .safetensors into models/stylegan_mappers (so Load Latent "
                   "Mapper lists it), with its architecture and how it was trained in the metadata.")
    CATEGORY = C.CATEGORY + "/mapper"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the saved .safetensors file.",)
    SEARCH_ALIASES = C.aliases("save mapper", "export mapper", "latent mapper", "safetensors")
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mapper": (MAPPER, {"tooltip": "The mapper to save (Train Latent Mapper's output)."}),
            "filename_prefix": ("STRING", {"default": "mapper",
                                           "tooltip": "Name under models/stylegan_mappers; a counter is appended, "
                                                      "existing files are never overwritten."}),
        }}

    def save(self, mapper, filename_prefix):
        from ..nada_ops.nada.mapper import save_mapper
        from .generator import unique_path
        folder = _mapper_folder()
        path = unique_path(folder, filename_prefix, ".safetensors")
        save_mapper(mapper, path)
        rel = os.path.relpath(path, folder).replace(os.sep, "/")
        return {"ui": {"text": [f"saved models/stylegan_mappers/{rel}"]}, "result": (path,)}


class NADALoadLatentMapper:
    DESCRIPTION = ("Load a latent mapper from models/stylegan_mappers: this pack's .safetensors, or a StyleCLIP / "
                   "StyleGAN-NADA mapper checkpoint (.pt; read without executing anything from the file, the "
                   "StyleGAN decoder stored in it is ignored).")
    CATEGORY = C.CATEGORY + "/mapper"
    RETURN_TYPES = (MAPPER, "STRING")
    RETURN_NAMES = ("mapper", "info")
    OUTPUT_TOOLTIPS = ("The latent mapper (Apply Latent Mapper).", "Architecture and how it was trained, as text.")
    SEARCH_ALIASES = C.aliases("load mapper", "latent mapper", "styleclip mapper", "mapper checkpoint")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mapper_file": (C.list_files(C.MAPPER_FOLDER), {"tooltip": "A mapper file in models/stylegan_mappers."}),
            "device": (C.device_choices(), {"default": "auto", "tooltip": "auto = ComfyUI's main device."}),
        }}

    @classmethod
    def IS_CHANGED(cls, mapper_file, device="auto"):
        try:
            st = os.stat(C.full_path(C.MAPPER_FOLDER, mapper_file))
        except (OSError, ImportError):
            return ""
        return f"{st.st_mtime_ns}-{st.st_size}"

    def load(self, mapper_file, device="auto"):
        from ..nada_ops.nada.mapper import load_mapper
        handle = load_mapper(C.full_path(C.MAPPER_FOLDER, mapper_file), device=C.torch_device(device))
        return (handle, handle.describe())


NODE_CLASS_MAPPINGS = {
    "NADATrainLatentMapper": NADATrainLatentMapper,
    "NADAApplyLatentMapper": NADAApplyLatentMapper,
    "NADASaveLatentMapper": NADASaveLatentMapper,
    "NADALoadLatentMapper": NADALoadLatentMapper,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "NADATrainLatentMapper": "Train Latent Mapper (StyleGAN-NADA)",
    "NADAApplyLatentMapper": "Apply Latent Mapper (StyleGAN-NADA)",
    "NADASaveLatentMapper": "Save Latent Mapper (StyleGAN-NADA)",
    "NADALoadLatentMapper": "Load Latent Mapper (StyleGAN-NADA)",
}
