#!/usr/bin/env python
"""CLIP itself as the region classifier, evaluated as an open-vocabulary detector.

Each box's crop is classified by CLIP among the dataset's class names; the scored boxes get the
same AP50/AP on base, novel and all classes as a trained detector (detectron2's COCO evaluation).
It bounds what distillation from this CLIP can give:
  --regions gt                  perfect localization, region embeddings equal to CLIP's
  --regions PROPOSALS_DIR       CLIP on its own proposals (precompute_clip_features.py's
                                proposals folder; ViLD's "CLIP on cropped regions")
  --regions RESULTS.json        a trained detector's boxes (its
                                inference/coco_instances_results.json) re-classified by
                                CLIP: the AP it would reach with perfect distillation
Example:
  tools/eval_clip_regions.py --clip weights/shapes_clip_vit.pt --dataset shapes_ovd_val \\
      --regions output/demo/train/inference/shapes_ovd_val/coco_instances_results.json --output out/
"""

import argparse
import logging
import os

from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from tabulate import tabulate
from tqdm import tqdm

import ezsd  # noqa: F401  (registers the builtin datasets)
from ezsd.clip import (
    add_prompt_arguments,
    clip_checkpoint_hash,
    clip_region_instances,
    load_clip,
    prompts_from_args,
    region_boxes,
    region_recall,
    text_embeddings,
)
from ezsd.data.proposal_store import ProposalStore
from ezsd.evaluation import OVDCOCOEvaluator, evaluation_split_metadata
from ezsd.evaluation.ovd_coco_evaluation import check_results_dataset
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.file_io import atomic_write_json, check_writable_dir

logger = logging.getLogger("ezsd.eval_clip_regions")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clip", required=True, help="OpenAI CLIP name or a state-dict file")
    p.add_argument("--dataset", required=True, help="a registered dataset with base/novel classes")
    p.add_argument(
        "--regions", required=True, help="gt, a proposals folder, or a COCO results json"
    )
    p.add_argument(
        "--output", required=True, help="folder for ovd_metrics.json and the predictions"
    )
    p.add_argument("--top-k", type=int, default=100, help="boxes per image")
    p.add_argument(
        "--temperature",
        type=float,
        default=100.0,
        help="softmax temperature on cosines (CLIP's logit scale; the detector's initial T)",
    )
    # The defaults are the ShapesOVD detector's test settings, for a like-for-like comparison.
    p.add_argument(
        "--score-threshold", type=float, default=0.0, help="as MODEL.ROI_HEADS.SCORE_THRESH_TEST"
    )
    p.add_argument(
        "--detections-per-image", type=int, default=100, help="as TEST.DETECTIONS_PER_IMAGE"
    )
    p.add_argument("--max-images", type=int, help="evaluate the first N images only")
    add_prompt_arguments(p)
    p.add_argument("--batch-size", type=int, default=64, help="crops per CLIP forward")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    for name in ("top_k", "detections_per_image"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="ezsd")
    meta = evaluation_split_metadata(args.dataset)
    if meta.get("evaluator_type") != "coco":
        raise UserInputError(
            f"--dataset '{args.dataset}': evaluator_type "
            f"{meta.get('evaluator_type')!r}, only COCO-style datasets are supported"
        )
    dicts = DatasetCatalog.get(args.dataset)
    if os.path.isdir(args.regions):
        ProposalStore(args.regions).check_dataset(args.dataset, dicts)
    elif os.path.isfile(args.regions):
        check_results_dataset(args.regions, args.dataset, dicts, "--regions")
    dicts = dicts[: args.max_images]
    boxes = region_boxes(args.regions, dicts, args.top_k)
    check_writable_dir(args.output, "--output")  # after every check of the inputs
    model = load_clip(args.clip, device=args.device)
    prompts = prompts_from_args(args)
    text = text_embeddings(model, meta.thing_classes, prompts)
    evaluator = OVDCOCOEvaluator(args.dataset, tasks=("bbox",), output_dir=args.output)
    evaluator.reset()
    evaluated = [r for r in dicts if r["image_id"] in boxes]
    for record in tqdm(evaluated, desc="CLIP on regions", unit="img"):
        image = read_image(record["file_name"], format="RGB")
        instances = clip_region_instances(
            model,
            image,
            boxes[record["image_id"]],
            text,
            args.temperature,
            args.score_threshold,
            detections_per_image=args.detections_per_image,
            batch_size=args.batch_size,
        )
        evaluator.process([record], [{"instances": instances}])
    # Only the evaluated images count (the others have no boxes from this source).
    bbox = evaluator.evaluate(img_ids=[r["image_id"] for r in evaluated])["bbox"]
    groups = dict(base=meta.base_classes, novel=meta.novel_classes, all=meta.thing_classes)
    recall = region_recall(evaluated, boxes, meta.thing_classes, groups)
    rows = [
        (g, bbox[f"AP50_{g}"], bbox[f"AP_{g}"], 100 * recall[g][0], recall[g][1]) for g in groups
    ]
    headers = ["classes", "AP50", "AP", f"recall@{args.top_k} (IoU 0.5) %", "GT boxes"]
    print(tabulate(rows, headers, tablefmt="pipe", floatfmt=".1f"))
    report = dict(
        bbox,
        recall={g: r for g, (r, _) in recall.items()},
        regions=args.regions,
        top_k=args.top_k,
        temperature=args.temperature,
        score_threshold=args.score_threshold,
        images=len(evaluated),
        clip=args.clip,
        clip_hash=clip_checkpoint_hash(args.clip),
        prompts=list(prompts),
    )
    atomic_write_json(os.path.join(args.output, "clip_regions.json"), report, indent=1)
    logger.info(
        f"{len(evaluated)} images, regions from {args.regions}; "
        f"report in {args.output}/clip_regions.json"
    )
    return report


if __name__ == "__main__":
    main()
