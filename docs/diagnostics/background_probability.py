"""Analysis script (docs/SHAPES_RESULTS.md section 7; not a tested tool): mean and median
background probability of a trained EZSD detector's box head on the base and novel GT boxes of
shapes_ovd_val and on random boxes that touch no object (IoU < 0.1, 20 per image, seed 0).

  DETECTRON2_DATASETS=D python docs/diagnostics/background_probability.py OUT/train/config.yaml OUT/train/model_final.pth
"""
import sys, torch, numpy as np
from detectron2.data import MetadataCatalog
from torchvision.ops import box_iou
from trained_detector import backbone_features, box_head_outputs, gt_boxes, load_detector, val_inputs
cfg, model = load_detector(sys.argv[1], sys.argv[2])
meta = MetadataCatalog.get("shapes_ovd_val")
novel = set(meta.novel_classes); rh = model.roi_heads; g = torch.Generator().manual_seed(0)
out = {"base": [], "novel": [], "background": []}
with torch.no_grad():
    for rec, tfm, x, _ in val_inputs(cfg):
        gt = gt_boxes(rec, tfm)
        grp = ["novel" if meta.thing_classes[a["category_id"]] in novel else "base" for a in rec["annotations"]]
        H, W = x.shape[1:]
        xy = torch.rand(200, 2, generator=g) * torch.tensor([W, H]); wh = 16 + torch.rand(200, 2, generator=g) * 60
        rnd = torch.cat([xy, (xy + wh).minimum(torch.tensor([W, H]))], 1)
        rnd = rnd[box_iou(rnd, gt).amax(1) < 0.1][:20]
        _, feats = backbone_features(model, x)
        scores, _ = rh.box_predictor(box_head_outputs(model, feats, torch.cat([gt, rnd])))
        bg = scores.softmax(-1)[:, -1]
        for i, gname in enumerate(grp): out[gname].append(float(bg[i]))
        out["background"] += bg[len(gt):].tolist()
print({k: (round(float(np.mean(v)), 3), round(float(np.median(v)), 3), len(v)) for k, v in out.items()})
