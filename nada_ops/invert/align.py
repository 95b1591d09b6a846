"""FFHQ face alignment: the crop / rotate / scale rule of the FFHQ dataset script, and the
way back (pasting a result into the original photo).

The rule (NVIDIA's ffhq-dataset, ``recreate_aligned_images``; pSp / e4e / ReStyle align
their inputs the same way), from 68 face landmarks in dlib's order:

- ``eye_left``, ``eye_right`` = means of landmarks 36-41 and 42-47; ``eye_avg`` their
  midpoint; ``mouth_avg`` = midpoint of the mouth corners 48 and 54;
  ``eye_to_eye = eye_right - eye_left``, ``eye_to_mouth = mouth_avg - eye_avg``;
- the crop is a square: axis ``x = eye_to_eye - rot90(eye_to_mouth)``, normalised and scaled
  to ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``, ``y = rot90(x)``, centre
  ``c = eye_avg + 0.1 eye_to_mouth``, corners ``c - x - y, c - x + y, c + x + y, c + x - y``
  (side ``2 |x|``);
- shrink: when the square is more than 4x the output, the photo is first reduced by an
  integer factor (antialiased); crop: the square's bounding box plus a 10 % border;
- pad (optional): where the square leaves the photo, the photo is extended by reflection,
  blurred towards the edges (Gaussian, sigma 2 % of the side) and faded to its median
  colour, so that the generator is not shown hard borders;
- the square is resampled bilinearly to ``transform_size`` (FFHQ: 4096 for a 1024 output)
  and reduced to the output size with an antialiased filter.

:class:`FaceTransform` records the similarity that maps the aligned square back into the
photo; :func:`paste_back` uses it to put a (reconstructed, adapted) face back into the
original with a feathered edge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

#: Landmark count of dlib's 68-point model (iBUG 300-W order); 5-point sets give eyes and mouth corners.
LANDMARKS_68 = 68


@dataclass(frozen=True)
class FaceTransform:
    """Where an aligned face came from.

    ``matrix`` (2 x 3) maps a point of the aligned square, in continuous pixel coordinates of
    an ``size`` x ``size`` image ([0, size], pixel i covering [i, i+1)), to continuous pixel
    coordinates of the original photo (``photo_size`` = (width, height))."""
    matrix: tuple                    # ((a, b, tx), (c, d, ty))
    size: int
    photo_size: tuple                # (width, height)
    landmarks: tuple = ()            # the 68 (or 5) points used, in photo pixel coordinates
    face_index: int = 0
    faces_found: int = 1
    info: dict = field(default_factory=dict, compare=False)

    def to_photo(self, pts: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Aligned-square points (of an image ``scale`` times ``size``) -> photo points."""
        m = np.asarray(self.matrix, dtype=np.float64)
        p = np.asarray(pts, dtype=np.float64) / scale
        return p @ m[:, :2].T + m[:, 2]

    @property
    def side(self) -> float:
        """Side of the aligned square in photo pixels."""
        m = self.matrix
        return math.hypot(m[0][0], m[1][0]) * self.size

    @property
    def angle(self) -> float:
        """Rotation of the square in the photo, degrees (positive = clockwise on screen)."""
        m = self.matrix
        return math.degrees(math.atan2(m[1][0], m[0][0]))

    def quad(self) -> np.ndarray:
        """Corners of the aligned square in the photo (upper-left, lower-left, lower-right, upper-right)."""
        s = self.size
        return self.to_photo(np.array([[0, 0], [0, s], [s, s], [s, 0]], dtype=np.float64))


@dataclass(frozen=True)
class FaceAlignment:
    """The transforms of a batch of aligned photos (one per photo), passed between nodes."""
    transforms: tuple

    def __len__(self) -> int:
        return len(self.transforms)


# -------------------------------------------------------------------------- the rule
def landmark_points(landmarks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eye_left, eye_right, mouth_avg) from 68 dlib-order landmarks, or from 5 points
    (left eye, right eye, nose, left mouth corner, right mouth corner), in pixel-index
    coordinates of the photo (x right, y down; 'left' = the left one in the image)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[1] != 2 or not np.isfinite(lm).all():
        raise ValueError(f"landmarks must be finite [N, 2] points, got shape {tuple(lm.shape)}")
    if lm.shape[0] == LANDMARKS_68:
        return lm[36:42].mean(0), lm[42:48].mean(0), (lm[48] + lm[54]) * 0.5
    if lm.shape[0] == 5:
        return lm[0], lm[1], (lm[3] + lm[4]) * 0.5
    raise ValueError(f"need 68 (dlib order) or 5 landmarks (eyes, nose, mouth corners), got {lm.shape[0]}")


def ffhq_quad(landmarks) -> tuple[np.ndarray, float]:
    """The FFHQ crop square: corners [4, 2] (in the photo's pixel-index coordinates) and side."""
    eye_left, eye_right, mouth_avg = landmark_points(landmarks)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])     # eye_to_mouth turned by -90 degrees
    norm = math.hypot(*x)
    if not norm > 1e-6:
        raise ValueError("degenerate landmarks: the eyes and the mouth coincide")
    x = x / norm * max(math.hypot(*eye_to_eye) * 2.0, math.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, math.hypot(*x) * 2


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an HxWxC float image over H and W, edges mirrored with the
    edge pixel repeated (scipy.ndimage's 'reflect'), kernel radius int(4 sigma + 0.5)."""
    if sigma <= 0:
        return img.copy()
    r = int(4.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float64) / sigma) ** 2)
    k = torch.from_numpy((k / k.sum()).astype(np.float32))
    x = np.pad(img, ((r, r), (r, r), (0, 0)), mode="symmetric")
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[:, None]      # [C, 1, H, W]
    with torch.no_grad():
        t = F.conv2d(t, k.view(1, 1, -1, 1))
        t = F.conv2d(t, k.view(1, 1, 1, -1))
    return t[:, 0].numpy().transpose(1, 2, 0)


def align_face(photo, landmarks, output_size: int = 1024, transform_size: int | None = None,
               enable_padding: bool = True, face_index: int = 0, faces_found: int = 1):
    """Align one face like FFHQ. ``photo``: PIL image or uint8 HxWx3 array; ``landmarks``:
    68 (dlib order) or 5 points in its pixel coordinates. Returns (PIL RGB image of
    ``output_size``, :class:`FaceTransform`). ``transform_size``: resampling size before the
    final reduction (default 4 x output, at most 4096: FFHQ's 4096 for 1024)."""
    from PIL import Image
    img = photo if isinstance(photo, Image.Image) else Image.fromarray(np.asarray(photo, dtype=np.uint8))
    img = img.convert("RGB")
    W0, H0 = img.size
    output_size = int(output_size)
    transform_size = int(transform_size or min(4 * output_size, max(4096, output_size)))
    quad, qsize = ffhq_quad(landmarks)
    quad = quad.copy()
    centre = quad.mean(0)
    if not (0 <= centre[0] <= W0 and 0 <= centre[1] <= H0):
        raise ValueError(f"the face (centre {centre[0]:.0f}, {centre[1]:.0f}) is outside the {W0}x{H0} photo: "
                         "landmarks in the wrong coordinates?")
    if not 8 <= qsize <= 3 * max(W0, H0):
        raise ValueError(f"the face crop would be {qsize:.0f} px for a {W0}x{H0} photo: landmarks in the wrong "
                         "coordinates?")
    # Track where the working image sits in the photo: photo_cont = work_cont * scale + offset.
    scale = np.array([1.0, 1.0])
    offset = np.array([0.0, 0.0])

    # Shrink.
    shrink = int(math.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        scale = scale * np.array([img.size[0] / rsize[0], img.size[1] / rsize[1]])
        img = img.resize(rsize, Image.LANCZOS)
        quad /= shrink
        qsize /= shrink

    # Crop.
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))), int(np.ceil(max(quad[:, 0]))),
            int(np.ceil(max(quad[:, 1]))))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0), min(crop[2] + border, img.size[0]),
            min(crop[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        if crop[2] <= crop[0] or crop[3] <= crop[1]:
            raise ValueError("the face lies outside the photo (landmarks out of the image)")
        img = img.crop(crop)
        quad -= crop[0:2]
        offset = offset + np.array(crop[0:2], dtype=np.float64) * scale

    # Pad.
    pad = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))), int(np.ceil(max(quad[:, 0]))),
           int(np.ceil(max(quad[:, 1]))))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0), max(pad[2] - img.size[0] + border, 0),
           max(pad[3] - img.size[1] + border, 0))
    padded = False
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        # reflection needs pad < size per reflection: np.pad repeats it as needed
        a = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = a.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                          1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]))
        blur = qsize * 0.02
        a += (_gaussian_blur(a, blur) - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        a += (np.median(a, axis=(0, 1)) - a) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)), "RGB")
        quad += pad[:2]
        offset = offset - np.array(pad[:2], dtype=np.float64) * scale
        padded = True

    # Transform: output point (u, v) in [0, T] -> working-image point Q0 + u/T (Q3 - Q0) + v/T (Q1 - Q0).
    q = quad + 0.5
    img = img.transform((transform_size, transform_size), Image.QUAD, tuple(q.flatten()), Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    elif output_size > transform_size:
        raise ValueError("transform_size must be at least output_size")

    S = float(output_size)
    ax = (q[3] - q[0]) / S            # d(work)/du
    ay = (q[1] - q[0]) / S            # d(work)/dv
    # work_cont = q0 + u ax + v ay; photo = work * scale + offset (the quad already holds the index
    # -> continuous +0.5 shift of the script: kept as it is, the transform reproduces the crop exactly)
    m = np.array([[ax[0] * scale[0], ay[0] * scale[0], q[0][0] * scale[0] + offset[0]],
                  [ax[1] * scale[1], ay[1] * scale[1], q[0][1] * scale[1] + offset[1]]])
    lm = np.asarray(landmarks, dtype=np.float64)
    tf = FaceTransform(matrix=tuple(tuple(float(v) for v in row) for row in m), size=output_size,
                       photo_size=(W0, H0), landmarks=tuple(tuple(float(v) for v in p) for p in lm),
                       face_index=face_index, faces_found=faces_found,
                       info={"shrink": shrink if shrink > 1 else 1, "padded": padded, "transform_size": transform_size})
    return img, tf


# ------------------------------------------------------------------------ paste back
def paste_back(photo: torch.Tensor, face: torch.Tensor, tf: FaceTransform, feather: float = 0.06,
               margin: float = 0.0) -> torch.Tensor:
    """Put ``face`` (the aligned square, [C, s, s] in any range, any size s) back into
    ``photo`` ([C, H, W], same range) with the inverse of ``tf``; the edge of the square is
    blended over ``feather`` x side (a fraction; 0 = hard edge); ``margin`` shrinks the pasted
    area by that fraction of the side on every edge. Returns a new [C, H, W] tensor."""
    C, H, W = photo.shape
    if (W, H) != tuple(tf.photo_size):
        raise ValueError(f"the photo is {W}x{H} but the transform was made for {tf.photo_size[0]}x"
                         f"{tf.photo_size[1]}")
    s_face = face.shape[-1]
    m = np.asarray(tf.matrix, dtype=np.float64)
    A = np.vstack([m, [0, 0, 1]])
    Ainv = np.linalg.inv(A)
    # Only the bounding box of the square in the photo can change.
    quad = tf.quad()
    x0, y0 = max(int(np.floor(quad[:, 0].min())) - 1, 0), max(int(np.floor(quad[:, 1].min())) - 1, 0)
    x1, y1 = min(int(np.ceil(quad[:, 0].max())) + 1, W), min(int(np.ceil(quad[:, 1].max())) + 1, H)
    out = photo.clone()
    if x1 <= x0 or y1 <= y0:
        return out
    ys = torch.arange(y0, y1, dtype=torch.float64) + 0.5
    xs = torch.arange(x0, x1, dtype=torch.float64) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    Ai = torch.from_numpy(Ainv)
    u = Ai[0, 0] * gx + Ai[0, 1] * gy + Ai[0, 2]          # aligned coords in [0, size]
    v = Ai[1, 0] * gx + Ai[1, 1] * gy + Ai[1, 2]
    S = float(tf.size)
    un, vn = u / S, v / S                                   # [0, 1] across the square
    grid = torch.stack([un * 2 - 1, vn * 2 - 1], dim=-1)[None].to(photo.dtype)
    warped = F.grid_sample(face[None].to(photo.dtype), grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[0]
    # distance to the nearest edge of the (shrunk) square, in fractions of the side
    d = torch.minimum(torch.minimum(un, 1 - un), torch.minimum(vn, 1 - vn)) - margin
    if feather > 0:
        alpha = (d / feather).clamp(0, 1)
        alpha = alpha * alpha * (3 - 2 * alpha)             # smoothstep
    else:
        alpha = (d >= 0).double()
    alpha = alpha.to(photo.dtype)[None]
    region = out[:, y0:y1, x0:x1]
    out[:, y0:y1, x0:x1] = region * (1 - alpha) + warped * alpha
    del s_face
    return out


# --------------------------------------------------------------------------- batches
def align_photos(photos, landmarks=None, model_path: str | None = None, output_size: int = 1024,
                 face: str = "largest", face_index: int = 0, enable_padding: bool = True,
                 transform_size: int | None = None, progress=None):
    """Align a batch: ``photos`` uint8 [N, H, W, 3] (or a list of HxWx3 arrays);
    ``landmarks``: None (detect with dlib, see :mod:`.landmarks`) or a list with one [68|5, 2]
    array (or None = detect) per photo. Returns (uint8 [N, S, S, 3], [FaceTransform])."""
    from .landmarks import choose_face, detect_faces
    n = len(photos)
    landmarks = list(landmarks) if landmarks is not None else [None] * n
    if len(landmarks) != n:
        raise ValueError(f"{len(landmarks)} landmark sets for {n} photos")
    out, tfs = [], []
    for i in range(n):
        arr = np.asarray(photos[i])
        lm, found, idx = landmarks[i], 1, 0
        if lm is None:
            faces = detect_faces(arr, model_path)
            chosen, idx = choose_face(faces, face, face_index, what=f"photo {i + 1} of {n}")
            lm, found = chosen.landmarks, len(faces)
        img, tf = align_face(arr, lm, output_size, transform_size, enable_padding, face_index=idx,
                             faces_found=found)
        out.append(np.asarray(img, dtype=np.uint8))
        tfs.append(tf)
        if progress is not None:
            progress(i + 1, n, None)
    return np.stack(out), tfs
