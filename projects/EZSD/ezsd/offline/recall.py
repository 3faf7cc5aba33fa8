"""Recall of GT boxes (e.g. the novel ones of a validation split) by stored CLIP proposals.

Evaluation only: this is the one offline module that reads novel boxes, from an evaluation split.

  python -m ezsd.offline.recall --dataset shapes_ovd_val --proposals OUT/proposals --k 100,300
"""
import argparse
import json
import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from torchvision.ops import box_iou

from ezsd.utils.errors import UserInputError, exit_on_user_error

__all__ = ["proposal_recall"]


def proposal_recall(dataset, proposals_dir, ks=(100, 300), iou=0.5, group="novel", max_images=None):
    """Recall at IoU `iou` of the `group` ("novel", "base" or "all") GT boxes by the top-k stored
    proposals, for each k, over the images that have a proposal file (among the first
    `max_images` by id, if given). Returns a dict."""
    import ezsd  # noqa: F401  (registers the builtin datasets)

    if dataset not in DatasetCatalog.list():
        raise UserInputError(f"--dataset '{dataset}' is not a registered dataset")
    meta = MetadataCatalog.get(dataset)
    wanted = set(meta.thing_classes) if group == "all" else set(meta.get(f"{group}_classes", []))
    hits = {k: 0 for k in ks}
    num_gt = num_images = 0
    encodings = []
    from .sharding import image_order_key

    records = sorted(DatasetCatalog.get(dataset), key=image_order_key)
    for record in records[:max_images]:
        path = os.path.join(proposals_dir, f"{record['image_id']}.npz")
        if not os.path.exists(path):
            continue
        num_images += 1
        with np.load(path) as data:
            boxes = torch.from_numpy(data["boxes"].astype(np.float32))
            encodings.append(int(data["num_encodings"]))
        gt = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
              for a in record["annotations"] if meta.thing_classes[a["category_id"]] in wanted]
        if not gt:
            continue
        gt = torch.tensor(gt, dtype=torch.float32)
        num_gt += len(gt)
        for k in ks:
            if len(boxes[:k]):
                hits[k] += int((box_iou(gt, boxes[:k]).amax(dim=1) >= iou).sum())
    if not num_images:
        raise UserInputError(f"{proposals_dir}: no proposal file for any image of '{dataset}'")
    return dict(
        dataset=dataset, group=group, iou=iou, images=num_images, gt_boxes=num_gt,
        recall={str(k): hits[k] / max(num_gt, 1) for k in ks},
        encodings_per_image=float(np.mean(encodings)),
    )  # fmt: skip


@exit_on_user_error
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--proposals", required=True, help="a proposal folder of precompute_clip_features.py")
    p.add_argument("--k", default="100,300")
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--group", choices=("novel", "base", "all"), default="novel")
    p.add_argument("--max-images", type=int, help="the first N images (by id) only")
    args = p.parse_args(argv)
    ks = tuple(int(k) for k in args.k.split(","))
    print(json.dumps(proposal_recall(args.dataset, args.proposals, ks, args.iou, args.group,
                                     args.max_images)))


if __name__ == "__main__":
    main()
