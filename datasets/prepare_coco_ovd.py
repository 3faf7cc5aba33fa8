#!/usr/bin/env python
"""Write the COCO open-vocabulary split jsons (48 base / 17 novel classes) from the official files.

$DETECTRON2_DATASETS/coco/annotations/instances_{train,val}2017.json  (inputs)
-> ovd_instances_train2017_base.json  (48 base categories and their boxes only)
-> ovd_instances_val2017_all.json     (48 + 17 categories and their boxes)
"""

import argparse
import logging
import os

from detectron2.utils.logger import setup_logger

from ezsd.data.datasets import COCO_OVD_BASE_CLASSES, COCO_OVD_NOVEL_CLASSES
from ezsd.data.datasets.split_json import keep_categories, read_json, write_json
from ezsd.utils.errors import exit_on_user_error


@exit_on_user_error
def main():
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--annotations",
        default=os.path.join(root, "coco", "annotations"),
        help="folder with instances_{train,val}2017.json; outputs go there too",
    )
    args = parser.parse_args()
    setup_logger(name="ezsd", abbrev_name="ezsd").setLevel(logging.INFO)

    splits = [
        ("instances_train2017.json", "ovd_instances_train2017_base.json", COCO_OVD_BASE_CLASSES),
        (
            "instances_val2017.json",
            "ovd_instances_val2017_all.json",
            COCO_OVD_BASE_CLASSES + COCO_OVD_NOVEL_CLASSES,
        ),
    ]
    for source, target, classes in splits:
        source = os.path.join(args.annotations, source)
        data = keep_categories(read_json(source), classes, source)
        write_json(os.path.join(args.annotations, target), data)


if __name__ == "__main__":
    main()
