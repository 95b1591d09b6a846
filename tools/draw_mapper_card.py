"""Draw the template-browser card of the dog -> cat latent-mapper example
(example_workflows/latent_mapper_dog_to_cat.jpg, 640 x 360): python tools/draw_mapper_card.py"""
from __future__ import annotations

from pathlib import Path

import cards
from cards import font as _font
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _animal(d, cx, cy, r, fill, cat: float):
    """A simple animal face: ears from floppy (dog, cat=0) to pointed (cat=1)."""
    ear = (70, 55, 40)
    if cat < 0.5:   # floppy dog ears
        d.ellipse((cx - r * 1.15, cy - r * 0.55, cx - r * 0.55, cy + r * 0.6), fill=ear)
        d.ellipse((cx + r * 0.55, cy - r * 0.55, cx + r * 1.15, cy + r * 0.6), fill=ear)
    else:           # pointed cat ears
        d.polygon([(cx - r * 0.9, cy - r * 0.35), (cx - r * 0.75, cy - r * 1.3), (cx - r * 0.2, cy - r * 0.85)],
                  fill=fill)
        d.polygon([(cx + r * 0.9, cy - r * 0.35), (cx + r * 0.75, cy - r * 1.3), (cx + r * 0.2, cy - r * 0.85)],
                  fill=fill)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    for s in (-1, 1):
        d.ellipse((cx + s * r * 0.38 - r * 0.12, cy - r * 0.25 - r * 0.12, cx + s * r * 0.38 + r * 0.12,
                   cy - r * 0.25 + r * 0.12), fill=(30, 30, 30))
    nose = r * (0.22 if cat < 0.5 else 0.12)
    d.polygon([(cx - nose, cy + r * 0.15), (cx + nose, cy + r * 0.15), (cx, cy + r * 0.15 + nose)], fill=(40, 30, 30))
    if cat >= 0.5:   # whiskers
        for s in (-1, 1):
            for k in (-1, 0, 1):
                d.line((cx + s * r * 0.25, cy + r * 0.35, cx + s * r * 1.05, cy + r * (0.3 + 0.12 * k)),
                       fill=(230, 230, 230), width=1)


def card() -> Image.Image:
    im, d = cards.canvas("Dog -> cat: adapt, then mine with a latent mapper", title_size=21)

    def box(*a):
        cards.box(d, *a, title_size=14, sub_size=11, title_dy=10, sub_dy=32)

    def arrow(*a):
        cards.arrow(d, *a)

    _animal(d, 62, 130, 34, (200, 160, 110), 0.0)
    d.text((28, 178), "AFHQ dog", fill=(210, 210, 210), font=_font(13))
    arrow(108, 132, 130)
    box(136, 90, 166, 80, "Adapt Generator", "animal preset: adaptive\nk = 3, 2000 it., no mixing")
    arrow(304, 328, 130)
    box(332, 90, 176, 80, "Train Latent Mapper", "CLIP + L2 + norm loss\n(eq. 5), fresh latents")
    arrow(510, 534, 130)
    _animal(d, 580, 135, 32, (190, 190, 200), 1.0)
    d.text((556, 178), "cats", fill=(210, 210, 210), font=_font(13))
    # the same seeds before / after the mapper
    d.text((24, 222), "same seeds, adapted generator:", fill=(200, 200, 200), font=_font(13))
    d.text((24, 250), "before", fill=(170, 170, 170), font=_font(12))
    d.text((24, 300), "after", fill=(170, 170, 170), font=_font(12))
    fills = [(200, 160, 110), (150, 150, 160), (220, 190, 140), (120, 110, 100), (210, 200, 190), (170, 140, 120)]
    for i, f in enumerate(fills):
        x = 120 + i * 82
        _animal(d, x, 256, 20, f, 0.0 if i % 3 == 0 else 1.0)   # a few latents still dog-like
        _animal(d, x, 314, 20, f, 1.0)
    d.text((20, 338), "paper sec. 4.3: large shape changes the generator alone cannot reach",
           fill=(200, 200, 200), font=_font(12))
    return im


if __name__ == "__main__":
    out = ROOT / "example_workflows" / "latent_mapper_dog_to_cat.jpg"
    card().save(out, quality=85, optimize=True)
    print(f"wrote {out}")
