"""EZSD's detector: importing this registers the meta-architecture, ROI heads, box head and
backbone."""

from .backbone import build_resnet_fpn_backbone_any_depth
from .box_head import EZSDBoxHead
from .distillation import distillation_loss, normalize_weights_per_image
from .meta_arch import EZSDRCNN
from .predictor import EZSDPredictor, load_vocabulary_file, temperature_scaled_parameters
from .roi_heads import EZSDROIHeads

__all__ = [
    "build_resnet_fpn_backbone_any_depth", "EZSDBoxHead", "EZSDPredictor", "EZSDROIHeads", "EZSDRCNN",
    "distillation_loss", "normalize_weights_per_image", "load_vocabulary_file",
    "temperature_scaled_parameters",
]  # fmt: skip
