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


def test_a_state_made_with_other_settings_is_not_resumed(tmp_path):
    """--resume refuses a resumable state whose recorded settings (or none: an older version)
    differ from the run's, before any step: its batches and schedule would mix two runs."""
    from ezsd.backbone_pretraining import parse_args, run_settings

    out = tmp_path / "r18.pth"
    argv = ["--config-file", CONFIG, "--out", str(out), "--steps", "4", "--resume"]
    state = {"model": {}, "step": 2, "settings": run_settings(parse_args([*argv, "--seed", "1"]))}
    command = [sys.executable, os.path.join(REPO, "tools", "pretrain_backbone.py"), *argv]
    for saved, message in (
        (state, "seed: 1 there, 0 asked"),
        ({"model": {}}, "records no settings"),
    ):
        torch.save(saved, str(out) + ".state")
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode != 0 and last.startswith("error: ") and message in last, last
        assert not out.exists()
