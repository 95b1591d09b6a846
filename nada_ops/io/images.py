"""Bounded image decoding: photos and example images are untrusted input.

- The pixel count is checked from the header BEFORE anything is decoded (limit
  :func:`max_image_pixels`, overridable with the environment variable
  ``NADA_MAX_IMAGE_PIXELS``); Pillow's own decompression-bomb error becomes the same clear
  message.
- When the caller says how large the image needs to be (``max_side``), JPEGs are decoded
  at a reduced scale (``Image.draft``) and everything is reduced in 8-bit before any
  float conversion, so a 100-megapixel photo for a 256 px generator never becomes a
  100-megapixel float tensor.
- Truncated, empty and non-image files, and unknown formats give an :class:`ImageFileError`
  that names the file.
- What a viewer shows is what the pack sees: the first frame of an animation, EXIF
  orientation applied, transparency on white, 16-bit greyscale scaled (not clipped) to 8 bits.
- Lists of files are bounded (:data:`MAX_IMAGE_FILES`) and decoded one at a time
  (:func:`read_images`, :func:`read_image_batch` for one batch at a common size).
"""
from __future__ import annotations

import os
import struct
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


#: Most files one call reads (few-shot targets, photos to invert): a folder of a million
#: files is refused before anything is decoded.
MAX_IMAGE_FILES = 1000

_EXIF_ORIENTATION = 0x0112


def _orientation(im) -> int:
    try:
        v = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:          # malformed EXIF: show the pixels as stored
        return 1
    return v if 2 <= v <= 8 else 1


def _to_8bit(im):
    """Any decoded mode -> 'RGB', 'RGBA', 'L' or 'LA' (8 bits per channel).  High-bit-depth
    greyscale is scaled, not clipped (Pillow's own conversion turns a 16-bit PNG white)."""
    from PIL import Image
    m = im.mode
    if m in ("RGB", "RGBA", "L", "LA"):
        return im
    if m.startswith("I;16") or m == "I":
        a = np.asarray(im)
        if m == "I" and (a.size == 0 or int(a.max()) <= 255):
            a8 = np.clip(a, 0, 255).astype(np.uint8)
        else:
            a8 = (np.clip(a.astype(np.float32), 0, 65535) / 257.0 + 0.5).astype(np.uint8)
        return Image.fromarray(a8, "L")
    if m == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float32))
        if a.size and float(a.max()) <= 1.0:
            a = a * 255.0
        return Image.fromarray((np.clip(a, 0, 255) + 0.5).astype(np.uint8), "L")
    if m in ("PA", "La", "RGBa") or (m == "P" and "transparency" in im.info):
        return im.convert("RGBA")
    if m == "1":
        return im.convert("L")
    return im.convert("RGB")     # P, CMYK, YCbCr, LAB, HSV, RGBX, ...


def _flatten(im):
    """Composite transparency on white (as a viewer shows it) and return RGB."""
    from PIL import Image
    if im.mode in ("RGBA", "LA"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im


def _shrink(im, max_side: int):
    w, h = im.size
    short = min(w, h)
    if short <= max_side:
        return im
    from PIL import Image
    s = max_side / short
    return im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS, reducing_gap=3.0)


def read_image(path, max_side: int | None = None, max_pixels: int | None = None):
    """Decode ``path`` into an RGB ``PIL.Image`` (the first frame of an animation or a
    multi-page file; EXIF orientation applied; transparency composited on white).

    ``max_side``: the image is only needed this large (its SHORT side may be reduced to
    ``max_side``, never below); None keeps the full size. ``max_pixels``: refuse images with
    more pixels (default :func:`max_image_pixels`). The size is checked from the header,
    before anything is decoded; JPEGs are decoded at a reduced scale; the reduction happens
    in 8 bits, before transparency is flattened.
    """
    from PIL import Image, UnidentifiedImageError

    limit = int(max_pixels or max_image_pixels())
    target = int(max_side) if max_side else None
    if target is not None and target < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ImageFileError(p, "file does not exist" if not os.path.exists(p) else "is not a file")
    if os.path.getsize(p) == 0:
        raise ImageFileError(p, "file is empty")
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
            # JPEG: let the decoder produce a reduced image directly (1/2, 1/4, 1/8 scale).
            if target is not None and im.format == "JPEG" and min(w, h) >= 2 * target:
                scale = min(w, h) / target
                im.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
            im.load()
            orientation = _orientation(im)
            out = _to_8bit(im)
            if out is im:
                out = im.copy()          # detach from the file before it is closed
        if target is not None:
            out = _shrink(out, target)
        out = _flatten(out)
        if orientation != 1:
            out = out.transpose({2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                                 4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                                 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                                 8: Image.Transpose.ROTATE_90}[orientation])
    except ImageFileError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageFileError(p, f"image is too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise ImageFileError(p, "not an image file Pillow can read (PNG, JPEG, WebP, ...)") from None
    except MemoryError:
        raise ImageFileError(p, "not enough memory to decode the image") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError) as e:
        raise ImageFileError(p, f"cannot decode the image (truncated or corrupt: {e})") from None
    return out


def _check_count(paths, max_files: int | None) -> list:
    paths = list(paths)
    limit = MAX_IMAGE_FILES if max_files is None else int(max_files)
    if not paths:
        raise ValueError("no image files given")
    if len(paths) > limit:
        raise ValueError(f"{len(paths)} image files given ({os.fspath(paths[0])}, ...); at most {limit} are read "
                         "at once")
    return paths


def read_images(paths, max_side: int | None = None, max_pixels: int | None = None,
                max_files: int | None = None) -> list:
    """:func:`read_image` for each of ``paths`` (at most ``max_files``, default
    :data:`MAX_IMAGE_FILES`; counted before anything is decoded)."""
    return [read_image(p, max_side, max_pixels) for p in _check_count(paths, max_files)]


def read_image_batch(paths, size: int, crop: bool = True, max_pixels: int | None = None,
                     max_files: int | None = None) -> np.ndarray:
    """Image files -> one uint8 batch [N, size, size, 3] at a common size: each image is
    reduced while decoding, centre-cropped to a square (``crop=False``: stretched), then
    resized to ``size`` x ``size`` (Lanczos). Only one full-size image is in memory at a time."""
    from PIL import Image
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    paths = _check_count(paths, max_files)
    out = np.empty([len(paths), size, size, 3], dtype=np.uint8)
    for i, p in enumerate(paths):
        im = read_image(p, max_side=size, max_pixels=max_pixels)
        w, h = im.size
        if crop and w != h:
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        out[i] = np.asarray(im, dtype=np.uint8)
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
