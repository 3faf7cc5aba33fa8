"""Analysis script (docs/SHAPES_RESULTS.md section 7; not a tested tool): recall at IoU 0.5 of the
base and novel GT boxes of shapes_ovd_val by the top-k test-time RPN proposals of a trained detector.

  DETECTRON2_DATASETS=D python docs/diagnostics/rpn_recall.py OUT/train/config.yaml OUT/train/model_final.pth
"""
import sys, torch, numpy as np
from detectron2.config import get_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from torchvision.ops import box_iou
import ezsd
from ezsd import add_ezsd_config
cfg = get_cfg(); add_ezsd_config(cfg); cfg.merge_from_file(sys.argv[1]); cfg.MODEL.DEVICE = "cpu"
model = build_model(cfg).eval(); DetectionCheckpointer(model).load(sys.argv[2])
meta = MetadataCatalog.get("shapes_ovd_val"); aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
ks = (10, 30, 100, 300); hits = {(g, k): 0 for g in ("base", "novel") for k in ks}; tot = {"base": 0, "novel": 0}
with torch.no_grad():
    for rec in DatasetCatalog.get("shapes_ovd_val"):
        img = read_image(rec["file_name"], format=cfg.INPUT.FORMAT)
        tfm = aug.get_transform(img); x = torch.as_tensor(tfm.apply_image(img).astype("float32").transpose(2, 0, 1))
        images = model.preprocess_image([{"image": x}]); feats = model.backbone(images.tensor)
        props, _ = model.proposal_generator(images, feats); boxes = props[0].proposal_boxes.tensor
        for g in ("base", "novel"):
            names = set(meta.get(f"{g}_classes"))
            gt = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in rec["annotations"] if meta.thing_classes[a["category_id"]] in names]
            if not gt: continue
            gt = torch.tensor(tfm.apply_box(np.array(gt)), dtype=torch.float32); tot[g] += len(gt)
            for k in ks: hits[(g, k)] += int((box_iou(gt, boxes[:k]).amax(1) >= 0.5).sum())
print({f"{g}@{k}": round(hits[(g, k)] / tot[g], 3) for g, k in hits}, tot)
