from .lvis_evaluation import OVDLVISEvaluator
from .ovd_coco_evaluation import OVDCOCOEvaluator

__all__ = ["OVDCOCOEvaluator", "OVDLVISEvaluator"]
