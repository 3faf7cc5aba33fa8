"""The set-up: the interpreter running the tests imports a consistent stack and this checkout's
ezsd; detectron2 runs R-CNNs. Runs in `make`'s .venv or in one's own environment (README:
`python -m pytest tests`); the exact pins of requirements.txt are checked only in the .venv
`make` builds."""

import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pins():
    with open(os.path.join(REPO, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return dict(line.split("==") for line in lines if "==" in line)


def _stack():
    """What this interpreter imports, in a fresh process (nothing of this session's imports)."""
    code = (
        "import detectron2, clip, ezsd, torch, torchvision, pycocotools, lvis, cv2, numpy; "
        "from torchvision.ops import nms; "
        "keep = nms(torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]), "
        "torch.tensor([0.9, 0.8, 0.7]), 0.5); "
        "print(ezsd.__file__); print(torch.__version__.split('+')[0]); "
        "print(torchvision.__version__.split('+')[0]); print(len(clip.tokenize('a photo')[0])); "
        "print(keep.tolist() == [0, 2])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split()


def test_the_stack_imports_and_is_consistent():
    ezsd_file, torch_version, torchvision_version, context, nms_works = _stack()
    # this checkout's package (editable install or PYTHONPATH), not another copy
    assert os.path.realpath(ezsd_file) == os.path.realpath(
        os.path.join(REPO, "projects", "EZSD", "ezsd", "__init__.py")
    )
    assert context == "77"  # the real tokenizer and its vocabulary ship with the clip package
    # torchvision's compiled ops belong to this torch (a mismatched pair fails to run nms)
    assert nms_works == "True", (torch_version, torchvision_version)


@pytest.mark.skipif(
    os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(REPO, ".venv")),
    reason="exact pins are make's .venv's promise; "
    "another environment only needs a consistent stack",
)
def test_make_venv_holds_the_pinned_versions():
    _, torch_version, torchvision_version, _, _ = _stack()
    pins = _pins()
    assert (torch_version, torchvision_version) == (pins["torch"], pins["torchvision"])


def test_a_detectron2_mask_rcnn_trains_and_infers_on_cpu():
    from detectron2.config import get_cfg
    from detectron2.model_zoo import get_config_file
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = cfg.MODEL.FPN.NORM = "BN"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    torch.manual_seed(0)
    model = build_model(cfg)
    image = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    instances = Instances(
        (96, 128),
        gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 60.0, 50.0]])),
        gt_classes=torch.tensor([1]),
    )
    mask = torch.zeros(1, 96, 128, dtype=torch.bool)
    mask[:, 10:50, 10:60] = True
    instances.gt_masks = BitMasks(mask)
    with EventStorage():
        losses = model([{"image": image, "instances": instances}])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 96, "width": 128}])
    assert out["instances"].image_size == (96, 128)
