"""Draw the pack's example input images (run once; the PNGs are committed).

``example_inputs/pencil_sketch/*.png``: four procedurally drawn pencil sketches of faces
(graphite strokes on paper, hatched shading) that the image-guided example uses as its
few-shot target domain. They are drawn here from code so that the pack ships no third-party
image. Usage: python tools/make_example_inputs.py
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "example_inputs" / "pencil_sketch"
SIZE = 256
S = 2  # drawn at 2x, then reduced (smoother strokes)


def _stroke(d, pts, rnd, shade=70, width=2, passes=3):
    """A pencil line: a few slightly displaced passes along a polyline."""
    for _ in range(passes):
        jit = [(x + rnd.gauss(0, 1.2 * S), y + rnd.gauss(0, 1.2 * S)) for x, y in pts]
        g = min(255, max(0, int(shade + rnd.gauss(0, 18))))
        d.line(jit, fill=g, width=max(1, int(width * S * rnd.uniform(0.6, 1.1))), joint="curve")


def _arc(cx, cy, rx, ry, a0, a1, n=40):
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a))
            for a in np.linspace(math.radians(a0), math.radians(a1), n)]


def _hatch(d, box, rnd, angle=45, spacing=7, shade=120, clip=None):
    x0, y0, x1, y1 = box
    L = max(x1 - x0, y1 - y0) * 1.5
    a = math.radians(angle)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    for k in np.arange(-L, L, spacing * S):
        px, py = cx + k * math.cos(a + math.pi / 2), cy + k * math.sin(a + math.pi / 2)
        p0 = (px - L * math.cos(a), py - L * math.sin(a))
        p1 = (px + L * math.cos(a), py + L * math.sin(a))
        seg = [p0, p1]
        if clip is not None:
            seg = clip(p0, p1)
            if seg is None:
                continue
        g = min(255, max(0, int(shade + rnd.gauss(0, 20))))
        d.line(seg, fill=g, width=S)


def _clip_region(inside):
    """Clip a line to its longest run of points where ``inside(x, y)`` holds."""
    def f(p0, p1):
        best, run = [], []
        for t in np.linspace(0, 1, 240):
            x, y = p0[0] + (p1[0] - p0[0]) * t, p0[1] + (p1[1] - p0[1]) * t
            if inside(x, y):
                run.append((x, y))
            else:
                best, run = (run if len(run) > len(best) else best), []
        best = run if len(run) > len(best) else best
        return (best[0], best[-1]) if len(best) > 1 else None
    return f


def _in_ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1


def sketch(seed: int) -> Image.Image:
    rnd = random.Random(seed)
    n = SIZE * S
    rng = np.random.default_rng(seed)
    paper = 238 + rng.normal(0, 4, (n, n))
    im = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8), "L")
    d = ImageDraw.Draw(im)
    cx, cy = n / 2 + rnd.uniform(-10, 10) * S, n / 2 + rnd.uniform(0, 14) * S
    rx, ry = rnd.uniform(62, 74) * S, rnd.uniform(84, 96) * S
    # hair mass, head outline, neck
    hair_top = cy - ry * rnd.uniform(0.35, 0.5)
    _hatch(d, (cx - rx * 1.3, cy - ry * 1.35, cx + rx * 1.3, cy + ry * 0.2), rnd, angle=rnd.choice([30, 60, 120]),
           spacing=5, shade=90, clip=_clip_region(
               lambda x, y: _in_ellipse(x, y, cx, cy - ry * 0.2, rx * 1.2, ry * 1.02)
               and (not _in_ellipse(x, y, cx, cy, rx, ry) or y < hair_top)))
    _stroke(d, _arc(cx, cy, rx, ry, 0, 360, 80), rnd, shade=60)
    _stroke(d, [(cx - rx * 0.45, cy + ry * 0.9), (cx - rx * 0.5, cy + ry * 1.4)], rnd)
    _stroke(d, [(cx + rx * 0.45, cy + ry * 0.9), (cx + rx * 0.5, cy + ry * 1.4)], rnd)
    # shading on one side of the face
    side = rnd.choice([-1, 1])
    _hatch(d, (cx - rx, cy - ry, cx + rx, cy + ry), rnd, angle=side * 50, spacing=8, shade=150,
           clip=_clip_region(lambda x, y: _in_ellipse(x, y, cx, cy, rx * 0.97, ry * 0.97) and y > hair_top
                             and side * (x - cx) > rx * 0.5))
    # eyes, brows, nose, mouth
    ey = cy - ry * rnd.uniform(0.12, 0.2)
    for sx in (-1, 1):
        ex = cx + sx * rx * 0.4
        _stroke(d, _arc(ex, ey, rx * 0.2, ry * 0.07, 180, 360, 16), rnd, shade=50)
        _stroke(d, _arc(ex, ey, rx * 0.2, ry * 0.05, 0, 180, 16), rnd, shade=80, passes=2)
        d.ellipse((ex - 5 * S, ey - 5 * S, ex + 5 * S, ey + 5 * S), fill=int(rnd.uniform(30, 70)))
        _stroke(d, _arc(ex, ey - ry * 0.12, rx * 0.26, ry * 0.06, 190, 340, 16), rnd, shade=55, width=3)
    _stroke(d, [(cx + rnd.uniform(-3, 3) * S, ey + ry * 0.05), (cx - rx * 0.08, cy + ry * 0.25),
                (cx + rx * 0.06, cy + ry * 0.28)], rnd, shade=80)
    my = cy + ry * rnd.uniform(0.45, 0.52)
    smile = rnd.uniform(0.02, 0.08)
    _stroke(d, _arc(cx, my - ry * smile, rx * 0.3, ry * smile * 2, 20, 160, 20), rnd, shade=60, width=2)
    im = im.filter(ImageFilter.GaussianBlur(0.6 * S)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return im


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        sketch(i).save(OUT / f"sketch_{i + 1}.png", optimize=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
