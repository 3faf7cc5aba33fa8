"""A training option that is NOT part of the EZSD paper (MODEL.EZSD.NOVEL_NEGATIVES_INSIDE), off by
default: the novel names compete in the training softmax on the regions that lie on base objects.

The paper classifies training regions among the base names and background; the novel names first
meet the classifier at inference. Nothing then keeps a novel name's score low anywhere, and at
inference novel names outscore background on parts of base objects and on whole base objects
(docs/SHAPES_RESULTS.md, "What outranks the novel objects"). With this option the sampled
proposals labelled as a base class, and the background ones with at least a given share of their
area inside a base box (parts of a base object), are classified among the base names, background
*and* the novel names (those of the inference vocabulary that the training one lacks), their own
label the target: there a novel name is a wrong answer. Elsewhere the novel names stay out, since
background away from the base objects may be an unlabeled novel object. Only base boxes and the
novel *names* are read (novel names are the zero-shot premise; no novel box or label exists in
training).
"""

from typing import List

import torch
from detectron2.structures import Instances, pairwise_ioa

from ezsd.utils.errors import UserInputError

__all__ = ["check_novel_names", "on_base_objects"]


def check_novel_names(training_names, inference_names):
    """Refuse a vocabulary pair without novel names, or whose inference names lack a training name
    (spelled otherwise there, it would count as novel and be taught as wrong on its own objects)."""
    inference = set(inference_names)
    missing = [n for n in training_names if n not in inference]
    if missing:
        raise UserInputError(
            "MODEL.EZSD.NOVEL_NEGATIVES_INSIDE: the inference vocabulary "
            f"(MODEL.EZSD.TEST_TEXT_EMBEDDINGS) lacks the training name(s) {missing[:3]}; it must "
            "hold every training name and the novel ones"
        )
    if not inference - set(training_names):
        raise UserInputError(
            "MODEL.EZSD.NOVEL_NEGATIVES_INSIDE > 0 needs novel names in training: an inference "
            "vocabulary (MODEL.EZSD.TEST_TEXT_EMBEDDINGS) with names that the training one lacks"
        )


def on_base_objects(
    proposals: List[Instances], targets: List[Instances], inside: float, background_class: int
) -> List[torch.Tensor]:
    """Per image, (R,) bool over its sampled proposals: labelled as a base class, or background
    with at least `inside` of its area inside one of the image's ground-truth (base) boxes."""
    masks = []
    for p, t in zip(proposals, targets):
        on_object = p.gt_classes != background_class
        if len(t) and len(p):
            share_inside = pairwise_ioa(t.gt_boxes, p.proposal_boxes).max(dim=0).values
            on_object |= share_inside >= inside
        masks.append(on_object)
    return masks
