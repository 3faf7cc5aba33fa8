"""EZSD's detector: importing this registers the meta-architecture, RPN, ROI heads, box head
and backbone. The paper's predictor is `EZSDPredictor` (its classifier: `VocabularyClassifier`);
options that are not the paper's are in `extensions` (test time) and `not_background`
(training)."""

from .backbone import build_resnet_fpn_backbone_any_depth
from .box_head import EZSDBoxHead
from .distillation import distillation_loss, normalize_weights_per_image
from .extensions import TestTimeExtensions
from .meta_arch import EZSDRCNN
from .not_background import EZSDRPN
from .predictor import EZSDPredictor, temperature_scaled_parameters
from .roi_heads import EZSDROIHeads
from .vocabulary import load_vocabulary_file
from .vocabulary_classifier import VocabularyClassifier

__all__ = [
    "build_resnet_fpn_backbone_any_depth",
    "EZSDBoxHead",
    "EZSDPredictor",
    "EZSDROIHeads",
    "EZSDRCNN",
    "EZSDRPN",
    "distillation_loss",
    "normalize_weights_per_image",
    "load_vocabulary_file",
    "temperature_scaled_parameters",
    "TestTimeExtensions",
    "VocabularyClassifier",
]
