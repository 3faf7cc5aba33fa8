import os

from detectron2.data import MetadataCatalog

from ezsd.utils.errors import UserInputError

from .lvis_evaluation import OVDLVISEvaluator
from .ovd_coco_evaluation import OVDCOCOEvaluator

__all__ = ["build_ovd_evaluator"]


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
