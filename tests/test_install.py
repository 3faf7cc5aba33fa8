"""The set-up: .venv holds the pinned stack, ezsd is an editable install, detectron2 runs R-CNNs."""
import os
import subprocess

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pins():
    with open(os.path.join(REPO, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return dict(line.split("==") for line in lines if line)


def test_venv_imports_the_stack_and_the_editable_package():
    python = os.path.join(REPO, ".venv", "bin", "python")
    code = (
        "import detectron2, clip, ezsd, torch, torchvision, pycocotools, lvis, cv2; "
        "print(ezsd.__file__); print(torch.__version__.split('+')[0]); "
        "print(torchvision.__version__.split('+')[0]); print(len(clip.tokenize('a photo')[0]))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ezsd_file, torch_version, torchvision_version, context = out.stdout.split()
    assert ezsd_file == os.path.join(REPO, "projects", "EZSD", "ezsd", "__init__.py")
    pins = _pins()
    assert (torch_version, torchvision_version) == (pins["torch"], pins["torchvision"])
    assert context == "77"  # the real tokenizer and its vocabulary ship with the clip package


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

    instances = Instances((96, 128), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 60.0, 50.0]])),
                          gt_classes=torch.tensor([1]))  # fmt: skip
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

