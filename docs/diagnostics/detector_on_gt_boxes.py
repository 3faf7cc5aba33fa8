"""Analysis script (docs/SHAPES_RESULTS.md section 7; not a tested tool): a trained EZSD detector's
box head classifying the ground-truth boxes of shapes_ovd_val, as detections, with the same
evaluator as training. Compare with tools/eval_clip_regions.py --regions gt (CLIP on the same boxes).

  DETECTRON2_DATASETS=D python docs/diagnostics/detector_on_gt_boxes.py OUT/train/config.yaml \
      OUT/train/model_final.pth exact     # 'exact': keep the GT boxes (no box regression)
"""
import sys, torch
from detectron2.config import get_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, BoxMode, Instances
import ezsd
from ezsd import add_ezsd_config
from ezsd.evaluation import OVDCOCOEvaluator
cfg = get_cfg(); add_ezsd_config(cfg); cfg.merge_from_file(sys.argv[1]); cfg.MODEL.WEIGHTS = sys.argv[2]; cfg.MODEL.DEVICE = "cpu"
model = build_model(cfg).eval(); DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
ev = OVDCOCOEvaluator("shapes_ovd_val", tasks=("bbox",), output_dir=None); ev.reset()
with torch.no_grad():
    for rec in DatasetCatalog.get("shapes_ovd_val"):
        img = read_image(rec["file_name"], format=cfg.INPUT.FORMAT); h, w = img.shape[:2]
        tfm = aug.get_transform(img); x = torch.as_tensor(tfm.apply_image(img).astype("float32").transpose(2, 0, 1))
        gt = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in rec["annotations"]]
        boxes = torch.tensor(tfm.apply_box(torch.tensor(gt).numpy()), dtype=torch.float32)
        images = model.preprocess_image([{"image": x}]); feats = model.backbone(images.tensor)
        p = Instances(images.image_sizes[0]); p.proposal_boxes = Boxes(boxes); p.objectness_logits = torch.ones(len(boxes))
        if len(sys.argv) > 3:  # keep the GT boxes exactly (no box regression)
            model.roi_heads.box_predictor.predict_boxes = lambda preds, props: [q.proposal_boxes.tensor for q in props]
        inst, _ = model.roi_heads(images, feats, [p])
        ev.process([rec], [{"instances": detector_postprocess(inst[0], h, w)}])
b = ev.evaluate()["bbox"]; print({k: round(v, 1) for k, v in b.items()})
