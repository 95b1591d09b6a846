"""Nodes: FFHQ face alignment and pasting a result back into the photo."""
from __future__ import annotations

import numpy as np
import torch

from . import _comfy as C


def landmark_model_choices() -> list[str]:
    return ["auto"] + C.list_files(C.LANDMARK_FOLDER)


def landmark_model_path(choice: str) -> str | None:
    """The dlib model file: the chosen one, or (auto) the standard name, else the first .dat."""
    from ..nada_ops.invert.landmarks import DLIB_MODEL
    files = C.list_files(C.LANDMARK_FOLDER)
    if choice and choice != "auto":
        return C.full_path(C.LANDMARK_FOLDER, choice)
    for f in sorted(files, key=lambda f: (f.split("/")[-1] != DLIB_MODEL, f)):
        return C.full_path(C.LANDMARK_FOLDER, f)
    return None


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """ComfyUI IMAGE [N, H, W, C] 0..1 -> uint8 [N, H, W, 3]."""
    x = image[..., :3]
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def align_images(image: torch.Tensor, size: int, landmarks: str = "", landmark_model: str = "auto",
                 face: str = "largest", face_index: int = 0, padding: bool = True, progress=None):
    """IMAGE batch -> (aligned IMAGE [N, size, size, 3], [FaceTransform])."""
    from ..nada_ops.invert.align import align_photos
    from ..nada_ops.invert.landmarks import parse_landmarks
    n = image.shape[0]
    given = parse_landmarks(landmarks, n)
    model = landmark_model_path(landmark_model) if any(g is None for g in given) else None
    arr, tfs = align_photos(to_uint8(image), given, model, output_size=size, face=face, face_index=face_index,
                            enable_padding=padding, progress=progress)
    out = torch.from_numpy(arr).float().div_(255.0).to(C.intermediate_device())
    return out, tfs


class NADAAlignFace:
    DESCRIPTION = ("Crop, rotate and scale each photo's face the way the FFHQ dataset was made (from the eye and "
                   "mouth landmarks), so that StyleGAN encoders and inversion see what they were trained on. "
                   "Landmarks come from dlib (optional: pip install dlib-bin, and dlib's "
                   "shape_predictor_68_face_landmarks.dat in models/face_landmarks) or are given as JSON. Returns "
                   "the aligned faces and the transform that Paste Face Back uses to put a result into the photo.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = ("IMAGE", C.FACE_TRANSFORM, "STRING")
    RETURN_NAMES = ("aligned", "transform", "info")
    OUTPUT_TOOLTIPS = ("The aligned faces, size x size, one per photo.",
                       "Where each face came from in its photo (for Paste Face Back).",
                       "Faces found and chosen, and the alignment per photo.")
    SEARCH_ALIASES = C.aliases("align face", "ffhq", "crop face", "face alignment", "landmarks", "dlib")
    FUNCTION = "align"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Photo(s) with a face; each image of the batch is aligned separately."}),
            "size": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 64,
                             "tooltip": "Output size (the generator's resolution: 1024 for FFHQ; encoders "
                                        "resize to 256 themselves)."}),
            "face": (["largest", "index"], {"default": "largest",
                                            "tooltip": "Which face when a photo has several: the largest, or the "
                                                       "one at face_index (0 = largest, 1 = next, ...)."}),
            "face_index": ("INT", {"default": 0, "min": 0, "max": 1000,
                                   "tooltip": "With face = index: the face to take (ordered by size)."}),
            "padding": ("BOOLEAN", {"default": True,
                                    "tooltip": "Where the crop leaves the photo, extend it by reflection, blurred "
                                               "and faded (as FFHQ). Off: black borders."}),
        }, "optional": {
            "landmarks": ("STRING", {"default": "",
                                     "tooltip": "Optional JSON landmarks in photo pixels: 68 [x, y] points in dlib's "
                                                "order, or 5 (left eye, right eye, nose tip, left and right mouth "
                                                "corner); one set for all photos or a list of sets. Empty = detect "
                                                "with dlib."}),
            "landmark_model": (landmark_model_choices(), {"default": "auto",
                               "tooltip": "dlib's 68-point model in models/face_landmarks (auto: "
                                          "shape_predictor_68_face_landmarks.dat or the first .dat)."}),
        }}

    def align(self, image, size, face, face_index, padding, landmarks="", landmark_model="auto"):
        from ..nada_ops.invert.align import FaceAlignment
        bar = C.Progress(image.shape[0])
        out, tfs = align_images(image, size, landmarks, landmark_model, face, face_index, padding, bar)
        lines = []
        for i, t in enumerate(tfs):
            where = "given landmarks" if landmarks.strip() else f"face {t.face_index + 1} of {t.faces_found}"
            lines.append(f"photo {i + 1}: {where}; side {t.side:.0f} px of {t.photo_size[0]}x{t.photo_size[1]}, "
                         f"rotation {t.angle:.1f} deg" + (", padded" if t.info.get("padded") else ""))
        return (out, FaceAlignment(tuple(tfs)), "\n".join(lines))


class NADAPasteFace:
    DESCRIPTION = ("Put aligned faces (a reconstruction, the photo in an adapted domain, ...) back into the "
                   "original photos with the inverse of Align Face's transform, blended at the edge.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The photos with the faces pasted in.",)
    SEARCH_ALIASES = C.aliases("paste face", "uncrop", "composite", "inverse alignment", "put back")
    FUNCTION = "paste"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "photo": ("IMAGE", {"tooltip": "The original photo(s) given to Align Face."}),
            "face": ("IMAGE", {"tooltip": "Aligned faces of any size: one per photo, or several for one photo "
                                          "(each is pasted into its own copy)."}),
            "transform": (C.FACE_TRANSFORM, {"tooltip": "Align Face's transform output."}),
            "feather": ("FLOAT", {"default": 0.06, "min": 0.0, "max": 0.5, "step": 0.01,
                                  "tooltip": "Width of the blended edge, as a fraction of the face square "
                                             "(0 = hard edge)."}),
            "margin": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.45, "step": 0.01,
                                 "tooltip": "Shrink the pasted square by this fraction of its side on each edge."}),
        }}

    def paste(self, photo, face, transform, feather, margin):
        from ..nada_ops.invert.align import paste_back
        tfs = list(transform.transforms)
        n_photo, n_face = photo.shape[0], face.shape[0]
        if len(tfs) != n_photo:
            raise ValueError(f"Paste Face Back: {n_photo} photos but {len(tfs)} transforms: connect the photos that "
                             "went into Align Face")
        if n_face == n_photo:
            pairs = [(i, i) for i in range(n_photo)]
        elif n_photo == 1:
            pairs = [(0, j) for j in range(n_face)]
        else:
            raise ValueError(f"Paste Face Back: {n_face} faces for {n_photo} photos (give one per photo, or any "
                             "number for a single photo)")
        out = []
        for p, f in pairs:
            ph = photo[p, ..., :3].permute(2, 0, 1).float()
            fc = face[f, ..., :3].permute(2, 0, 1).float()
            out.append(paste_back(ph, fc, tfs[p], feather, margin).permute(1, 2, 0).clamp(0, 1))
        return (torch.stack(out).to(C.intermediate_device()),)


NODE_CLASS_MAPPINGS = {"NADAAlignFace": NADAAlignFace, "NADAPasteFace": NADAPasteFace}
NODE_DISPLAY_NAME_MAPPINGS = {"NADAAlignFace": "Align Face, FFHQ (StyleGAN-NADA)",
                              "NADAPasteFace": "Paste Face Back (StyleGAN-NADA)"}
