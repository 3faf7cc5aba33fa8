#!/usr/bin/env python
"""Detect objects in images with a trained EZSD model, for a dataset's classes or your own names.

    tools/demo.py --config-file output/demo/train/config.yaml --vocabulary shapes_ovd_val \
        --input output/demo/datasets/shapes_ovd/val --output output/demo/vis
    tools/demo.py --config-file CFG --input 'images/*.jpg' --output vis \
        --custom-vocabulary lemon,lime,banana --opts MODEL.WEIGHTS model_final.pth

`--help` lists the options; the demo is ezsd.demo (inference: ezsd.predictor).
"""

from detectron2.utils.logger import setup_logger

from ezsd.demo import main

if __name__ == "__main__":
    setup_logger(name="ezsd")  # here, not in main(): tests call main() in-process
    main()
