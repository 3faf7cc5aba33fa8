#!/usr/bin/env python
"""Zero-shot CLIP accuracy on ground-truth box crops, base and novel classes separately.

Each GT crop is classified among ALL class names ("base-among-all", "novel-among-all").
Examples:
  tools/eval_clip_crops.py --clip ViT-B/32 --dataset coco_ovd_val --max-images 500
  tools/eval_clip_crops.py --clip my_clip.pt --json val.json --image-root images/ --novel cat,dog \
      --out report.json
With --json, a category's extra key "split" ("base"/"novel") gives its group; else --novel does.
"""

import argparse
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

import ezsd  # noqa: F401  (registers the builtin datasets)
from ezsd.clip import (
    add_prompt_arguments,
    clip_checkpoint_hash,
    crop_classification_accuracy,
    load_clip,
    prompts_from_args,
)
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.file_io import atomic_write_json

logger = logging.getLogger("ezsd.eval_clip_crops")


def parse_args(argv=None):
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--clip", required=True, help="OpenAI CLIP name or a state-dict file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="a registered dataset (base/novel from its metadata)")
    source.add_argument("--json", help="a COCO-format json (needs --image-root)")
    parser.add_argument("--image-root", help="folder of the --json file's images")
    parser.add_argument("--novel", help="comma-separated novel names, if the data has none")
    parser.add_argument("--max-images", type=int, help="evaluate the first N images only")
    add_prompt_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=64, help="crops per CLIP forward")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the full report (with the confusion matrix) as JSON")
    args = parser.parse_args(argv)
    if args.json and not args.image_root:
        parser.error("--json needs --image-root")
    return args


def load_data(args):
    """Return (dataset dicts, class names, novel names declared by the data or None)."""
    if args.dataset:
        if args.dataset not in DatasetCatalog.list():
            raise UserInputError(f"--dataset '{args.dataset}' is not a registered dataset")
        dicts = DatasetCatalog.get(args.dataset)
        meta = MetadataCatalog.get(args.dataset)
        return dicts, list(meta.thing_classes), meta.get("novel_classes")
    for path in (args.json, args.image_root):
        if not os.path.exists(path):
            raise UserInputError(f"{path}: no such file or folder")
    # A dataset name makes detectron2 map category ids to contiguous ones (and record the names).
    name = f"eval_clip_crops:{os.path.abspath(args.json)}"
    dicts = load_coco_json(args.json, args.image_root, dataset_name=name)
    with open(args.json) as f:
        categories = json.load(f)["categories"]
    declared = [c["name"] for c in categories if c.get("split") == "novel"]
    has_split = any("split" in c for c in categories)
    return dicts, list(MetadataCatalog.get(name).thing_classes), declared if has_split else None


def split_names(class_names, declared_novel, cli_novel, source):
    """Base and novel names: the data's own split, else --novel, else every class is base."""
    if declared_novel is not None:
        novel = [n for n in declared_novel if n in class_names]
        if cli_novel is not None and set(cli_novel) != set(novel):
            msg = f"--novel {','.join(cli_novel)} disagrees with the split of {source}"
            raise UserInputError(msg)
    else:
        novel = cli_novel or []
        missing = [n for n in novel if n not in class_names]
        if missing:
            raise UserInputError(f"--novel class '{missing[0]}' is not a class of {source}")
        if not novel:
            logger.warning(f"{source} declares no novel classes and no --novel: all are base")
    return [n for n in class_names if n not in novel], novel


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="ezsd")
    dicts, class_names, declared_novel = load_data(args)
    cli_novel = [n.strip() for n in args.novel.split(",") if n.strip()] if args.novel else None
    base, novel = split_names(class_names, declared_novel, cli_novel, args.dataset or args.json)
    if args.max_images is not None:
        dicts = dicts[: args.max_images]
    prompts = prompts_from_args(args)
    model = load_clip(args.clip, device=args.device)
    report = crop_classification_accuracy(
        model, dicts, class_names, base, novel, prompts, batch_size=args.batch_size
    )
    groups = (("base-among-all", "num_base"), ("novel-among-all", "num_novel"), ("all", "num_all"))
    rows = [(k, None if report[k] is None else 100 * report[k], report[n]) for k, n in groups]
    headers = ["crops", "accuracy %", "boxes"]
    print(tabulate(rows, headers, tablefmt="pipe", floatfmt=".1f", missingval="-"))
    if args.out:
        report.update(
            clip=args.clip,
            clip_hash=clip_checkpoint_hash(args.clip),
            prompts=list(prompts),
            data=args.dataset or os.path.abspath(args.json),
            num_images=len(dicts),
        )
        atomic_write_json(args.out, report)
        logger.info(f"report written to {args.out}")
    return report


if __name__ == "__main__":
    main()
