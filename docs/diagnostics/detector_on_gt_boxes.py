"""Analysis script (docs/SHAPES_RESULTS.md section 7; not a tested tool): a trained EZSD detector's
box head classifying the ground-truth boxes of shapes_ovd_val, as detections, with the same
evaluator as training. Compare with tools/eval_clip_regions.py --regions gt (CLIP on the same boxes).

  DETECTRON2_DATASETS=D python docs/diagnostics/detector_on_gt_boxes.py OUT/train/config.yaml \
      OUT/train/model_final.pth exact     # 'exact': keep the GT boxes (no box regression)
"""
import sys, torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from ezsd.evaluation import OVDCOCOEvaluator
from trained_detector import backbone_features, gt_boxes, load_detector, val_inputs
cfg, model = load_detector(sys.argv[1], sys.argv[2])
ev = OVDCOCOEvaluator("shapes_ovd_val", tasks=("bbox",), output_dir=None); ev.reset()
with torch.no_grad():
    for rec, tfm, x, (h, w) in val_inputs(cfg):
        boxes = gt_boxes(rec, tfm)
        images, feats = backbone_features(model, x)
        p = Instances(images.image_sizes[0]); p.proposal_boxes = Boxes(boxes); p.objectness_logits = torch.ones(len(boxes))
        if len(sys.argv) > 3:  # keep the GT boxes exactly (no box regression)
            model.roi_heads.box_predictor.predict_boxes = lambda preds, props: [q.proposal_boxes.tensor for q in props]
        inst, _ = model.roi_heads(images, feats, [p])
        ev.process([rec], [{"instances": detector_postprocess(inst[0], h, w)}])
b = ev.evaluate()["bbox"]; print({k: round(v, 1) for k, v in b.items()})
