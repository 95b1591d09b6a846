"""FFHQ face alignment on synthetic landmarks: the rule's square, what lands where in the aligned
image, padding, the transform back into the photo, landmark input and the detector's messages."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from nada_ops.invert.align import align_face, align_photos, ffhq_quad, paste_back
from nada_ops.invert.landmarks import LandmarkError, choose_face, Face, dlib_available, parse_landmarks


def face_landmarks(center, eye_dist, angle_deg, mouth_drop=1.05):
    """68 dlib-order points of a simple face: eyes at +-eye_dist/2, mouth corners below."""
    a = math.radians(angle_deg)
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    lm = np.zeros((68, 2))
    ring = np.array([[math.cos(t), 0.4 * math.sin(t)] for t in np.linspace(0, 2 * math.pi, 6, endpoint=False)]) * 0.15
    lm[36:42] = ring + [-0.5, 0]
    lm[42:48] = ring + [0.5, 0]
    lm[48:60] = [0, mouth_drop]
    lm[48] = [-0.4, mouth_drop]
    lm[54] = [0.4, mouth_drop]
    lm[:36] = [0, 0.5]
    lm[60:] = [0, mouth_drop]
    return lm @ R.T * eye_dist + np.asarray(center, dtype=np.float64)


def photo_with_dots(size, points, value=(255, 0, 0), r=2):
    img = np.full((size[1], size[0], 3), 60, np.uint8)
    img[..., 1] = np.linspace(40, 200, size[0]).astype(np.uint8)[None]
    for x, y in points:
        xi, yi = int(round(x)), int(round(y))
        img[yi - r:yi + r + 1, xi - r:xi + r + 1] = value
    return img


def test_the_ffhq_square():
    """Level eyes 100 px apart, mouth 105 px below: the FFHQ rule gives a square of side
    2 * max(2 * 100, 1.8 * 105) = 400, centred 10.5 px below the eyes, not rotated."""
    lm = face_landmarks((300, 250), 100, 0)
    quad, side = ffhq_quad(lm)
    assert side == pytest.approx(400)
    np.testing.assert_allclose(quad.mean(0), [300, 250 + 10.5], atol=1e-9)
    np.testing.assert_allclose(quad[0], [100, 60.5], atol=1e-9)           # upper-left corner
    # a rotated face gives the same square, rotated
    lm2 = face_landmarks((300, 250), 100, 30)
    quad2, side2 = ffhq_quad(lm2)
    assert side2 == pytest.approx(400)
    edge = quad2[3] - quad2[0]
    assert math.degrees(math.atan2(edge[1], edge[0])) == pytest.approx(30)
    with pytest.raises(ValueError, match="68 .* or 5"):
        ffhq_quad(np.zeros((10, 2)))


@pytest.mark.parametrize("center,eye,angle,size", [
    ((400, 330), 90, 0, (800, 700)),          # inside the photo
    ((380, 300), 80, -25, (700, 640)),        # rotated
    ((110, 140), 70, 10, (420, 360)),         # near the edge: padded
    ((1300, 1100), 420, 15, (2500, 2300)),    # large: shrunk first
])
def test_eyes_land_where_the_rule_puts_them(center, eye, angle, size):
    lm = face_landmarks(center, eye, angle)
    eyes = [lm[36:42].mean(0), lm[42:48].mean(0)]
    photo = photo_with_dots(size, eyes, r=max(2, eye // 20))
    out, tf = align_face(photo, lm, output_size=256)
    assert out.size == (256, 256)
    a = np.asarray(out).astype(float)
    # the aligned image: eyes level, symmetric about the centre, 1/4 of the side apart
    red = (a[..., 0] > 150) & (a[..., 1] < 90)
    ys, xs = np.nonzero(red)
    left, right = xs < 128, xs >= 128
    assert left.any() and right.any()
    el = np.array([xs[left].mean(), ys[left].mean()]) + 0.5
    er = np.array([xs[right].mean(), ys[right].mean()]) + 0.5
    assert abs(el[1] - er[1]) < 1.5
    assert abs((el[0] + er[0]) / 2 - 128) < 1.5
    assert abs((er[0] - el[0]) - 64) < 2                                    # eye distance = side / 4 here
    # and the transform maps those points back onto the photo's eyes
    back = tf.to_photo(np.stack([el, er])) - 0.5
    assert np.abs(back - np.stack(eyes)).max() < 2 * tf.side / 256 + 1
    assert tf.angle == pytest.approx(angle, abs=0.05)       # (shrinking rounds each axis on its own)
    if center[0] < 200:
        assert tf.info["padded"] and a.min(axis=(0, 1)).max() > 0           # no black border: reflected


def test_paste_back_restores_the_photo():
    lm = face_landmarks((300, 260), 80, 12)
    rng = np.random.default_rng(0)
    photo = np.asarray(Image.fromarray(rng.integers(0, 256, (40, 45, 3), dtype=np.uint8)).resize((600, 520),
                                                                                                 Image.BICUBIC))
    out, tf = align_face(photo, lm, output_size=512, enable_padding=False)
    ph = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    face = torch.from_numpy(np.array(out)).permute(2, 0, 1).float() / 255
    pasted = paste_back(ph, face, tf, feather=0.0)
    # outside the square the photo is untouched; inside, the aligned crop goes back where it came from
    quad = tf.quad()
    inside = np.zeros(photo.shape[:2], bool)
    yy, xx = np.mgrid[:photo.shape[0], :photo.shape[1]] + 0.5
    m = np.linalg.inv(np.vstack([np.asarray(tf.matrix), [0, 0, 1]]))
    u = (m[0, 0] * xx + m[0, 1] * yy + m[0, 2]) / tf.size
    v = (m[1, 0] * xx + m[1, 1] * yy + m[1, 2]) / tf.size
    inside = (u > 0.02) & (u < 0.98) & (v > 0.02) & (v < 0.98)
    outside = (u < -0.01) | (u > 1.01) | (v < -0.01) | (v > 1.01)
    diff = (pasted - ph).abs().amax(0).numpy()
    assert diff[outside].max() == 0
    assert np.median(diff[inside]) < 0.02 and diff[inside].mean() < 0.03
    assert quad.shape == (4, 2)
    # a different face (all white) is blended in with a soft edge
    soft = paste_back(ph, torch.ones_like(face), tf, feather=0.1)
    assert soft[:, int(yy.mean()), int(xx.mean())].min() == 1.0
    with pytest.raises(ValueError, match="transform was made for"):
        paste_back(ph[:, :100], face, tf)


def test_given_landmarks_and_face_choice():
    lm = face_landmarks((150, 140), 50, 0)
    five = [lm[36:42].mean(0).tolist(), lm[42:48].mean(0).tolist(), [150, 170], lm[48].tolist(), lm[54].tolist()]
    sets = parse_landmarks(json.dumps(five), 2)
    assert len(sets) == 2 and sets[0].shape == (5, 2)
    photos = np.stack([photo_with_dots((300, 280), [])] * 2)
    a68, t68 = align_photos(photos[:1], [lm], output_size=64)
    a5, t5 = align_photos(photos[:1], sets[:1], output_size=64)
    np.testing.assert_allclose(t68[0].matrix, t5[0].matrix, atol=1e-9)       # same eyes and mouth corners
    assert parse_landmarks("", 3) == [None] * 3
    with pytest.raises(ValueError, match="68 \\[x, y\\] points"):
        parse_landmarks("[[1, 2], [3, 4]]", 1)
    with pytest.raises(ValueError, match="2 sets for 3 images"):
        parse_landmarks(json.dumps([five, five]), 3)
    faces = [Face((0, 0, 50, 50), lm), Face((0, 0, 10, 10), lm)]
    assert choose_face(faces, "index", 1)[1] == 1
    with pytest.raises(LandmarkError, match="face 3 asked for, but the image has 2"):
        choose_face(faces, "index", 3)
    with pytest.raises(LandmarkError, match="no face found"):
        choose_face([], "largest")
    # landmarks in the wrong coordinates are refused before anything large is allocated
    with pytest.raises(ValueError, match="outside the 300x280 photo"):
        align_photos(photos[:1], [lm + 1000], output_size=64)
    with pytest.raises(ValueError, match="face crop would be"):
        align_photos(photos[:1], [(lm - lm[36:48].mean(0)) * 12 + lm[36:48].mean(0)], output_size=64)


@pytest.mark.skipif(dlib_available(), reason="dlib is installed")
def test_without_dlib_the_message_says_what_to_install():
    with pytest.raises(LandmarkError, match="pip install dlib-bin.*shape_predictor_68_face_landmarks.dat"):
        align_photos(np.zeros((1, 64, 64, 3), np.uint8), None, None, output_size=64)
