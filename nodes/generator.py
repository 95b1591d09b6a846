"""Nodes: load a StyleGAN generator, sample W latents, synthesize images, save, info."""
from __future__ import annotations

import dataclasses
import os
import re

import torch

from . import _comfy as C


class NADALoadStyleGAN:
    DESCRIPTION = ("Load a StyleGAN2 or StyleGAN3 (T/R) generator from models/stylegan: NVIDIA .pkl "
                   "(stylegan2-ada-pytorch / stylegan3 repo, e.g. stylegan3-t-ffhqu-1024x1024.pkl), StyleGAN-NADA / "
                   "rosinality .pt, or this pack's .safetensors. The format is detected from the file's content; "
                   "pickles are read without executing any code from them. After the local files, the list offers "
                   "the pack's catalogue of published models (NVIDIA's FFHQ, AFHQ, MetFaces, ..., the StyleGAN-NADA "
                   "models) that are not downloaded yet: choosing one downloads it into models/stylegan on the "
                   "first run (progress bar; Cancel keeps the partial file and the next run continues it).")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.GENERATOR, "STRING")
    RETURN_NAMES = ("generator", "info")
    OUTPUT_TOOLTIPS = ('The generator with its architecture and provenance.', 'Architecture and provenance as text.')
    SEARCH_ALIASES = C.aliases('load model', 'checkpoint', 'pkl', 'ffhq', 'generator', 'loader', 'stylegan3',
                               'alias-free')
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (C.list_files_and_catalogue(C.STYLEGAN_FOLDER),
                      {"tooltip": "A generator file in models/stylegan; after the local files come the catalogue's "
                                  "published models not downloaded yet (downloaded on first use; mostly "
                                  "non-commercial licences, see the node's help)."}),
            "device": (C.device_choices(), {"default": "auto",
                                            "tooltip": "auto = ComfyUI's main device (GPU when there is one)."}),
            "precision": (["fp32", "fp16", "fast"], {
                "default": "fp32",
                "tooltip": "How this generator renders (GPU only; on a CPU always fp32). fp32: exact. fast: NVIDIA's "
                           "own setting, the 4 highest resolutions in fp16 with activations clamped at +-256, TF32 "
                           "matmuls (faster, visually identical). fp16: every block in half precision (fastest; "
                           "tiny differences). Training uses Adapt Generator's own precision."}),
        }}

    @classmethod
    def IS_CHANGED(cls, model, device="auto", precision="fp32"):
        """Reload when the file on disk changes (e.g. a training run saved over it)."""
        try:
            st = os.stat(C.full_path(C.STYLEGAN_FOLDER, model))
        except (OSError, ImportError):
            return ""          # not there (yet): a catalogue model is downloaded when the node runs
        return f"{st.st_mtime_ns}-{st.st_size}"

    def load(self, model, device="auto", precision="fp32"):
        from ..nada_ops.stylegan.io import load_generator
        path = C.model_path_or_download(C.STYLEGAN_FOLDER, model)
        dev = C.torch_device(device)
        dtype = torch.float16 if precision == "fp16" and dev.type == "cuda" else torch.float32
        handle = load_generator(path, device=dev, dtype=dtype)
        if precision == "fast" and dev.type == "cuda":
            handle = dataclasses.replace(handle, precision="fast")
        return (handle, handle.describe())


class NADASampleW:
    DESCRIPTION = ("Seeds -> W latents with truncation (NVIDIA's seed convention, so seed N gives the same "
                   "image as NVIDIA's generate.py). Optional class label and style mixing.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.LATENTS,)
    RETURN_NAMES = ("latents",)
    FUNCTION = "sample"
    OUTPUT_TOOLTIPS = ('W latents (repeated to W+), one per seed.',)
    SEARCH_ALIASES = C.aliases('seed', 'latent', 'w space', 'truncation', 'random latents', 'style mixing')

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (C.GENERATOR, {"tooltip": "Its mapping network and w_avg turn the seeds into latents "
                                                   "(use the source model: adapted models share its latent space)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1, "control_after_generate": True,
                             "tooltip": "First seed; the batch uses seed, seed+1, ..."}),
            "batch_size": ("INT", {"default": 4, "min": 1, "max": 4096,
                                   "tooltip": "Number of latents (seeds seed .. seed + batch_size - 1)."}),
            "truncation_psi": ("FLOAT", {"default": 0.7, "min": -2.0, "max": 2.0, "step": 0.05,
                                         "tooltip": "1 = no truncation; 0.5-0.7 gives typical, cleaner images."}),
        }, "optional": {
            "truncation_cutoff": ("INT", {"default": 0, "min": 0, "max": 32,
                                          "tooltip": "Truncate only the first N W+ entries (0 = all)."}),
            "class_label": ("INT", {"default": -1, "min": -1, "max": 100000,
                                    "tooltip": "Class for conditional generators (-1 = none)."}),
            "mix_seed": ("INT", {"default": -1, "min": -1, "max": 2 ** 32 - 1,
                                 "tooltip": "Style mixing: W+ entries from the crossover on come from this "
                                            "seed (-1 = no mixing)."}),
            "mix_crossover": ("INT", {"default": 8, "min": 0, "max": 32,
                                      "tooltip": "First W+ index taken from the mixing seed "
                                                 "(low = coarse features mixed, high = only colours/texture)."}),
        }}

    def sample(self, generator, seed, batch_size, truncation_psi, truncation_cutoff=0, class_label=-1,
               mix_seed=-1, mix_crossover=8):
        from ..nada_ops.stylegan.sampling import sample_latents
        seeds = [(seed + i) % 2 ** 32 for i in range(batch_size)]
        lat = sample_latents(generator.G, seeds, truncation_psi,
                             truncation_cutoff or None,
                             class_idx=None if class_label < 0 else class_label,
                             mix_seeds=None if mix_seed < 0 else [mix_seed],
                             mix_crossover=mix_crossover if mix_seed >= 0 else None)
        return (lat,)


class NADASynthesize:
    DESCRIPTION = ("Render W/W+ latents with a generator into an IMAGE batch. StyleGAN3 generators can also "
                   "translate / rotate their Fourier-feature input (like NVIDIA's visualiser): the image moves "
                   "without aliasing.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ('The rendered images, [N, H, W, 3] in 0..1.',)
    SEARCH_ALIASES = C.aliases('render', 'generate', 'sample', 'decode', 'images')
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (C.GENERATOR, {"tooltip": "Source, adapted or blended model."}),
            "latents": (C.LATENTS, {"tooltip": "W/W+ latents with this generator's W+ size (Sample W, Invert "
                                               "Image, Interpolate Latents, ...)."}),
            "noise_mode": (["const", "random", "none"], {"default": "const",
                           "tooltip": "const = the checkpoint's stored noise (reproducible, NVIDIA's default); "
                                      "random = fresh per-pixel noise; none = no noise."}),
            "batch_size": ("INT", {"default": 8, "min": 1, "max": 256,
                                   "tooltip": "Images rendered at once (memory vs speed)."}),
        }, "optional": {
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1,
                                   "tooltip": "Seed for noise_mode=random."}),
            "translate_x": ("FLOAT", {"default": 0.0, "min": -4.0, "max": 4.0, "step": 0.01,
                                      "tooltip": "StyleGAN3 only: move the image right by this fraction of its "
                                                 "width (the Fourier input is translated; 0 = as trained)."}),
            "translate_y": ("FLOAT", {"default": 0.0, "min": -4.0, "max": 4.0, "step": 0.01,
                                      "tooltip": "StyleGAN3 only: move the image down by this fraction of its "
                                                 "height."}),
            "rotate": ("FLOAT", {"default": 0.0, "min": -360.0, "max": 360.0, "step": 1.0,
                                 "tooltip": "StyleGAN3 only: rotate the image by this many degrees "
                                            "(counter-clockwise; config R is built for it)."}),
        }}

    def render(self, generator, latents, noise_mode, batch_size, noise_seed=0, translate_x=0.0, translate_y=0.0,
               rotate=0.0):
        from ..nada_ops.memory import rendering_bytes
        from ..nada_ops.stylegan.sampling import input_transform_for, synthesize, to_comfy_image
        latents.check_compatible(generator.cfg)
        transform = input_transform_for(generator.G, (translate_x, translate_y), rotate)
        bar = C.Progress(latents.batch)
        with C.heavy_work("Synthesize Images", generator.device,
                          rendering_bytes(generator.cfg, min(batch_size, latents.batch)), "rendering"):
            img = synthesize(generator.G, latents.ws, noise_mode, batch_size, generator.dtype,
                             progress=lambda d, t, p: bar(d, t), noise_seed=noise_seed, transform=transform,
                             precision=generator.precision)
        return (to_comfy_image(img).to(C.intermediate_device()),)


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


class NADASaveGenerator:
    DESCRIPTION = ("Save a generator as this pack's .safetensors into models/stylegan (so it appears in "
                   "Load StyleGAN), with its architecture and how it was made in the metadata.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ('Full path of the saved .safetensors file.',)
    SEARCH_ALIASES = C.aliases('save model', 'export', 'safetensors', 'checkpoint')
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (C.GENERATOR, {"tooltip": "The model to save, e.g. the output of Adapt Generator."}),
            "filename_prefix": ("STRING", {"default": "nada/adapted",
                                           "tooltip": "Name under models/stylegan; a counter is appended, "
                                                      "existing files are never overwritten."}),
        }}

    def save(self, generator, filename_prefix):
        from ..nada_ops.stylegan.io import save_generator
        folder = C.first_folder(C.STYLEGAN_FOLDER)
        path = unique_path(folder, filename_prefix, ".safetensors")
        save_generator(generator, path)
        rel = os.path.relpath(path, folder)
        return {"ui": {"text": [f"saved models/stylegan/{rel}"]}, "result": (path,)}


def unique_path(folder: str, prefix: str, ext: str) -> str:
    """folder/prefix_00001.ext with the first free counter; refuses to leave ``folder``."""
    prefix = prefix.strip().replace("\\", "/") or "generator"
    parts = [_SAFE_NAME.sub("_", p).strip() for p in prefix.split("/") if p.strip() not in ("", ".", "..")]
    if not parts:
        parts = ["generator"]
    sub = os.path.join(folder, *parts[:-1])
    base = parts[-1]
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(sub)]) != root:
        raise ValueError(f"filename_prefix {prefix!r} leaves the models folder")
    os.makedirs(sub, exist_ok=True)
    i = 1
    while True:
        p = os.path.join(sub, f"{base}_{i:05d}{ext}")
        if not os.path.exists(p):
            return p
        i += 1


class NADAGeneratorInfo:
    DESCRIPTION = "Architecture and provenance (how it was made) of a generator, as text."
    CATEGORY = C.CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("info",)
    OUTPUT_NODE = True
    FUNCTION = "info"
    OUTPUT_TOOLTIPS = ('Architecture and provenance as text.',)
    SEARCH_ALIASES = C.aliases('info', 'metadata', 'provenance', 'architecture')

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"generator": (C.GENERATOR, {"tooltip": "Any generator: loaded, adapted or "
                                                                    "blended."})}}

    def info(self, generator):
        text = generator.describe()
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {
    "NADALoadStyleGAN": NADALoadStyleGAN,
    "NADASampleW": NADASampleW,
    "NADASynthesize": NADASynthesize,
    "NADASaveGenerator": NADASaveGenerator,
    "NADAGeneratorInfo": NADAGeneratorInfo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "NADALoadStyleGAN": "Load StyleGAN (NADA)",
    "NADASampleW": "Sample W (StyleGAN-NADA)",
    "NADASynthesize": "Synthesize Images (StyleGAN-NADA)",
    "NADASaveGenerator": "Save Generator (StyleGAN-NADA)",
    "NADAGeneratorInfo": "Generator Info (StyleGAN-NADA)",
}
