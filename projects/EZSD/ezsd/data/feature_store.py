"""The on-disk store of pre-computed CLIP region targets: one small `.npz` per image + a manifest.

Per region, all included, about 1.05 KB at 512-d: fp16 embedding (1024 B), fp32 box (16 B),
fp16 confidence and objectness, int16 CLIP argmax, bool is-GT flag. The offline tools write it, the
detector's mapper reads it; `manifest.json` records how the targets were made (CLIP checkpoint hash,
class names, settings) and for which data (`dataset`: the dataset's name, number of images and
digests of its (image id, file name) list and of its boxes, see `dataset_fingerprint`), so that a
trainer refuses targets made for another set-up or other images (image ids alone do not tell:
ShapesOVD numbers its images 1..N in every split and every seed).

Layout:
    ROOT/manifest.json
    ROOT/regions/<image_id>.npz   keys: boxes (R,4) float32 XYXY in original image pixels,
                                  embeddings (R,D) float16 (not normalised), confidence (R,)
                                  float16, clip_class (R,) int16, objectness (R,) float16,
                                  is_gt (R,) bool. Proposal rows are sorted by objectness.
"""

import hashlib
import json
import os

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode

from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import atomic_write, atomic_write_json

__all__ = [
    "FeatureStore",
    "write_image_regions",
    "write_manifest",
    "dataset_fingerprint",
    "check_made_from",
    "REGION_FIELDS",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REGION_FIELDS = {
    "boxes": np.float32,
    "embeddings": np.float16,
    "confidence": np.float16,
    "clip_class": np.int16,
    "objectness": np.float16,
    "is_gt": np.bool_,
}


def region_file(root, image_id):
    return os.path.join(root, "regions", f"{image_id}.npz")


def write_image_regions(root, image_id, **arrays):
    """Write one image's regions atomically (a killed job leaves no partial file)."""
    missing = set(REGION_FIELDS) - set(arrays)
    if missing:
        raise ValueError(f"write_image_regions: missing arrays {sorted(missing)}")
    num = len(arrays["boxes"])
    if any(len(a) != num for a in arrays.values()):
        raise ValueError(f"write_image_regions: arrays of image {image_id} differ in length")
    cast = {k: np.ascontiguousarray(arrays[k], dtype=t) for k, t in REGION_FIELDS.items()}
    cast["boxes"] = cast["boxes"].reshape(num, 4)
    with atomic_write(region_file(root, image_id)) as f:
        np.savez(f, **cast)


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, separators=(",", ":")).encode()).hexdigest()[:16]


def _relative_file_name(file_name, image_root):
    """The image's path below the dataset's image folder (so that moving DETECTRON2_DATASETS does
    not change a digest); its base name when it lies elsewhere."""
    if image_root:
        rel = os.path.relpath(os.path.abspath(file_name), os.path.abspath(image_root))
        if not rel.startswith(".."):
            return rel.replace(os.sep, "/")
    return os.path.basename(file_name)


def dataset_fingerprint(dataset_name, records):
    """What a feature store records about the data it was made from: {"name", "num_images",
    "images_digest" (of the (image id, file name) list in id order, file names relative to the
    dataset's image_root), "boxes_digest" (of each image's boxes: class name, XYXY rounded to
    0.01 px)}. `records`: the dataset's dicts (DatasetCatalog.get(dataset_name)), all of them."""
    meta = MetadataCatalog.get(dataset_name)
    classes = meta.get("thing_classes") or []
    image_root = meta.get("image_root")
    ordered = sorted(records, key=lambda r: (str(type(r["image_id"])), r["image_id"]))
    images, boxes = [], []
    for r in ordered:
        images.append([str(r["image_id"]), _relative_file_name(r["file_name"], image_root)])
        per_image = []
        for a in r.get("annotations", []):
            box = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            cid = a["category_id"]
            name = classes[cid] if 0 <= cid < len(classes) else str(cid)
            per_image.append([name] + [round(float(v), 2) for v in box])
        boxes.append(sorted(per_image))
    return dict(
        name=dataset_name,
        num_images=len(ordered),
        images_digest=_digest(images),
        boxes_digest=_digest(boxes),
    )


def write_manifest(
    root, clip_hash, class_names, base_classes, settings, image_counts, extra=None, dataset=None
):
    """Write the manifest last: its presence marks a finished store.

    `dataset`: `dataset_fingerprint` of the data the targets were made from (a trainer refuses a
    store without it). `extra`: optional further top-level keys (e.g. the pre-computation's
    skipped images); they cannot replace the standard ones.
    """
    manifest = dict(extra or {})
    manifest.update(
        format_version=FORMAT_VERSION,
        clip_hash=clip_hash,
        class_names=list(class_names),
        base_classes=list(base_classes),
        settings=settings,
        dataset=dataset,
        images={str(k): int(v) for k, v in image_counts.items()},
    )
    atomic_write_json(os.path.join(root, MANIFEST), manifest, indent=1)


def check_made_from(path, made, dataset_name, records, used_by, remedy):
    """Refuse files that record (`made`, a `dataset_fingerprint`; `path` names them) other data than
    the dataset `dataset_name` whose dicts are `records` (all of them): another dataset name,
    number of images, (image id, file name) list or boxes. One line naming both sides, then who
    uses the dataset (`used_by`, e.g. "training uses") and what to do (`remedy`)."""
    if not made:
        raise UserInputError(
            f"{path}: records no dataset (made by an older version), so its regions cannot be "
            f"paired with the images of '{dataset_name}' safely; {remedy}"
        )
    ours = dataset_fingerprint(dataset_name, records)
    for key, what in (
        ("name", "dataset"),
        ("num_images", "number of images"),
        ("images_digest", "(image id, file name) list digest"),
        ("boxes_digest", "boxes digest"),
    ):
        if made.get(key) != ours[key]:
            raise UserInputError(
                f"{path}: made for dataset '{made.get('name')}' ({made.get('num_images')} "
                f"images, ids/files {made.get('images_digest')}, boxes {made.get('boxes_digest')}) "
                f"but {used_by} '{dataset_name}' ({ours['num_images']} images, ids/files "
                f"{ours['images_digest']}, boxes {ours['boxes_digest']}): the {what} differs; "
                f"{remedy}"
            )


_REMEDY = "pre-compute the region features of this dataset (MODEL.EZSD.DISTILL.FEATURES)"


def _some(names, limit=10):
    """Sorted `names` for an error line: all of them, or the first `limit` and the count."""
    names = sorted(names)
    if len(names) <= limit:
        return str(names)
    return f"{str(names[:limit])[:-1]}, ... ({len(names)} in all)]"


class FeatureStore:
    """Read access to a finished store (one whose manifest exists)."""

    def __init__(self, root):
        self.root = root
        path = os.path.join(root, MANIFEST)
        try:
            with open(path) as f:
                self.manifest = json.load(f)
        except FileNotFoundError:
            raise UserInputError(
                f"{path}: not found; pre-compute the region features first "
                "(tools/precompute_clip_features.py)"
            ) from None
        except json.JSONDecodeError as e:
            raise UserInputError(f"{path}: not valid JSON ({e})") from None
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise UserInputError(
                f"{path}: format_version {self.manifest.get('format_version')} is not the "
                f"supported {FORMAT_VERSION}; re-run the pre-computation"
            )

    def check_dataset(self, dataset_name, records):
        """Refuse a store made for other base or novel classes than those of the dataset
        `dataset_name` (its metadata's `base_classes` / `novel_classes`, where it names them; the
        store's novel classes are its class names that are not base), or from other data than
        its dicts `records` (`check_made_from`)."""
        path = os.path.join(self.root, MANIFEST)
        meta = MetadataCatalog.get(dataset_name)
        base = self.manifest["base_classes"]
        made = dict(base=base, novel=[c for c in self.manifest["class_names"] if c not in base])
        for group in ("base", "novel"):
            theirs = meta.get(f"{group}_classes")
            if theirs is not None and set(theirs) != set(made[group]):
                raise UserInputError(
                    f"{path}: made for the {group} classes {_some(made[group])} but training uses "
                    f"'{dataset_name}', whose {group} classes are {_some(theirs)} (only in the "
                    f"store: {_some(set(made[group]) - set(theirs))}, only in the dataset: "
                    f"{_some(set(theirs) - set(made[group]))}); {_REMEDY}"
                )
        check_made_from(
            path, self.manifest.get("dataset"), dataset_name, records, "training uses", _REMEDY
        )

    def embedding_dim(self):
        """(the region file read, the dimension of its targets), or (None, None) when the store
        holds no region."""
        for image_id, num in self.manifest["images"].items():
            if num:
                path = region_file(self.root, image_id)
                with np.load(path) as data:
                    return path, int(data["embeddings"].shape[1])
        return None, None

    def __contains__(self, image_id):
        return str(image_id) in self.manifest["images"]

    def load(self, image_id):
        """Return the dict of REGION_FIELDS arrays of one image."""
        path = region_file(self.root, image_id)
        if image_id not in self:
            raise UserInputError(f"{self.root}: has no regions for image id {image_id}")
        with np.load(path) as data:
            return {k: data[k] for k in REGION_FIELDS}
