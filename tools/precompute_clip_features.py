#!/usr/bin/env python
"""Pre-compute EZSD's CLIP proposals and distillation targets (region features) of a training split.

    tools/precompute_clip_features.py --dataset shapes_ovd_train --clip CLIP --output DIR [...]

`--help` lists the stages, the options and examples; the command line is
ezsd.offline.precompute_cli, the run ezsd.offline.pipeline.
"""

from detectron2.utils.logger import setup_logger

from ezsd.offline.precompute_cli import main

if __name__ == "__main__":
    # here, not in main(): tests call main() in-process
    setup_logger(name="ezsd", abbrev_name="ezsd")
    main()
