"""Nodes: latent tools (interpolate, pick, edit directions)."""
from __future__ import annotations

from . import _comfy as C

# Editing directions in W/W+ (InterFaceGAN, GANSpace, ...).  Not the same thing as
# NADA_DIRECTION (a CLIP-space text/image direction used for adaptation).
LATENT_DIRECTION = "NADA_LATENT_DIRECTION"


class NADALatentInterpolate:
    DESCRIPTION = ("Interpolate between two batches of W/W+ latents (lerp or slerp). Each pair (a_i, b_i) gives "
                   "`steps` latents from a_i to b_i inclusive; a batch of one on either side is paired with "
                   "every entry of the other.")
    CATEGORY = C.CATEGORY + "/latents"
    RETURN_TYPES = (C.LATENTS,)
    RETURN_NAMES = ("latents",)
    OUTPUT_TOOLTIPS = ('The interpolated latents, steps per pair.',)
    SEARCH_ALIASES = C.aliases('lerp', 'slerp', 'interpolate latents', 'morph', 'tween')
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latents_a": (C.LATENTS, {"tooltip": "Start latents."}),
            "latents_b": (C.LATENTS, {"tooltip": "End latents (same batch size as A, or one)."}),
            "steps": ("INT", {"default": 8, "min": 1, "max": 4096,
                              "tooltip": "Latents per pair, both ends included (2 = just the endpoints)."}),
            "mode": (["lerp", "slerp"], {"default": "lerp",
                                         "tooltip": "lerp = straight line in W; slerp = along the great circle "
                                                    "(angle and length interpolated; around w_avg when a "
                                                    "generator is connected, else around the origin)."}),
            "order": (["pair", "step"], {"default": "pair",
                                         "tooltip": "pair: a0..b0, a1..b1 (each path contiguous, for videos); "
                                                    "step: every pair at t0, then every pair at t1, ..."}),
        }, "optional": {
            "generator": (C.GENERATOR, {"tooltip": "Optional: slerp around this generator's average latent."}),
        }}

    def run(self, latents_a, latents_b, steps, mode="lerp", order="pair", generator=None):
        from ..nada_ops.latent_tools import interpolate_latents
        center = generator.G.w_avg.detach().to(latents_a.ws.device) if (generator is not None and mode == "slerp") \
            else None
        if generator is not None:
            latents_a.check_compatible(generator.cfg, "latents A")
            latents_b.check_compatible(generator.cfg, "latents B")
        return (interpolate_latents(latents_a, latents_b, steps, mode, center, order),)


class NADALatentPick:
    DESCRIPTION = "Pick entries from a latent batch by index: '0', '2,5', '4-7', '-1' (last)."
    CATEGORY = C.CATEGORY + "/latents"
    RETURN_TYPES = (C.LATENTS,)
    RETURN_NAMES = ("latents",)
    OUTPUT_TOOLTIPS = ('The chosen latents, in the order given.',)
    SEARCH_ALIASES = C.aliases('pick', 'select', 'index', 'batch')
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latents": (C.LATENTS, {"tooltip": "A batch of latents."}),
            "indices": ("STRING", {"default": "0",
                                   "tooltip": "Comma-separated indices and ranges, 0-based; negative counts from "
                                              "the end; the order given is kept (repeats allowed)."}),
        }}

    def run(self, latents, indices):
        from ..nada_ops.latent_tools import pick
        return (pick(latents, indices),)


class NADALoadLatentDirection:
    DESCRIPTION = ("Load an editing direction in W or W+ from models/latent_directions: a .npy array (e.g. an "
                   "InterFaceGAN boundary, shape [1, 512]) or a .pt/.pth tensor of shape [w_dim], [1, w_dim] or "
                   "[num_ws, w_dim]. Files are read as plain data (numpy without pickles, torch weights_only).")
    CATEGORY = C.CATEGORY + "/latents"
    RETURN_TYPES = (LATENT_DIRECTION, "STRING")
    RETURN_NAMES = ("direction", "info")
    OUTPUT_TOOLTIPS = ('The editing direction ([1, w_dim] or [num_ws, w_dim]).', 'Shape and norm of the direction.')
    SEARCH_ALIASES = C.aliases('interfacegan', 'boundary', 'edit direction', 'load direction', 'ganspace')
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "direction_file": (C.list_files(C.DIRECTION_FOLDER),
                               {"tooltip": "A .npy / .pt / .pth file in models/latent_directions."}),
        }}

    def load(self, direction_file):
        from ..nada_ops.latent_tools import load_direction
        d = load_direction(C.full_path(C.DIRECTION_FOLDER, direction_file))
        v = d.vector
        info = (f"{d.name}: shape {d.info.get('shape')}, "
                f"{'per W+ entry' if d.per_layer else 'one W direction'}, norm {float(v.norm(dim=1).mean()):.4g}")
        return (d, info)


class NADAApplyDirection:
    DESCRIPTION = ("Move latents along an editing direction: w + strength * d, on all W+ entries or only on "
                   "chosen ones (an edit on some entries makes the result W+).")
    CATEGORY = C.CATEGORY + "/latents"
    RETURN_TYPES = (C.LATENTS,)
    RETURN_NAMES = ("latents",)
    OUTPUT_TOOLTIPS = ('The edited latents (W+ when only some entries were edited).',)
    SEARCH_ALIASES = C.aliases('edit', 'interfacegan', 'attribute', 'smile', 'age', 'direction')
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latents": (C.LATENTS, {"tooltip": "Latents to edit."}),
            "direction": (LATENT_DIRECTION, {"tooltip": "From Load Latent Direction."}),
            "strength": ("FLOAT", {"default": 3.0, "min": -100.0, "max": 100.0, "step": 0.1,
                                   "tooltip": "Distance to move. InterFaceGAN boundaries are unit vectors: "
                                              "typical strengths are -5..5."}),
        }, "optional": {
            "layers": ("STRING", {"default": "all",
                                  "tooltip": "W+ entries to edit: 'all', or e.g. '0-5' (coarse: pose, shape), "
                                             "'6-11' (middle), '12-17' (fine: colour) at 1024 px."}),
            "normalize": ("BOOLEAN", {"default": False,
                                      "tooltip": "Scale the direction to unit length first (per W+ row)."}),
        }}

    def run(self, latents, direction, strength, layers="all", normalize=False):
        from ..nada_ops.latent_tools import apply_direction
        spec = None if str(layers).strip().lower() in ("", "all", "*") else layers
        return (apply_direction(latents, direction, strength, spec, normalize),)


NODE_CLASS_MAPPINGS = {
    "NADALatentInterpolate": NADALatentInterpolate,
    "NADALatentPick": NADALatentPick,
    "NADALoadLatentDirection": NADALoadLatentDirection,
    "NADAApplyDirection": NADAApplyDirection,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "NADALatentInterpolate": "Interpolate Latents (StyleGAN-NADA)",
    "NADALatentPick": "Pick Latents (StyleGAN-NADA)",
    "NADALoadLatentDirection": "Load Latent Direction (StyleGAN-NADA)",
    "NADAApplyDirection": "Apply Latent Direction (StyleGAN-NADA)",
}
