"""Analysis script (docs/SHAPES_RESULTS.md section 8; not a tested tool): the class probabilities a
trained EZSD detector gives its own test-time RPN proposals on shapes_ovd_val.
Per GT box: the probability of its class on the best whole-object proposal (IoU >= 0.5) and on
the best partial one (0.1-0.5), and the background probability of the whole-object ones; and the
proposals that touch no object (IoU < 0.1) but score a novel class above 0.5 (class and size).

  DETECTRON2_DATASETS=D python docs/diagnostics/novel_scores_on_proposals.py OUT/train/config.yaml OUT/train/model_final.pth
"""
import collections, sys, torch, numpy as np
from detectron2.data import MetadataCatalog
from torchvision.ops import box_iou
from trained_detector import backbone_features, box_head_outputs, gt_boxes, load_detector, val_inputs
cfg, model = load_detector(sys.argv[1], sys.argv[2])
meta = MetadataCatalog.get("shapes_ovd_val"); rh = model.roi_heads
novel_ids = [meta.thing_classes.index(n) for n in meta.novel_classes]
per_gt = {"base": [], "novel": []}; false_novel = collections.Counter(); false_sizes = []
with torch.no_grad():
    for rec, tfm, x, _ in val_inputs(cfg):
        gt = gt_boxes(rec, tfm)
        images, feats = backbone_features(model, x)
        proposals, _ = model.proposal_generator(images, feats, None)
        boxes = proposals[0].proposal_boxes.tensor
        probs = rh.box_predictor(box_head_outputs(model, feats, boxes))[0].softmax(-1)
        iou = box_iou(gt, boxes)
        for i, a in enumerate(rec["annotations"]):
            group = "novel" if a["category_id"] in novel_ids else "base"
            whole, part = iou[i] >= 0.5, (iou[i] >= 0.1) & (iou[i] < 0.5)
            p = probs[:, a["category_id"]]
            per_gt[group].append((float(p[whole].max()) if whole.any() else np.nan,
                                  float(p[part].max()) if part.any() else np.nan,
                                  float(probs[whole, -1].min()) if whole.any() else np.nan))
        far = iou.amax(0) < 0.1
        cls = probs[:, :-1].argmax(1)
        for j in torch.nonzero(far).flatten().tolist():
            if int(cls[j]) in novel_ids and probs[j, cls[j]] > 0.5:
                false_novel[meta.thing_classes[int(cls[j])]] += 1
                w, h = (boxes[j, 2:] - boxes[j, :2]).tolist(); false_sizes.append((w * h) ** 0.5)
for group, rows in per_gt.items():
    v = np.array(rows); whole = ~np.isnan(v[:, 0])
    print(f"{group}: {len(v)} GT boxes, {whole.sum()} with a whole-object proposal; median p(class) "
          f"whole {np.median(v[whole, 0]):.3f}, partial {np.nanmedian(v[:, 1]):.3f}; median background "
          f"probability of the whole ones {np.median(v[whole, 2]):.3f}")
print(f"proposals touching no object with a novel class > 0.5: {sum(false_novel.values())} "
      f"{dict(false_novel)}, sqrt(area) median {np.median(false_sizes):.1f} px")
