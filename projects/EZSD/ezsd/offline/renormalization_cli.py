"""CLIP re-normalization: fine-tune only CLIP's LayerNorms on base-class GT crops (EZSD).

Trains every parameter whose name contains `ln_` of the image tower (and of the text tower with
--tune-text-ln) on 1.2x crops of the BASE GT boxes of a training split; loss = sigmoid BCE on
100*cos(image, text) over the base names; AdamW, gradient-norm clip, constant lr. Everything else
is frozen and checked bit-identical afterwards. Writes OUTPUT_DIR/clip_renormalized.pt (read by
every tool through ezsd.clip.load_clip) and OUTPUT_DIR/renorm_report.json (CLIP crop accuracy on
the validation split's GT crops before and after, base and novel separately). Resumable from the
last finished epoch (OUTPUT_DIR/renorm_state.pt); re-running a finished run does nothing.
Details: ezsd/offline/renormalization.py; measured figures: docs/RENORMALIZATION.md.

Examples:
  # ShapesOVD with the small CLIP (about 1-2 minutes on 2 CPU cores)
  tools/finetune_clip.py --clip weights/shapes_clip_vit.pt --train-dataset shapes_ovd_train \\
      --val-dataset shapes_ovd_val --output-dir output/renorm_shapes --epochs 1 \\
      --clean-domain-images 600
  # COCO, the paper's recipe (12 epochs, 4 images per iteration)
  tools/finetune_clip.py --clip ViT-B/32 --train-dataset coco_ovd_train \\
      --val-dataset coco_ovd_val --max-val-images 1000 --output-dir output/renorm_coco --device cuda
"""

import argparse
import logging

from detectron2.data import DatasetCatalog, MetadataCatalog
from tabulate import tabulate

from ezsd.clip import add_prompt_arguments, clip_checkpoint_hash, prompts_from_args
from ezsd.offline.renormalization import RenormSettings, base_box_samples, renormalize_clip
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.names import check_names_match

logger = logging.getLogger("ezsd.finetune_clip")

__all__ = ["parse_args", "main"]


def parse_args(argv=None):
    formatter = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    d = RenormSettings()
    p.add_argument(
        "--clip", required=True, help="CLIP to re-normalize: a state-dict file or an OpenAI name"
    )
    p.add_argument(
        "--train-dataset",
        required=True,
        help="registered training split (base boxes only) whose base GT crops are tuned on",
    )
    p.add_argument(
        "--val-dataset",
        required=True,
        help="registered split with base and novel boxes, for the before/after accuracy",
    )
    p.add_argument(
        "--output-dir",
        required=True,
        help="writes clip_renormalized.pt, renorm_report.json, renorm_state.pt",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="default %(default)s (COCO recipe)")
    p.add_argument(
        "--images-per-batch",
        type=int,
        default=d.images_per_batch,
        help="images per iteration; every base GT box of them is a sample",
    )
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate, constant")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient L2 norm")
    p.add_argument(
        "--tune-text-ln", action="store_true", help="also tune the text tower's LayerNorms"
    )
    p.add_argument(
        "--novel-negatives",
        action="store_true",
        help="an extension, not the paper's (off by default): also score crops against "
        "the novel NAMES, as negatives only; counters drift toward novel names, see "
        "docs/RENORMALIZATION.md",
    )
    add_prompt_arguments(p)
    p.add_argument("--seed", type=int, default=d.seed, help="image order per epoch")
    p.add_argument("--max-train-images", type=int, help="train on the first N images only")
    p.add_argument("--max-val-images", type=int, help="evaluate on the first N images only")
    p.add_argument(
        "--clean-domain-images",
        type=int,
        default=0,
        help="ShapesOVD only: also measure zero-shot accuracy on N images of the small "
        "CLIP's own (clean) domain before and after, a drift guard (default 0: off)",
    )
    p.add_argument(
        "--crop-cache-mb",
        type=float,
        default=d.crop_cache_mb,
        help="keep training crops in memory if they fit in this many MB",
    )
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from OUTPUT_DIR/renorm_state.pt (default: on)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for flag in ("max_train_images", "max_val_images"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.clean_domain_images < 0:
        p.error("--clean-domain-images must be >= 0")
    return args


def _split(name, flag):
    """Metadata of a registered open-vocabulary split (its dicts are loaded later)."""
    if name not in DatasetCatalog.list():
        raise UserInputError(f"{flag} '{name}' is not a registered dataset")
    meta = MetadataCatalog.get(name)
    if meta.get("base_classes") is None or meta.get("novel_classes") is None:
        raise UserInputError(
            f"{flag} '{name}' has no base/novel split in its metadata (register "
            "it with ezsd.data.datasets.register_ovd_dataset)"
        )
    return meta


def _clean_domain(num, class_names):
    from ezsd.data.shapes_ovd import CATEGORY_NAMES, render_clip_pairs
    from ezsd.data.shapes_ovd.clip_domain import HELD_OUT_SEED_OFFSET

    if sorted(class_names) != sorted(CATEGORY_NAMES):
        raise UserInputError(
            "--clean-domain-images needs a ShapesOVD validation split (its classes "
            "are those of the small CLIP's domain)"
        )
    # the small CLIP's held-out evaluation images (tools/train_small_clip.py, seed 0)
    images, labels, _ = render_clip_pairs(HELD_OUT_SEED_OFFSET, num)
    remap = [class_names.index(n) for n in CATEGORY_NAMES]
    return images, [remap[i] for i in labels]


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    prompts = prompts_from_args(args)
    settings = RenormSettings(
        epochs=args.epochs,
        images_per_batch=args.images_per_batch,
        lr=args.lr,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        tune_text_ln=args.tune_text_ln,
        novel_negatives=args.novel_negatives,
        prompts=prompts,
        seed=args.seed,
        crop_cache_mb=args.crop_cache_mb,
    )
    clip_checkpoint_hash(args.clip)  # a missing CLIP file is the first, cheapest error
    train_meta = _split(args.train_dataset, "--train-dataset")
    val_meta = _split(args.val_dataset, "--val-dataset")
    if train_meta.get("novel_annotated", False):
        raise UserInputError(
            f"--train-dataset '{args.train_dataset}' holds novel boxes (novel_annotated=True); "
            "re-normalization trains on a base-only training split"
        )
    base, novel = list(val_meta.base_classes), list(val_meta.novel_classes)
    check_names_match(
        train_meta.base_classes,
        base,
        "--train-dataset and --val-dataset have different base classes",
    )
    train_dicts = DatasetCatalog.get(args.train_dataset)[: args.max_train_images]
    val_dicts = DatasetCatalog.get(args.val_dataset)[: args.max_val_images]
    samples = base_box_samples(train_dicts, list(train_meta.thing_classes), base)
    logger.info(
        f"{args.train_dataset}: {samples.num_boxes} base boxes in {len(samples.files)} "
        f"images ({samples.skipped_images} images without base boxes skipped)"
    )
    if not samples.num_boxes:
        raise UserInputError(
            f"--train-dataset '{args.train_dataset}' ({train_meta.get('json_file')}) "
            "has no base boxes to re-normalize on"
        )
    val_classes = list(val_meta.thing_classes)
    clean = (
        _clean_domain(args.clean_domain_images, val_classes) if args.clean_domain_images else None
    )
    info = {
        "train_dataset": args.train_dataset,
        "val_dataset": args.val_dataset,
        "max_train_images": args.max_train_images,
        "max_val_images": args.max_val_images,
        "clean_domain_images": args.clean_domain_images,
    }
    report = renormalize_clip(
        args.clip,
        args.output_dir,
        samples,
        val_dicts,
        val_classes,
        base,
        novel,
        settings,
        resume=args.resume,
        device=args.device,
        clean_domain=clean,
        progress=not args.no_progress,
        info=info,
    )
    rows = []
    for key, label in (
        ("base-among-all", "GT crops, base"),
        ("novel-among-all", "GT crops, novel"),
    ):
        b, a = report["before"][key], report["after"][key]
        rows.append((label, None if b is None else 100 * b, None if a is None else 100 * a))
    if report.get("clean_domain_after"):
        for key in ("base", "novel"):
            b, a = report["clean_domain_before"][key], report["clean_domain_after"][key]
            rows.append(
                (
                    f"clean domain, {key}",
                    None if b is None else 100 * b,
                    None if a is None else 100 * a,
                )
            )
    print(
        tabulate(
            rows,
            ["CLIP accuracy %", "before", "after"],
            tablefmt="pipe",
            floatfmt=".1f",
            missingval="-",
        )
    )
    print(f"wrote {report['checkpoint']} and {args.output_dir}/renorm_report.json")
    return report
