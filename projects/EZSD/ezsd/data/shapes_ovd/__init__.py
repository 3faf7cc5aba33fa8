"""ShapesOVD: a small open-vocabulary detection world with its own CLIP domain.

See datasets/README.md.
"""

from .categories import CATEGORY_FREQUENCY, CATEGORY_NAMES, DEFAULT_NOVEL_CLASSES, render_icon
from .clip_domain import BACKGROUND_CAPTIONS, BACKGROUND_LABEL, CAPTION_TEMPLATES, render_clip_pairs
from .generator import generate_shapes_ovd
from .scenes import render_scene

__all__ = [
    "BACKGROUND_CAPTIONS",
    "BACKGROUND_LABEL",
    "CATEGORY_FREQUENCY",
    "CATEGORY_NAMES",
    "DEFAULT_NOVEL_CLASSES",
    "CAPTION_TEMPLATES",
    "generate_shapes_ovd",
    "render_clip_pairs",
    "render_icon",
    "render_scene",
]
