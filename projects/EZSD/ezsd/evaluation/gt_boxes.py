"""A trained detector's classifier on ground-truth boxes: the GT boxes of an evaluation split are
given to the ROI heads as the proposals (no RPN), and the detections are evaluated like the
detector's own (AP on base, novel and all classes). It separates classification from
localization: compare with the detector's AP, and with CLIP on the same boxes
(tools/eval_clip_regions.py --regions gt)."""

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.structures import Boxes, BoxMode, Instances

from .ovd_coco_evaluation import OVDCOCOEvaluator

__all__ = ["gt_boxes_at_test_size", "detect_on_boxes", "evaluate_on_gt_boxes"]


def gt_boxes_at_test_size(record, transform):
    """The record's non-crowd annotated boxes, XYXY, mapped by `transform`: float tensor (N, 4)."""
    boxes = [
        BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
        for a in record.get("annotations", [])
        if not a.get("iscrowd", 0)
    ]
    boxes = transform.apply_box(np.array(boxes, dtype=np.float64).reshape(-1, 4))
    return torch.as_tensor(boxes, dtype=torch.float32)


@torch.no_grad()
def detect_on_boxes(model, image, boxes, regress=False):
    """Detections (Instances at the size of `image`) of an EZSD model's ROI heads on the given
    boxes instead of its proposals: scored by the box predictor (its `predict_probs`, extensions
    included) and kept as they are, or moved by its box regression with `regress`. Then the
    predictor's own score threshold, NMS and detections per image.

    Args:
        model: an EZSDRCNN (GeneralizedRCNN with EZSD ROI heads) in eval mode.
        image: (C, H, W) float tensor in the model's input format, at the test size.
        boxes: (R, 4) XYXY boxes in that image's coordinates.
    """
    images = model.preprocess_image([{"image": image}])
    size = images.image_sizes[0]
    heads, boxes = model.roi_heads, boxes.to(model.device)
    predictor = heads.box_predictor
    if not len(boxes):
        return Instances(
            size,
            pred_boxes=Boxes(boxes),
            scores=boxes.new_zeros(0),
            pred_classes=torch.zeros(0, dtype=torch.int64, device=boxes.device),
        )
    features = model.backbone(images.tensor)
    # objectness logit 0 for every box: no proposal is preferred (sigmoid 0.5 if an extension
    # uses it)
    proposals = [
        Instances(size, proposal_boxes=Boxes(boxes), objectness_logits=boxes.new_zeros(len(boxes)))
    ]
    pooled = heads.box_pooler(
        [features[f] for f in heads.box_in_features], [proposals[0].proposal_boxes]
    )
    predictions = predictor(heads.box_head(pooled, num_reg=len(boxes)))
    scores = predictor.predict_probs(predictions, proposals)
    out_boxes = predictor.predict_boxes(predictions, proposals) if regress else (boxes,)
    instances, _ = fast_rcnn_inference(
        out_boxes,
        scores,
        [size],
        predictor.test_score_thresh,
        predictor.test_nms_thresh,
        predictor.test_topk_per_image,
    )
    return instances[0]


def evaluate_on_gt_boxes(cfg, model, dataset_name, regress=False, max_images=None, output_dir=None):
    """AP (OVDCOCOEvaluator's bbox results: AP50_base, AP50_novel, ...) of `model` classifying the
    GT boxes of `dataset_name` (its first `max_images` images), read and resized as at test time
    (cfg.INPUT). `output_dir` receives the evaluator's files (None: none written)."""
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    evaluator = OVDCOCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_dir)
    evaluator.reset()
    records = DatasetCatalog.get(dataset_name)[:max_images]
    for record in records:
        image = read_image(record["file_name"], format=cfg.INPUT.FORMAT)
        transform = resize.get_transform(image)
        tensor = torch.as_tensor(transform.apply_image(image).astype("float32").transpose(2, 0, 1))
        instances = detect_on_boxes(
            model, tensor, gt_boxes_at_test_size(record, transform), regress
        )
        height, width = image.shape[:2]
        evaluator.process([record], [{"instances": detector_postprocess(instances, height, width)}])
    return evaluator.evaluate()["bbox"]


def argument_parser():
    import argparse

    p = argparse.ArgumentParser(
        description="AP50/AP on base, novel and all classes of a trained EZSD detector whose ROI "
        "heads are given the ground-truth boxes of an evaluation split as proposals (no RPN): "
        "its classifier apart from its localization. Prints the metrics as JSON.",
        epilog="Example: tools/eval_on_gt_boxes.py --config-file output/demo/train/config.yaml "
        "MODEL.WEIGHTS output/demo/train/model_final.pth MODEL.DEVICE cpu",
    )
    p.add_argument(
        "--config-file",
        required=True,
        metavar="FILE",
        help="the model's config (e.g. its training run's config.yaml)",
    )
    p.add_argument(
        "--dataset",
        help="a registered evaluation split with base and novel boxes "
        "(default: the config's first DATASETS.TEST)",
    )
    p.add_argument(
        "--regress",
        action="store_true",
        help="move the boxes by the model's box regression (default: keep the GT boxes)",
    )
    p.add_argument("--max-images", type=int, help="the first N images only")
    p.add_argument("--output", help="folder for the evaluator's files (ovd_metrics.json, ...)")
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. MODEL.WEIGHTS model_final.pth MODEL.DEVICE cpu",
    )
    return p


def main(argv=None):
    """The command line of tools/eval_on_gt_boxes.py."""
    import json

    import ezsd  # noqa: F401  (registers the builtin datasets)
    from ezsd.checkpoint import build_detector, weights_file
    from ezsd.config import load_ezsd_config
    from ezsd.utils.file_io import check_writable_dir

    from .build import evaluation_split_metadata

    args = argument_parser().parse_args(argv)
    cfg = load_ezsd_config(args.config_file, args.opts)
    dataset = args.dataset or (cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "")
    evaluation_split_metadata(dataset)
    cfg.DATASETS.TEST = (dataset,)  # the inference vocabulary is checked against its classes
    cfg.MODEL.WEIGHTS = weights_file(cfg, args.config_file, args.opts)
    if args.output:
        check_writable_dir(args.output, "--output")
    model = build_detector(cfg, args.config_file)
    with torch.no_grad():
        bbox = evaluate_on_gt_boxes(cfg, model, dataset, args.regress, args.max_images, args.output)
    # the summary metrics (per-class APs are in --output); NaN (no box of a group) as null
    metrics = {
        k: None if np.isnan(v) else round(float(v), 2) for k, v in bbox.items() if "-" not in k
    }
    result = dict(dataset=dataset, boxes="regressed" if args.regress else "gt", **metrics)
    print(json.dumps(result))
    return result
