"""Draw example_workflows/text_to_image_prior.jpg, the template-browser card (640x360) of the
clip2latent example: a prompt -> the prior -> one set of latents -> the source and two adapted
generators. Run: python tools/draw_prior_card.py"""
from __future__ import annotations

from pathlib import Path

import cards
from cards import font as _font
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _face(d, x, y, s, skin, hair, line, sketch=False):
    """A simple face in a s x s box at (x, y)."""
    d.rectangle((x, y, x + s, y + s), fill=(235, 235, 230) if sketch else (70, 80, 96))
    d.ellipse((x + s * 0.18, y + s * 0.05, x + s * 0.82, y + s * 0.55), fill=None if sketch else hair,
              outline=line, width=2)
    d.ellipse((x + s * 0.25, y + s * 0.18, x + s * 0.75, y + s * 0.9), fill=None if sketch else skin,
              outline=line, width=2)
    for ex in (0.38, 0.62):
        d.ellipse((x + s * (ex - 0.05), y + s * 0.42, x + s * (ex + 0.05), y + s * 0.5), fill=line)
    d.arc((x + s * 0.38, y + s * 0.55, x + s * 0.62, y + s * 0.75), 20, 160, fill=line, width=2)
    if sketch:
        for k in range(6):
            d.line((x + s * 0.2 + k * 5, y + s * 0.9, x + s * 0.3 + k * 5, y + s * 0.6), fill=(120, 120, 120))


def prior_card() -> Image.Image:
    im, d = cards.canvas("Text -> image with any generator (clip2latent)", title_size=21)

    def box(x, y, w, h, title, sub, fill=cards.NODE_FILL):
        cards.box(d, x, y, w, h, title, sub, title_dy=10, sub_dy=34, spacing=3, fill=fill)

    def arrow(*a):
        cards.arrow_to(d, *a)

    box(20, 70, 170, 110, "Prompt", '"a photograph of a\nsmiling woman with\ncurly red hair"', fill=(70, 70, 78))
    arrow(192, 125, 222, 125)
    box(226, 70, 150, 110, "Text to Latents", "diffusion prior\nguidance 2, 25 steps\nbest of 8 by CLIP")
    d.text((236, 196), "one set of latents", fill=(200, 200, 200), font=_font(13))
    rows = [("source", dict(skin=(226, 188, 160), hair=(170, 60, 30), line=(60, 40, 30))),
            ("pencil sketch", dict(skin=None, hair=None, line=(60, 60, 60), sketch=True)),
            ("zombie", dict(skin=(130, 170, 110), hair=(60, 70, 50), line=(30, 40, 20)))]
    for i, (name, kw) in enumerate(rows):
        y = 60 + i * 96
        arrow(378, 125, 420, y + 40)
        for j in range(2):
            _face(d, 426 + j * 86, y, 80, **kw)
        d.text((426, y + 81), name, fill=(210, 210, 210), font=_font(11))
    d.multiline_text((20, 250), "StyleGAN-NADA keeps adapted\ngenerators in the source's\nlatent space: one prior\n"
                     "drives them all.", fill=(180, 180, 190), font=_font(13), spacing=4)
    return im


def main():
    out = ROOT / "example_workflows" / "text_to_image_prior.jpg"
    prior_card().save(out, quality=85, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
