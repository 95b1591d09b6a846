"""Drawing primitives of the template-browser cards (640 x 360 .jpg next to each example
workflow): the canvas with its title, a node box, arrows. Used by tools/draw_*_card.py and
by the cards tests/test_e2e_comfyui.py redraws (NADA_E2E_UPDATE_ASSETS=1)."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

SIZE = (640, 360)
BACKGROUND = (32, 32, 36)
NODE_FILL = (58, 76, 140)


def font(size: int, bold: bool = False):
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def canvas(title: str, title_size: int = 22):
    """A blank card with its title: (image, draw)."""
    im = Image.new("RGB", SIZE, BACKGROUND)
    d = ImageDraw.Draw(im)
    d.text((20, 14), title, fill=(240, 240, 240), font=font(title_size, bold=True))
    return im, d


def box(d, x, y, w, h, title, sub, *, title_size=15, sub_size=12, title_dy=12, sub_dy=36, spacing=4,
        fill=NODE_FILL):
    """A node drawn as a rounded box with a bold title and a (multi-line) subtitle."""
    d.rounded_rectangle((x, y, x + w, y + h), radius=8, fill=fill, outline=(150, 170, 230))
    d.text((x + 10, y + title_dy), title, fill=(255, 255, 255), font=font(title_size, bold=True))
    d.multiline_text((x + 10, y + sub_dy), sub, fill=(220, 225, 245), font=font(sub_size), spacing=spacing)


def arrow(d, x0, x1, y):
    """A horizontal arrow from x0 to x1."""
    d.line((x0, y, x1, y), fill=(220, 220, 220), width=3)
    d.polygon([(x1, y), (x1 - 10, y - 6), (x1 - 10, y + 6)], fill=(220, 220, 220))


def arrow_to(d, x0, y0, x1, y1):
    """An arrow in any direction, its head along the line."""
    d.line((x0, y0, x1, y1), fill=(220, 220, 220), width=3)
    a = math.atan2(y1 - y0, x1 - x0)
    tip = [(x1, y1)] + [(x1 - 11 * math.cos(a + s), y1 - 11 * math.sin(a + s)) for s in (0.45, -0.45)]
    d.polygon(tip, fill=(220, 220, 220))
