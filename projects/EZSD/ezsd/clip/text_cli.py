"""Write CLIP text embeddings of class names: FILE.npy (C, D float32) + FILE.names.json.

Examples:
  tools/dump_text_embeddings.py --clip ViT-B/32 --dataset coco_ovd_val --out coco_ovd_val.npy
  tools/dump_text_embeddings.py --clip my_clip.pt --names cat,dog,bow_(weapon) --out my.npy \
      --ensemble
"""

import argparse
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ezsd.clip import (
    add_prompt_arguments,
    clip_checkpoint_hash,
    load_clip,
    names_path,
    prompts_from_args,
    save_text_embeddings,
    text_embeddings,
)
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.file_io import check_writable_dir

logger = logging.getLogger("ezsd.dump_text_embeddings")

__all__ = ["parse_args", "main"]


def parse_args(argv=None):
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--clip", required=True, help="OpenAI CLIP name or a state-dict file")
    names = parser.add_mutually_exclusive_group(required=True)
    names.add_argument("--names", help="comma-separated class names, in class-id order")
    names.add_argument("--dataset", help="a registered dataset: its thing_classes")
    parser.add_argument("--out", required=True, help="FILE.npy; FILE.names.json goes beside it")
    add_prompt_arguments(parser)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    names_path(args.out)  # refuse a bad output name or folder before the slow part
    check_writable_dir(os.path.dirname(os.path.abspath(args.out)), "--out folder")
    if args.names is not None:
        class_names = [n.strip() for n in args.names.split(",") if n.strip()]
        if not class_names:
            raise UserInputError(f"--names '{args.names}' holds no class name")
    else:
        meta = MetadataCatalog.get(args.dataset)
        if args.dataset in DatasetCatalog.list() and not meta.get("thing_classes"):
            DatasetCatalog.get(args.dataset)  # a COCO json sets its thing_classes when first loaded
        class_names = meta.get("thing_classes")
        if not class_names:
            msg = f"--dataset '{args.dataset}' is not a registered dataset with thing_classes"
            raise UserInputError(msg)
    prompts = prompts_from_args(args)
    model = load_clip(args.clip, device=args.device)
    emb = text_embeddings(model, class_names, prompts)
    save_text_embeddings(
        args.out,
        emb.cpu().numpy(),
        class_names,
        clip=args.clip,
        clip_hash=clip_checkpoint_hash(args.clip),
        prompts=list(prompts),
    )
    logger.info(f"wrote {tuple(emb.shape)} text embeddings to {args.out}")
