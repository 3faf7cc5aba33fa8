"""Builtin open-vocabulary datasets, declared as tables and registered on `import ezsd`.

Paths are rooted at $DETECTRON2_DATASETS (default "datasets", as in detectron2):
    coco/{train2017,val2017}/, coco/annotations/ovd_instances_{train2017_base,val2017_all}.json
    coco/ (LVIS images are COCO's), lvis/lvis_v1_{train_ovd_base,val}.json
    shapes_ovd/{train,val}.json, shapes_ovd/{train,val}/, shapes_ovd/split.json
"""
import json
import os

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES as LVIS_V1_CATEGORIES

from ..shapes_ovd import CATEGORY_NAMES as SHAPES_CATEGORY_NAMES
from ..shapes_ovd import DEFAULT_NOVEL_CLASSES as SHAPES_DEFAULT_NOVEL_CLASSES
from .coco_ovd_split import COCO_OVD_BASE_CLASSES, COCO_OVD_NOVEL_CLASSES
from .register_ovd import register_lvis_ovd_dataset, register_ovd_dataset

# name: (image folder, json file, whether the json holds novel boxes)
_COCO_OVD_SPLITS = {
    "coco_ovd_train": ("coco/train2017", "coco/annotations/ovd_instances_train2017_base.json", False),
    "coco_ovd_val": ("coco/val2017", "coco/annotations/ovd_instances_val2017_all.json", True),
}
# LVIS image paths come from each image's coco_url ("coco/" + "train2017/xxx.jpg").
_LVIS_OVD_SPLITS = {
    "lvis_v1_ovd_train": ("coco/", "lvis/lvis_v1_train_ovd_base.json", False),
    "lvis_v1_ovd_val": ("coco/", "lvis/lvis_v1_val.json", True),
}
_SHAPES_OVD_SPLITS = {
    "shapes_ovd_train": ("shapes_ovd/train", "shapes_ovd/train.json", False),
    "shapes_ovd_val": ("shapes_ovd/val", "shapes_ovd/val.json", True),
}


def _in_id_order(names, categories):
    """The subset `names` of detectron2's category dicts, ordered by category id."""
    wanted = set(names)
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"]) if c["name"] in wanted]


def register_all_coco_ovd(root):
    all_classes = COCO_OVD_BASE_CLASSES + COCO_OVD_NOVEL_CLASSES
    for name, (image_root, json_file, novel_annotated) in _COCO_OVD_SPLITS.items():
        register_ovd_dataset(
            name, os.path.join(root, json_file), os.path.join(root, image_root),
            COCO_OVD_BASE_CLASSES, COCO_OVD_NOVEL_CLASSES, novel_annotated=novel_annotated,
            thing_classes=_in_id_order(
                all_classes if novel_annotated else COCO_OVD_BASE_CLASSES, COCO_CATEGORIES
            ),
        )  # fmt: skip


def register_all_lvis_ovd(root):
    for name, (image_root, json_file, novel_annotated) in _LVIS_OVD_SPLITS.items():
        register_lvis_ovd_dataset(
            name, os.path.join(root, json_file), os.path.join(root, image_root),
            LVIS_V1_CATEGORIES, novel_annotated=novel_annotated,
        )  # fmt: skip


def register_all_shapes_ovd(root):
    """ShapesOVD's base/novel split is the default one, or the one its generator recorded in
    shapes_ovd/split.json when it was generated with `--novel`."""
    novel = SHAPES_DEFAULT_NOVEL_CLASSES
    split_file = os.path.join(root, "shapes_ovd", "split.json")
    if os.path.isfile(split_file):
        with open(split_file) as f:
            novel = tuple(json.load(f)["novel"])
    base = tuple(c for c in SHAPES_CATEGORY_NAMES if c not in novel)
    for name, (image_root, json_file, novel_annotated) in _SHAPES_OVD_SPLITS.items():
        register_ovd_dataset(
            name, os.path.join(root, json_file), os.path.join(root, image_root), base, novel,
            novel_annotated=novel_annotated,
            thing_classes=SHAPES_CATEGORY_NAMES if novel_annotated else base,
        )  # fmt: skip


_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_all_coco_ovd(_root)
register_all_lvis_ovd(_root)
register_all_shapes_ovd(_root)
