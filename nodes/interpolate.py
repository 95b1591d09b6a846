"""Nodes: blend generators in weight space, render domain-transition videos."""
from __future__ import annotations

import os

from . import _comfy as C
from .latents import LATENT_DIRECTION


class NADAInterpolateModels:
    DESCRIPTION = ("Blend two generators of the same architecture in weight space: (1 - t) * A + t * B. "
                   "With A = the source model and B = a NADA-adapted model, t moves the images between the two "
                   "domains; two adapted models (A, B) blend their styles. t = 0 gives A exactly, t = 1 gives B. "
                   "The inputs are not changed.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.GENERATOR,)
    RETURN_NAMES = ("generator",)
    OUTPUT_TOOLTIPS = ('The blended generator ((1 - t) * A + t * B).',)
    SEARCH_ALIASES = C.aliases('blend', 'interpolate', 'mix models', 'merge', 'weight interpolation')
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator_a": (C.GENERATOR, {"tooltip": "t = 0 (e.g. the source model)."}),
            "generator_b": (C.GENERATOR, {"tooltip": "t = 1 (e.g. the adapted model); same architecture as A."}),
            "t": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                            "tooltip": "Blend factor: 0 = A, 1 = B."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def blend(self, generator_a, generator_b, t, unique_id=None):
        from ..nada_ops.interpolate import blend_generators
        from .dashboard import remember_blend_inputs
        remember_blend_inputs(unique_id, [generator_a, generator_b])   # t preview in the front end
        G = blend_generators(generator_a.G, generator_b.G, t, device=generator_a.device,
                             names=(f"A ({generator_a.name})", f"B ({generator_b.name})"))
        from ..nada_ops.provenance import blend_entry
        name = f"{generator_a.name}-{generator_b.name}-t{float(t):.2f}"
        # both sides' histories (prompts, settings) are kept inside the blend's own entry
        return (generator_a.derive(G, name=name, history=[blend_entry(generator_a, generator_b, t)]),)


class NADARenderTransition:
    DESCRIPTION = ("Render a domain-transition animation: the latents stay fixed while the generator's weights "
                   "move A -> B (-> C ...), with easing; optionally the latents also move towards end latents or "
                   "along an editing direction. Writes MP4 (H.264), animated WebP or GIF frame by frame (memory "
                   "does not grow with the number of frames), with the workflow embedded in the MP4 like core "
                   "Save Video. Outputs a VIDEO (for core Save Video / preview nodes), the frames as an IMAGE "
                   "batch, and the file's path.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING", "VIDEO")
    RETURN_NAMES = ("frames", "path", "video")
    OUTPUT_TOOLTIPS = ("Every frame as an IMAGE batch (only the last one when return_frames is off).",
                       "Path of the written file ('' when save_format is none).",
                       "The transition as ComfyUI's VIDEO (H.264 MP4: the saved file, or a temporary one when "
                       "saving another format or none), for core Save Video.")
    SEARCH_ALIASES = C.aliases("video", "animation", "transition", "morph", "mp4", "gif", "webp", "render")
    OUTPUT_NODE = True
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        from ..nada_ops.video import EASING_NAMES
        return {"required": {
            "generator_a": (C.GENERATOR, {"tooltip": "First model of the sequence (e.g. the source)."}),
            "generator_b": (C.GENERATOR, {"tooltip": "Second model (e.g. an adapted one); same architecture."}),
            "latents": (C.LATENTS, {"tooltip": "What to render; several latents are tiled into a grid per frame."}),
            "frames": ("INT", {"default": 60, "min": 1, "max": 100000,
                               "tooltip": "Number of frames for the whole sequence."}),
            "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 1.0,
                              "tooltip": "Frames per second of the written file."}),
            "easing": (list(EASING_NAMES), {"default": "ease_in_out",
                                            "tooltip": "Speed profile inside each A -> B segment "
                                                       "(ease_in_out lingers on each model)."}),
            "loop": ("BOOLEAN", {"default": False,
                                 "tooltip": "Go back to the first model at the end (seamless loop for GIF/WebP)."}),
            "save_format": (["none", "mp4", "webp", "gif"], {"default": "mp4",
                            "tooltip": "Also write a file into the output folder (none = only the IMAGE output)."}),
            "filename_prefix": ("STRING", {"default": "nada/transition",
                                           "tooltip": "Output file name (a counter is appended)."}),
        }, "optional": {
            "generator_c": (C.GENERATOR, {"tooltip": "Optional third model of the sequence."}),
            "generator_d": (C.GENERATOR, {"tooltip": "Optional fourth model of the sequence."}),
            "latents_end": (C.LATENTS, {"tooltip": "Optional: the latents move from `latents` to these over the "
                                                   "video (one, or one per latent)."}),
            "latent_mode": (["lerp", "slerp"], {"default": "lerp",
                                                "tooltip": "How latents move towards latents_end."}),
            "direction": (LATENT_DIRECTION, {"tooltip": "Optional: also move along this editing direction."}),
            "direction_strength": ("FLOAT", {"default": 3.0, "min": -100.0, "max": 100.0, "step": 0.1,
                                             "tooltip": "Edit strength reached at the end of the video."}),
            "direction_layers": ("STRING", {"default": "all", "tooltip": "W+ entries the edit applies to."}),
            "batch_size": ("INT", {"default": 8, "min": 1, "max": 256,
                                   "tooltip": "Latents rendered at once within a frame."}),
            "noise_mode": (["const", "random", "none"], {"default": "const",
                           "tooltip": "Per-pixel noise; 'random' draws it once per latent and keeps it for every "
                                      "frame (no flicker)."}),
            "random_noise_seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1,
                                          "tooltip": "Seed of the noise for noise_mode = random."}),
            "grid_columns": ("INT", {"default": 0, "min": 0, "max": 64,
                                     "tooltip": "Columns of the grid when rendering several latents (0 = auto)."}),
            "quality": ("INT", {"default": -1, "min": -1, "max": 100,
                                "tooltip": "-1 = default. MP4: CRF (lower = better, 18 is visually lossless). "
                                           "WebP: 0-100. Ignored for GIF."}),
            "return_frames": ("BOOLEAN", {"default": True,
                                          "tooltip": "Output every frame as an IMAGE batch (memory grows with the "
                                                     "number of frames). Off: only the last frame is output; the "
                                                     "file is still complete."}),
        }, "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def render(self, generator_a, generator_b, latents, frames, fps, easing, loop, save_format, filename_prefix,
               generator_c=None, generator_d=None, latents_end=None, latent_mode="lerp", direction=None,
               direction_strength=3.0, direction_layers="all", batch_size=8, noise_mode="const",
               random_noise_seed=0, grid_columns=0, quality=-1, return_frames=True, unique_id=None, prompt=None,
               extra_pnginfo=None):
        from ..nada_ops.latent_tools import direction_offsets
        from ..nada_ops.memory import rendering_bytes
        from ..nada_ops.video import open_writer, render_transition
        from .generator import unique_path
        handles = [h for h in (generator_a, generator_b, generator_c, generator_d) if h is not None]
        from .dashboard import remember_blend_inputs
        remember_blend_inputs(unique_id, handles, latents)   # t preview in the front end
        names = [f"{label} ({h.name})" for label, h in zip("ABCD", handles)]
        cfg = generator_a.cfg
        latents.check_compatible(cfg)
        keyframes = None
        if latents_end is not None:
            latents_end.check_compatible(cfg, "latents_end")
            keyframes = latents_end.ws[None]
        offset = None
        if direction is not None and direction_strength != 0:
            spec = None if str(direction_layers).strip().lower() in ("", "all", "*") else direction_layers
            offset = direction_offsets(direction, cfg.num_ws, spec)
        writers, path, ui = [], "", {}
        metadata = C.workflow_metadata(prompt, extra_pnginfo)
        q = None if quality < 0 else quality
        if save_format != "none":
            path = unique_path(C.output_dir(), filename_prefix, "." + save_format)
            writers.append(open_writer(path, fps, quality=q, loop=0, metadata=metadata))
        # The VIDEO output is an H.264 MP4: the saved file, or one streamed into ComfyUI's temp folder
        # next to the requested format (never all frames in memory).
        video_path = path
        if save_format != "mp4":
            video_path = unique_path(C.temp_dir(), "nada_transition", ".mp4")
            writers.append(open_writer(video_path, fps, quality=None, metadata=metadata))
        bar = C.Progress(frames)
        try:
            with C.heavy_work("Render Domain Transition", generator_a.device,
                              rendering_bytes(cfg, batch_size, len(handles)), "rendering"):
                out = render_transition(
                    [h.G for h in handles], latents.ws, frames, easing=easing, loop=loop, keyframes=keyframes,
                    latent_mode=latent_mode, direction_offset=offset, direction_strength=direction_strength,
                    batch_size=batch_size, noise_mode=noise_mode, noise_seed=random_noise_seed,
                    dtype=generator_a.dtype, precision=generator_a.precision, device=generator_a.device, names=names, layout="grid",
                    cols=grid_columns or None, writers=writers, collect=return_frames,
                    progress=lambda d, t, p: bar(d, t, p), preview_every=max(1, frames // 20),
                    last_frame=not return_frames)
        except BaseException:
            for w in writers:
                w.abort()
            raise
        if save_format != "none":
            rel = os.path.relpath(path, C.output_dir())
            sub, fname = os.path.split(rel)
            ui = {"images": [{"filename": fname, "subfolder": sub, "type": "output"}], "animated": (True,),
                  "text": [f"wrote output/{rel}"]}
        out = out.to(C.intermediate_device())
        return {"ui": ui, "result": (out, path, C.video_from_file(video_path))}


NODE_CLASS_MAPPINGS = {
    "NADAInterpolateModels": NADAInterpolateModels,
    "NADARenderTransition": NADARenderTransition,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "NADAInterpolateModels": "Interpolate Models (StyleGAN-NADA)",
    "NADARenderTransition": "Render Domain Transition (StyleGAN-NADA)",
}
