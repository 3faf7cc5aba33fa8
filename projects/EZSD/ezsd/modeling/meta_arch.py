"""EZSDRCNN: a GeneralizedRCNN that hands each training image's CLIP regions to its ROI heads."""

from typing import Dict, List

import torch
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage

from ezsd.utils.errors import UserInputError

from .not_background import EZSDRPN

__all__ = ["EZSDRCNN"]


@META_ARCH_REGISTRY.register()
class EZSDRCNN(GeneralizedRCNN):
    """GeneralizedRCNN + distillation inputs.

    Training inputs may carry `"distill_regions"` (an Instances with `boxes`, `targets`,
    `weights`, made by EZSDDatasetMapper); they go to `roi_heads(..., distill_regions=...)`.
    The RPN also gets their boxes when it is an EZSDRPN (MODEL.EZSD.NOT_BACKGROUND_IOU).
    Inference is GeneralizedRCNN's. `set_vocabulary(embeddings, names)` swaps the classifier's
    text embeddings (see EZSDPredictor).
    """

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        if cfg.MODEL.EZSD.NOT_BACKGROUND_IOU > 0 and not isinstance(
            ret["proposal_generator"], (EZSDRPN, type(None))
        ):
            raise UserInputError(
                "MODEL.EZSD.NOT_BACKGROUND_IOU > 0 needs MODEL.PROPOSAL_GENERATOR.NAME 'EZSDRPN', "
                f"got '{cfg.MODEL.PROPOSAL_GENERATOR.NAME}'"
            )
        return ret

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        if not self.training:
            return self.inference(batched_inputs)

        images = self.preprocess_image(batched_inputs)
        if "instances" in batched_inputs[0]:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        else:
            gt_instances = None
        distill_regions = self._distill_regions(batched_inputs, images.image_sizes)
        features = self.backbone(images.tensor)

        if self.proposal_generator is not None:
            rpn_extra = {}
            if distill_regions is not None and isinstance(self.proposal_generator, EZSDRPN):
                rpn_extra["not_background"] = [r.boxes for r in distill_regions]
            proposals, proposal_losses = self.proposal_generator(
                images, features, gt_instances, **rpn_extra
            )
        else:
            assert "proposals" in batched_inputs[0]
            proposals = [x["proposals"].to(self.device) for x in batched_inputs]
            proposal_losses = {}

        extra = {} if distill_regions is None else {"distill_regions": distill_regions}
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances, **extra)
        if self.vis_period > 0:
            storage = get_event_storage()
            if storage.iter % self.vis_period == 0:
                self.visualize_training(batched_inputs, proposals)

        losses = {}
        losses.update(detector_losses)
        losses.update(proposal_losses)
        return losses

    def _distill_regions(self, batched_inputs, image_sizes):
        """Per-image distillation regions on the model's device; an image without any (e.g. its
        features were missing and skipped) gets an empty Instances. None if no image has them."""
        if not any("distill_regions" in x for x in batched_inputs):
            return None
        out = []
        for x, size in zip(batched_inputs, image_sizes):
            regions = x.get("distill_regions")
            if regions is None:
                regions = Instances(
                    size,
                    boxes=Boxes(torch.zeros(0, 4)),
                    targets=torch.zeros(0, 0),
                    weights=torch.zeros(0),
                )
            out.append(regions.to(self.device))
        dim = next((r.targets.shape[1] for r in out if len(r)), 0)
        for r in out:  # empty targets must concatenate with the others
            if not len(r):
                r.targets = r.targets.new_zeros(0, dim)
        return out

    def set_vocabulary(self, embeddings, names, split=None):
        """Replace the classifier's vocabulary (see EZSDPredictor.set_vocabulary)."""
        self.roi_heads.set_vocabulary(embeddings, names, split)

    @property
    def class_names(self):
        """Class names of the active vocabulary (index = predicted class id)."""
        return self.roi_heads.box_predictor.class_names
