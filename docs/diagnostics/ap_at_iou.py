"""Analysis script (docs/SHAPES_RESULTS.md section 7; not a tested tool): pycocotools AP of base
and novel classes at single IoU thresholds 0.1, 0.3 and 0.5.

  python docs/diagnostics/ap_at_iou.py D/shapes_ovd/val.json RESULTS.json tomato,banana,carrot,lime
"""
import sys, json, numpy as np, contextlib, io
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt = COCO(sys.argv[1]); dt = gt.loadRes(sys.argv[2]); gt.dataset.setdefault("info", {})
novel = set(sys.argv[3].split(","))
for thr in (0.1, 0.3, 0.5):
    out = {}
    for group in ("base", "novel"):
        ids = [c["id"] for c in gt.loadCats(gt.getCatIds()) if (c["name"] in novel) == (group == "novel")]
        e = COCOeval(gt, dt, "bbox"); e.params.iouThrs = np.array([thr]); e.params.catIds = ids
        with contextlib.redirect_stdout(io.StringIO()): e.evaluate(); e.accumulate(); e.summarize()
        out[group] = round(100 * e.stats[0], 1)
    print(thr, out)
