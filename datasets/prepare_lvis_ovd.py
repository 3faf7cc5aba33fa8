#!/usr/bin/env python
"""Write the LVIS v1 open-vocabulary training json: every image, no box of a rare category.

    $DETECTRON2_DATASETS/lvis/lvis_v1_train.json -> lvis/lvis_v1_train_ovd_base.json
Base = frequent + common categories (866), novel = rare (337), from each category's "frequency".
Validation uses the official lvis_v1_val.json unchanged.
"""

import argparse
import logging
import os

from detectron2.utils.logger import setup_logger

from ezsd.data.datasets.split_json import keep_categories, read_json, write_json
from ezsd.utils.errors import UserInputError, exit_on_user_error


@exit_on_user_error
def main():
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--input", default=os.path.join(root, "lvis", "lvis_v1_train.json"))
    parser.add_argument(
        "--output", default=os.path.join(root, "lvis", "lvis_v1_train_ovd_base.json")
    )
    args = parser.parse_args()
    setup_logger(name="ezsd", abbrev_name="ezsd").setLevel(logging.INFO)

    data = read_json(args.input)
    base = [c["name"] for c in data["categories"] if c.get("frequency") in ("f", "c")]
    if not base:
        raise UserInputError(f'{args.input}: no category has an LVIS "frequency" of f or c')
    # LVIS evaluation and the loader need the full category table, so only boxes are removed.
    write_json(args.output, keep_categories(data, base, args.input, drop_other_categories=False))


if __name__ == "__main__":
    main()
