#!/usr/bin/env python
"""Generate the ShapesOVD dataset (COCO-format train/val jsons plus images); see datasets/README.md.

python datasets/prepare_shapes_ovd.py                      # -> $DETECTRON2_DATASETS/shapes_ovd
# another world:
python datasets/prepare_shapes_ovd.py --seed 1 --novel cherry,pear,cup,hat,banana,cloud
python datasets/prepare_shapes_ovd.py --list-categories
"""

import argparse
import os
import time

from ezsd.data.shapes_ovd import CATEGORY_NAMES, DEFAULT_NOVEL_CLASSES, generate_shapes_ovd
from ezsd.data.shapes_ovd.statistics import format_statistics, split_statistics
from ezsd.utils.errors import exit_on_user_error


def parse_args(argv=None):
    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out",
        default=os.path.join(root, "shapes_ovd"),
        help="output folder (default: $DETECTRON2_DATASETS/shapes_ovd)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=1000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument(
        "--novel",
        default=",".join(DEFAULT_NOVEL_CLASSES),
        help="comma-separated novel category names (default: %(default)s)",
    )
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument(
        "--list-categories", action="store_true", help="print the category names and exit"
    )
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    if args.list_categories:
        print(",".join(CATEGORY_NAMES))
        return
    novel = [n.strip() for n in args.novel.split(",") if n.strip()]
    start = time.time()
    generate_shapes_ovd(
        args.out,
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        novel_classes=novel,
        image_size=args.image_size,
        progress=True,
    )
    print(
        f"wrote {args.out}/train.json ({args.num_train} images, base boxes only) and "
        f"{args.out}/val.json ({args.num_val} images, all boxes) in {time.time() - start:.1f}s"
    )
    print(
        "val:",
        format_statistics(split_statistics(os.path.join(args.out, "val.json"), novel), novel),
    )


if __name__ == "__main__":
    main()
