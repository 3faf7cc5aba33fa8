"""Builtin open-vocabulary datasets, declared as tables and registered on `import ezsd`.

Paths are rooted at $DETECTRON2_DATASETS (default "datasets", as in detectron2):
    coco/{train2017,val2017}/, coco/annotations/ovd_instances_{train2017_base,val2017_all}.json
    coco/ (LVIS images are COCO's), lvis/lvis_v1_{train_ovd_base,val}.json
    shapes_ovd/{train,val}.json, shapes_ovd/{train,val}/, shapes_ovd/split.json

Registration is lazy: importing registers the names only. The root is read from
$DETECTRON2_DATASETS, and ShapesOVD's split.json is read, when a dataset or its metadata is first
used (`DatasetCatalog.get`, or any attribute of `MetadataCatalog.get(name)`), so that importing
ezsd reads no file and a bad file is reported by the step that needs it.
"""

import functools
import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES as LVIS_V1_CATEGORIES

from ezsd.utils.errors import UserInputError

from ..shapes_ovd import CATEGORY_NAMES as SHAPES_CATEGORY_NAMES
from ..shapes_ovd import DEFAULT_NOVEL_CLASSES as SHAPES_DEFAULT_NOVEL_CLASSES
from ..shapes_ovd.generator import validate_novel_classes
from .coco_ovd_split import COCO_OVD_BASE_CLASSES, COCO_OVD_NOVEL_CLASSES
from .register_ovd import register_lvis_ovd_dataset, register_ovd_dataset

# name: (image folder, json file, whether the json holds novel boxes)
_COCO_OVD_SPLITS = {
    "coco_ovd_train": (
        "coco/train2017",
        "coco/annotations/ovd_instances_train2017_base.json",
        False,
    ),
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


def _datasets_root():
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


class _LazyMetadata(Metadata):
    """Metadata filled by its dataset's registration when an attribute other than the name is
    first read (or `as_dict()` is called). A failed registration is tried again at the next use."""

    def __getattr__(self, key):
        if self.materialize():
            return getattr(self, key)
        return super().__getattr__(key)

    def as_dict(self):
        self.materialize()
        return super().as_dict()

    def materialize(self):
        """Run the pending registration; False if there was none."""
        register = self.__dict__.pop("_register", None)
        if register is None:
            return False
        try:
            register()
        except BaseException:
            self.__dict__["_register"] = register
            raise
        return True


def _register_lazily(name, register):
    """Register `name` now; `register(name)` (a register_*_dataset call) runs at the first use of
    the dataset or of its metadata and replaces the placeholder loader."""

    def materialize():
        DatasetCatalog.remove(name)  # the placeholder; `register` adds the real loader
        try:
            register(name)
        except BaseException:
            DatasetCatalog.register(name, load)
            raise

    def load():
        metadata = MetadataCatalog.get(name)
        if not (isinstance(metadata, _LazyMetadata) and metadata.materialize()):
            materialize()  # the metadata was removed or replaced meanwhile
        return DatasetCatalog.get(name)

    DatasetCatalog.register(name, load)
    metadata = _LazyMetadata(name=name)
    metadata.__dict__["_register"] = materialize
    MetadataCatalog[name] = metadata


def _in_id_order(names, categories):
    """The subset `names` of detectron2's category dicts, ordered by category id."""
    wanted = set(names)
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"]) if c["name"] in wanted]


def _register_coco_ovd(name, image_root, json_file, novel_annotated):
    root = _datasets_root()
    all_classes = COCO_OVD_BASE_CLASSES + COCO_OVD_NOVEL_CLASSES
    register_ovd_dataset(
        name,
        os.path.join(root, json_file),
        os.path.join(root, image_root),
        COCO_OVD_BASE_CLASSES,
        COCO_OVD_NOVEL_CLASSES,
        novel_annotated=novel_annotated,
        thing_classes=_in_id_order(
            all_classes if novel_annotated else COCO_OVD_BASE_CLASSES, COCO_CATEGORIES
        ),
    )


def _register_lvis_ovd(name, image_root, json_file, novel_annotated):
    root = _datasets_root()
    register_lvis_ovd_dataset(
        name,
        os.path.join(root, json_file),
        os.path.join(root, image_root),
        LVIS_V1_CATEGORIES,
        novel_annotated=novel_annotated,
    )


def shapes_ovd_novel_classes(root):
    """ShapesOVD's novel classes: the default ones, or those its generator recorded in
    ROOT/shapes_ovd/split.json when it was generated with `--novel`."""
    split_file = os.path.join(root, "shapes_ovd", "split.json")
    if not os.path.isfile(split_file):
        return tuple(SHAPES_DEFAULT_NOVEL_CLASSES)
    try:
        with open(split_file) as f:
            novel = json.load(f)["novel"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserInputError(
            f"{split_file}: not a ShapesOVD split file ({e!r}); "
            "regenerate the data with datasets/prepare_shapes_ovd.py"
        ) from None
    if not isinstance(novel, list) or not all(isinstance(n, str) for n in novel):
        raise UserInputError(f"{split_file}: 'novel' must be a list of class names")
    # in category order whatever the file's order, so every process builds the same vocabulary
    try:
        return validate_novel_classes(novel)
    except UserInputError as e:
        raise UserInputError(f"{split_file}: {e}") from None


def _register_shapes_ovd(name, image_root, json_file, novel_annotated):
    root = _datasets_root()
    novel = shapes_ovd_novel_classes(root)
    base = tuple(c for c in SHAPES_CATEGORY_NAMES if c not in novel)
    register_ovd_dataset(
        name,
        os.path.join(root, json_file),
        os.path.join(root, image_root),
        base,
        novel,
        novel_annotated=novel_annotated,
        thing_classes=SHAPES_CATEGORY_NAMES if novel_annotated else base,
    )


def register_all_builtin():
    for splits, register in (
        (_COCO_OVD_SPLITS, _register_coco_ovd),
        (_LVIS_OVD_SPLITS, _register_lvis_ovd),
        (_SHAPES_OVD_SPLITS, _register_shapes_ovd),
    ):
        for name, (image_root, json_file, novel_annotated) in splits.items():
            _register_lazily(
                name,
                functools.partial(
                    register,
                    image_root=image_root,
                    json_file=json_file,
                    novel_annotated=novel_annotated,
                ),
            )


register_all_builtin()
