"""Draw the template-browser thumbnail of example_workflows/stylegan3_adaptation.json (640x360).

A drawn card (like the issue-5 examples' cards): rotated Fourier features -> StyleGAN3 ->
Adapt (fine layers) -> watercolor-like samples, and a source -> adapted transition strip.
Run: python tools/draw_stylegan3_card.py
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import cards
from cards import font as _font
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "example_workflows" / "stylegan3_adaptation.jpg"


def card() -> Image.Image:
    rnd = random.Random(17)
    im, d = cards.canvas("StyleGAN3: sample, adapt, transition")
    # Fourier features: a few rotated sinusoids summed (the input StyleGAN3 translates / rotates)
    feat = Image.new("L", (110, 110))
    px = feat.load()
    waves = [(rnd.uniform(0.05, 0.2), rnd.uniform(0, math.pi), rnd.uniform(0, 6.28)) for _ in range(4)]
    for y in range(110):
        for x in range(110):
            v = sum(math.sin(f * (x * math.cos(a) + y * math.sin(a)) * 6.28 / 6 + p) for f, a, p in waves)
            px[x, y] = int(128 + 30 * v)
    im.paste(feat.rotate(10, resample=Image.BICUBIC, fillcolor=32).convert("RGB"), (24, 70))
    d.rectangle((24, 70, 134, 180), outline=(200, 200, 200))
    d.text((24, 188), "Fourier input", fill=(210, 210, 210), font=_font(13))
    d.text((24, 206), "translate / rotate", fill=(160, 160, 160), font=_font(12))

    def box(*a):
        cards.box(d, *a)

    def arrow(*a):
        cards.arrow(d, *a)

    arrow(140, 170, 125)
    box(174, 90, 128, 70, "StyleGAN3", "T or R, alias-free\n16 W+ entries")
    arrow(304, 334, 125)
    box(338, 90, 128, 70, "Adapt", "text: watercolor\nfine layers only")
    arrow(468, 498, 125)
    for i in range(2):                      # watercolor-like samples: soft blotches
        for j in range(2):
            x, y = 502 + j * 56, 80 + i * 56
            d.rectangle((x, y, x + 52, y + 52), fill=(238, 232, 220), outline=(200, 200, 200))
            for _ in range(6):
                cx, cy, r = x + rnd.randint(8, 44), y + rnd.randint(8, 44), rnd.randint(5, 12)
                col = rnd.choice([(150, 180, 210), (210, 160, 150), (170, 200, 160), (220, 200, 140)])
                d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col)
    # transition strip: source (grey) -> adapted (colour)
    for k in range(8):
        t = k / 7
        x = 174 + k * 50
        c = tuple(int((1 - t) * g + t * w) for g, w in zip((120, 120, 124), (210, 170, 150)))
        d.rectangle((x, 250, x + 44, 294), fill=c, outline=(200, 200, 200))
    d.text((174, 300), "Render Domain Transition: source -> adapted (Save Video)", fill=(210, 210, 210),
           font=_font(13))
    d.text((20, 330), "NVIDIA's StyleGAN3 pickles, read without running their code", fill=(200, 200, 200),
           font=_font(14))
    return im


def main():
    card().save(OUT, quality=90)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
