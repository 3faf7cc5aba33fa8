"""Checks of the training data that detectron2 cannot make: no novel box may reach training.

`check_training_datasets(names)` is called where the training loader is built (by
`EZSDDatasetMapper.from_config(cfg, is_train=True)`, which every EZSD training loader uses); the
mapper also checks every training record it maps (`novel_category_ids` + `check_record`), so a
record that slipped past (e.g. a dataset registered without metadata) still never trains.
"""

from detectron2.data import DatasetCatalog, MetadataCatalog

from ezsd.utils.errors import UserInputError

__all__ = ["check_training_datasets", "novel_category_ids", "check_record"]


def novel_category_ids(dataset_names):
    """Contiguous category ids of novel classes in the training datasets `dataset_names`: the
    ids whose thing_classes name is one of a dataset's `novel_classes` (empty when the metadata
    names no novel class or the classes are not known yet)."""
    ids = {}
    for name in dataset_names:
        meta = MetadataCatalog.get(name)
        novel = set(meta.get("novel_classes") or ())
        for i, c in enumerate(meta.get("thing_classes") or ()):
            if c in novel:
                ids[i] = (name, c)
    return ids


def _refusal(dataset, detail):
    return UserInputError(
        f"DATASETS.TRAIN: dataset '{dataset}' {detail}; training must see base boxes only "
        "(train on a base split, e.g. shapes_ovd_train / coco_ovd_train / lvis_v1_ovd_train)"
    )


def check_record(record, novel_ids):
    """Refuse one training record holding a box of a novel category (`novel_ids` from
    `novel_category_ids`)."""
    for anno in record.get("annotations", ()):
        hit = novel_ids.get(anno.get("category_id"))
        if hit is not None:
            raise _refusal(
                hit[0],
                f"holds a box of the novel category '{hit[1]}' (image id "
                f"{record.get('image_id')}, {record.get('file_name')})",
            )


def check_training_datasets(dataset_names):
    """Refuse training datasets whose annotations hold novel categories, in one line.

    A dataset registered as an evaluation split (metadata `novel_annotated` True) is refused
    without loading it; one registered as a training split (False: our loaders refuse a json with
    a novel category) is accepted without loading it; any other whose metadata names novel
    classes is loaded and scanned when its thing_classes include one (or are not known yet): its
    boxes decide. Datasets whose metadata names no novel class cannot be checked here.
    """
    for name in dataset_names:
        meta = MetadataCatalog.get(name)
        if meta.get("novel_annotated"):
            raise _refusal(
                name,
                "is an evaluation split (its metadata says novel_annotated=True: "
                f"boxes of the novel classes {list(meta.novel_classes)[:5]}...)",
            )
        novel = set(meta.get("novel_classes") or ())
        classes = meta.get("thing_classes")
        if meta.get("novel_annotated") is False:
            continue
        if novel and (classes is None or novel & set(classes)):
            records = DatasetCatalog.get(name)
            ids = novel_category_ids([name])
            for record in records:
                check_record(record, ids)
