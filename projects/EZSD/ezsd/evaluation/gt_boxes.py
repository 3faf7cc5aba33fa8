"""A trained detector's classifier on ground-truth boxes: the GT boxes of an evaluation split are
given to the ROI heads as the proposals (no RPN), and the detections are evaluated like the
detector's own (AP on base, novel and all classes). It separates classification from
localization: compare with the detector's AP, and with CLIP on the same boxes
(tools/eval_clip_regions.py --regions gt). Beside the AP, where each GT box's class probability
goes (`probability_shares`): to its own name, to background, to another base or novel name."""

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.structures import Boxes, BoxMode, Instances

from .ovd_coco_evaluation import OVDCOCOEvaluator

__all__ = [
    "gt_boxes_at_test_size",
    "detect_on_boxes",
    "probability_shares",
    "evaluate_on_gt_boxes",
]


def gt_boxes_at_test_size(record, transform):
    """The record's non-crowd annotated boxes, XYXY, mapped by `transform`, and their classes:
    float tensor (N, 4), int64 tensor (N,)."""
    annotations = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = [
        BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations
    ]
    boxes = transform.apply_box(np.array(boxes, dtype=np.float64).reshape(-1, 4))
    classes = torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64)
    return torch.as_tensor(boxes, dtype=torch.float32), classes


@torch.no_grad()
def _probabilities_on_boxes(model, image, boxes):
    """(probabilities (R, C + 1) as the box predictor's `predict_probs` gives them, extensions
    included, its raw predictions, the proposals, the image size) for the given boxes."""
    images = model.preprocess_image([{"image": image}])
    size = images.image_sizes[0]
    heads, boxes = model.roi_heads, boxes.to(model.device)
    predictor = heads.box_predictor
    if not len(boxes):
        return boxes.new_zeros(0, predictor.num_classes + 1), None, None, size
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
    return predictor.predict_probs(predictions, proposals)[0], predictions, proposals, size


def _detections(predictor, probs, predictions, proposals, size, regress):
    if predictions is None:  # no box
        boxes = probs.new_zeros(0, 4)
        return Instances(
            size,
            pred_boxes=Boxes(boxes),
            scores=probs.new_zeros(0),
            pred_classes=torch.zeros(0, dtype=torch.int64, device=probs.device),
        )
    boxes = (
        predictor.predict_boxes(predictions, proposals)
        if regress
        else (proposals[0].proposal_boxes.tensor,)
    )
    instances, _ = fast_rcnn_inference(
        boxes,
        (probs,),
        [size],
        predictor.test_score_thresh,
        predictor.test_nms_thresh,
        predictor.test_topk_per_image,
    )
    return instances[0]


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
    scored = _probabilities_on_boxes(model, image, boxes)
    return _detections(model.roi_heads.box_predictor, *scored, regress)


def probability_shares(probs, classes, is_novel):
    """Where the class probability of GT boxes goes, per group of their classes ("base",
    "novel"): the number of boxes and the means of p(own name), p(background), the largest p of
    another base name and of another novel name, and the share of boxes whose top score is their
    own name. A group without boxes is left out.

    Args:
        probs: (N, C + 1) class probabilities of N GT boxes (background last).
        classes: (N,) their class indices.
        is_novel: (C,) bool, whether each class is novel.
    """
    probs, classes, is_novel = probs.float(), classes.long(), is_novel.bool()
    n = len(classes)
    own = probs[torch.arange(n), classes]
    names = probs[:, :-1].clone()
    names[torch.arange(n), classes] = -1.0  # the others only
    others = {
        group: names[:, mask].max(dim=1).values.clamp(min=0) if mask.any() else probs.new_zeros(n)
        for group, mask in (("base", ~is_novel), ("novel", is_novel))
    }
    top1 = probs.argmax(dim=1) == classes
    shares = {}
    for group, in_group in (("base", ~is_novel[classes]), ("novel", is_novel[classes])):
        if in_group.any():
            shares[group] = dict(
                boxes=int(in_group.sum()),
                own=round(float(own[in_group].mean()), 3),
                background=round(float(probs[in_group, -1].mean()), 3),
                other_base=round(float(others["base"][in_group].mean()), 3),
                other_novel=round(float(others["novel"][in_group].mean()), 3),
                top1=round(float(top1[in_group].float().mean()), 3),
            )
    return shares


def evaluate_on_gt_boxes(cfg, model, dataset_name, regress=False, max_images=None, output_dir=None):
    """(AP, shares) of `model` classifying the GT boxes of `dataset_name` (its first `max_images`
    images), read and resized as at test time (cfg.INPUT): AP is OVDCOCOEvaluator's bbox results
    (AP50_base, AP50_novel, ...), shares `probability_shares` of the same boxes. `output_dir`
    receives the evaluator's files (None: none written)."""
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    evaluator = OVDCOCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_dir)
    evaluator.reset()
    predictor = model.roi_heads.box_predictor
    all_probs, all_classes = [], []
    for record in DatasetCatalog.get(dataset_name)[:max_images]:
        image = read_image(record["file_name"], format=cfg.INPUT.FORMAT)
        transform = resize.get_transform(image)
        tensor = torch.as_tensor(transform.apply_image(image).astype("float32").transpose(2, 0, 1))
        boxes, classes = gt_boxes_at_test_size(record, transform)
        scored = _probabilities_on_boxes(model, tensor, boxes)
        instances = _detections(predictor, *scored, regress)
        all_probs.append(scored[0].cpu())
        all_classes.append(classes)
        height, width = image.shape[:2]
        evaluator.process([record], [{"instances": detector_postprocess(instances, height, width)}])
    novel = set(MetadataCatalog.get(dataset_name).novel_classes)
    is_novel = torch.tensor([n in novel for n in predictor.class_names])
    shares = probability_shares(torch.cat(all_probs), torch.cat(all_classes), is_novel)
    return evaluator.evaluate()["bbox"], shares


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
        bbox, shares = evaluate_on_gt_boxes(
            cfg, model, dataset, args.regress, args.max_images, args.output
        )
    # the summary metrics (per-class APs are in --output); NaN (no box of a group) as null
    metrics = {
        k: None if np.isnan(v) else round(float(v), 2) for k, v in bbox.items() if "-" not in k
    }
    result = dict(
        dataset=dataset,
        boxes="regressed" if args.regress else "gt",
        **metrics,
        probabilities=shares,
    )
    print(json.dumps(result))
    return result
