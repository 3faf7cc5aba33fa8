from . import builtin  # noqa: F401  (registers the builtin datasets)
from .coco_ovd_split import COCO_OVD_BASE_CLASSES, COCO_OVD_NOVEL_CLASSES
from .register_ovd import register_lvis_ovd_dataset, register_ovd_dataset, sanitize_boxes

__all__ = [
    "COCO_OVD_BASE_CLASSES",
    "COCO_OVD_NOVEL_CLASSES",
    "register_ovd_dataset",
    "register_lvis_ovd_dataset",
    "sanitize_boxes",
]
