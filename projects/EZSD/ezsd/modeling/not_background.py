"""Two training options that are NOT part of the EZSD paper, off by default: places that may hold
an unlabeled novel object are not taught as background.

MODEL.EZSD.NOT_BACKGROUND_IOU: the RPN and the ROI heads do not teach as background the places
that the image's distilled CLIP regions cover.

Training images hold objects of unseen (novel) classes without boxes. The paper's RPN and ROI
sampler label every box that overlaps no ground-truth box as background, so the detector learns
to reject exactly the objects it is meant to find later; the distillation loss, meanwhile, teaches
the region embedding of the same places CLIP's view of them. With this option an RPN anchor or a
sampled ROI proposal whose IoU with one of the image's distilled regions (class-agnostic boxes,
chosen among the proposals that overlap no base box) is at least the threshold is neither
foreground nor background: it is left out of the objectness loss and out of the classification
loss. No label of any unseen class is read: the regions are the ones the distillation uses.

MODEL.EZSD.NOT_BACKGROUND_OBJECTNESS: a sampled ROI proposal labelled background that lies away
from every base object, and that the RPN (trained on the base boxes, class-agnostic) scores as an
object, is left out of the ROI losses. This is the missing-annotation view of zero-shot training
(cf. soft sampling, Wu et al. 2019): a background sample far from every labelled box may be an
object nobody boxed. Near a base box (a loose box, a part) background stays background. Only base
boxes and the RPN's own scores are read.
"""

from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.proposal_generator.rpn import RPN
from detectron2.structures import Boxes, Instances, pairwise_ioa, pairwise_iou

from ezsd.utils.errors import UserInputError

__all__ = [
    "EZSDRPN",
    "covered_by_regions",
    "drop_background_on_regions",
    "away_from_boxes",
    "drop_object_like_background",
]

# A proposal is away from a base object when its IoU with the object's box is below detectron2's
# RPN negative threshold and less than half of its area lies inside the box.
AWAY_IOU = 0.3
AWAY_INSIDE = 0.5


def covered_by_regions(boxes: Boxes, regions: Boxes, iou: float) -> torch.Tensor:
    """(N,) bool: whether each box has IoU >= `iou` with at least one of `regions`."""
    if not len(regions) or not len(boxes):
        return torch.zeros(len(boxes), dtype=torch.bool, device=boxes.tensor.device)
    return (pairwise_iou(boxes, regions) >= iou).any(dim=1)


def drop_background_on_regions(
    proposals: List[Instances], regions: List[Boxes], iou: float, background_class: int
) -> List[Instances]:
    """The sampled proposals of each image without its background ones (`gt_classes ==
    background_class`) that `regions` of the same image cover at `iou`."""
    out = []
    for p, r in zip(proposals, regions):
        drop = (p.gt_classes == background_class) & covered_by_regions(p.proposal_boxes, r, iou)
        out.append(p[~drop])
    return out


def away_from_boxes(boxes: Boxes, gt_boxes: Boxes) -> torch.Tensor:
    """(N,) bool: whether each box is away from all of `gt_boxes` (IoU < AWAY_IOU and less than
    AWAY_INSIDE of its area inside any one)."""
    if not len(gt_boxes) or not len(boxes):
        return torch.ones(len(boxes), dtype=torch.bool, device=boxes.tensor.device)
    near = (pairwise_iou(boxes, gt_boxes) >= AWAY_IOU).any(dim=1)
    inside = (pairwise_ioa(gt_boxes, boxes) >= AWAY_INSIDE).any(dim=0)
    return ~(near | inside)


def drop_object_like_background(
    proposals: List[Instances],
    targets: List[Instances],
    min_objectness: float,
    background_class: int,
) -> List[Instances]:
    """The sampled proposals of each image without its background ones that lie away from every
    ground-truth (base) box and whose RPN objectness probability (sigmoid of the proposals'
    `objectness_logits`) is at least `min_objectness`."""
    out = []
    for p, t in zip(proposals, targets):
        if not p.has("objectness_logits"):
            raise UserInputError(
                "MODEL.EZSD.NOT_BACKGROUND_OBJECTNESS needs proposals with objectness scores "
                f"(an RPN's); these hold only {sorted(p.get_fields())}"
            )
        drop = (
            (p.gt_classes == background_class)
            & (torch.sigmoid(p.objectness_logits) >= min_objectness)
            & away_from_boxes(p.proposal_boxes, t.gt_boxes)
        )
        out.append(p[~drop])
    return out


@PROPOSAL_GENERATOR_REGISTRY.register()
class EZSDRPN(RPN):
    """detectron2's RPN whose anchors labelled background are ignored where the image's distilled
    regions cover them (`not_background_iou` > 0 and `forward(..., not_background=...)`); with
    the default 0 it is detectron2's RPN."""

    @configurable
    def __init__(self, *, not_background_iou: float = 0.0, **kwargs):
        """
        Args:
            not_background_iou: IoU with a distilled region at which a background anchor is
                ignored instead; 0 = off.
            kwargs: RPN arguments.
        """
        super().__init__(**kwargs)
        self.not_background_iou = not_background_iou
        self._not_background: Optional[List[Boxes]] = None

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["not_background_iou"] = cfg.MODEL.EZSD.NOT_BACKGROUND_IOU
        return ret

    def forward(
        self,
        images,
        features: Dict[str, torch.Tensor],
        gt_instances: Optional[List[Instances]] = None,
        not_background: Optional[List[Boxes]] = None,
    ):
        """RPN.forward; `not_background`: per image, the distilled regions (training only)."""
        # RPN.forward calls label_and_sample_anchors(anchors, gt_instances) with no room for more
        # arguments: the regions are held for the length of this call only.
        self._not_background = not_background
        try:
            return super().forward(images, features, gt_instances)
        finally:
            self._not_background = None

    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        gt_labels, matched_gt_boxes = super().label_and_sample_anchors(anchors, gt_instances)
        if self.not_background_iou > 0 and self._not_background is not None:
            all_anchors = Boxes.cat(anchors)
            for labels, regions in zip(gt_labels, self._not_background):
                covered = covered_by_regions(
                    all_anchors, regions.to(labels.device), self.not_background_iou
                )
                labels[(labels == 0) & covered] = -1
        return gt_labels, matched_gt_boxes
