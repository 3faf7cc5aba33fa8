"""Backgrounds and clutter shared by both domains.

Both the CLIP domain and the detection scenes draw from the same family of backgrounds, so clutter
itself is no domain gap: the gap between the domains is the camera (see `camera.py`) and the
effects of cropping regions out of crowded scenes.
"""

import colorsys

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["render_background", "draw_clutter"]


def _muted_colour(rng, max_sat=0.45):
    """A low-saturation colour, so backgrounds rarely masquerade as an object's colour scheme."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, max_sat), rng.uniform(0.15, 0.9))
    return np.array([r, g, b]) * 255.0


def _smooth_field(h, w, rng, cells):
    """A smooth random field in [0, 1]: a coarse random grid resized bicubically."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    field = Image.fromarray(grid).resize((w, h), Image.BICUBIC)
    return np.asarray(field, dtype=np.float32)[..., None] / 255.0


def render_background(h, w, rng, kinds=("solid", "gradient", "texture", "tiles")):
    """An (h, w, 3) float32 background of one of `kinds`, with mild grain."""
    kind = kinds[rng.integers(len(kinds))]
    c1, c2 = _muted_colour(rng), _muted_colour(rng)
    if kind == "solid":
        img = np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    elif kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = np.cos(a) * xx / w + np.sin(a) * yy / h
        t = ((t - t.min()) / max(float(np.ptp(t)), 1e-6))[..., None]
        img = c1 * (1 - t) + c2 * t
    elif kind == "texture":
        t = _smooth_field(h, w, rng, int(rng.integers(3, 12)))
        img = c1 * (1 - t) + c2 * t
    else:  # tiles or planks: a regular pattern, like a table top or a floor
        period = int(rng.integers(8, 40))
        yy, xx = np.mgrid[0:h, 0:w]
        if rng.random() < 0.5:
            t = ((yy // period + xx // period) % 2)[..., None].astype(np.float32)
        else:
            t = ((yy // period) % 2)[..., None].astype(np.float32)
        img = c1 * (1 - 0.5 * t) + c2 * 0.5 * t
    img = img + rng.normal(0.0, rng.uniform(0, 6), (h, w, 1))
    return np.clip(img, 0, 255).astype(np.float32)


def draw_clutter(im, rng, count):
    """Draw `count` distractors on a PIL image: strokes, outlines and dots, none an object class.

    Distractors are thin or hollow and randomly coloured, so they add edges and colour without
    forming a filled silhouette with a category's colour scheme.
    """
    d = ImageDraw.Draw(im)
    w, h = im.size
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        ext = rng.uniform(0.05, 0.4) * min(w, h)
        x1, y1 = x0 + rng.uniform(-ext, ext), y0 + rng.uniform(-ext, ext)
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        width = int(rng.integers(1, 3))
        kind = rng.integers(4)
        if kind == 0:
            d.line((x0, y0, x1, y1), fill=colour, width=width)
        elif kind == 1:
            d.rectangle(box, outline=colour, width=width)
        elif kind == 2:
            d.ellipse(box, outline=colour, width=width)
        else:
            r = rng.uniform(1, 3)
            d.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
    return im
