"""Registration of open-vocabulary detection datasets (COCO-format and LVIS-format jsons).

An open-vocabulary dataset is an ordinary detectron2 dataset whose metadata also holds
`base_classes` and `novel_classes`. Training splits hold base boxes only and their contiguous ids
cover the base classes; evaluation splits hold all boxes and their ids cover base + novel. The
loaders refuse a training json that carries a novel category, so no novel box ever reaches training.
"""

import json
import logging
import math
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, load_lvis_json
from detectron2.structures import BoxMode

from ezsd.utils.errors import UserInputError

__all__ = ["register_ovd_dataset", "register_lvis_ovd_dataset", "sanitize_boxes"]

logger = logging.getLogger(__name__)


def register_ovd_dataset(
    name,
    json_file,
    image_root,
    base_classes,
    novel_classes,
    novel_annotated=False,
    thing_classes=None,
):
    """Register a COCO-format open-vocabulary dataset (a user's own data goes through this too).

    Args:
        name (str): the dataset name, e.g. "my_data_train".
        json_file, image_root (str): COCO-format annotations and the folder of their images.
        base_classes, novel_classes (list[str]): category names of the two groups.
        novel_annotated (bool): False for a training split (its json must hold base categories
            only), True for an evaluation split (its json holds base and novel categories).
        thing_classes (list[str] or None): the json's category names in id order, when known in
            advance; otherwise detectron2 sets them from the json at the first load.
    """
    base_classes, novel_classes = list(base_classes), list(novel_classes)
    overlap = set(base_classes) & set(novel_classes)
    if overlap:
        raise UserInputError(f"{name}: classes both base and novel: {sorted(overlap)}")
    expected = set(base_classes) | set(novel_classes) if novel_annotated else set(base_classes)

    def load():
        _check_paths(name, json_file, image_root)
        try:
            dicts = load_coco_json(json_file, image_root, dataset_name=name)
        except json.JSONDecodeError as e:
            raise UserInputError(f"{json_file}: not valid JSON ({e})") from None
        except AssertionError as e:  # detectron2's Metadata refuses a changed thing_classes
            raise UserInputError(
                f"{json_file}: categories differ from those registered for {name} ({e})"
            ) from None
        _check_not_empty(name, json_file, dicts)
        _check_vocabulary(
            name,
            json_file,
            MetadataCatalog.get(name).thing_classes,
            expected,
            novel_classes,
            novel_annotated,
        )
        return sanitize_boxes(dicts, json_file)

    DatasetCatalog.register(name, load)
    meta = dict(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        base_classes=base_classes,
        novel_classes=novel_classes,
        novel_annotated=novel_annotated,
    )
    if thing_classes is not None:
        meta["thing_classes"] = list(thing_classes)
    MetadataCatalog.get(name).set(**meta)


def register_lvis_ovd_dataset(name, json_file, image_root, categories, novel_annotated=False):
    """Register an LVIS-format split: base = frequent + common, novel = rare categories.

    Args:
        categories (list[dict]): LVIS category dicts with "id", "synonyms" and "frequency"
            ("r", "c" or "f"), e.g. detectron2's LVIS_V1_CATEGORIES.
        novel_annotated (bool): False for training (rare boxes must be absent from the json, see
            datasets/prepare_lvis_ovd.py), True for evaluation (ids cover all categories).
    """
    categories = sorted(categories, key=lambda c: c["id"])
    base = [c for c in categories if c["frequency"] != "r"]
    novel = [c for c in categories if c["frequency"] == "r"]
    vocabulary = categories if novel_annotated else base
    # load_lvis_json without a dataset name gives contiguous id = LVIS id - 1.
    lvis_id_to_contiguous = {c["id"]: i for i, c in enumerate(vocabulary)}
    novel_names = {c["id"]: c["synonyms"][0] for c in novel}

    def load():
        _check_paths(name, json_file, image_root)
        try:
            dicts = load_lvis_json(json_file, image_root, dataset_name=None)
        except json.JSONDecodeError as e:
            raise UserInputError(f"{json_file}: not valid JSON ({e})") from None
        _check_not_empty(name, json_file, dicts)
        for record in dicts:
            for anno in record["annotations"]:
                lvis_id = anno["category_id"] + 1
                if lvis_id not in lvis_id_to_contiguous:
                    raise UserInputError(
                        f"{json_file}: holds boxes of the rare (novel) category "
                        f"'{novel_names.get(lvis_id, lvis_id)}'; a training split must not "
                        "(write one with datasets/prepare_lvis_ovd.py)"
                    )
                anno["category_id"] = lvis_id_to_contiguous[lvis_id]
        return sanitize_boxes(dicts, json_file)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="lvis",
        thing_classes=[c["synonyms"][0] for c in vocabulary],
        thing_dataset_id_to_contiguous_id=lvis_id_to_contiguous,
        base_classes=[c["synonyms"][0] for c in base],
        novel_classes=[c["synonyms"][0] for c in novel],
        novel_annotated=novel_annotated,
    )


def sanitize_boxes(dataset_dicts, source):
    """Drop boxes that are not finite, have no positive size, or lie outside the image; clip
    boxes that reach past the border. Never silent: counts are logged as a warning."""
    dropped = clipped = 0
    for record in dataset_dicts:
        width, height = record["width"], record["height"]
        kept = []
        for anno in record.get("annotations", []):
            box = BoxMode.convert(list(anno["bbox"]), anno["bbox_mode"], BoxMode.XYXY_ABS)
            x0, y0, x1, y1 = box
            if not all(math.isfinite(v) for v in box) or x1 <= x0 or y1 <= y0:
                dropped += 1
                continue
            cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
            cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
            if cx1 - cx0 < 1.0 or cy1 - cy0 < 1.0:  # nothing (or under a pixel) left inside
                dropped += 1
                continue
            if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
                clipped += 1
                anno["bbox"], anno["bbox_mode"] = [cx0, cy0, cx1, cy1], BoxMode.XYXY_ABS
                anno.pop("segmentation", None)  # a clipped box no longer matches its mask
            kept.append(anno)
        record["annotations"] = kept
    if dropped or clipped:
        logger.warning(
            f"{source}: dropped {dropped} invalid boxes (not finite, zero/negative size or "
            f"outside the image) and clipped {clipped} boxes to the image border"
        )
    return dataset_dicts


def _check_paths(name, json_file, image_root):
    for path, what in ((json_file, "annotation file"), (image_root, "image folder")):
        if not os.path.exists(path):
            root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
            hint = (
                "" if os.path.isdir(root) else f" (its parent folder {root} does not exist either)"
            )
            raise UserInputError(
                f"{name}: {what} not found: {path}{hint}; set DETECTRON2_DATASETS to the folder "
                "that holds the datasets (see datasets/README.md)"
            )


def _check_not_empty(name, json_file, dicts):
    if not dicts:  # detectron2 would stop later on an assertion, with a traceback
        raise UserInputError(f"{json_file}: holds no images, so dataset '{name}' is empty")


def _check_vocabulary(name, json_file, thing_classes, expected, novel_classes, novel_annotated):
    found = set(thing_classes)
    if not novel_annotated and found & set(novel_classes):
        raise UserInputError(
            f"{json_file}: holds the novel categories {sorted(found & set(novel_classes))}; the "
            f"training split {name} must list base categories only"
        )
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise UserInputError(
            f"{json_file}: categories do not match {name}'s base/novel classes "
            f"(missing: {missing or 'none'}; unexpected: {extra or 'none'})"
        )
