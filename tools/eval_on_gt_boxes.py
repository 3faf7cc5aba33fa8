#!/usr/bin/env python
"""A trained EZSD detector classifying the ground-truth boxes of an evaluation split (given to its
ROI heads as the proposals): AP50/AP on base, novel and all classes, as JSON.

    tools/eval_on_gt_boxes.py --config-file output/demo/train/config.yaml \
        MODEL.WEIGHTS output/demo/train/model_final.pth MODEL.DEVICE cpu

`--help` lists the options; the evaluation is ezsd.evaluation.gt_boxes.
"""

from detectron2.utils.logger import setup_logger

from ezsd.evaluation.gt_boxes import main
from ezsd.utils.errors import exit_on_user_error

if __name__ == "__main__":
    # here, not in main(): tests call main() in-process
    setup_logger(name="ezsd", abbrev_name="ezsd")
    exit_on_user_error(main)()
