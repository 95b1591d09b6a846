"""Node: invert real photos into a generator's W / W+ space (optimization)."""
from __future__ import annotations

import torch

from . import _comfy as C


class NADAInvertImage:
    DESCRIPTION = ("Find W or W+ latents that make the generator reproduce a photo (optimization, as in NVIDIA's "
                   "projector; nothing is downloaded). Loss = pixel MSE + optional perceptual distance from a CLIP "
                   "image tower (connect a NADA CLIP model) + noise regularization. Feed the latents to an adapted "
                   "generator to show the photo in the new domain. Crop/align the photo like the generator's "
                   "training data (e.g. FFHQ face alignment) for good results.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.LATENTS, "IMAGE", "STRING")
    RETURN_NAMES = ("latents", "reconstruction", "info")
    OUTPUT_TOOLTIPS = ('The latents found (W or W+), one per image.', 'What the generator makes from those latents.', 'Steps done and pixel error before/after.')
    SEARCH_ALIASES = C.aliases('inversion', 'projector', 'project', 'encode photo', 'real image', 'embed')
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (C.GENERATOR, {"tooltip": "The generator whose latent space to search (usually the SOURCE "
                                                   "model, e.g. FFHQ, that the adapted models came from)."}),
            "image": ("IMAGE", {"tooltip": "Photo(s); each image of the batch is inverted separately. Non-square "
                                           "images are center-cropped."}),
            "steps": ("INT", {"default": 500, "min": 1, "max": 20000,
                              "tooltip": "Optimization steps (NVIDIA's projector uses 1000; 300-500 is usually "
                                         "enough in W, W+ converges faster)."}),
            "mode": (["W", "W+"], {"default": "W",
                                   "tooltip": "W: one w per image (edits and domain transfer behave best). W+: one w "
                                              "per layer (closer reconstruction, less editable)."}),
            "learning_rate": ("FLOAT", {"default": 0.1, "min": 0.0001, "max": 10.0, "step": 0.005,
                                        "tooltip": "Peak Adam learning rate (ramped up over the first 5% of steps, "
                                                   "cosine ramp-down over the last 25%)."}),
            "perceptual_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1000.0, "step": 0.1,
                                            "tooltip": "Weight of the CLIP feature distance (used only when a CLIP "
                                                       "model is connected)."}),
            "optimize_noise": ("BOOLEAN", {"default": False,
                                           "tooltip": "Also optimize the per-pixel noise maps (sharper reconstruction; "
                                                      "the noise is NOT part of the latents, so other generators "
                                                      "will not see those details)."}),
            # Not called "seed": the frontend would add a control widget that defaults to
            # "randomize", re-running this expensive node on every queue.
            "search_seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1,
                                    "tooltip": "Seed for the latent exploration noise and the initial noise maps "
                                               "(same seed + same inputs = same result)."}),
        }, "optional": {
            "clip": (C.CLIP, {"tooltip": "Optional CLIP model(s) for the perceptual loss."}),
            "init_latents": (C.LATENTS, {"tooltip": "Optional start latents (one, or one per image); default is "
                                                    "the generator's average latent."}),
            "noise_regularize": ("FLOAT", {"default": 1e5, "min": 0.0, "max": 1e7, "step": 1000.0,
                                           "tooltip": "Weight of the noise-map regularizer (keeps the noise from "
                                                      "encoding the image; only with optimize_noise)."}),
            "initial_w_noise": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 1.0, "step": 0.01,
                                          "tooltip": "Latent exploration noise at the start, relative to the spread "
                                                     "of W (annealed to 0 over the first 75% of steps)."}),
            "crop": (["center", "stretch"], {"default": "center",
                                             "tooltip": "How a non-square photo becomes square."}),
            "preview_every": ("INT", {"default": 25, "min": 0, "max": 10000,
                                      "tooltip": "Show target | reconstruction on the node every N steps (0 = off)."}),
            "on_interrupt": (["cancel", "keep best so far"], {"default": "cancel",
                             "tooltip": "Cancel: stop the whole run (ComfyUI's usual behaviour). Keep best so far: "
                                        "stop optimizing and continue the workflow with the best latents found."}),
        }}

    def invert(self, generator, image, steps, mode, learning_rate, perceptual_weight, optimize_noise, search_seed,
               clip=None, init_latents=None, noise_regularize=1e5, initial_w_noise=0.05, crop="center",
               preview_every=25, on_interrupt="cancel"):
        from ..nada_ops.inversion import InversionSettings, invert
        from ..nada_ops.stylegan.sampling import from_comfy_image, to_comfy_image
        init = None
        if init_latents is not None:
            init_latents.check_compatible(generator.cfg, "init_latents")
            init = init_latents.ws
        settings = InversionSettings(
            steps=steps, mode="w+" if mode == "W+" else "w", lr=learning_rate,
            perceptual_weight=perceptual_weight if clip is not None else 0.0,
            optimize_noise=optimize_noise, noise_regularize=noise_regularize, initial_w_noise=initial_w_noise,
            crop=crop, seed=search_seed, preview_every=preview_every)
        from ..nada_ops.memory import inversion_bytes
        bar = C.Progress(steps)
        clip_models = [m for m, _ in clip] if clip is not None else []
        # Inference tensors from upstream nodes refuse autograd: the library copies the image
        # and (when needed) the generator, and runs with inference mode off and grad on.
        with C.heavy_work("Invert Image", generator.device, inversion_bytes(generator.cfg, image.shape[0], clip_models),
                          "inversion"), torch.inference_mode(False), torch.enable_grad():
            target = from_comfy_image(image.detach().clone())
            generator_copy = generator.clone_generator()
            result = invert(generator_copy, target, settings, perceptual=clip, init_ws=init,
                            progress=lambda s, t, p: bar(s, t, p))
        if result.stopped_early and (on_interrupt == "cancel" or not C.is_interrupt(result.stop_exception)):
            raise result.stop_exception   # only a user's Cancel may end in "keep best so far"
        mse0 = ", ".join(f"{float(v):.4f}" for v in result.mse_start)
        mse1 = ", ".join(f"{float(v):.4f}" for v in result.mse_final)
        info = (f"{mode} inversion, {result.steps_done}/{steps} steps"
                + (" (stopped early: best so far)" if result.stopped_early else "")
                + f"\npixel MSE (in [-1,1]) start: {mse0}\npixel MSE final: {mse1}")
        return (result.latents, to_comfy_image(result.images).to(C.intermediate_device()), info)


NODE_CLASS_MAPPINGS = {"NADAInvertImage": NADAInvertImage}
NODE_DISPLAY_NAME_MAPPINGS = {"NADAInvertImage": "Invert Image to W/W+ (StyleGAN-NADA)"}
