#!/usr/bin/env python
"""Train and evaluate an EZSD detector (detectron2's command line; the trainer is ezsd.engine).

tools/train_net.py --config-file configs/ShapesOVD/ezsd_R_18_FPN.yaml
tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
tools/train_net.py --config-file CFG --num-gpus 8            # multi-GPU through launch
tools/train_net.py --config-file CFG --num-gpus 2 MODEL.DEVICE cpu   # 2 CPU processes (gloo)
"""

from detectron2.engine import default_argument_parser

from ezsd.engine import launch_main

if __name__ == "__main__":
    launch_main(default_argument_parser(epilog=__doc__).parse_args())
