"""The ShapesOVD categories: icons of everyday objects, each a colour scheme *and* a silhouette.

Colours are shared inside groups (red: tomato/brick; yellow: lemon/banana/coin; orange:
orange/carrot; green: lime/leaf), so colour alone never identifies a class and shape must be used.
The default novel classes each share their colour with a base class (as COCO's novel "cake" shares
looks with base "donut"), so zero-shot transfer needs the concept, not a colour shortcut.

Icons are drawn at twice their final size and downsampled (anti-aliasing); every draw varies in
hue, saturation, brightness, aspect and rotation, so each class is a distribution, not a template.
"""

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["CATEGORY_FREQUENCY", "CATEGORY_NAMES", "DEFAULT_NOVEL_CLASSES", "render_icon"]

# name -> (palette of named RGB colours, max rotation in degrees, frequency rank). The rank sets
# how often a scene draws the category: weight 1 / rank (Zipf), so rank 1 is about a quarter of
# all objects and rank 24 about 1%, a long tail like COCO's (datasets/README.md).
_SPECS = {
    "tomato": ({"body": (222, 42, 32), "calyx": (40, 140, 40), "shine": (255, 170, 160)}, 30, 2),
    "brick": ({"body": (182, 58, 40), "mortar": (205, 198, 186)}, 20, 5),
    "apple": (
        {
            "body": (196, 28, 44),
            "stem": (96, 60, 30),
            "leaf": (60, 150, 50),
            "shine": (240, 150, 150),
        },
        25,
        6,
    ),
    "cherry": ({"berry": (176, 18, 40), "stem": (70, 120, 40), "shine": (236, 130, 140)}, 30, 13),
    "lemon": ({"body": (250, 224, 52), "shine": (255, 246, 165)}, 40, 4),
    "banana": ({"body": (246, 214, 62), "tip": (92, 62, 30)}, 45, 23),
    "coin": ({"rim": (186, 138, 30), "face": (232, 186, 52), "mark": (168, 120, 22)}, 20, 3),
    "orange": ({"body": (246, 140, 22), "pore": (214, 108, 12), "stem": (60, 110, 30)}, 30, 8),
    "carrot": ({"body": (242, 122, 22), "ridge": (196, 88, 12), "leaves": (52, 150, 42)}, 45, 14),
    "fish": ({"body": (244, 120, 30), "fin": (250, 176, 80), "eye": (20, 20, 24)}, 20, 12),
    "lime": ({"rind": (58, 148, 40), "flesh": (186, 226, 92), "pith": (236, 246, 204)}, 30, 20),
    "leaf": ({"body": (62, 162, 52), "vein": (30, 98, 30)}, 45, 1),
    "pear": ({"body": (170, 200, 60), "stem": (100, 70, 36), "shine": (220, 236, 150)}, 20, 11),
    "tree": ({"crown": (40, 130, 50), "trunk": (110, 72, 40)}, 5, 21),
    "grape": ({"berry": (112, 40, 132), "shine": (172, 112, 192), "stem": (100, 70, 40)}, 25, 19),
    "tire": ({"rubber": (36, 36, 40), "tread": (78, 78, 84), "hub": (162, 162, 168)}, 0, 10),
    "hat": ({"felt": (30, 30, 34), "band": (150, 40, 40)}, 15, 17),
    "snowflake": ({"ice": (226, 240, 255), "edge": (140, 182, 228)}, 30, 24),
    "egg": ({"shell": (242, 234, 214), "shade": (214, 200, 172)}, 30, 7),
    "cloud": ({"puff": (240, 244, 250), "shade": (196, 206, 222)}, 10, 16),
    "clock": ({"face": (246, 246, 240), "rim": (40, 40, 44), "hand": (30, 30, 30)}, 0, 22),
    "cup": ({"body": (48, 98, 196), "rim": (170, 196, 240), "coffee": (90, 56, 30)}, 10, 18),
    "umbrella": ({"canopy": (40, 84, 200), "rib": (120, 150, 230), "handle": (60, 40, 30)}, 25, 9),
    "donut": (
        {
            "dough": (186, 124, 64),
            "icing": (238, 140, 186),
            "sprinkle1": (250, 250, 250),
            "sprinkle2": (70, 160, 220),
        },
        0,
        15,
    ),
}

CATEGORY_NAMES = tuple(_SPECS)
# 6 of 24 (COCO: 17 of 65), of middle and low frequency so that they hold ~14% of all objects
# (COCO: ~14%); two have a close base look-alike (apple/tomato, donut/tire), four do not.
DEFAULT_NOVEL_CLASSES = ("apple", "fish", "grape", "clock", "umbrella", "donut")  # category order
CATEGORY_FREQUENCY = tuple(1.0 / spec[2] for spec in _SPECS.values())  # relative, by category


def _jitter_palette(palette, rng):
    """One hue/saturation/brightness draw applied to the whole palette (the object's own colour)."""
    dh = rng.uniform(-0.02, 0.02)
    ks = rng.uniform(0.85, 1.1)
    kv = rng.uniform(0.8, 1.08)
    out = {}
    for key, rgb in palette.items():
        h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
        r, g, b = colorsys.hsv_to_rgb((h + dh) % 1.0, min(s * ks, 1.0), min(v * kv, 1.0))
        out[key] = (round(r * 255), round(g * 255), round(b * 255), 255)
    return out


def _circle(d, cx, cy, r, fill):
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


def _star_points(cx, cy, r_out, r_in, n, phase=-math.pi / 2):
    pts = []
    for i in range(2 * n):
        r = r_out if i % 2 == 0 else r_in
        a = phase + i * math.pi / n
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def _tomato(d, s, p, rng):
    _circle(d, s * 0.5, s * 0.55, s * 0.42, p["body"])
    d.ellipse((s * 0.25, s * 0.3, s * 0.4, s * 0.45), fill=p["shine"])
    d.polygon(_star_points(s * 0.5, s * 0.17, s * 0.17, s * 0.06, 5), fill=p["calyx"])
    d.line((s * 0.5, s * 0.17, s * 0.53, s * 0.03), fill=p["calyx"], width=max(2, int(s * 0.04)))


def _brick(d, s, p, rng):
    top, bottom = s * 0.22, s * 0.78
    d.rectangle((0, top, s - 1, bottom), fill=p["body"])
    w = max(2, int(s * 0.035))
    rows = 3
    for i in range(1, rows):
        y = top + (bottom - top) * i / rows
        d.line((0, y, s, y), fill=p["mortar"], width=w)
    for i in range(rows):
        y0, y1 = top + (bottom - top) * i / rows, top + (bottom - top) * (i + 1) / rows
        for x in (s * 0.33, s * 0.67) if i % 2 == 0 else (s * 0.5,):
            d.line((x, y0, x, y1), fill=p["mortar"], width=w)


def _lemon(d, s, p, rng):
    d.ellipse((s * 0.12, s * 0.24, s * 0.88, s * 0.76), fill=p["body"])
    d.polygon([(s * 0.02, s * 0.5), (s * 0.16, s * 0.4), (s * 0.16, s * 0.6)], fill=p["body"])
    d.polygon([(s * 0.98, s * 0.5), (s * 0.84, s * 0.4), (s * 0.84, s * 0.6)], fill=p["body"])
    d.ellipse((s * 0.3, s * 0.32, s * 0.5, s * 0.42), fill=p["shine"])


def _banana(d, s, p, rng):
    d.ellipse((s * 0.05, -s * 0.45, s * 0.95, s * 0.85), fill=p["body"])
    d.ellipse((s * 0.0, -s * 0.75, s * 1.0, s * 0.62), fill=(0, 0, 0, 0))
    d.ellipse((s * 0.04, s * 0.22, s * 0.14, s * 0.32), fill=p["tip"])
    d.ellipse((s * 0.86, s * 0.22, s * 0.96, s * 0.32), fill=p["tip"])


def _coin(d, s, p, rng):
    _circle(d, s * 0.5, s * 0.5, s * 0.48, p["rim"])
    _circle(d, s * 0.5, s * 0.5, s * 0.38, p["face"])
    d.polygon(_star_points(s * 0.5, s * 0.5, s * 0.22, s * 0.09, 5), fill=p["mark"])


def _orange(d, s, p, rng):
    _circle(d, s * 0.5, s * 0.52, s * 0.46, p["body"])
    r = max(1.0, s * 0.02)
    for _ in range(14):
        a, rr = rng.uniform(0, 2 * math.pi), s * 0.36 * math.sqrt(rng.uniform(0.05, 1))
        _circle(d, s * 0.5 + rr * math.cos(a), s * 0.52 + rr * math.sin(a), r, p["pore"])
    _circle(d, s * 0.5, s * 0.1, s * 0.05, p["stem"])


def _carrot(d, s, p, rng):
    d.polygon([(s * 0.32, s * 0.28), (s * 0.68, s * 0.28), (s * 0.5, s * 0.99)], fill=p["body"])
    w = max(2, int(s * 0.03))
    for t in (0.45, 0.6, 0.75):
        half = 0.18 * (0.99 - t) / 0.71 * s
        d.line((s * 0.5 - half * 0.8, s * t, s * 0.5 + half * 0.2, s * t), fill=p["ridge"], width=w)
    for dx in (-0.12, 0.0, 0.12):
        d.ellipse((s * (0.45 + dx), s * 0.0, s * (0.55 + dx), s * 0.3), fill=p["leaves"])


def _lime(d, s, p, rng):
    _circle(d, s * 0.5, s * 0.5, s * 0.48, p["rind"])
    _circle(d, s * 0.5, s * 0.5, s * 0.41, p["pith"])
    _circle(d, s * 0.5, s * 0.5, s * 0.37, p["flesh"])
    w = max(2, int(s * 0.03))
    for k in range(8):
        a = k * math.pi / 4
        d.line(
            (s * 0.5, s * 0.5, s * 0.5 + s * 0.37 * math.cos(a), s * 0.5 + s * 0.37 * math.sin(a)),
            fill=p["pith"],
            width=w,
        )


def _leaf(d, s, p, rng):
    # Half-width sin(t) along the axis: pointed at both ends, widest in the middle.
    ts = np.linspace(0, math.pi, 24)
    right = [(s * (0.5 + 0.3 * math.sin(t)), s * (0.02 + 0.96 * t / math.pi)) for t in ts]
    left = [(s - x, y) for x, y in reversed(right)]
    d.polygon(right + left, fill=p["body"])
    w = max(2, int(s * 0.03))
    d.line((s * 0.5, s * 0.02, s * 0.5, s * 0.98), fill=p["vein"], width=w)
    for t in (0.3, 0.5, 0.7):
        d.line((s * 0.5, s * t, s * 0.32, s * (t - 0.12)), fill=p["vein"], width=w)
        d.line((s * 0.5, s * t, s * 0.68, s * (t - 0.12)), fill=p["vein"], width=w)


def _grape(d, s, p, rng):
    r = s * 0.11
    rows = (4, 3, 2, 1)
    for i, n in enumerate(rows):
        y = s * 0.3 + i * r * 1.7
        for j in range(n):
            x = s * 0.5 + (j - (n - 1) / 2) * r * 1.9
            _circle(d, x, y, r, p["berry"])
            _circle(d, x - r * 0.35, y - r * 0.35, r * 0.3, p["shine"])
    d.line((s * 0.5, s * 0.05, s * 0.5, s * 0.2), fill=p["stem"], width=max(2, int(s * 0.04)))


def _tire(d, s, p, rng):
    _circle(d, s * 0.5, s * 0.5, s * 0.49, p["rubber"])
    w = max(2, int(s * 0.03))
    for k in range(16):
        a = k * math.pi / 8
        c, sn = math.cos(a), math.sin(a)
        d.line(
            (
                s * 0.5 + s * 0.36 * c,
                s * 0.5 + s * 0.36 * sn,
                s * 0.5 + s * 0.47 * c,
                s * 0.5 + s * 0.47 * sn,
            ),
            fill=p["tread"],
            width=w,
        )
    _circle(d, s * 0.5, s * 0.5, s * 0.25, p["hub"])
    _circle(d, s * 0.5, s * 0.5, s * 0.08, p["rubber"])


def _snowflake(d, s, p, rng):
    w = max(3, int(s * 0.07))
    c = s * 0.5
    for k in range(6):
        a = k * math.pi / 3
        ca, sa = math.cos(a), math.sin(a)
        d.line((c, c, c + s * 0.48 * ca, c + s * 0.48 * sa), fill=p["edge"], width=w + 2)
        for t in (0.25, 0.38):
            bx, by = c + s * t * ca, c + s * t * sa
            for side in (-1, 1):
                b = a + side * math.pi / 4
                d.line(
                    (bx, by, bx + s * 0.12 * math.cos(b), by + s * 0.12 * math.sin(b)),
                    fill=p["ice"],
                    width=max(2, w - 1),
                )
        d.line((c, c, c + s * 0.48 * ca, c + s * 0.48 * sa), fill=p["ice"], width=w)
    _circle(d, c, c, s * 0.07, p["ice"])


def _apple(d, s, p, rng):
    # Two overlapping lobes with a dip at the top: rounder and notched where a tomato has a calyx.
    _circle(d, s * 0.36, s * 0.56, s * 0.32, p["body"])
    _circle(d, s * 0.64, s * 0.56, s * 0.32, p["body"])
    d.ellipse((s * 0.16, s * 0.5, s * 0.84, s * 0.97), fill=p["body"])
    d.ellipse((s * 0.22, s * 0.38, s * 0.34, s * 0.54), fill=p["shine"])
    d.line((s * 0.5, s * 0.3, s * 0.46, s * 0.06), fill=p["stem"], width=max(2, int(s * 0.05)))
    d.ellipse((s * 0.52, s * 0.06, s * 0.78, s * 0.2), fill=p["leaf"])


def _cherry(d, s, p, rng):
    w = max(2, int(s * 0.035))
    d.line((s * 0.27, s * 0.68, s * 0.55, s * 0.05), fill=p["stem"], width=w)
    d.line((s * 0.73, s * 0.72, s * 0.55, s * 0.05), fill=p["stem"], width=w)
    for cx, cy in ((0.27, 0.72), (0.73, 0.76)):
        _circle(d, s * cx, s * cy, s * 0.22, p["berry"])
        _circle(d, s * (cx - 0.08), s * (cy - 0.08), s * 0.05, p["shine"])


def _fish(d, s, p, rng):
    d.polygon([(s * 0.62, s * 0.5), (s * 0.98, s * 0.2), (s * 0.98, s * 0.8)], fill=p["fin"])
    d.ellipse((s * 0.02, s * 0.25, s * 0.76, s * 0.75), fill=p["body"])
    d.polygon([(s * 0.3, s * 0.28), (s * 0.5, s * 0.1), (s * 0.56, s * 0.3)], fill=p["fin"])
    _circle(d, s * 0.2, s * 0.44, s * 0.045, p["eye"])
    w = max(2, int(s * 0.025))
    d.arc((s * 0.22, s * 0.3, s * 0.42, s * 0.7), 300, 60, fill=p["fin"], width=w)


def _pear(d, s, p, rng):
    _circle(d, s * 0.5, s * 0.68, s * 0.3, p["body"])
    _circle(d, s * 0.5, s * 0.36, s * 0.18, p["body"])
    d.polygon(
        [(s * 0.33, s * 0.38), (s * 0.67, s * 0.38), (s * 0.79, s * 0.62), (s * 0.21, s * 0.62)],
        fill=p["body"],
    )
    d.ellipse((s * 0.32, s * 0.56, s * 0.42, s * 0.72), fill=p["shine"])
    d.line((s * 0.5, s * 0.2, s * 0.55, s * 0.02), fill=p["stem"], width=max(2, int(s * 0.045)))


def _tree(d, s, p, rng):
    d.rectangle((s * 0.42, s * 0.72, s * 0.58, s * 0.99), fill=p["trunk"])
    for top, bottom, half in ((0.02, 0.4, 0.24), (0.2, 0.6, 0.34), (0.38, 0.8, 0.46)):
        d.polygon(
            [(s * 0.5, s * top), (s * (0.5 + half), s * bottom), (s * (0.5 - half), s * bottom)],
            fill=p["crown"],
        )


def _hat(d, s, p, rng):
    d.ellipse((s * 0.0, s * 0.7, s * 1.0, s * 0.9), fill=p["felt"])
    d.rectangle((s * 0.22, s * 0.1, s * 0.78, s * 0.8), fill=p["felt"])
    d.rectangle((s * 0.22, s * 0.6, s * 0.78, s * 0.7), fill=p["band"])


def _egg(d, s, p, rng):
    d.ellipse((s * 0.16, s * 0.02, s * 0.84, s * 0.98), fill=p["shade"])
    d.ellipse((s * 0.18, s * 0.02, s * 0.82, s * 0.9), fill=p["shell"])
    d.ellipse((s * 0.22, s * 0.3, s * 0.82, s * 0.98), fill=p["shell"])


def _cloud(d, s, p, rng):
    d.rounded_rectangle((s * 0.04, s * 0.5, s * 0.96, s * 0.8), radius=s * 0.15, fill=p["shade"])
    for cx, cy, r in ((0.28, 0.52, 0.2), (0.52, 0.4, 0.26), (0.74, 0.54, 0.18)):
        _circle(d, s * cx, s * cy, s * r, p["puff"])
    d.rounded_rectangle((s * 0.06, s * 0.48, s * 0.94, s * 0.74), radius=s * 0.13, fill=p["puff"])


def _clock(d, s, p, rng):
    _circle(d, s * 0.5, s * 0.5, s * 0.49, p["rim"])
    _circle(d, s * 0.5, s * 0.5, s * 0.42, p["face"])
    w = max(2, int(s * 0.03))
    for k in range(12):
        a = k * math.pi / 6
        c, sn = math.cos(a), math.sin(a)
        d.line(
            (
                s * 0.5 + s * 0.33 * c,
                s * 0.5 + s * 0.33 * sn,
                s * 0.5 + s * 0.4 * c,
                s * 0.5 + s * 0.4 * sn,
            ),
            fill=p["hand"],
            width=w,
        )
    hour, minute = rng.uniform(0, 2 * math.pi, 2)
    for a, r, width in ((hour, 0.22, 2 * w), (minute, 0.33, w)):
        d.line(
            (s * 0.5, s * 0.5, s * 0.5 + s * r * math.sin(a), s * 0.5 - s * r * math.cos(a)),
            fill=p["hand"],
            width=width,
        )


def _cup(d, s, p, rng):
    w = max(3, int(s * 0.08))
    d.ellipse((s * 0.56, s * 0.3, s * 0.96, s * 0.7), outline=p["body"], width=w)
    d.rounded_rectangle((s * 0.06, s * 0.14, s * 0.74, s * 0.96), radius=s * 0.08, fill=p["body"])
    d.ellipse((s * 0.06, s * 0.08, s * 0.74, s * 0.24), fill=p["rim"])
    d.ellipse((s * 0.1, s * 0.1, s * 0.7, s * 0.22), fill=p["coffee"])


def _umbrella(d, s, p, rng):
    d.pieslice((s * 0.0, s * 0.04, s * 1.0, s * 0.84), 180, 360, fill=p["canopy"])
    for k in range(4):  # scalloped rim: bites between the ribs
        cx = s * (0.125 + 0.25 * k)
        d.ellipse((cx - s * 0.125, s * 0.36, cx + s * 0.125, s * 0.5), fill=(0, 0, 0, 0))
    w = max(2, int(s * 0.03))
    for x in (0.25, 0.5, 0.75):
        d.line((s * 0.5, s * 0.04, s * x, s * 0.4), fill=p["rib"], width=w)
    hw = max(2, int(s * 0.045))
    d.line((s * 0.5, s * 0.4, s * 0.5, s * 0.86), fill=p["handle"], width=hw)
    d.arc((s * 0.34, s * 0.74, s * 0.5, s * 0.98), 0, 180, fill=p["handle"], width=hw)


def _donut(d, s, p, rng):
    _circle(d, s * 0.5, s * 0.5, s * 0.48, p["dough"])
    _circle(d, s * 0.5, s * 0.49, s * 0.4, p["icing"])
    w = max(2, int(s * 0.025))
    for k in range(14):
        a, r = rng.uniform(0, 2 * math.pi), s * rng.uniform(0.22, 0.34)
        x, y = s * 0.5 + r * math.cos(a), s * 0.49 + r * math.sin(a)
        b = rng.uniform(0, math.pi)
        d.line(
            (x, y, x + s * 0.05 * math.cos(b), y + s * 0.05 * math.sin(b)),
            fill=p["sprinkle1" if k % 2 else "sprinkle2"],
            width=w,
        )
    _circle(d, s * 0.5, s * 0.5, s * 0.15, (0, 0, 0, 0))


_DRAW = {name: globals()["_" + name] for name in CATEGORY_NAMES}


def render_icon(category, size, rng):
    """An RGBA icon of `category` (index or name) whose longer side is about `size` pixels.

    The returned image is cropped to its alpha support, so its bounding box is the object's box.
    """
    name = CATEGORY_NAMES[category] if isinstance(category, (int, np.integer)) else category
    palette, max_rot, _ = _SPECS[name]
    canvas = max(8, int(round(size * 2)))
    im = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    _DRAW[name](ImageDraw.Draw(im), canvas, _jitter_palette(palette, rng), rng)
    aspect = rng.uniform(0.85, 1.15)
    im = im.resize((max(4, round(canvas * aspect)), max(4, round(canvas / aspect))), Image.BILINEAR)
    if max_rot:
        im = im.rotate(rng.uniform(-max_rot, max_rot), resample=Image.BILINEAR, expand=True)
    im = im.crop(im.getchannel("A").point(lambda a: 255 if a > 127 else 0).getbbox())
    scale = size / max(im.size)
    return im.resize(
        (max(2, round(im.width * scale)), max(2, round(im.height * scale))), Image.LANCZOS
    )
