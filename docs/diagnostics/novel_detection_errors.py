"""Analysis script (docs/SHAPES_RESULTS.md section 7; not a tested tool): what the novel-labelled
detections among the top N of each image are (right, partial boxes, base objects, background), from
a detector's COCO results json on shapes_ovd_val.

  DETECTRON2_DATASETS=D python docs/diagnostics/novel_detection_errors.py \
      OUT/train/inference/shapes_ovd_val/coco_instances_results.json 10
"""
import sys, json, torch, numpy as np
from collections import Counter
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from torchvision.ops import box_iou
import ezsd
meta = MetadataCatalog.get("shapes_ovd_val"); dicts = {r["image_id"]: r for r in DatasetCatalog.get("shapes_ovd_val")}
id2c = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
res = json.load(open(sys.argv[1])); novel = set(meta.novel_classes)
cnt = Counter(); byimg = {}
for r in res: byimg.setdefault(r["image_id"], []).append(r)
topn = int(sys.argv[2])
for iid, rs in byimg.items():
    rec = dicts[iid]
    gt = torch.tensor([BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in rec["annotations"]], dtype=torch.float32)
    gcls = [meta.thing_classes[a["category_id"]] for a in rec["annotations"]]
    for r in sorted(rs, key=lambda r: -r["score"])[:topn]:
        name = meta.thing_classes[meta.thing_dataset_id_to_contiguous_id[r["category_id"]]]
        if name not in novel: continue
        x, y, w, h = r["bbox"]; iou = box_iou(torch.tensor([[x, y, x + w, y + h]]), gt)[0]
        j = int(iou.argmax()); m = float(iou[j])
        if m >= 0.5: kind = "right novel" if gcls[j] == name else ("other novel" if gcls[j] in novel else "base object")
        elif m >= 0.1: kind = "partial of " + ("novel" if gcls[j] in novel else "base") + (" (same class)" if gcls[j] == name else "")
        else: kind = "background"
        cnt[kind] += 1
print(topn, dict(cnt), sum(cnt.values()))
