"""The CLIP domain: image-caption pairs of every category, broad like web images.

Each image shows one named object on a background from the shared family (see `backgrounds.py`),
at a wide range of scales and positions, sometimes with clutter, sometimes with a partly visible
neighbour of another class, and sometimes cut out and zero-padded the way region crops are. The
camera is neutral. So, of everything a detection crop shows, only the detection camera
(`camera.py`) and the crop statistics of crowded scenes are new to a CLIP trained here.

Optionally a fraction of the images shows no category at all (background and distractors only),
captioned without a category name, as countless web images show none of COCO's classes: a CLIP
that has seen them is unsure on background crops, which CLIP proposals and distillation rely on.
"""

import math

import numpy as np
from PIL import Image

from .backgrounds import draw_clutter, render_background
from .categories import CATEGORY_NAMES, render_icon

__all__ = [
    "BACKGROUND_CAPTIONS",
    "BACKGROUND_LABEL",
    "CAPTION_TEMPLATES",
    "HELD_OUT_SEED_OFFSET",
    "render_clip_pairs",
]

CAPTION_TEMPLATES = (
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a drawing of a {}",
    "a close-up photo of a {}",
    "a photo of the {}",
    "a {}",
    "there is a {} in this picture",
)
# Captions of object-free images: no category name, several phrasings as for objects.
BACKGROUND_CAPTIONS = (
    "a photo of a background",
    "a picture of a wall",
    "an image of a texture",
    "a drawing of lines and dots",
    "a close-up photo of a surface",
    "a photo of a pattern",
    "an empty picture",
    "there is nothing in this picture",
)
BACKGROUND_LABEL = -1  # label of an object-free image in render_clip_pairs
# Held-out evaluation images are render_clip_pairs(seed + HELD_OUT_SEED_OFFSET, ...): they never
# share a seed with a training batch of the same run (the small CLIP, the pre-trained backbone).
HELD_OUT_SEED_OFFSET = 1_000_003
P_CLUTTER, P_NEIGHBOUR, P_CROP = 0.5, 0.35, 0.25


def _paste(canvas, icon, rng, inside):
    """Paste `icon` at a random place keeping at least `inside` of each side in the canvas."""
    s = canvas.width
    x = int(rng.uniform(-(1 - inside) * icon.width, s - inside * icon.width))
    y = int(rng.uniform(-(1 - inside) * icon.height, s - inside * icon.height))
    canvas.paste(icon, (x, y), icon)
    return x, y


def _crop_square(canvas, box, rng, size):
    """Cut `box` (enlarged 1.0-1.5x) out, zero-pad it to a square around it, resize to `size`."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    k = rng.uniform(1.0, 1.5)
    hw, hh = (x1 - x0) * k / 2, (y1 - y0) * k / 2
    crop = canvas.crop(
        (
            max(0, round(cx - hw)),
            max(0, round(cy - hh)),
            min(canvas.width, round(cx + hw)),
            min(canvas.height, round(cy + hh)),
        )
    )
    side = round(2 * max(hw, hh))
    square = Image.new("RGB", (side, side))
    square.paste(
        crop, (round(max(0, cx - hw) - (cx - side / 2)), round(max(0, cy - hh) - (cy - side / 2)))
    )
    return square.resize((size, size), Image.BICUBIC)


def _render_one(rng, label, size):
    crop_mode = rng.random() < P_CROP
    s = 2 * size if crop_mode else size
    canvas = Image.fromarray(render_background(s, s, rng).astype(np.uint8))
    if rng.random() < P_CLUTTER:
        draw_clutter(canvas, rng, int(rng.integers(2, 10)))
    side = math.exp(rng.uniform(math.log(0.35 * s), math.log(0.95 * s)))
    if crop_mode:
        side *= 0.45
    icon = render_icon(label, side, rng)
    neighbour = None
    if rng.random() < P_NEIGHBOUR:
        other = (label + 1 + int(rng.integers(len(CATEGORY_NAMES) - 1))) % len(CATEGORY_NAMES)
        neighbour = render_icon(other, side * rng.uniform(0.5, 1.0), rng)
    in_front = rng.random() < 0.3
    if neighbour is not None and not in_front:
        _paste(canvas, neighbour, rng, inside=0.3)
    x, y = _paste(canvas, icon, rng, inside=0.85)
    if neighbour is not None and in_front:
        _paste(canvas, neighbour, rng, inside=0.3)
    if crop_mode:
        return _crop_square(canvas, (x, y, x + icon.width, y + icon.height), rng, size)
    return canvas


def _render_background_only(rng, size):
    """Background and distractors, no object; like a region crop (zero-padded) in P_CROP."""
    crop_mode = rng.random() < P_CROP
    s = 2 * size if crop_mode else size
    canvas = Image.fromarray(render_background(s, s, rng).astype(np.uint8))
    draw_clutter(canvas, rng, int(rng.integers(2, 14)))
    if crop_mode:
        w, h = np.exp(rng.uniform(math.log(0.2 * s), math.log(0.7 * s), 2))
        x, y = rng.uniform(0, s - w), rng.uniform(0, s - h)
        return _crop_square(canvas, (x, y, x + w, y + h), rng, size)
    return canvas


def render_clip_pairs(seed, num, image_size=64, background_fraction=0.0):
    """`num` image-caption pairs: (uint8 (N, H, W, 3), int64 labels (N,), list of captions).

    Labels cycle through all categories (in shuffled order), so any `num` >= the number of
    categories covers every one of them. `background_fraction` of the images (rounded) show no
    category: label BACKGROUND_LABEL, a caption of BACKGROUND_CAPTIONS. With 0 (the default) the
    pairs are exactly those of earlier versions for the same seed.
    """
    rng = np.random.default_rng(seed)
    num_background = int(round(num * background_fraction))
    labels = np.arange(num - num_background) % len(CATEGORY_NAMES)
    labels = np.concatenate([labels, np.full(num_background, BACKGROUND_LABEL)])
    labels = rng.permutation(labels).astype(np.int64)
    images = np.empty((num, image_size, image_size, 3), dtype=np.uint8)
    captions = []
    for i, label in enumerate(labels):
        if label == BACKGROUND_LABEL:
            image = _render_background_only(rng, image_size)
            caption = BACKGROUND_CAPTIONS[rng.integers(len(BACKGROUND_CAPTIONS))]
        else:
            image = _render_one(rng, int(label), image_size)
            template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
            caption = template.format(CATEGORY_NAMES[label])
        images[i] = np.asarray(image.convert("RGB"))
        captions.append(caption)
    return images, labels, captions
