"""Distillation regions of one training image: filter its CLIP proposals, encode, build the record.

Filtering (DESIGN.md section 1, with our one deliberate difference): proposals with IoU >= 0.3
to a *base* GT box are dropped (they are the GT's business); no novel box is ever read, the
training split has none. Optionally (not the paper's) proposals lying mostly inside a base GT box
are dropped too: parts of a base object have a small IoU with it. Optionally proposals whose CLIP
argmax is a base class are dropped (the official COCO setting). The first `top_k` (300) left,
best objectness first, are kept.

Every base GT box and every kept proposal is embedded from its 1.2x crop by the (re-normalized)
CLIP, unnormalised, into one `feature_store` record:
    GT rows first (is_gt True): clip_class = the annotated class (index into the class names),
        confidence = 1, objectness = log C (the trainer weights GT rows 1);
    proposal rows (is_gt False), best first: CLIP's argmax class, max softmax probability and
        objectness from the proposal scoring.
"""

import dataclasses
import math

import numpy as np
import torch
from detectron2.structures import Boxes, pairwise_ioa
from torchvision.ops import box_iou

from ezsd.clip import CropSettings, encode_regions
from ezsd.clip.regions import flatten_crop

__all__ = ["FeatureSettings", "base_gt_filter", "select_regions", "image_regions"]


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    gt_iou_thresh: float = 0.3  # drop proposals with IoU >= this to a base GT box
    # also drop proposals with at least this share of their area inside one base GT box (parts
    # of base objects, whose IoU with it is small); 0 = off (the paper)
    gt_inside_thresh: float = 0.0
    drop_base_argmax: bool = False  # drop proposals whose CLIP argmax is a base class
    top_k: int = 300  # proposals kept per image
    crop: CropSettings = CropSettings()  # recorded as crop_scale, min_size

    def to_dict(self):
        d = flatten_crop(dataclasses.asdict(self))
        if not self.gt_inside_thresh:  # off: stores made before the option stay comparable
            del d["gt_inside_thresh"]
        return d


def base_gt_filter(proposal_boxes, base_gt_boxes, iou_thresh=0.3, inside_thresh=0.0):
    """Bool mask of proposals whose IoU with every base GT box is < `iou_thresh` and, with
    `inside_thresh` > 0, whose share of area inside every base GT box is < `inside_thresh`."""
    proposal_boxes = torch.as_tensor(proposal_boxes, dtype=torch.float32).reshape(-1, 4)
    base_gt_boxes = torch.as_tensor(base_gt_boxes, dtype=torch.float32).reshape(-1, 4)
    if base_gt_boxes.shape[0] == 0 or proposal_boxes.shape[0] == 0:
        return torch.ones(proposal_boxes.shape[0], dtype=torch.bool)
    keep = box_iou(proposal_boxes, base_gt_boxes).amax(dim=1) < iou_thresh
    if inside_thresh > 0:
        # IoA with the proposal as the second argument: the share of its area inside each box
        inside = pairwise_ioa(Boxes(base_gt_boxes), Boxes(proposal_boxes))
        keep &= inside.amax(dim=0) < inside_thresh
    return keep


def select_regions(proposals, base_gt_boxes, num_base_classes, settings):
    """Indices of the proposals to distill (proposal rows are sorted best first; the order stays).

    `num_base_classes`: the class names are base first, so a CLIP argmax below it is a base class.
    """
    keep = base_gt_filter(
        proposals["boxes"], base_gt_boxes, settings.gt_iou_thresh, settings.gt_inside_thresh
    )
    if settings.drop_base_argmax:
        keep &= torch.as_tensor(proposals["clip_class"]) >= num_base_classes
    return torch.nonzero(keep).flatten()[: settings.top_k]


def image_regions(
    model,
    image,
    gt_boxes,
    gt_classes,
    proposals,
    num_classes,
    num_base_classes,
    settings,
    batch_size=256,
):
    """The feature-store arrays of one image (numpy, ready for `write_image_regions`).

    Args:
        model: the (re-normalized) CLIP that makes the targets.
        image: CHW uint8 tensor. gt_boxes: (G, 4) XYXY base boxes; gt_classes: (G,) their
            indices into the class names. proposals: dict of tensors (see `proposals.py`).
    """
    gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
    keep = select_regions(proposals, gt_boxes, num_base_classes, settings)
    boxes = torch.cat([gt_boxes, torch.as_tensor(proposals["boxes"], dtype=torch.float32)[keep]])
    emb = encode_regions(model, image, boxes, settings.crop, batch_size)
    num_gt = gt_boxes.shape[0]
    return dict(
        boxes=boxes.numpy(),
        embeddings=emb.cpu().numpy(),
        confidence=np.concatenate([np.ones(num_gt), _np(proposals["confidence"])[keep.numpy()]]),
        clip_class=np.concatenate(
            [
                np.asarray(gt_classes, dtype=np.int64).reshape(-1),
                _np(proposals["clip_class"])[keep.numpy()],
            ]
        ),
        objectness=np.concatenate(
            [np.full(num_gt, math.log(num_classes)), _np(proposals["objectness"])[keep.numpy()]]
        ),
        is_gt=np.arange(boxes.shape[0]) < num_gt,
    )


def _np(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
