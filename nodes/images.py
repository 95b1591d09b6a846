"""Node: load a folder of images as one IMAGE batch (few-shot target styles, photos to invert)."""
from __future__ import annotations

import hashlib
import os

from . import _comfy as C

#: The pack's own example inputs (drawn by tools/make_example_inputs.py), offered next to the
#: user's folders so that the example workflows run as soon as their model files are in place.
EXAMPLE_INPUTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_inputs")
INPUT_PREFIX = "input/"
EXAMPLE_PREFIX = "examples/"


def _subfolders(root: str, depth: int = 2) -> list[str]:
    out = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return out
    for e in entries:
        if e.name.startswith(".") or not e.is_dir():
            continue
        out.append(e.name)
        if depth > 1:
            out += [f"{e.name}/{s}" for s in _subfolders(e.path, depth - 1)]
    return out


def folder_choices() -> list[str]:
    """'input/<folder>' for the image folders in ComfyUI's input directory (two levels deep)
    and 'examples/<name>' for the pack's example inputs."""
    out = []
    try:
        inp = C.input_dir()
    except (ImportError, AttributeError):
        inp = None
    if inp:
        out += [INPUT_PREFIX + s for s in _subfolders(inp)]
    out += [EXAMPLE_PREFIX + s for s in _subfolders(EXAMPLE_INPUTS, 1)]
    return out


def resolve_folder(choice: str) -> str:
    """The real folder behind a choice; refuses anything outside the two roots."""
    if choice.startswith(EXAMPLE_PREFIX):
        root, rel = EXAMPLE_INPUTS, choice[len(EXAMPLE_PREFIX):]
    elif choice.startswith(INPUT_PREFIX):
        root, rel = C.input_dir(), choice[len(INPUT_PREFIX):]
    else:
        raise ValueError(f"Load Images: {choice!r} is not a folder of ComfyUI/input or of the pack's examples")
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, rel))
    if os.path.commonpath([real_root, path]) != real_root:
        raise ValueError(f"Load Images: {choice!r} leaves its folder")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Load Images: folder {choice!r} does not exist ({path})")
    return path


class NADALoadImages:
    DESCRIPTION = ("Load every image of a folder as one IMAGE batch, each made square at one size: the few "
                   "example images of a style for CLIP Direction (image-guided adaptation), or photos to invert. "
                   "Folders: ComfyUI/input/<folder>/ (create one and put your images in it), and the pack's "
                   "own examples. Large photos are decoded at reduced size; corrupt files are named in the error.")
    CATEGORY = C.CATEGORY + "/images"
    RETURN_TYPES = ("IMAGE", "INT", "STRING")
    RETURN_NAMES = ("images", "count", "files")
    OUTPUT_TOOLTIPS = ("The images, [count, size, size, 3] in 0..1.", "How many images were loaded.",
                       "The file names, one per line, in batch order.")
    SEARCH_ALIASES = C.aliases("load images", "image folder", "batch images", "few-shot", "style images",
                               "reference images")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "folder": (folder_choices(), {"tooltip": "input/<folder>: a folder in ComfyUI/input; examples/<name>: "
                                                     "images that come with the pack."}),
            "size": ("INT", {"default": 256, "min": 32, "max": 2048, "step": 32,
                             "tooltip": "Side of the square images (CLIP looks at 224 px; for inversion use the "
                                        "generator's resolution)."}),
            "crop": (["center", "pad", "stretch"], {"default": "center",
                     "tooltip": "center: cut the middle square; pad: whole image on white; stretch: distort."}),
            "max_images": ("INT", {"default": 16, "min": 1, "max": 256,
                                   "tooltip": "Use at most this many images (first by file name)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, folder, size=256, crop="center", max_images=16):
        """Re-run when files are added, removed or changed in the folder."""
        from ..nada_ops.io.images import list_image_files
        try:
            files = list_image_files(resolve_folder(folder))[:max_images]
        except (OSError, ValueError):
            return ""
        h = hashlib.sha256()
        for f in files:
            st = os.stat(f)
            h.update(f"{os.path.basename(f)}:{st.st_size}:{st.st_mtime_ns};".encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def load(self, folder, size=256, crop="center", max_images=16):
        import torch

        from ..nada_ops.io.images import list_image_files, load_image_batch
        path = resolve_folder(folder)
        files = list_image_files(path)
        if not files:
            raise ValueError(f"Load Images: no image files (png, jpg, webp, ...) in {path}")
        files = files[:max_images]
        arr = load_image_batch(files, size, crop)
        images = torch.from_numpy(arr).to(C.intermediate_device())
        names = "\n".join(os.path.basename(f) for f in files)
        return (images, len(files), names)


NODE_CLASS_MAPPINGS = {"NADALoadImages": NADALoadImages}
NODE_DISPLAY_NAME_MAPPINGS = {"NADALoadImages": "Load Images from Folder (StyleGAN-NADA)"}
