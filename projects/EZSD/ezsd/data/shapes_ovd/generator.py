"""Write a ShapesOVD dataset: images plus COCO-format train.json (base boxes) and val.json (all)."""

import dataclasses
import os

import numpy as np
from pycocotools import mask as mask_util
from tqdm import tqdm

from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import atomic_write, atomic_write_json, check_writable_dir

from .camera import DETECTION_CAMERA
from .categories import CATEGORY_NAMES, DEFAULT_NOVEL_CLASSES
from .scenes import render_scene

__all__ = ["generate_shapes_ovd", "validate_novel_classes"]

JPEG_QUALITY = 90  # a camera's own compression, as in COCO; deterministic for a given libjpeg
_SPLIT_SEED = {"train": 0, "val": 1}  # train and val images come from disjoint seed streams


def validate_novel_classes(novel_classes):
    """The novel names as a tuple in category order; a UserInputError names any bad value."""
    novel = tuple(novel_classes)
    for name in novel:
        if name not in CATEGORY_NAMES:
            raise UserInputError(
                f"--novel: {name!r} is not a ShapesOVD category; valid names: "
                f"{','.join(CATEGORY_NAMES)}"
            )
    if not novel or len(set(novel)) == len(CATEGORY_NAMES):
        raise UserInputError("--novel: needs at least one novel and at least one base category")
    return tuple(n for n in CATEGORY_NAMES if n in novel)


def _annotation(ann_id, image_id, cat, mask):
    ys, xs = np.nonzero(mask)
    x0, y0 = float(xs.min()), float(ys.min())
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat + 1,
        "bbox": [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0],
        "area": float(mask.sum()),  # visible pixels, as COCO's area is the mask's
        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
        "iscrowd": 0,
    }


def _write_split(out_dir, split, seed, num, image_size, keep, progress):
    """Render `num` images into out_dir/split/ and return their COCO images and annotations."""
    folder = os.path.join(out_dir, split)
    os.makedirs(folder, exist_ok=True)
    images, annotations, unlabeled = [], [], 0
    for index in tqdm(range(num), desc=f"ShapesOVD {split}", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, _SPLIT_SEED[split], index])
        image, objects = render_scene(rng, image_size)
        file_name = f"{index:06d}.jpg"
        with atomic_write(os.path.join(folder, file_name)) as f:
            image.save(f, format="JPEG", quality=JPEG_QUALITY)
        images.append(
            {"id": index + 1, "file_name": file_name, "height": image_size, "width": image_size}
        )
        for cat, mask in objects:
            if keep[cat]:
                annotations.append(_annotation(len(annotations) + 1, index + 1, cat, mask))
            else:
                unlabeled += 1
    return images, annotations, unlabeled


def generate_shapes_ovd(
    out_dir,
    seed=0,
    num_train=1000,
    num_val=200,
    novel_classes=DEFAULT_NOVEL_CLASSES,
    image_size=256,
    progress=False,
):
    """Write out_dir/{train,val}.json and the images under out_dir/{train,val}/.

    train.json lists only base categories and base boxes; novel objects are drawn in the training
    images all the same, unlabeled, as in COCO. val.json lists every category and box. Category id
    = index in CATEGORY_NAMES + 1, and each category carries "split": "base" or "novel". The same
    arguments write the same bytes; each json is written last and atomically, so its presence
    means its images are complete. out_dir/split.json records the base/novel split.
    """
    novel = validate_novel_classes(novel_classes)
    if image_size < 64:
        raise UserInputError(f"--image-size: {image_size} is too small (at least 64)")
    for flag, num in (("--num-train", num_train), ("--num-val", num_val)):
        if num < 1:
            raise UserInputError(f"{flag}: {num} images; a split needs at least 1")
    check_writable_dir(out_dir, "--out")
    is_novel = [n in novel for n in CATEGORY_NAMES]
    categories = [
        {
            "id": i + 1,
            "name": n,
            "supercategory": "object",
            "split": "novel" if is_novel[i] else "base",
        }
        for i, n in enumerate(CATEGORY_NAMES)
    ]
    info = {
        "description": "ShapesOVD (see datasets/README.md)",
        "seed": seed,
        "novel_classes": list(novel),
        "camera": dataclasses.asdict(DETECTION_CAMERA),
    }
    for split, num, keep in (
        ("train", num_train, [not x for x in is_novel]),
        ("val", num_val, [True] * len(CATEGORY_NAMES)),
    ):
        images, annotations, unlabeled = _write_split(
            out_dir, split, seed, num, image_size, keep, progress
        )
        # The novel objects drawn in training images without a box (the negatives COCO also has).
        split_info = dict(info, split=split, unlabeled_novel_objects=unlabeled)
        coco = {
            "info": split_info,
            "images": images,
            "annotations": annotations,
            "categories": [c for c in categories if keep[c["id"] - 1]],
        }
        atomic_write_json(os.path.join(out_dir, f"{split}.json"), coco)
    # Read by the dataset registration (ezsd/data/datasets/builtin.py): a folder generated with
    # another --novel registers with its own base/novel split.
    atomic_write_json(
        os.path.join(out_dir, "split.json"),
        {"base": [n for n in CATEGORY_NAMES if n not in novel], "novel": list(novel)},
    )
    return out_dir
