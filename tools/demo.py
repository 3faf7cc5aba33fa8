#!/usr/bin/env python
"""Detect objects in images with a trained EZSD model, for a dataset's classes or your own names.

    tools/demo.py --config-file output/demo/train/config.yaml --vocabulary shapes_ovd_val \
        --input output/demo/datasets/shapes_ovd/val --output output/demo/vis
    tools/demo.py --config-file CFG --input 'images/*.jpg' --output vis \
        --custom-vocabulary lemon,lime,banana --opts MODEL.WEIGHTS model_final.pth

`--help` lists the options; the demo is ezsd.demo (inference: ezsd.predictor).
"""

from ezsd.demo import argument_parser, run_demo
from ezsd.utils.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None):
    from detectron2.utils.logger import setup_logger

    args = argument_parser().parse_args(argv)
    setup_logger(name="ezsd")
    run_demo(
        args.config_file,
        args.input,
        args.output,
        vocabulary=args.vocabulary,
        custom_vocabulary=args.custom_vocabulary,
        confidence_threshold=args.confidence_threshold,
        cpu=args.cpu,
        cache_dir=args.cache_dir,
        opts=args.opts,
    )


if __name__ == "__main__":
    main()
