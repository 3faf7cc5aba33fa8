"""Recall of GT boxes (e.g. the novel ones of a validation split) by stored CLIP proposals.

Evaluation only: this is the one offline module that reads novel boxes, from an evaluation split.

  python -m ezsd.offline.recall --dataset shapes_ovd_val --proposals OUT/proposals --k 100,300

With --as-distilled, each image's proposals are first filtered as the feature stage filters a
training image's (those overlapping a base GT box dropped): the recall of novel objects by the
regions that training would distill, had the image been a training image.
"""

import argparse
import json

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ezsd.data.proposal_store import ProposalStore
from ezsd.utils.errors import UserInputError, exit_on_user_error

from .region_features import FeatureSettings, base_gt_filter

__all__ = ["proposal_recall"]

GT_IOU = FeatureSettings().gt_iou_thresh  # the feature stage's base-overlap threshold


def proposal_recall(
    dataset,
    proposals_dir,
    ks=(100, 300),
    iou=0.5,
    group="novel",
    max_images=None,
    as_distilled=False,
):
    """Recall at IoU `iou` of the `group` ("novel", "base" or "all") non-crowd GT boxes by the
    top-k stored proposals, for each k, over the images that have a proposal file (among the
    first `max_images` by id, if given); with `as_distilled`, the top k of the proposals that
    `region_features.base_gt_filter` keeps. Returns a dict."""
    import ezsd  # noqa: F401  (registers the builtin datasets)
    from ezsd.clip import region_recall

    from .sharding import image_order_key

    if dataset not in DatasetCatalog.list():
        raise UserInputError(f"--dataset '{dataset}' is not a registered dataset")
    meta = MetadataCatalog.get(dataset)
    wanted = set(meta.thing_classes) if group == "all" else set(meta.get(f"{group}_classes", []))
    records = sorted(DatasetCatalog.get(dataset), key=image_order_key)
    store = ProposalStore(proposals_dir)
    store.check_dataset(dataset, records)
    records = records[:max_images]
    boxes, encodings = {}, []
    for record in records:
        if record["image_id"] in store:
            arrays = store.arrays(record["image_id"], ("boxes", "num_encodings"))
            found = torch.from_numpy(arrays["boxes"].astype(np.float32))
            if as_distilled:
                found = found[base_gt_filter(found, _base_boxes(record, meta), GT_IOU)]
            boxes[record["image_id"]] = found
            encodings.append(arrays["num_encodings"])
    if not boxes:
        raise UserInputError(f"{proposals_dir}: no proposal file for any image of '{dataset}'")
    recall = {}
    for k in ks:
        top_k = {image_id: b[:k] for image_id, b in boxes.items()}
        recall[str(k)], num_gt = region_recall(
            records, top_k, meta.thing_classes, {group: wanted}, iou
        )[group]
    return dict(
        dataset=dataset,
        group=group,
        iou=iou,
        images=len(boxes),
        gt_boxes=num_gt,
        recall={k: 0.0 if num_gt == 0 else r for k, r in recall.items()},
        encodings_per_image=float(np.mean(encodings)),
        as_distilled=as_distilled,
    )


def _base_boxes(record, meta):
    """(N, 4) XYXY boxes of the record's base-class annotations."""
    base = set(meta.base_classes)
    return [
        BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
        for a in record["annotations"]
        if meta.thing_classes[a["category_id"]] in base
    ]


@exit_on_user_error
def main(argv=None):
    p = argparse.ArgumentParser(
        description="Recall of an evaluation split's GT boxes by stored proposals (the top k of "
        "each image; e.g. CLIP proposals or an RPN's, written by precompute_clip_features.py): "
        "the share of the group's non-crowd GT boxes that some proposal covers at IoU >= --iou. "
        "Prints JSON (recall per k, GT boxes, images, CLIP encodings per image).",
        epilog="Example: python -m ezsd.offline.recall --dataset shapes_ovd_val "
        "--proposals OUT/proposals --k 100,300 --group novel",
    )
    p.add_argument("--dataset", required=True, help="a registered split with the boxes to find")
    p.add_argument(
        "--proposals",
        required=True,
        help="a proposals folder of precompute_clip_features.py (IMAGE_ID.npz files)",
    )
    p.add_argument("--k", default="100,300", help="comma-separated numbers of top proposals")
    p.add_argument("--iou", type=float, default=0.5, help="IoU at which a GT box counts as found")
    p.add_argument(
        "--group",
        choices=("novel", "base", "all"),
        default="novel",
        help="whose GT boxes: the novel classes', the base classes' or all",
    )
    p.add_argument("--max-images", type=int, help="the first N images (by id) only")
    p.add_argument(
        "--as-distilled",
        action="store_true",
        help=f"first drop the proposals with IoU >= {GT_IOU} to a base GT box, as the feature "
        "stage does for training images: the recall of the regions training would distill",
    )
    args = p.parse_args(argv)
    ks = tuple(int(k) for k in args.k.split(","))
    print(
        json.dumps(
            proposal_recall(
                args.dataset,
                args.proposals,
                ks,
                args.iou,
                args.group,
                args.max_images,
                args.as_distilled,
            )
        )
    )


if __name__ == "__main__":
    main()
