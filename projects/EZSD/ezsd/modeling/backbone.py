"""A ResNet-FPN whose extra level is pooled from the last FPN output, whichever stage that is."""

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

__all__ = ["build_resnet_fpn_backbone_any_depth"]


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone_any_depth(cfg, input_shape: ShapeSpec):
    """detectron2's `build_resnet_fpn_backbone` for any MODEL.FPN.IN_FEATURES: its max-pooled top
    level reads "p5", so a ResNet that stops at res4 (ShapesOVD's, configs/ShapesOVD) needs it to
    read the last FPN output ("p4") instead; with res2-res5 the two builders are the same."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    top_block = LastLevelMaxPool()
    last_stage = bottom_up.output_shape()[cfg.MODEL.FPN.IN_FEATURES[-1]].stride.bit_length() - 1
    top_block.in_feature = f"p{last_stage}"
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
