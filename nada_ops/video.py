"""Domain-transition rendering: easing, the frame loop, and streaming video writers.

A transition renders a fixed set of latents while the generator's WEIGHTS move along a
sequence of K >= 2 generators (A -> B -> C ...; NADA supplement F), optionally while the
latents also move (towards end latents, along keyframes, or along an edit direction).

Frame loop (:func:`iter_transition`): per frame, one in-place lerp of the weights into a
single preallocated generator (:class:`~nada_ops.interpolate.GeneratorPath`), then the N
latents are rendered in batches of ``batch_size``.  Weights differ from frame to frame, so
frames are not batched across time; the batch dimension is the latents.  Nothing is kept
from one frame to the next: memory does not grow with the number of frames.

Writers (all write to a temporary file next to the destination and rename it into place
when closed successfully; an error or interrupt leaves no partial file under the final name):
- ``.mp4``: H.264 (libx264, yuv420p, even frame size by edge padding) through PyAV,
  streamed: one frame in memory at a time (plus the encoder's own look-ahead).
- ``.gif``: streamed: each frame is quantised to its own 256-colour palette with Pillow
  (median cut on a <= 256 px copy, applied with Floyd-Steinberg dithering) and appended to
  the file at once (local colour tables); one frame in memory at a time.
- ``.webp`` (animated): through PyAV's libwebp_anim encoder when the installed PyAV has it
  (raw frames are streamed in; libwebp keeps the COMPRESSED frames until the file is
  assembled at the end, so memory grows by the compressed size only). Without it, Pillow is
  used and every frame is kept in memory (as a PIL image) until the end.
"""
from __future__ import annotations

import io
import math
import operator
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .fileio import commit_temp, discard_temp, temp_path_beside
from .interpolate import GeneratorPath
from .latent_tools import INTERPOLATION_MODES, interpolate

ProgressFn = Callable[[int, int, object], None]

# ----------------------------------------------------------------------------- easing
EASINGS: dict[str, Callable[[float], float]] = {
    "linear": lambda t: t,
    "ease_in_out": lambda t: 0.5 - 0.5 * math.cos(math.pi * t),          # cosine (sine in-out)
    "smoothstep": lambda t: t * t * (3 - 2 * t),
    "smootherstep": lambda t: t * t * t * (t * (6 * t - 15) + 10),
    "ease_in": lambda t: t * t,
    "ease_out": lambda t: 1 - (1 - t) * (1 - t),
    "ease_in_out_cubic": lambda t: 4 * t ** 3 if t < 0.5 else 1 - (-2 * t + 2) ** 3 / 2,
}
EASING_NAMES = tuple(EASINGS)


def ease(name: str, t: float) -> float:
    """Eased value of t in [0, 1]; every easing maps 0 -> 0 and 1 -> 1 exactly."""
    if name not in EASINGS:
        raise ValueError(f"easing must be one of {list(EASINGS)}, got {name!r}")
    t = min(max(float(t), 0.0), 1.0)
    if t == 0.0 or t == 1.0:
        return t
    return float(min(max(EASINGS[name](t), 0.0), 1.0))


@dataclass(frozen=True)
class FramePlan:
    index: int
    progress: float      # p in [0, 1]: linear time
    position: float      # s in [0, K-1]: where the weights are on the generator sequence
    latent_u: float      # u in [0, 1]: how far the latents have moved (0 = start latents)


class FramePlans(Sequence):
    """The frame schedule of a clip, computed frame by frame from the index: nothing
    proportional to the number of frames is stored (a 10^9-frame plan costs a few bytes;
    the work is only done for the frames actually rendered).  A read-only sequence of
    :class:`FramePlan`; see :func:`plan_frames`."""

    def __init__(self, num_frames: int, num_generators: int, easing: str = "ease_in_out", loop: bool = False):
        if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)):
            raise ValueError(f"frames must be a whole number, got {type(num_frames).__name__} {num_frames!r:.40}")
        self.num_frames = int(num_frames)
        if self.num_frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.num_frames}")
        self.k = int(num_generators)
        if self.k < 2:
            raise ValueError(f"a transition needs at least 2 generators, got {self.k}")
        if easing not in EASINGS:
            raise ValueError(f"easing must be one of {list(EASINGS)}, got {easing!r}")
        self.easing = easing
        self.loop = bool(loop)
        # the path through the generators: 0 .. K-1 (.. back to 0 when looping)
        self._nodes = list(range(self.k)) + (list(range(self.k - 2, -1, -1)) if self.loop else [])

    def __len__(self) -> int:
        return self.num_frames

    def plan(self, f: int) -> FramePlan:
        n, loop, easing, nodes = self.num_frames, self.loop, self.easing, self._nodes
        if loop:
            p = f / n
        else:
            p = f / (n - 1) if n > 1 else 0.0
        n_seg = len(nodes) - 1
        x = p * n_seg
        seg = min(int(math.floor(x)), n_seg - 1)
        local = ease(easing, x - seg)
        s = nodes[seg] + (nodes[seg + 1] - nodes[seg]) * local
        s = min(max(s, 0.0), self.k - 1.0)
        u = ease(easing, 1 - abs(2 * p - 1)) if loop else ease(easing, p)
        return FramePlan(f, p, s, u)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.plan(j) for j in range(*i.indices(self.num_frames))]
        i = operator.index(i)
        if i < 0:
            i += self.num_frames
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {i} outside 0..{self.num_frames - 1}")
        return self.plan(i)

    def __iter__(self):
        for f in range(self.num_frames):
            yield self.plan(f)

    def __repr__(self):
        return (f"FramePlans(frames={self.num_frames}, generators={self.k}, easing={self.easing!r}, "
                f"loop={self.loop})")


def plan_frames(num_frames: int, num_generators: int, easing: str = "ease_in_out",
                loop: bool = False) -> FramePlans:
    """Frame schedule.  The weights move through the generators one segment after another,
    with ``easing`` applied inside each segment (so the video lingers on every model); the
    latent motion uses the same easing over the whole clip.

    ``loop``: go A -> ... -> last -> ... -> A and leave out the final frame (it would equal the
    first), for seamless looping GIF/WebP; the latent motion goes out and back.

    Returns a lazy sequence (:class:`FramePlans`): each plan is computed from its index when
    it is read, so the cost does not grow with ``num_frames`` until frames are rendered."""
    return FramePlans(num_frames, num_generators, easing, loop)


# ------------------------------------------------------------------------ latent motion
class LatentMotion:
    """Latents at motion position u in [0, 1].

    - ``keyframes`` [K, N or 1, num_ws, w_dim] (K >= 1): piecewise path start -> ... -> end
      (lerp or slerp per segment; K = 1 means no path);
    - ``direction_offset`` [num_ws, w_dim] times ``direction_strength * u`` added on top."""

    def __init__(self, ws: torch.Tensor, keyframes: torch.Tensor | None = None, mode: str = "lerp",
                 direction_offset: torch.Tensor | None = None, direction_strength: float = 0.0,
                 center: torch.Tensor | None = None):
        if mode not in INTERPOLATION_MODES:
            raise ValueError(f"latent interpolation mode must be one of {INTERPOLATION_MODES}, got {mode!r}")
        self.ws = ws
        n = ws.shape[0]
        if keyframes is not None:
            if keyframes.ndim != 4 or keyframes.shape[2:] != ws.shape[1:]:
                raise ValueError(f"latent keyframes must be [K, N, {ws.shape[1]}, {ws.shape[2]}], got "
                                 f"{tuple(keyframes.shape)}")
            if keyframes.shape[1] not in (1, n):
                raise ValueError(f"latent keyframes hold {keyframes.shape[1]} entries per keyframe, the latents {n}: "
                                 "give one or the same number")
            keyframes = keyframes.to(ws.device, ws.dtype).expand(-1, n, -1, -1)
            keyframes = torch.cat([ws[None], keyframes], dim=0)
        self.keyframes = keyframes
        self.mode = mode
        self.center = center
        self.offset = None
        if direction_offset is not None and direction_strength != 0:
            if tuple(direction_offset.shape) != tuple(ws.shape[1:]):
                raise ValueError(f"direction offset must be [{ws.shape[1]}, {ws.shape[2]}], got "
                                 f"{tuple(direction_offset.shape)}")
            self.offset = direction_offset.to(ws.device, ws.dtype) * float(direction_strength)

    def at(self, u: float, rows: slice = slice(None)) -> torch.Tensor:
        ws = self.ws[rows]
        if self.keyframes is not None:
            kf = self.keyframes[:, rows]
            k = kf.shape[0]
            pos = min(max(float(u), 0.0), 1.0) * (k - 1)
            i = min(int(math.floor(pos)), k - 2)
            ws = interpolate(kf[i], kf[i + 1], pos - i, self.mode, self.center)
        if self.offset is not None:
            ws = ws + float(u) * self.offset[None]
        return ws


# --------------------------------------------------------------------------- frame loop
@dataclass(frozen=True)
class Frame:
    index: int
    plan: FramePlan
    images: torch.Tensor   # [N, C, H, W] float32 in [-1, 1] (unclamped), on the render device


def iter_transition(path: GeneratorPath, motion: LatentMotion, plans, batch_size: int = 8,
                    noise_mode: str = "const", noise_seed: int = 0,
                    dtype: torch.dtype = torch.float32, precision: str | None = None) -> Iterator[Frame]:
    """Yield one :class:`Frame` per plan entry.  ``noise_mode='random'`` gives every latent its own
    noise (seeded by ``noise_seed`` and the latent's index) and the SAME noise in every frame, so
    the video does not flicker. ``precision``: a :mod:`nada_ops.precision` policy name that
    replaces ``dtype`` (None: ``dtype`` as given)."""
    from .precision import synthesis_call
    n = motion.ws.shape[0]
    batch_size = max(int(batch_size), 1)
    dev = path.device
    for plan in plans:
        G = path.set(plan.position)
        outs = []
        kw, math_ctx = synthesis_call(G, precision, dtype)
        with torch.no_grad(), math_ctx:
            for i in range(0, n, batch_size):
                rows = slice(i, min(i + batch_size, n))
                ws = motion.at(plan.latent_u, rows).to(dev)
                noises = None
                if noise_mode == "random":   # per latent, independent of the batch split
                    per = [G.make_noises(1, torch.Generator(device=dev).manual_seed(int(noise_seed) * 1000003 + r))
                           for r in range(rows.start, rows.stop)]
                    noises = [torch.cat(layer, dim=0) for layer in zip(*per)]
                img = G.synthesis(ws, noise_mode=noise_mode, noises=noises, **kw)
                outs.append(img.float())
        yield Frame(plan.index, plan, torch.cat(outs, dim=0))


def to_uint8_hwc(images: torch.Tensor, cols: int | None = None) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> one uint8 RGB grid [H', W', 3] (N = 1: the image itself)."""
    from .stylegan.sampling import make_grid
    x = images.detach().float()
    grid = x[0] if x.shape[0] == 1 else make_grid(x, cols)
    if grid.shape[0] == 1:
        grid = grid.repeat(3, 1, 1)
    grid = grid[:3]
    return ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


# ------------------------------------------------------------------------------ writers
VIDEO_FORMATS = ("mp4", "webp", "gif")


def format_from_path(path) -> str:
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if ext not in VIDEO_FORMATS:
        raise ValueError(f"{path}: unsupported video extension {ext!r}; use one of {list(VIDEO_FORMATS)}")
    return ext


class _AtomicWriter:
    """Base: frames go to a temp file in the destination folder; ``close()`` renames it into
    place, ``abort()`` deletes it. As a context manager, an exception aborts."""

    def __init__(self, path, fps: float):
        from .limits import check
        self.path = os.fspath(path)
        self.fps = check("fps", fps, self.path)
        self.tmp = temp_path_beside(self.path)
        self.frames = 0
        self.size: tuple[int, int] | None = None   # (width, height) of the written frames
        self.closed = False

    def _check_frame(self, frame) -> np.ndarray:
        a = np.asarray(frame)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [H, W, 3], got {a.dtype} {a.shape}")
        if self.size is None:
            self.size = (a.shape[1], a.shape[0])
        elif (a.shape[1], a.shape[0]) != self.size:
            raise ValueError(f"frame size changed from {self.size} to {(a.shape[1], a.shape[0])}")
        return np.ascontiguousarray(a)

    def write(self, frame) -> None:
        a = self._check_frame(frame)
        self._write(a)
        self.frames += 1

    def _write(self, a: np.ndarray) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _cleanup(self) -> None:
        pass

    def close(self) -> str:
        if self.closed:
            return self.path
        if self.frames == 0:
            self.abort()
            raise ValueError(f"{self.path}: no frames were written")
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        commit_temp(self.tmp, self.path)
        self.closed = True
        return self.path

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._cleanup()
        except Exception:
            pass
        discard_temp(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class Mp4Writer(_AtomicWriter):
    """H.264 in MP4 via PyAV (libx264, yuv420p), streamed frame by frame."""

    def __init__(self, path, fps: float = 24, crf: int = 18, preset: str = "medium",
                 metadata: dict | None = None):
        from .limits import check
        self.crf = check("crf", crf, os.fspath(path), field="quality (CRF)")
        self.preset = preset
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        super().__init__(path, fps)
        self._container = None
        self._stream = None

    def _open(self, w: int, h: int):
        import av
        from fractions import Fraction
        rate = Fraction(self.fps).limit_denominator(1001)
        # use_metadata_tags: keep arbitrary keys (e.g. ComfyUI's 'workflow' and 'prompt') in the file
        self._container = av.open(self.tmp, mode="w", format="mp4",
                                  options={"movflags": "faststart+use_metadata_tags"})
        for k, v in self.metadata.items():
            self._container.metadata[k] = v
        st = self._container.add_stream("libx264", rate=rate)
        st.width, st.height = w, h
        st.pix_fmt = "yuv420p"
        st.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream = st

    def _write(self, a):
        import av
        h, w = a.shape[:2]
        if h % 2 or w % 2:   # yuv420p needs even sizes: replicate the last row/column
            a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._container is None:
            self._open(a.shape[1], a.shape[0])
        frame = av.VideoFrame.from_ndarray(a, format="rgb24")
        for pkt in self._stream.encode(frame):
            self._container.mux(pkt)

    def _finish(self):
        for pkt in self._stream.encode():
            self._container.mux(pkt)
        self._container.close()
        self._container = None

    def _cleanup(self):
        if self._container is not None:
            self._container.close()
            self._container = None


def _gif_delay(fps: float, index: int) -> int:
    """Delay of frame ``index`` in centiseconds, rounding so the average rate is ``fps``
    (GIF delays are whole centiseconds; viewers treat < 2 as slow, so 2 is the minimum)."""
    d = round((index + 1) * 100 / fps) - round(index * 100 / fps)
    return max(int(d), 2)


def _parse_single_gif(data: bytes) -> tuple[bytes, int, bytes]:
    """(colour table bytes, image-descriptor packed flags without the table bits, image data)
    of a single-frame GIF written by Pillow."""
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        raise ValueError("not a GIF")
    packed = data[10]
    pos = 13
    table = b""
    if packed & 0x80:
        n = 3 * (2 ** ((packed & 7) + 1))
        table = data[pos:pos + n]
        pos += n
    while pos < len(data):
        b = data[pos]
        if b == 0x21:                       # extension: skip its sub-blocks
            pos += 2
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        elif b == 0x2C:                     # image descriptor
            ipacked = data[pos + 9]
            pos += 10
            if ipacked & 0x80:              # local table overrides the global one
                n = 3 * (2 ** ((ipacked & 7) + 1))
                table = data[pos:pos + n]
                pos += n
            start = pos
            pos += 1                        # LZW minimum code size
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
            return table, ipacked & 0x40, data[start:pos]
        elif b == 0x3B:
            break
        else:
            raise ValueError(f"unexpected GIF block 0x{b:02x}")
    raise ValueError("GIF has no image")


class GifWriter(_AtomicWriter):
    """Animated GIF, streamed: every frame gets its own 256-colour palette (local colour table)."""

    def __init__(self, path, fps: float = 24, loop: int = 0):
        from .limits import check
        self.loop = check("loop_count", loop, os.fspath(path), field="loop")
        super().__init__(path, fps)
        try:
            self._fh = open(self.tmp, "wb")
        except BaseException:
            discard_temp(self.tmp)
            raise

    def _write(self, a):
        from PIL import Image
        rgb = Image.fromarray(a, "RGB")
        # Median-cut palette from a small copy (fast at any size), applied with dithering.
        thumb = rgb if max(rgb.size) <= 256 else rgb.resize(
            (max(1, rgb.width * 256 // max(rgb.size)), max(1, rgb.height * 256 // max(rgb.size))),
            Image.Resampling.BOX)
        palette = thumb.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        im = rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        buf = io.BytesIO()
        im.save(buf, format="GIF", interlace=False, optimize=False)
        table, interlace, data = _parse_single_gif(buf.getvalue())
        size_bits = max(int(math.log2(max(len(table) // 3, 2))) - 1, 0)
        table = table.ljust(3 * 2 ** (size_bits + 1), b"\0")
        w, h = self.size
        fh = self._fh
        if self.frames == 0:
            fh.write(b"GIF89a" + struct.pack("<HH", w, h) + bytes([0x80 | size_bits, 0, 0]) + table)
            fh.write(b"!\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", self.loop) + b"\x00")
        delay = _gif_delay(self.fps, self.frames)
        fh.write(b"!\xf9\x04" + bytes([1 << 2]) + struct.pack("<H", delay) + b"\x00\x00")
        fh.write(b"," + struct.pack("<HHHH", 0, 0, w, h) + bytes([0x80 | interlace | size_bits]) + table)
        fh.write(data)

    def _finish(self):
        self._fh.write(b";")
        self._fh.close()

    def _cleanup(self):
        if not self._fh.closed:
            self._fh.close()


def _pyav_has(codec: str) -> bool:
    try:
        import av
        return codec in av.codecs_available
    except ImportError:
        return False


class WebpWriter(_AtomicWriter):
    """Animated WebP: PyAV libwebp_anim when available (streamed; the encoder keeps only the
    compressed frames), else Pillow (all frames kept in memory until ``close``)."""

    def __init__(self, path, fps: float = 24, quality: int = 90, lossless: bool = False, loop: int = 0,
                 backend: str = "auto"):
        from .limits import check
        self.quality = check("webp_quality", quality, os.fspath(path), field="quality")
        self.lossless = bool(lossless)
        self.loop = check("loop_count", loop, os.fspath(path), field="loop")
        if backend == "auto":
            backend = "pyav" if _pyav_has("libwebp_anim") else "pillow"
        if backend not in ("pyav", "pillow"):
            raise ValueError(f"webp backend must be auto, pyav or pillow, got {backend!r}")
        self.backend = backend
        super().__init__(path, fps)
        self.streams = backend == "pyav"
        self._container = None
        self._stream = None
        self._frames: list = []
        self._kept_bytes = 0

    def _write(self, a):
        if self.backend == "pillow":
            from PIL import Image

            from .limits import physical_memory_bytes
            self._kept_bytes += a.nbytes
            have = physical_memory_bytes()
            if have is not None and self._kept_bytes > have // 2:
                raise ValueError(f"{self.path}: an animated WebP written with Pillow keeps every frame in memory, and "
                                 f"{self.frames + 1} frames need more than half of this machine's memory; write MP4 "
                                 "or GIF (streamed), or install PyAV with libwebp")
            self._frames.append(Image.fromarray(a, "RGB"))
            return
        import av
        from fractions import Fraction
        if self._container is None:
            self._container = av.open(self.tmp, mode="w", format="webp", options={"loop": str(self.loop)})
            st = self._container.add_stream("libwebp_anim", rate=Fraction(self.fps).limit_denominator(1001))
            st.width, st.height = a.shape[1], a.shape[0]
            st.pix_fmt = "bgra" if self.lossless else "yuv420p"
            st.options = {"quality": str(self.quality), "lossless": "1" if self.lossless else "0"}
            self._stream = st
        fmt = "rgb24"
        frame = av.VideoFrame.from_ndarray(a, format=fmt)
        for pkt in self._stream.encode(frame):
            self._container.mux(pkt)

    def _finish(self):
        if self.backend == "pillow":
            first, rest = self._frames[0], self._frames[1:]
            durations = [max(round((i + 1) * 1000 / self.fps) - round(i * 1000 / self.fps), 1)
                         for i in range(len(self._frames))]
            first.save(self.tmp, format="WEBP", save_all=True, append_images=rest, duration=durations,
                       loop=self.loop, quality=self.quality, lossless=self.lossless)
            self._frames = []
            return
        for pkt in self._stream.encode():
            self._container.mux(pkt)
        self._container.close()
        self._container = None

    def _cleanup(self):
        self._frames = []
        if self._container is not None:
            self._container.close()
            self._container = None


def open_writer(path, fps: float = 24, quality: int | None = None, loop: int = 0, metadata: dict | None = None):
    """Writer for ``path`` by extension (.mp4 / .webp / .gif).  ``quality``: CRF for MP4
    (lower = better, default 18), 0-100 for WebP (default 90); ignored for GIF.
    ``metadata``: string key/values stored in the MP4 container (ComfyUI embeds the workflow
    this way); ignored for WebP and GIF."""
    fmt = format_from_path(path)
    if fmt == "mp4":
        return Mp4Writer(path, fps, crf=18 if quality is None else quality, metadata=metadata)
    if fmt == "webp":
        return WebpWriter(path, fps, quality=90 if quality is None else quality, loop=loop)
    return GifWriter(path, fps, loop=loop)


def probe_video(path, max_frames: int | None = None) -> dict:
    """Decode a file the writers made: {'frames', 'width', 'height', 'format'} (used by the
    tests).  Bounded like every reader: the frame size is checked against
    :func:`nada_ops.io.images.max_image_pixels` before decoding, at most ``max_frames``
    (default ``limits.RANGES['frames'].hi``) frames are decoded, and a bad file gives an
    :class:`~nada_ops.io.images.ImageFileError` naming it."""
    from .io.images import ImageFileError, max_image_pixels
    from .limits import RANGES
    p = os.fspath(path)
    fmt = format_from_path(p)
    limit_frames = int(max_frames or RANGES["frames"].hi)
    limit_px = max_image_pixels()

    def check_size(w, h):
        if w is None or h is None or w * h > limit_px:
            raise ImageFileError(p, f"video frames are {w}x{h}, more than the limit of {limit_px} pixels")

    def check_count(n):
        if n > limit_frames:
            raise ImageFileError(p, f"more than {limit_frames} frames")

    try:
        if fmt == "mp4":
            import av
            with av.open(p) as c:
                if not c.streams.video:
                    raise ImageFileError(p, "no video stream")
                st = c.streams.video[0]
                check_size(st.codec_context.width, st.codec_context.height)
                n = 0
                w = h = None
                for fr in c.decode(st):
                    n += 1
                    check_count(n)
                    w, h = fr.width, fr.height
                return {"frames": n, "width": w, "height": h, "format": fmt, "codec": st.codec_context.name,
                        "pix_fmt": st.codec_context.pix_fmt}
        import warnings

        from PIL import Image
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        with im:
            w, h = im.size
            check_size(w, h)
            n = getattr(im, "n_frames", 1)
            check_count(n)
            for i in range(n):   # decode every frame
                im.seek(i)
                im.load()
            return {"frames": n, "width": w, "height": h, "format": fmt}
    except ImageFileError:
        raise
    except Exception as e:       # PIL: OSError/SyntaxError/...; PyAV: av.FFmpegError
        raise ImageFileError(p, f"cannot decode the video ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------- whole renders
def _check_collect_size(frames: int, height: int, width: int) -> None:
    """Returning every frame keeps them all (float32): refuse a request that cannot fit in
    the machine's memory, before allocating, instead of swapping or being killed."""
    from .limits import check_memory
    check_memory(int(frames) * int(height) * int(width) * 3 * 4,
                 f"returning all {frames} frames of {width}x{height}",
                 "render fewer frames, or write the video only (return only the last frame)")


def render_transition(generators, ws: torch.Tensor, num_frames: int, *, easing: str = "ease_in_out",
                      loop: bool = False, keyframes: torch.Tensor | None = None, latent_mode: str = "lerp",
                      direction_offset: torch.Tensor | None = None, direction_strength: float = 0.0,
                      batch_size: int = 8, noise_mode: str = "const", noise_seed: int = 0,
                      dtype: torch.dtype = torch.float32, precision: str | None = None, device=None, names=None,
                      layout: str = "grid", cols: int | None = None,
                      writers=None, collect: bool = False, last_frame: bool = False,
                      progress: ProgressFn | None = None, preview_every: int = 0) -> torch.Tensor | None:
    """Render a transition and stream it to ``writers``.

    ``layout='grid'``: each frame is a grid of all N latents, written to ``writers[0]``
    (or to every writer given); ``layout='separate'``: ``writers[i]`` receives latent i alone
    (a writer may be None to skip that latent).  ``collect``: also return all frames as a
    float32 tensor [F, H, W, 3] in 0..1 (preallocated once; this is the only thing that grows
    with the number of frames); ``last_frame``: return only the last frame [1, H, W, 3].
    ``progress(done, total, preview)`` is called after every
    frame (``preview`` a PIL image every ``preview_every`` frames, else None) and may raise."""
    gens = list(generators)
    path = GeneratorPath(gens, names=names, device=device)
    ws = ws.to(path.device, torch.float32)
    center = path.w_avg(0) if latent_mode == "slerp" else None
    motion = LatentMotion(ws, keyframes, latent_mode, direction_offset, direction_strength, center=center)
    plans = plan_frames(num_frames, len(gens), easing, loop)
    writers = list(writers or [])
    if layout not in ("grid", "separate"):
        raise ValueError(f"layout must be 'grid' or 'separate', got {layout!r}")
    if layout == "separate" and writers and len(writers) != ws.shape[0]:
        raise ValueError(f"layout 'separate' needs one writer per latent ({ws.shape[0]}), got {len(writers)}")
    out = None
    try:
        for fr in iter_transition(path, motion, plans, batch_size, noise_mode, noise_seed, dtype, precision):
            grid = None
            is_last = fr.index == len(plans) - 1
            if layout == "grid" or collect or (last_frame and is_last) or (progress and preview_every):
                grid = to_uint8_hwc(fr.images, cols)
            if layout == "grid":
                for wr in writers:
                    wr.write(grid)
            else:
                for i, wr in enumerate(writers):
                    if wr is not None:
                        wr.write(to_uint8_hwc(fr.images[i:i + 1]))
            if collect:
                if out is None:
                    gh, gw = grid.shape[:2]
                    _check_collect_size(len(plans), gh, gw)
                    out = torch.empty([len(plans), gh, gw, 3], dtype=torch.float32)
                out[fr.index] = torch.from_numpy(grid).float().div_(255)
            elif last_frame and is_last:
                out = torch.from_numpy(grid).float().div_(255)[None]
            if progress is not None:
                preview = None
                if preview_every and (fr.index % preview_every == 0 or is_last):
                    from PIL import Image
                    preview = Image.fromarray(grid)
                progress(fr.index + 1, len(plans), preview)
    except BaseException:
        for wr in writers:
            if wr is not None:
                wr.abort()
        raise
    for wr in writers:
        if wr is not None:
            wr.close()
    return out
