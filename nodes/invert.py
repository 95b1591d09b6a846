"""Node: invert real photos into a generator's W / W+ space (optimization, or a pSp / e4e /
ReStyle encoder with optional refinement by optimization)."""
from __future__ import annotations

import os

import torch

from . import _comfy as C

METHODS = ["optimize", "e4e", "ReStyle", "pSp"]
ENCODE_BATCH = 8
_ENCODER_CACHE: dict = {}


def encoder_choices() -> list[str]:
    return ["none"] + C.list_files(C.ENCODER_FOLDER)


def load_encoder_cached(name: str):
    """The encoder file of models/stylegan_encoders, loaded once per file version (kept on the CPU;
    callers move a copy to their device with ``.to(device)``)."""
    from ..nada_ops.invert.encoders import load_encoder
    if not name or name == "none":
        raise ValueError("Invert Image: choose an encoder file (models/stylegan_encoders: e.g. e4e_ffhq_encode.pt, "
                         "restyle_e4e_ffhq_encode.pt, psp_ffhq_encode.pt) or method 'optimize'")
    path = C.full_path(C.ENCODER_FOLDER, name)
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
    enc = _ENCODER_CACHE.get(key)
    if enc is None:
        _ENCODER_CACHE.clear()           # one encoder at a time, kept on the CPU (pSp / e4e: ~1 GB)
        enc = load_encoder(path, device="cpu")
        _ENCODER_CACHE[key] = enc
    return enc


class NADAInvertImage:
    DESCRIPTION = ("Find W or W+ latents that make the generator reproduce a photo. method = optimize: "
                   "optimization as in NVIDIA's projector (pixel MSE + optional CLIP perceptual distance + noise "
                   "regularization; minutes). e4e / ReStyle / pSp: a pre-trained encoder from "
                   "models/stylegan_encoders gives W+ in a fraction of a second, optionally refined by a few "
                   "optimization steps. Feed the latents to an adapted generator to show the photo in the new "
                   "domain. Align faces like FFHQ first (align_face, or the Align Face node).")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.LATENTS, "IMAGE", "STRING")
    RETURN_NAMES = ("latents", "reconstruction", "info")
    OUTPUT_TOOLTIPS = ('The latents found (W or W+), one per image.', 'What the generator makes from those latents.', 'Steps done and pixel error before/after.')
    SEARCH_ALIASES = C.aliases('inversion', 'projector', 'project', 'encode photo', 'real image', 'embed', 'e4e',
                               'restyle', 'psp', 'encoder')
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
            "method": (METHODS, {"default": "optimize",
                                 "tooltip": "optimize: search from the average latent (steps, mode, ...). e4e / "
                                            "ReStyle / pSp: the encoder file below (its kind is read from the file "
                                            "and must match); W+ codes, then refine_steps of optimization."}),
            "encoder": (encoder_choices(), {"default": "none",
                        "tooltip": "Encoder checkpoint in models/stylegan_encoders (the authors' .pt files: "
                                   "e4e_ffhq_encode.pt, restyle_e4e_ffhq_encode.pt, psp_ffhq_encode.pt, ...). It "
                                   "must belong to the generator (same domain and resolution)."}),
            "encoder_iterations": ("INT", {"default": 5, "min": 1, "max": 20,
                                           "tooltip": "ReStyle refinement passes (the authors use 5); ignored by "
                                                      "e4e and pSp."}),
            "refine_steps": ("INT", {"default": 0, "min": 0, "max": 20000,
                                     "tooltip": "After an encoder: optimization steps in W+ from its codes (0 = "
                                                "none; 100-300 sharpen the likeness), at a tenth of learning_rate, "
                                                "without exploration noise."}),
            "align_face": ("BOOLEAN", {"default": False,
                                       "tooltip": "Align each photo like FFHQ first (largest face; needs dlib and "
                                                  "models/face_landmarks/shape_predictor_68_face_landmarks.dat). For "
                                                  "more control and paste-back use the Align Face node."}),
        }}

    @classmethod
    def IS_CHANGED(cls, method="optimize", encoder="none", **_):
        """Re-run when the chosen encoder file changes on disk (same name, new content)."""
        if method == "optimize" or not encoder or encoder == "none":
            return ""
        try:
            st = os.stat(C.full_path(C.ENCODER_FOLDER, encoder))
        except (OSError, ImportError):
            return ""
        return f"{encoder}-{st.st_mtime_ns}-{st.st_size}"

    def invert(self, generator, image, steps, mode, learning_rate, perceptual_weight, optimize_noise, search_seed,
               clip=None, init_latents=None, noise_regularize=1e5, initial_w_noise=0.05, crop="center",
               preview_every=25, on_interrupt="cancel", method="optimize", encoder="none", encoder_iterations=5,
               refine_steps=0, align_face=False):
        if align_face:
            from .faces import align_images
            image, _ = align_images(image, generator.cfg.img_resolution)
        if method != "optimize":
            return self._encode(generator, image, method, encoder, encoder_iterations, refine_steps, learning_rate,
                                perceptual_weight, optimize_noise, noise_regularize, search_seed, clip, crop,
                                preview_every, on_interrupt)
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

    def _encode(self, generator, image, method, encoder, iterations, refine_steps, learning_rate, perceptual_weight,
                optimize_noise, noise_regularize, search_seed, clip, crop, preview_every, on_interrupt):
        from ..nada_ops.invert.encoders import encode
        from ..nada_ops.inversion import InversionSettings, invert, prepare_target
        from ..nada_ops.latents import WLatents
        from ..nada_ops.memory import inversion_bytes
        from ..nada_ops.stylegan.sampling import from_comfy_image, synthesize, to_comfy_image
        enc = load_encoder_cached(encoder)
        if enc.method != method:
            raise ValueError(f"Invert Image: {encoder} is a {enc.kind} encoder, not {method}: choose method "
                             f"'{enc.method}' (or another file)")
        enc.check_generator(generator.cfg, f"the generator {generator.name}")
        notes = list(enc.notes) + enc.compare_generator(generator.G)
        if any(h.get("op") == "nada_adapt" for h in generator.provenance.get("history", [])):
            notes.append("this generator was adapted (StyleGAN-NADA): encode with the SOURCE generator and render "
                         "the latents with the adapted one (ReStyle's passes and the refinement need the source)")
        n_iter = iterations if enc.cfg.iterative else 1
        passes = n_iter * -(-image.shape[0] // ENCODE_BATCH)       # progress calls of encode()
        bar = C.Progress(passes + refine_steps)
        target = prepare_target(from_comfy_image(image), generator.cfg.img_resolution, crop)
        from ..nada_ops.memory import module_bytes
        with C.heavy_work("Invert Image", generator.device,
                          inversion_bytes(generator.cfg, image.shape[0], []) + module_bytes(enc.net), "inversion"):
            enc_dev = enc.to(generator.device)          # a device copy for this run only
            r = encode(enc_dev, generator.G, target, iterations=n_iter, batch_size=ENCODE_BATCH,
                       progress=lambda d, t, p: bar(d, None, p))
            del enc_dev                                  # free it before the cache is given back
        info = {"op": "encode", "method": enc.kind, "encoder": encoder, "iterations": n_iter}
        latents = WLatents(ws=r.ws.to(generator.device), is_wplus=r.is_wplus, info=info)
        lines = [f"{enc.describe()}", f"encoded {image.shape[0]} image(s)"
                 + (f" in {n_iter} ReStyle iterations" if enc.cfg.iterative else "")]
        images = None
        if refine_steps > 0:
            settings = InversionSettings(
                steps=refine_steps, mode="w+", lr=learning_rate / 10,
                perceptual_weight=perceptual_weight if clip is not None else 0.0, optimize_noise=optimize_noise,
                noise_regularize=noise_regularize, initial_w_noise=0.0, crop=crop, seed=search_seed,
                preview_every=preview_every)
            done0 = passes
            clip_models = [m for m, _ in clip] if clip is not None else []
            with C.heavy_work("Invert Image", generator.device,
                              inversion_bytes(generator.cfg, image.shape[0], clip_models), "inversion"), \
                    torch.inference_mode(False), torch.enable_grad():
                res = invert(generator.clone_generator(), target.clone(), settings, perceptual=clip,
                             init_ws=latents.ws.clone(), progress=lambda s, t, p: bar(done0 + s, None, p))
            if res.stopped_early and (on_interrupt == "cancel" or not C.is_interrupt(res.stop_exception)):
                raise res.stop_exception
            latents = WLatents(ws=res.latents.ws, is_wplus=True,
                               info={**info, "refine": res.latents.info})
            images = res.images
            mse0 = ", ".join(f"{float(v):.4f}" for v in res.mse_start)
            mse1 = ", ".join(f"{float(v):.4f}" for v in res.mse_final)
            lines.append(f"refined by {res.steps_done}/{refine_steps} optimization steps in W+"
                         + (" (stopped early: best so far)" if res.stopped_early else "")
                         + f"\npixel MSE (in [-1,1]) encoder: {mse0}\npixel MSE refined: {mse1}")
        if images is None:
            images = synthesize(generator.G, latents.ws, dtype=generator.dtype, precision=generator.precision)
            mse = ((images.float().clamp(-1, 1) - target.to(images.device)) ** 2).mean(dim=(1, 2, 3))
            lines.append("pixel MSE (in [-1,1]): " + ", ".join(f"{float(v):.4f}" for v in mse))
        lines += [f"note: {n}" for n in notes]
        return (latents, to_comfy_image(images).to(C.intermediate_device()), "\n".join(lines))


NODE_CLASS_MAPPINGS = {"NADAInvertImage": NADAInvertImage}
NODE_DISPLAY_NAME_MAPPINGS = {"NADAInvertImage": "Invert Image to W/W+ (StyleGAN-NADA)"}
