"""What a detector made of each novel object of an evaluation split, from the detections file
its COCO evaluation wrote (inference/<dataset>/coco_instances_results.json): no detection
covers the object (IoU below the threshold), or the best-scored detection that covers it names
it right, names another novel class, or names a base class. It tells localization from naming
where novel AP is low, with no model. The other side of the AP, where the detections with a
novel name (score >= --min-score) lie, tells what outranks the right ones:

    python -m ezsd.evaluation.novel_errors --dataset shapes_ovd_val \
        --detections output/demo/train/inference/shapes_ovd_val/coco_instances_results.json
"""

import collections
import json

import numpy as np
import torch
from detectron2.structures import Boxes, BoxMode, pairwise_ioa
from pycocotools import mask as mask_util

__all__ = ["OUTCOMES", "PLACES", "novel_object_outcomes", "novel_detection_places"]

OUTCOMES = ("no_box", "right", "other_novel", "base")
# Where a novel-named detection lies, first that applies (score order, as COCO matches): on an
# object of its name not yet taken (right) or taken by a better-scored one (duplicate); on an
# object of a base or another novel class (IoU >= iou); mostly inside one object (a part of it);
# overlapping one loosely (IoU >= 0.1); or on none.
PLACES = (
    "right",
    "duplicate",
    "base_object",
    "novel_object",
    "inside_base",
    "inside_novel",
    "loose",
    "background",
)


def novel_object_outcomes(gt_json, novel_classes, detections, iou=0.5, top_confusions=10):
    """{"novel_objects": N, "no_box" / "right" / "other_novel" / "base": counts by the
    best-scored covering detection, "right_name_covers": objects covered by a detection of their
    own name at any score (the recall the class's AP can reach), "confusions": [[true name,
    predicted name, count], ...] (the most frequent wrong names first)}.

    Args:
        gt_json: the split's COCO-format ground truth (dict), with the novel boxes.
        novel_classes: the novel class names.
        detections: COCO results (dicts with image_id, category_id, bbox XYWH, score).
        iou: the IoU at which a detection covers an object.
    """
    names = {c["id"]: c["name"] for c in gt_json["categories"]}
    novel = set(novel_classes)
    missing = novel - set(names.values())
    if missing:
        raise ValueError(f"novel classes not in the ground truth: {sorted(missing)}")
    by_image = collections.defaultdict(list)
    for d in detections:
        by_image[d["image_id"]].append(d)
    counts = collections.Counter({o: 0 for o in OUTCOMES})
    confusions = collections.Counter()
    recalled = 0  # covered by a detection of the right name, at any score (the AP's recall)
    for a in gt_json["annotations"]:
        true = names[a["category_id"]]
        if true not in novel or a.get("iscrowd", 0):
            continue
        dets = by_image[a["image_id"]]
        covering = []
        if dets:
            ious = mask_util.iou([d["bbox"] for d in dets], [a["bbox"]], [0]).ravel()
            covering = [d for d, o in zip(dets, ious) if o >= iou]
        if not covering:
            counts["no_box"] += 1
            continue
        recalled += any(d["category_id"] == a["category_id"] for d in covering)
        named = names[max(covering, key=lambda d: d["score"])["category_id"]]
        outcome = "right" if named == true else "other_novel" if named in novel else "base"
        counts[outcome] += 1
        if outcome != "right":
            confusions[(true, named)] += 1
    return dict(
        novel_objects=sum(counts.values()),
        **counts,
        right_name_covers=recalled,
        confusions=[[t, p, n] for (t, p), n in confusions.most_common(top_confusions)],
    )


def _xyxy(xywh_boxes):
    b = torch.as_tensor(xywh_boxes, dtype=torch.float32).reshape(-1, 4)
    return Boxes(BoxMode.convert(b, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))


def _part_or_loose(detection, objects, best_iou, inside, names, novel):
    """The place of a detection that covers no object: inside one (the object holding the
    largest share of its area, if at least `inside`), loosely over one, or on none."""
    shares = pairwise_ioa(_xyxy([a["bbox"] for a in objects]), _xyxy(detection["bbox"])).ravel()
    if shares.max() >= inside:
        host = objects[int(shares.argmax())]
        return "inside_novel" if names[host["category_id"]] in novel else "inside_base"
    return "loose" if best_iou >= 0.1 else "background"


def novel_detection_places(gt_json, novel_classes, detections, min_score=0.5, iou=0.5, inside=0.7):
    """{"novel_detections": N, and per place of PLACES the number of detections with a novel
    name and score >= `min_score` that lie there}. `inside`: the share of a detection's area
    inside an object that makes it a part of the object."""
    names = {c["id"]: c["name"] for c in gt_json["categories"]}
    novel = set(novel_classes)
    objects = collections.defaultdict(list)
    for a in gt_json["annotations"]:
        if not a.get("iscrowd", 0):
            objects[a["image_id"]].append(a)
    counts = dict.fromkeys(PLACES, 0)
    taken = set()
    chosen = [d for d in detections if names[d["category_id"]] in novel and d["score"] >= min_score]
    for d in sorted(chosen, key=lambda d: -d["score"]):
        objs = objects[d["image_id"]]
        if not objs:
            counts["background"] += 1
            continue
        ious = mask_util.iou([d["bbox"]], [a["bbox"] for a in objs], [0] * len(objs)).ravel()
        own = [
            k
            for k in np.argsort(-ious)
            if ious[k] >= iou and objs[k]["category_id"] == d["category_id"]
        ]
        free = [k for k in own if objs[k]["id"] not in taken]
        best = int(np.argmax(ious))
        if free:
            taken.add(objs[free[0]]["id"])
            place = "right"
        elif own:
            place = "duplicate"
        elif ious[best] >= iou:
            place = "novel_object" if names[objs[best]["category_id"]] in novel else "base_object"
        else:
            place = _part_or_loose(d, objs, ious[best], inside, names, novel)
        counts[place] += 1
    return dict(novel_detections=len(chosen), **counts)


def main(argv=None):
    """The command line `python -m ezsd.evaluation.novel_errors`."""
    import argparse

    from detectron2.data import DatasetCatalog

    import ezsd  # noqa: F401  (registers the builtin datasets)
    from ezsd.data.datasets.split_json import read_json
    from ezsd.utils.errors import UserInputError

    from .build import evaluation_split_metadata
    from .ovd_coco_evaluation import check_results_dataset

    p = argparse.ArgumentParser(
        description="Each novel object of an evaluation split: no detection covers it, or the "
        "best-scored covering detection names it right, another novel class or a base class; and "
        "where the detections with a novel name lie ('places'). Prints the counts and the most "
        "frequent wrong names as JSON."
    )
    p.add_argument("--dataset", required=True, help="a registered evaluation split (novel boxes)")
    p.add_argument(
        "--detections",
        required=True,
        metavar="FILE",
        help="the COCO results its evaluation wrote (coco_instances_results.json)",
    )
    p.add_argument(
        "--iou", type=float, default=0.5, help="IoU at which a detection covers an object"
    )
    p.add_argument(
        "--min-score",
        type=float,
        default=0.5,
        help="the novel-named detections placed are those scored at least this",
    )
    args = p.parse_args(argv)
    meta = evaluation_split_metadata(args.dataset)
    gt = read_json(meta.json_file)
    detections = read_json(args.detections)
    check_results_dataset(
        args.detections, args.dataset, DatasetCatalog.get(args.dataset), "--detections"
    )
    image_ids = {i["id"] for i in gt["images"]}
    foreign = {d["image_id"] for d in detections} - image_ids
    if foreign:
        raise UserInputError(
            f"--detections {args.detections}: image ids {sorted(foreign)[:5]} are not in "
            f"--dataset '{args.dataset}' ({meta.json_file}): detections of another dataset?"
        )
    unknown = {d["category_id"] for d in detections} - {c["id"] for c in gt["categories"]}
    if unknown:
        raise UserInputError(
            f"--detections {args.detections}: category ids {sorted(unknown)[:5]} are not in "
            f"--dataset '{args.dataset}' ({meta.json_file}): detections of another vocabulary?"
        )
    result = dict(
        dataset=args.dataset,
        iou=args.iou,
        **novel_object_outcomes(gt, meta.novel_classes, detections, args.iou),
        min_score=args.min_score,
        places=novel_detection_places(gt, meta.novel_classes, detections, args.min_score, args.iou),
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    from ezsd.utils.errors import exit_on_user_error

    exit_on_user_error(main)()
