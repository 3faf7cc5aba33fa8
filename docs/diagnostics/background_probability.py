"""Analysis script (docs/SHAPES_RESULTS.md section 7; not a tested tool): mean and median
background probability of a trained EZSD detector's box head on the base and novel GT boxes of
shapes_ovd_val and on random boxes that touch no object (IoU < 0.1, 20 per image, seed 0).

  DETECTRON2_DATASETS=D python docs/diagnostics/background_probability.py OUT/train/config.yaml OUT/train/model_final.pth
"""
import sys, torch, numpy as np
from detectron2.config import get_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances
from torchvision.ops import box_iou
import ezsd
from ezsd import add_ezsd_config
cfg = get_cfg(); add_ezsd_config(cfg); cfg.merge_from_file(sys.argv[1]); cfg.MODEL.DEVICE = "cpu"
model = build_model(cfg).eval(); DetectionCheckpointer(model).load(sys.argv[2])
meta = MetadataCatalog.get("shapes_ovd_val"); aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
novel = set(meta.novel_classes); rh = model.roi_heads; g = torch.Generator().manual_seed(0)
out = {"base": [], "novel": [], "background": []}
with torch.no_grad():
    for rec in DatasetCatalog.get("shapes_ovd_val"):
        img = read_image(rec["file_name"], format=cfg.INPUT.FORMAT)
        tfm = aug.get_transform(img); x = torch.as_tensor(tfm.apply_image(img).astype("float32").transpose(2, 0, 1))
        gt = torch.tensor(tfm.apply_box(np.array([BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in rec["annotations"]])), dtype=torch.float32)
        grp = ["novel" if meta.thing_classes[a["category_id"]] in novel else "base" for a in rec["annotations"]]
        H, W = x.shape[1:]
        xy = torch.rand(200, 2, generator=g) * torch.tensor([W, H]); wh = 16 + torch.rand(200, 2, generator=g) * 60
        rnd = torch.cat([xy, (xy + wh).minimum(torch.tensor([W, H]))], 1)
        rnd = rnd[box_iou(rnd, gt).amax(1) < 0.1][:20]
        images = model.preprocess_image([{"image": x}]); feats = model.backbone(images.tensor)
        boxes = torch.cat([gt, rnd])
        f = rh.box_pooler([feats[k] for k in rh.box_in_features], [Boxes(boxes)])
        emb, reg = rh.box_head(f, num_reg=len(boxes))
        scores, _ = rh.box_predictor((emb, reg))
        bg = scores.softmax(-1)[:, -1]
        for i, gname in enumerate(grp): out[gname].append(float(bg[i]))
        out["background"] += bg[len(gt):].tolist()
print({k: (round(float(np.mean(v)), 3), round(float(np.median(v)), 3), len(v)) for k, v in out.items()})
