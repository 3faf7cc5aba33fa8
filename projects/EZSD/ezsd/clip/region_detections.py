"""CLIP itself as the region classifier, evaluated as a detector.

Each box's crop is scored against the vocabulary's text embeddings (softmax at a temperature, as
the detector's cosine classifier), and the scored boxes go through the open-vocabulary evaluator.
With ground-truth boxes this is the AP that perfect localization plus region embeddings equal to
CLIP's could reach; with a trained detector's own boxes, the AP that detector would reach if
distillation were perfect. Both bound what distillation from this CLIP can give.
"""

import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, BoxMode, Instances
from torchvision.ops import batched_nms, box_iou

from ezsd.data.proposal_store import ProposalStore
from ezsd.utils.errors import UserInputError

from .regions import encode_regions

__all__ = ["region_boxes", "region_recall", "clip_region_instances"]


def region_boxes(source, dataset_dicts, top_k):
    """{image_id: float32 (N, 4) XYXY boxes} of the images of `dataset_dicts`.

    `source` is "gt" (the non-crowd annotations), a proposals folder of
    precompute_clip_features.py (IMAGE_ID.npz with ranked "boxes"), or a COCO results json
    (e.g. a detector's inference/coco_instances_results.json: its distinct boxes, best score
    first). The first `top_k` boxes of each image are kept.
    """
    if source == "gt":
        return {
            r["image_id"]: np.array(
                [
                    BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
                    for a in r["annotations"]
                    if not a.get("iscrowd", 0)
                ],
                np.float32,
            ).reshape(-1, 4)[:top_k]
            for r in dataset_dicts
        }
    if os.path.isdir(source):
        store, boxes = ProposalStore(source), {}
        for r in dataset_dicts:
            if r["image_id"] in store:
                stored = store.arrays(r["image_id"], ("boxes",))
                boxes[r["image_id"]] = stored["boxes"].astype(np.float32)[:top_k]
        if not boxes:
            raise UserInputError(f"{source}: no proposal file (IMAGE_ID.npz) for any image")
        return boxes
    if os.path.isfile(source):
        return _result_boxes(source, {r["image_id"] for r in dataset_dicts}, top_k)
    raise UserInputError(f"--regions {source}: not 'gt', a proposals folder or a results json")


def region_recall(dataset_dicts, boxes, class_names, groups, iou=0.5):
    """{group: (recall, number of GT boxes)}: the fraction of each group's non-crowd GT boxes
    (`groups`: {group: class names}) that some box of `boxes` ({image_id: (N, 4) XYXY}) covers at
    IoU >= `iou`, over the images that have an entry in `boxes`."""
    hits = {g: 0 for g in groups}
    totals = {g: 0 for g in groups}
    for record in dataset_dicts:
        if record["image_id"] not in boxes:
            continue
        found = torch.as_tensor(boxes[record["image_id"]], dtype=torch.float32).reshape(-1, 4)
        for group, names in groups.items():
            gt = [
                BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
                for a in record["annotations"]
                if not a.get("iscrowd", 0) and class_names[a["category_id"]] in names
            ]
            totals[group] += len(gt)
            if gt and len(found):
                hits[group] += int((box_iou(torch.tensor(gt), found).amax(dim=1) >= iou).sum())
    return {g: (hits[g] / totals[g] if totals[g] else float("nan"), totals[g]) for g in groups}


def _result_boxes(path, image_ids, top_k):
    try:
        with open(path) as f:
            results = json.load(f)
        rows = sorted(
            ((r["image_id"], tuple(r["bbox"]), float(r["score"])) for r in results),
            key=lambda row: -row[2],
        )
    except (ValueError, TypeError, KeyError) as e:
        raise UserInputError(f"{path}: not a COCO results json ({type(e).__name__}: {e})") from None
    boxes = {}
    for image_id, (x, y, w, h), _ in rows:
        if image_id in image_ids:
            kept = boxes.setdefault(image_id, {})  # dict: distinct boxes in score order
            if len(kept) < top_k:
                kept.setdefault((x, y, x + w, y + h), None)
    if not boxes:
        raise UserInputError(f"{path}: no result for any image of the dataset")
    return {k: np.array(list(v), np.float32).reshape(-1, 4) for k, v in boxes.items()}


@torch.no_grad()
def clip_region_instances(
    model,
    image,
    boxes,
    text,
    temperature=100.0,
    score_threshold=0.0,
    nms_threshold=0.5,
    detections_per_image=100,
    batch_size=64,
):
    """Detections of CLIP on `boxes` (N, 4 XYXY) of `image` (HWC RGB array), scored against the
    L2-normalized `text` (C, D): every (box, class) pair with softmax score >= score_threshold,
    per-class NMS, the best `detections_per_image` kept, as detectron2's box predictor does."""
    height, width = image.shape[:2]
    instances = Instances((height, width))
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if len(boxes):
        embeddings = F.normalize(encode_regions(model, image, boxes, batch_size=batch_size), dim=-1)
        probs = (temperature * embeddings @ text.float().T).softmax(dim=-1).cpu()
        box_index, classes = (probs >= score_threshold).nonzero(as_tuple=True)
        scores = probs[box_index, classes]
        keep = batched_nms(boxes[box_index], scores, classes, nms_threshold)[:detections_per_image]
        boxes, scores, classes = boxes[box_index[keep]], scores[keep], classes[keep]
    else:
        scores, classes = torch.zeros(0), torch.zeros(0, dtype=torch.long)
    instances.pred_boxes = Boxes(boxes)
    instances.scores = scores
    instances.pred_classes = classes
    return instances
