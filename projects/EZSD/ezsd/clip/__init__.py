"""Everything that touches CLIP: loading, text embeddings, region crops and their accuracy.

Used by the offline tools and the demo only. The detector never imports this package: it reads
the files these tools write (text embeddings through `ezsd.data.text_embedding_file`, NumPy only).
"""

from ezsd.data.text_embedding_file import load_text_embeddings, names_path, save_text_embeddings
from ezsd.utils.quiet_imports import dependency_notices_hidden

with dependency_notices_hidden():  # the `clip` package imports pkg_resources, which warns
    import clip  # noqa: F401

from .crop_accuracy import crop_classification_accuracy  # noqa: E402
from .loading import clip_checkpoint_hash, load_clip, save_clip_checkpoint  # noqa: E402
from .region_detections import clip_region_instances, region_boxes, region_recall  # noqa: E402
from .regions import CropSettings, crop_boxes, crop_regions, encode_regions  # noqa: E402
from .text import (  # noqa: E402
    DEFAULT_PROMPTS,
    ENSEMBLE_PROMPTS,
    add_prompt_arguments,
    clean_class_name,
    prompts_from_args,
    text_embeddings,
)

__all__ = [
    "load_clip",
    "save_clip_checkpoint",
    "clip_checkpoint_hash",
    "DEFAULT_PROMPTS",
    "ENSEMBLE_PROMPTS",
    "add_prompt_arguments",
    "prompts_from_args",
    "clean_class_name",
    "text_embeddings",
    "save_text_embeddings",
    "load_text_embeddings",
    "names_path",
    "CropSettings",
    "crop_boxes",
    "crop_regions",
    "encode_regions",
    "crop_classification_accuracy",
    "region_boxes",
    "region_recall",
    "clip_region_instances",
]
