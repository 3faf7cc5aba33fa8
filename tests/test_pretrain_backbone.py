"""tools/pretrain_backbone.py: a short run writes weights that load, by name, into the detector."""

import os
import subprocess
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from ezsd.config import load_ezsd_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "ShapesOVD", "ezsd_R_18_FPN_pretrained.yaml")


def test_pretrained_backbone_loads_into_every_resnet_weight_of_the_detector(tmp_path):
    out = tmp_path / "r18.pth"
    subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "pretrain_backbone.py"),
            "--config-file",
            CONFIG,
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "12",
            "--eval-images",
            "24",
            "--workers",
            "0",
        ],
        check=True,
        cwd=REPO,
    )
    weights = torch.load(out, weights_only=False)["model"]
    cfg = load_ezsd_config(
        CONFIG,
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.META_ARCHITECTURE",
            "GeneralizedRCNN",
            "MODEL.ROI_HEADS.NAME",
            "StandardROIHeads",
            "MODEL.ROI_BOX_HEAD.NAME",
            "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_FC",
            "1",
        ],
    )
    model = build_model(cfg)
    resnet = {k for k in model.state_dict() if k.startswith("backbone.bottom_up.")}
    assert resnet and set(weights) == resnet
    DetectionCheckpointer(model).load(str(out))
    loaded = model.state_dict()
    for k, v in weights.items():
        assert torch.equal(loaded[k].to(v.dtype), v), k
    assert not os.path.exists(str(out) + ".state")  # the resumable state is removed at the end
