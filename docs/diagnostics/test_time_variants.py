"""Analysis script (docs/SHAPES_RESULTS.md section 8; not a tested tool): a trained EZSD detector on
shapes_ovd_val with one thing changed at test time. MODE:
  as_trained       nothing changed
  no_regression    box deltas set to 0 (the RPN proposals are the boxes)
  regress_zeros    the regression conditioned on a zero text embedding (training's background)
  regress_base     conditioned on the nearest *base* class's text embedding, not the argmax's
  base_background  the background probability from base names + background only (as in
                   training); the class among all names, times (1 - that background probability)
  novel_bias=B     B added to every novel logit
  split_softmax    base names compete with base names and background only, novel names with novel
                   names and background only (MODEL.EZSD.TEST_SPLIT_SOFTMAX True)
  soften=F         every logit divided by F (a higher softmax temperature)
  objectness=A     every class probability times the RPN's objectness (sigmoid) to the power A
                   (MODEL.EZSD.TEST_OBJECTNESS_EXPONENT A)

  DETECTRON2_DATASETS=D python docs/diagnostics/test_time_variants.py OUT/train/config.yaml OUT/train/model_final.pth MODE
"""
import sys, torch
from detectron2.data import MetadataCatalog
from trained_detector import load_detector, val_ap50
cfg, model = load_detector(sys.argv[1], sys.argv[2])
mode, _, arg = sys.argv[3].partition("=")
pred = model.roi_heads.box_predictor
meta = MetadataCatalog.get("shapes_ovd_val")
novel = torch.tensor([n in meta.novel_classes for n in meta.thing_classes])
base_ids = torch.nonzero(~novel).flatten()
conditioned = pred.regression_text
def regression_text(cos, gt_classes=None):
    if mode == "regress_zeros":
        return cos.new_zeros(cos.shape[0], pred.embed_dim)
    if mode == "regress_base":
        return pred.text_embeddings[base_ids[cos[:, base_ids].argmax(1)]]
    return conditioned(cos, gt_classes)
pred.regression_text = regression_text
forward = pred.forward
def forward_without_deltas(x, gt_classes=None):
    scores, deltas = forward(x, gt_classes)
    return scores, deltas * 0
if mode == "no_regression":
    pred.forward = forward_without_deltas
def predict_probs(predictions, proposals):
    scores, _ = predictions
    scores = scores / float(arg) if mode == "soften" else scores
    cls, bg = scores[:, :-1], scores[:, -1:]
    if mode == "base_background":
        fg = 1 - torch.cat([cls[:, ~novel], bg], 1).softmax(-1)[:, -1:]
        probs = torch.cat([cls.softmax(-1) * fg, 1 - fg], 1)
    else:
        bias = float(arg) if mode == "novel_bias" else 0.0
        probs = torch.cat([cls + bias * novel, bg], 1).softmax(-1)
    return probs.split([len(p) for p in proposals])
if mode == "split_softmax":  # the product's options (MODEL.EZSD.TEST_SPLIT_SOFTMAX, ...)
    pred.split_softmax = True
elif mode == "objectness":
    pred.objectness_exponent = float(arg)
else:
    pred.predict_probs = predict_probs
print(sys.argv[3], val_ap50(cfg, model))
