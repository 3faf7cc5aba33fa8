"""build_resnet_fpn_backbone_any_depth: detectron2's ResNet-FPN for a ResNet stopping at any
stage."""

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

from ezsd.config import load_ezsd_config
from ezsd.modeling import build_resnet_fpn_backbone_any_depth


def _cfg(stages):
    cfg = load_ezsd_config("configs/ShapesOVD/ezsd_R_18_FPN.yaml", ["MODEL.DEVICE", "cpu"])
    cfg.MODEL.RESNETS.OUT_FEATURES = cfg.MODEL.FPN.IN_FEATURES = [f"res{i}" for i in stages]
    return cfg


def test_res4_backbone_pools_its_top_level_from_p4():
    backbone = build_resnet_fpn_backbone_any_depth(_cfg((2, 3, 4)), ShapeSpec(channels=3))
    out = backbone(torch.rand(1, 3, 128, 96))
    assert list(out) == ["p2", "p3", "p4", "p5"]
    assert out["p5"].shape[-2:] == (4, 3)  # max-pooled (kernel 1, stride 2) from p4's 8 x 6
    assert torch.equal(out["p5"], out["p4"][..., ::2, ::2])


def test_res5_backbone_is_detectrons():
    cfg = _cfg((2, 3, 4, 5))
    torch.manual_seed(0)
    ours = build_resnet_fpn_backbone_any_depth(cfg, ShapeSpec(channels=3)).eval()
    torch.manual_seed(0)
    theirs = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3)).eval()
    x = torch.rand(1, 3, 128, 128)
    a, b = ours(x), theirs(x)
    assert list(a) == list(b) == ["p2", "p3", "p4", "p5", "p6"]
    assert all(torch.equal(a[k], b[k]) for k in a)
