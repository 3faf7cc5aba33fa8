"""Analysis script (docs/SHAPES_RESULTS.md section 7; not a tested tool): recall at IoU 0.5 of the
base and novel GT boxes of shapes_ovd_val by the top-k test-time RPN proposals of a trained detector.

  DETECTRON2_DATASETS=D python docs/diagnostics/rpn_recall.py OUT/train/config.yaml OUT/train/model_final.pth
"""
import sys, torch
from detectron2.data import MetadataCatalog
from torchvision.ops import box_iou
from trained_detector import backbone_features, gt_boxes, load_detector, val_inputs
cfg, model = load_detector(sys.argv[1], sys.argv[2])
meta = MetadataCatalog.get("shapes_ovd_val")
ks = (10, 30, 100, 300); hits = {(g, k): 0 for g in ("base", "novel") for k in ks}; tot = {"base": 0, "novel": 0}
with torch.no_grad():
    for rec, tfm, x, _ in val_inputs(cfg):
        images, feats = backbone_features(model, x)
        props, _ = model.proposal_generator(images, feats); boxes = props[0].proposal_boxes.tensor
        all_gt = gt_boxes(rec, tfm)
        for g in ("base", "novel"):
            names = set(meta.get(f"{g}_classes"))
            gt = all_gt[[meta.thing_classes[a["category_id"]] in names for a in rec["annotations"]]]
            if not len(gt): continue
            tot[g] += len(gt)
            for k in ks: hits[(g, k)] += int((box_iou(gt, boxes[:k]).amax(1) >= 0.5).sum())
print({f"{g}@{k}": round(hits[(g, k)] / tot[g], 3) for g, k in hits}, tot)
