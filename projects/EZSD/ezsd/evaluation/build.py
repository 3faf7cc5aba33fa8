import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ezsd.utils.errors import UserInputError

from .lvis_evaluation import OVDLVISEvaluator
from .ovd_coco_evaluation import OVDCOCOEvaluator

__all__ = ["build_ovd_evaluator", "evaluation_split_metadata"]


def build_ovd_evaluator(cfg, dataset_name, output_folder=None):
    """The open-vocabulary evaluator for a registered dataset, chosen by its `evaluator_type`."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    # AP uses each benchmark's standard detection limit (COCO 100, LVIS 300 per image).
    kwargs = dict(tasks=tasks, output_dir=output_folder)
    if evaluator_type == "coco":
        return OVDCOCOEvaluator(dataset_name, **kwargs)
    if evaluator_type == "lvis":
        return OVDLVISEvaluator(dataset_name, **kwargs)
    raise UserInputError(
        f"dataset {dataset_name}: evaluator_type {evaluator_type!r} is not 'coco' or 'lvis'; "
        "register it with ezsd.data.datasets.register_ovd_dataset"
    )


def evaluation_split_metadata(dataset_name, flag="--dataset"):
    """The metadata of `dataset_name`, refused in one line unless it is registered with novel
    classes and their boxes (an evaluation split), which every novel-AP analysis needs."""
    if dataset_name not in DatasetCatalog.list():
        raise UserInputError(f"{flag} '{dataset_name}' is not a registered dataset")
    meta = MetadataCatalog.get(dataset_name)
    if not (meta.get("novel_classes") and meta.get("novel_annotated")):
        raise UserInputError(
            f"{flag} '{dataset_name}' has no novel boxes: use an evaluation split "
            "(register_ovd_dataset(..., novel_annotated=True))"
        )
    return meta
