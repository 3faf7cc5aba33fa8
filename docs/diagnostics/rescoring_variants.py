"""Analysis script (docs/SHAPES_RESULTS.md section 7; not a tested tool): a trained EZSD detector on
shapes_ovd_val with its class scores re-computed at test time: ALPHA < 0 as trained; ALPHA >= 0:
softmax over the classes without the background logit, times sigmoid(RPN objectness) ** ALPHA.
TOPK is MODEL.RPN.POST_NMS_TOPK_TEST.

  DETECTRON2_DATASETS=D python docs/diagnostics/rescoring_variants.py OUT/train/config.yaml \
      OUT/train/model_final.pth ALPHA TOPK
"""
import sys, torch
from detectron2.config import get_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
import ezsd
from ezsd import add_ezsd_config
from ezsd.evaluation import OVDCOCOEvaluator
cfg = get_cfg(); add_ezsd_config(cfg); cfg.merge_from_file(sys.argv[1]); cfg.MODEL.DEVICE = "cpu"
cfg.MODEL.RPN.POST_NMS_TOPK_TEST = int(sys.argv[4])
model = build_model(cfg).eval(); DetectionCheckpointer(model).load(sys.argv[2])
alpha = float(sys.argv[3]); pred = model.roi_heads.box_predictor
def predict_probs(predictions, proposals):
    scores, _ = predictions
    probs = scores[:, :-1].softmax(-1)
    obj = torch.cat([p.objectness_logits for p in proposals]).sigmoid()
    probs = probs * obj[:, None] ** alpha
    return (torch.cat([probs, 1 - probs.sum(1, keepdim=True).clamp(max=1)], 1)).split([len(p) for p in proposals])
if alpha >= 0: pred.predict_probs = predict_probs
aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
ev = OVDCOCOEvaluator("shapes_ovd_val", tasks=("bbox",), output_dir=None); ev.reset()
with torch.no_grad():
    for rec in DatasetCatalog.get("shapes_ovd_val"):
        img = read_image(rec["file_name"], format=cfg.INPUT.FORMAT); h, w = img.shape[:2]
        x = torch.as_tensor(aug.get_transform(img).apply_image(img).astype("float32").transpose(2, 0, 1))
        out = model([{"image": x, "height": h, "width": w}])[0]
        ev.process([rec], [out])
b = ev.evaluate()["bbox"]; print(sys.argv[3:], {k: round(b[k], 1) for k in ("AP50_base", "AP50_novel", "AP50_all")})
