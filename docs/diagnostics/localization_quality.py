"""Analysis script (docs/SHAPES_RESULTS.md section 9; not a tested tool): does a class-agnostic
localization-quality score rank whole novel objects above their parts and above clutter?
A small MLP on a trained detector's frozen box-regression features learns the IoU of each of its
RPN proposals with the nearest base GT box of shapes_ovd_train (the base boxes only, as in
training). MODE `positives`: only proposals with IoU >= 0.3 are targets (as OLN, Kim et al. 2022,
so unannotated novel objects are never taught as IoU 0); `all`: every proposal. Then
shapes_ovd_val is evaluated with each class probability times predicted_IoU ** ALPHA (ALPHA 0 =
the model as trained), and the AP50 base / novel printed for each ALPHA.

  DETECTRON2_DATASETS=D python docs/diagnostics/localization_quality.py OUT/train/config.yaml \
      OUT/train/model_final.pth MODE ALPHA[,ALPHA...]
"""
import sys, torch
from torchvision.ops import box_iou
from trained_detector import backbone_features, box_head_outputs, gt_boxes, load_detector, val_ap50, val_inputs

cfg, model = load_detector(sys.argv[1], sys.argv[2])
mode, alphas = sys.argv[3], [float(a) for a in sys.argv[4].split(",")]
rh = model.roi_heads; pred = rh.box_predictor
torch.manual_seed(0)

rows, targets = [], []
with torch.no_grad():
    for rec, tfm, x, _ in val_inputs(cfg, "shapes_ovd_train"):
        images, feats = backbone_features(model, x)
        boxes = model.proposal_generator(images, feats, None)[0][0].proposal_boxes.tensor
        gt = gt_boxes(rec, tfm)
        iou = box_iou(boxes, gt).amax(1) if len(gt) else torch.zeros(len(boxes))
        keep = iou >= 0.3 if mode == "positives" else torch.ones_like(iou, dtype=torch.bool)
        rows.append(box_head_outputs(model, feats, boxes)[1].flatten(1)[keep]); targets.append(iou[keep])
rows, targets = torch.cat(rows), torch.cat(targets)
head = torch.nn.Sequential(torch.nn.Linear(rows.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
for epoch in range(30):
    for idx in torch.randperm(len(rows)).split(256):
        loss = torch.nn.functional.l1_loss(head(rows[idx]).squeeze(1).sigmoid(), targets[idx])
        opt.zero_grad(); loss.backward(); opt.step()
print(f"{mode}: {len(rows)} training proposals, target IoU mean {targets.mean():.2f}, final L1 {loss.item():.3f}")

stash = {}
original_head = rh.box_head.forward
def head_and_quality(x, num_reg=None):
    embeddings, reg = original_head(x, num_reg=num_reg)
    stash["quality"] = head(reg.flatten(1)).squeeze(1).sigmoid()
    return embeddings, reg
rh.box_head.forward = head_and_quality
original_probs = pred.predict_probs
for alpha in alphas:
    def predict_probs(predictions, proposals):
        probs = torch.cat(original_probs(predictions, proposals))
        probs[:, :-1] = probs[:, :-1] * stash["quality"][:, None] ** alpha
        return probs.split([len(p) for p in proposals])
    pred.predict_probs = predict_probs
    print(mode, "alpha", alpha, val_ap50(cfg, model))
