"""EZSD's ROI heads: StandardROIHeads with the embedding box head, the cosine predictor and the
distillation loss on the pre-computed CLIP regions of each training image."""

from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads, build_box_head
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage

from ezsd.utils.errors import UserInputError

from .distillation import distillation_loss, regions_per_process
from .not_background import drop_background_on_regions, drop_object_like_background
from .novel_negatives import check_novel_names, on_base_objects
from .predictor import EZSDPredictor

__all__ = ["EZSDROIHeads"]


def unique_boxes_per_image(boxes_per_image: List[Boxes]):
    """The distinct boxes of each image (list of Boxes) and, for every input row (images
    concatenated), the index of its box among the distinct ones of all images concatenated:
    `cat(rows)[i] == cat(unique)[inverse[i]]`."""
    unique, inverse, offset = [], [], 0
    for boxes in boxes_per_image:
        u, inv = torch.unique(boxes.tensor, dim=0, return_inverse=True)
        unique.append(Boxes(u))
        inverse.append(inv + offset)
        offset += u.shape[0]
    return unique, cat(inverse)


@ROI_HEADS_REGISTRY.register()
class EZSDROIHeads(StandardROIHeads):
    """StandardROIHeads whose box branch is EZSD's.

    In training, `forward(..., distill_regions=...)` takes per image an Instances with fields
    `boxes` (Boxes, in the input image's coordinates), `targets` (K, D) CLIP embeddings and
    `weights` (K,) (as :class:`ezsd.data.mapper.EZSDDatasetMapper` yields them) and adds
    `loss_distill`. `num_classes` is the predictor's (the active vocabulary's size). Training
    options that are not the paper's: with `not_background_iou` > 0
    (ezsd.modeling.not_background), sampled background proposals that the distilled regions cover
    are left out of the losses, and with `not_background_objectness` > 0 those away from every
    base box that the RPN scores as objects; with `novel_negatives_inside` > 0
    (ezsd.modeling.novel_negatives), the novel names compete in the classification loss on the
    proposals that lie on base objects.
    """

    @configurable
    def __init__(
        self,
        *,
        distillation: bool = True,
        distill_weight: float = 1.0,
        not_background_iou: float = 0.0,
        not_background_objectness: float = 0.0,
        novel_negatives_inside: float = 0.0,
        **kwargs,
    ):
        """
        Args:
            distillation: add the distillation loss (needs `distill_regions` in training).
            distill_weight: its factor (the loss is also scaled by the embedding dimension).
            not_background_iou: IoU with a distilled region at which a sampled background
                proposal is dropped from the losses; 0 = off (the paper).
            not_background_objectness: RPN objectness probability at which a sampled background
                proposal away from every base box is dropped from the losses; 0 = off (the
                paper). The proposals must carry `objectness_logits` (an RPN's do).
            novel_negatives_inside: share of a background proposal's area inside a base box at
                which the novel names compete on it (they always do on proposals labelled as a
                base class); 0 = off (the paper).
            kwargs: StandardROIHeads arguments; `box_head` must return (embeddings, reg_features)
                like EZSDBoxHead and `box_predictor` must be an EZSDPredictor.
        """
        super().__init__(**kwargs)
        if not isinstance(self.box_predictor, EZSDPredictor):
            raise TypeError(f"EZSDROIHeads needs an EZSDPredictor, got {type(self.box_predictor)}")
        if self._init_num_classes != self.box_predictor.num_classes:
            raise UserInputError(
                f"ROI heads built for {self._init_num_classes} classes but the text embeddings "
                f"hold {self.box_predictor.num_classes} (MODEL.ROI_HEADS.NUM_CLASSES)"
            )
        if self.mask_on and getattr(self.mask_head, "num_classes", 1) != 1:
            raise UserInputError(
                "EZSD needs a class-agnostic mask head (MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True)"
            )
        self.distillation = distillation
        self.distill_weight = distill_weight
        self.not_background_iou = not_background_iou
        if not 0 <= not_background_objectness <= 1:
            raise UserInputError(
                "MODEL.EZSD.NOT_BACKGROUND_OBJECTNESS must be in [0, 1], got "
                f"{not_background_objectness}"
            )
        self.not_background_objectness = not_background_objectness
        if not 0 <= novel_negatives_inside <= 1:
            raise UserInputError(
                f"MODEL.EZSD.NOVEL_NEGATIVES_INSIDE must be in [0, 1], got {novel_negatives_inside}"
            )
        self.novel_negatives_inside = novel_negatives_inside

    # ROIHeads.__init__ assigns num_classes; afterwards it follows the predictor's vocabulary.
    @property
    def num_classes(self):
        if "box_predictor" in self._modules:
            return self.box_predictor.num_classes
        return self._init_num_classes

    @num_classes.setter
    def num_classes(self, value):
        if "box_predictor" in self._modules:
            raise AttributeError("num_classes follows the vocabulary: use set_vocabulary()")
        self._init_num_classes = value

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        if cfg.MODEL.MASK_ON and not cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK:
            raise UserInputError(
                "EZSD needs a class-agnostic mask head: set "
                "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True"
            )
        ret["distillation"] = cfg.MODEL.EZSD.DISTILL.ENABLED
        ret["distill_weight"] = cfg.MODEL.EZSD.DISTILL.WEIGHT
        ret["not_background_iou"] = cfg.MODEL.EZSD.NOT_BACKGROUND_IOU
        ret["not_background_objectness"] = cfg.MODEL.EZSD.NOT_BACKGROUND_OBJECTNESS
        ret["novel_negatives_inside"] = cfg.MODEL.EZSD.NOVEL_NEGATIVES_INSIDE
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        in_channels = {input_shape[f].channels for f in in_features}
        assert len(in_channels) == 1, in_channels
        box_pooler = ROIPooler(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[k].stride for k in in_features),
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        )
        box_head = build_box_head(
            cfg, ShapeSpec(channels=in_channels.pop(), height=resolution, width=resolution)
        )
        if not hasattr(box_head, "reg_output_shape"):
            raise UserInputError(
                f"MODEL.ROI_BOX_HEAD.NAME '{cfg.MODEL.ROI_BOX_HEAD.NAME}' is not "
                "an EZSD box head (use EZSDBoxHead)"
            )
        box_predictor = EZSDPredictor(cfg, box_head.output_shape, box_head.reg_output_shape)
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "box_head": box_head,
            "box_predictor": box_predictor,
        }

    def set_vocabulary(self, embeddings, names, split=None):
        """See :meth:`EZSDPredictor.set_vocabulary`."""
        self.box_predictor.set_vocabulary(embeddings, names, split)

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
        distill_regions: Optional[List[Instances]] = None,
    ):
        if not self.training:
            return super().forward(images, features, proposals, targets)
        assert targets, "'targets' argument is required during training"
        proposals = self.label_and_sample_proposals(proposals, targets)
        if self.novel_negatives_inside > 0:
            # checked here, not at build: a model built for inference (demo, custom vocabulary)
            # from a training config needs no novel names
            vocabulary = self.box_predictor.cls_score
            check_novel_names(vocabulary.training_names, vocabulary.inference_names)
            masks = on_base_objects(
                proposals, targets, self.novel_negatives_inside, background_class=self.num_classes
            )
            for p, on_base in zip(proposals, masks):
                p.novel_negative = on_base
        if self.not_background_objectness > 0:
            sampled = sum(len(p) for p in proposals)
            proposals = drop_object_like_background(
                proposals, targets, self.not_background_objectness, self.num_classes
            )
            get_event_storage().put_scalar(
                "ezsd/object_like_background_left_out",
                (sampled - sum(len(p) for p in proposals)) / len(proposals),
            )
        del targets
        if self.not_background_iou > 0 and distill_regions is not None:
            sampled = sum(len(p) for p in proposals)
            proposals = drop_background_on_regions(
                proposals,
                [r.boxes for r in distill_regions],
                self.not_background_iou,
                background_class=self.num_classes,
            )
            get_event_storage().put_scalar(
                "ezsd/background_rois_left_out",
                (sampled - sum(len(p) for p in proposals)) / len(proposals),
            )
        losses = self._forward_box(features, proposals, distill_regions)
        losses.update(self._forward_mask(features, proposals))
        losses.update(self._forward_keypoint(features, proposals))
        return proposals, losses

    def _forward_box(self, features, proposals, distill_regions=None):
        features = [features[f] for f in self.box_in_features]
        x = self.box_pooler(features, [p.proposal_boxes for p in proposals])
        num_proposals = x.shape[0]
        distill = self.training and self.distillation
        if distill:
            if distill_regions is None:
                raise ValueError(
                    "distillation is on (MODEL.EZSD.DISTILL.ENABLED) but the inputs carry no "
                    "'distill_regions': train with ezsd.data.mapper.EZSDDatasetMapper"
                )
            num_distill = [len(r) for r in distill_regions]
            # Every process reaches this collective, whatever its own count.
            batch_regions = regions_per_process(sum(num_distill), x.device)
            inverse = None
            if sum(num_distill):
                # Proposals are sampled with replacement: each distinct box is pooled and
                # embedded once (about 2/3 of the rows), then gathered back to every row.
                unique_boxes, inverse = unique_boxes_per_image([r.boxes for r in distill_regions])
                x = torch.cat([x, self.box_pooler(features, unique_boxes)])
        embeddings, reg_features = self.box_head(x, num_reg=num_proposals)
        gt_classes = novel_negative = None
        if self.training:
            gt_classes = cat([p.gt_classes for p in proposals])
            if proposals and proposals[0].has("novel_negative"):
                novel_negative = cat([p.novel_negative for p in proposals])
                get_event_storage().put_scalar(
                    "ezsd/novel_negative_rois", float(novel_negative.sum()) / len(proposals)
                )
        predictions = self.box_predictor(
            (embeddings[:num_proposals], reg_features), gt_classes, novel_negative
        )

        if not self.training:
            pred_instances, _ = self.box_predictor.inference(predictions, proposals)
            return pred_instances
        losses = self.box_predictor.losses(predictions, proposals)
        if distill:
            distill_embeddings = embeddings[num_proposals:]
            if inverse is not None:
                distill_embeddings = distill_embeddings[inverse]
            losses["loss_distill"] = distillation_loss(
                distill_embeddings,
                # fp16 as stored; float first: CPU autocast (bf16) cannot concatenate fp16
                cat([r.targets.float() for r in distill_regions]),
                cat([r.weights for r in distill_regions]),
                num_distill,
                factor=self.distill_weight,
                num_regions=batch_regions,
            )
            get_event_storage().put_scalar(
                "ezsd/distill_regions_per_image", sum(num_distill) / max(len(num_distill), 1)
            )
        if self.train_on_pred_boxes:
            with torch.no_grad():
                pred_boxes = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                for p, boxes in zip(proposals, pred_boxes):
                    p.proposal_boxes = Boxes(boxes)
        return losses
