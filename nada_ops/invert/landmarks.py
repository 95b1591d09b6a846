"""Face landmarks for the FFHQ alignment: dlib's detector (optional), or points given by hand.

dlib is an OPTIONAL dependency (``pip install dlib-bin``, prebuilt wheels; or ``dlib``, which
compiles): its HOG face detector ships inside the package and its 68-point shape predictor
``shape_predictor_68_face_landmarks.dat`` (the model the FFHQ dataset was aligned with) is a
file the user places in a models folder (ComfyUI: ``models/face_landmarks/``). Nothing is
downloaded at run time. Without them, landmarks can be given as JSON (68 points in dlib's
order, or 5 points: eyes, nose tip, mouth corners) and the alignment works the same.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

DLIB_MODEL = "shape_predictor_68_face_landmarks.dat"
FACE_CHOICES = ("largest", "index")
INSTALL_HINT = ("face detection needs dlib (pip install dlib-bin) and dlib's 68-point landmark model "
                f"{DLIB_MODEL} (from dlib's model files, unpacked from .bz2) in the face-landmarks models folder "
                "(ComfyUI: models/face_landmarks/); or give the landmarks yourself")


class LandmarkError(ValueError):
    """No usable face (or no detector): the message says what to do."""


@dataclass(frozen=True)
class Face:
    box: tuple              # (x0, y0, x1, y1) in pixels
    landmarks: np.ndarray   # [68, 2] (or [5, 2]) pixel coordinates

    @property
    def area(self) -> float:
        return max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0)


def dlib_available() -> bool:
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


_PREDICTORS: dict = {}


def _predictor(model_path: str):
    import dlib
    key = (os.path.realpath(model_path), os.stat(model_path).st_mtime_ns)
    p = _PREDICTORS.get(key)
    if p is None:
        try:
            p = dlib.shape_predictor(model_path)
        except RuntimeError as e:
            raise LandmarkError(f"{model_path}: not a dlib shape predictor ({str(e)[:200]})") from None
        _PREDICTORS.clear()
        _PREDICTORS[key] = p
    return p


def detect_faces(image: np.ndarray, model_path: str | None, upsample: int = 1) -> list[Face]:
    """All faces dlib finds in an RGB uint8 HxWx3 image, largest first."""
    if not dlib_available():
        raise LandmarkError(INSTALL_HINT)
    if not model_path or not os.path.isfile(model_path):
        raise LandmarkError(f"no landmark model {model_path or DLIB_MODEL}: {INSTALL_HINT}")
    import dlib
    img = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    predictor = _predictor(model_path)
    dets = dlib.get_frontal_face_detector()(img, int(upsample))
    faces = []
    for d in dets:
        shape = predictor(img, d)
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        faces.append(Face(box=(d.left(), d.top(), d.right(), d.bottom()), landmarks=pts))
    faces.sort(key=lambda f: -f.area)
    return faces


def choose_face(faces: list[Face], choice: str = "largest", index: int = 0, what: str = "the image") -> tuple[Face, int]:
    """(face, its index in ``faces`` ordered largest first)."""
    if not faces:
        raise LandmarkError(f"no face found in {what} (dlib's detector finds frontal faces of at least about 80x80 "
                            "pixels; try a larger or more frontal photo, or give the landmarks)")
    if choice == "largest":
        return faces[0], 0
    if choice != "index":
        raise ValueError(f"face choice must be one of {FACE_CHOICES}, got {choice!r}")
    if not 0 <= index < len(faces):
        raise LandmarkError(f"face {index} asked for, but {what} has {len(faces)} face(s) (0 = largest)")
    return faces[index], index


def parse_landmarks(text: str, count: int) -> list[np.ndarray | None]:
    """JSON landmarks for ``count`` images: one set ``[[x, y], ...]`` (68 or 5 points, used for
    every image) or a list of sets, one per image (``null`` = detect for that image)."""
    text = (text or "").strip()
    if not text:
        return [None] * count
    if len(text) > 1_000_000:
        raise ValueError("landmarks: the text is too long")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"landmarks: not valid JSON ({e.msg} at character {e.pos})") from None

    def one(x):
        if x is None:
            return None
        a = np.asarray(x, dtype=np.float64) if isinstance(x, list) else None
        if a is None or a.ndim != 2 or a.shape[1] != 2 or a.shape[0] not in (5, 68) or not np.isfinite(a).all():
            raise ValueError("landmarks: each face needs 68 [x, y] points (dlib order) or 5 (left eye, right eye, "
                             "nose, left and right mouth corner)")
        return a

    if isinstance(data, list) and data and isinstance(data[0], list) and data[0] and \
            isinstance(data[0][0], (int, float)):
        return [one(data)] * count
    if not isinstance(data, list):
        raise ValueError("landmarks: expected a list of [x, y] points or a list of such lists")
    sets = [one(x) for x in data]
    if len(sets) == 1:
        return sets * count
    if len(sets) != count:
        raise ValueError(f"landmarks: {len(sets)} sets for {count} images (give one, or one per image)")
    return sets
