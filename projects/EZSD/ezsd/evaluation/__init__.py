from .build import build_ovd_evaluator, evaluation_split_metadata
from .lvis_evaluation import OVDLVISEvaluator
from .ovd_coco_evaluation import OVDCOCOEvaluator

__all__ = [
    "build_ovd_evaluator",
    "evaluation_split_metadata",
    "OVDCOCOEvaluator",
    "OVDLVISEvaluator",
]
