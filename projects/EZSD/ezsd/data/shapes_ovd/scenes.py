"""Detection images: several icons on textured clutter, with occlusion, seen by the shifted
camera."""

import math

import numpy as np
from PIL import Image

from .backgrounds import draw_clutter, render_background
from .camera import DETECTION_CAMERA
from .categories import CATEGORY_FREQUENCY, render_icon

__all__ = ["render_scene"]

OBJECTS_PER_IMAGE = (4, 10)  # drawn uniformly; about 7 stay placed on average, as in COCO (7.3)
OBJECT_SIDE_AT_256 = (14, 120)  # longer side in pixels for a 256-pixel image; scales with the size
MIN_VISIBLE = 0.5  # an object stays at least half visible after everything drawn over it
PLACEMENT_TRIES = 20
_CATEGORY_P = np.asarray(CATEGORY_FREQUENCY) / sum(CATEGORY_FREQUENCY)


def _place(owner, visible, full, mask, rng):
    """Top-left corner where `mask` leaves every placed object >= MIN_VISIBLE visible, or None."""
    size = owner.shape[0]
    h, w = mask.shape
    for _ in range(PLACEMENT_TRIES):
        y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        under = owner[y : y + h, x : x + w][mask]
        lost = np.bincount(under[under >= 0], minlength=len(full))
        if np.all(visible - lost >= MIN_VISIBLE * full):
            return y, x, lost
    return None


def render_scene(rng, size=256, camera=DETECTION_CAMERA):
    """One detection image.

    Returns (PIL RGB image, objects); each object is (category index, visible-pixel mask), the
    mask being what the box and area are measured on (COCO boxes are boxes of the visible part).
    """
    im = Image.fromarray(
        render_background(size, size, rng, ("texture", "tiles", "gradient")).astype(np.uint8)
    )
    draw_clutter(im, rng, int(rng.integers(6, 20)))
    lo, hi = (max(8.0, s * size / 256) for s in OBJECT_SIDE_AT_256)
    owner = np.full((size, size), -1, dtype=np.int16)
    cats, full, visible = [], np.zeros(0, np.int64), np.zeros(0, np.int64)
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        cat = int(rng.choice(len(_CATEGORY_P), p=_CATEGORY_P))
        icon = render_icon(cat, math.exp(rng.uniform(math.log(lo), math.log(hi))), rng)
        mask = np.asarray(icon.getchannel("A")) > 127
        spot = _place(owner, visible, full, mask, rng)
        if spot is None:
            continue
        y, x, lost = spot
        im.paste(icon, (x, y), icon)
        owner[y : y + mask.shape[0], x : x + mask.shape[1]][mask] = len(cats)
        visible = np.append(visible - lost, mask.sum())
        full = np.append(full, mask.sum())
        cats.append(cat)
    image = camera(np.asarray(im, dtype=np.float32), rng)
    return image, [(cat, owner == i) for i, cat in enumerate(cats)]
