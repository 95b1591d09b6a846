"""Bounded image decoding: photos and example images are untrusted input.

- The pixel count is checked from the header BEFORE anything is decoded (limit
  :func:`max_image_pixels`, overridable with the environment variable
  ``NADA_MAX_IMAGE_PIXELS``); Pillow's own decompression-bomb error becomes the same clear
  message.
- When the caller says how large the image needs to be (``max_side``), JPEGs are decoded
  at a reduced scale (``Image.draft``) and everything is reduced in 8-bit before any
  float conversion, so a 100-megapixel photo for a 256 px generator never becomes a
  100-megapixel float tensor.
- Truncated files, non-images and unknown formats give an :class:`ImageFileError` that
  names the file.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

#: Largest image (width x height) decoded; Pillow's own bomb threshold (2 x 89.5 MP).
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class ImageFileError(ValueError):
    """An image file cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = os.fspath(path) if not isinstance(path, str) else path
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def max_image_pixels() -> int:
    v = os.environ.get("NADA_MAX_IMAGE_PIXELS")
    if v:
        try:
            n = int(v)
            if n > 0:
                return n
        except ValueError:
            pass
    return DEFAULT_MAX_IMAGE_PIXELS


def read_image(path, max_side: int | None = None, max_pixels: int | None = None):
    """Decode ``path`` into an RGB ``PIL.Image``.

    ``max_side``: the image is only needed this large (its SHORT side may be reduced to
    about ``max_side``, never below); None keeps the full size. ``max_pixels``: refuse
    images with more pixels (default :func:`max_image_pixels`).
    """
    from PIL import Image, UnidentifiedImageError

    limit = int(max_pixels or max_image_pixels())
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ImageFileError(p, "file does not exist" if not os.path.exists(p) else "is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # our own check follows
            im = Image.open(p)
        with im:
            w, h = im.size
            if w < 1 or h < 1:
                raise ImageFileError(p, f"image has no pixels ({w}x{h})")
            if w * h > limit:
                raise ImageFileError(p, f"image is {w}x{h} = {w * h / 1e6:.0f} megapixels, more than the limit of "
                                        f"{limit / 1e6:.0f} (set NADA_MAX_IMAGE_PIXELS to raise it)")
            if max_side:
                target = int(max_side)
                # JPEG: let the decoder produce a reduced image directly (1/2, 1/4, 1/8 scale).
                if im.format == "JPEG" and min(w, h) > 2 * target:
                    scale = min(w, h) / target
                    im.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
            im.load()
            out = im
            if out.mode not in ("RGB",):
                if out.mode in ("RGBA", "LA", "PA") or (out.mode == "P" and "transparency" in out.info):
                    # composite on white, as a viewer shows it
                    rgba = out.convert("RGBA")
                    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    out = Image.alpha_composite(bg, rgba).convert("RGB")
                else:
                    out = out.convert("RGB")
            else:
                out = out.copy()
    except ImageFileError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageFileError(p, f"image is too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise ImageFileError(p, "not an image file Pillow can read (PNG, JPEG, WebP, ...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageFileError(p, f"cannot decode the image (truncated or corrupt: {e})") from None
    except MemoryError:
        raise ImageFileError(p, "not enough memory to decode the image") from None
    if max_side:
        w, h = out.size
        short = min(w, h)
        if short > int(max_side):
            s = int(max_side) / short
            out = out.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS,
                             reducing_gap=3.0)
    return out


def image_to_array(im) -> np.ndarray:
    """RGB PIL image -> float32 HWC array in [0, 1]."""
    return np.asarray(im, dtype=np.uint8).astype(np.float32) / 255.0


#: Most files :func:`load_image_batch` reads at once (a few-shot style needs 1-20).
MAX_BATCH_FILES = 256


def list_image_files(folder) -> list[str]:
    """Image files directly in ``folder`` (sorted by name; hidden and temporary files skipped)."""
    f = os.fspath(folder)
    try:
        names = sorted(os.listdir(f))
    except OSError as e:
        raise ImageFileError(f, f"cannot list the folder ({e.strerror or e})") from None
    return [os.path.join(f, n) for n in names
            if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(f, n))]


def square_crop(im, size: int, crop: str = "center"):
    """``crop='center'``: scale the short side to ``size`` and cut the middle square;
    ``'pad'``: fit the whole image and pad with white; ``'stretch'``: resize to size x size."""
    from PIL import Image
    w, h = im.size
    if crop == "stretch":
        return im.resize((size, size), Image.Resampling.LANCZOS)
    if crop == "pad":
        s = size / max(w, h)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
        out = Image.new("RGB", (size, size), (255, 255, 255))
        out.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
        return out
    if crop != "center":
        raise ValueError(f"crop must be 'center', 'pad' or 'stretch', got {crop!r}")
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((nw, nh), Image.Resampling.LANCZOS)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def load_image_batch(paths, size: int, crop: str = "center", max_files: int = MAX_BATCH_FILES):
    """Image files -> float32 array [N, size, size, 3] in [0, 1] (ComfyUI's IMAGE layout).

    Each file is decoded no larger than needed (:func:`read_image` with ``max_side``), then
    made square (:func:`square_crop`)."""
    paths = list(paths)
    if not paths:
        raise ValueError("no image files given")
    if len(paths) > max_files:
        raise ValueError(f"{len(paths)} image files given; at most {max_files} are read at once")
    size = int(size)
    if not 8 <= size <= 4096:
        raise ValueError(f"image size must be in 8..4096, got {size}")
    out = np.empty((len(paths), size, size, 3), dtype=np.float32)
    for i, p in enumerate(paths):
        im = read_image(p, max_side=size)   # short side >= size: enough for every crop mode
        out[i] = image_to_array(square_crop(im, size, crop))
    return out
