"""Analysis script (docs/SHAPES_RESULTS.md section 7; not a tested tool): a trained EZSD detector on
shapes_ovd_val with its class scores re-computed at test time: ALPHA < 0 as trained; ALPHA >= 0:
softmax over the classes without the background logit, times sigmoid(RPN objectness) ** ALPHA.
TOPK is MODEL.RPN.POST_NMS_TOPK_TEST.

  DETECTRON2_DATASETS=D python docs/diagnostics/rescoring_variants.py OUT/train/config.yaml \
      OUT/train/model_final.pth ALPHA TOPK
"""
import sys, torch
from trained_detector import load_detector, val_ap50
cfg, model = load_detector(sys.argv[1], sys.argv[2], ["MODEL.RPN.POST_NMS_TOPK_TEST", int(sys.argv[4])])
alpha = float(sys.argv[3]); pred = model.roi_heads.box_predictor
def predict_probs(predictions, proposals):
    scores, _ = predictions
    probs = scores[:, :-1].softmax(-1)
    obj = torch.cat([p.objectness_logits for p in proposals]).sigmoid()
    probs = probs * obj[:, None] ** alpha
    return (torch.cat([probs, 1 - probs.sum(1, keepdim=True).clamp(max=1)], 1)).split([len(p) for p in proposals])
if alpha >= 0: pred.predict_probs = predict_probs
print(sys.argv[3:], val_ap50(cfg, model))
