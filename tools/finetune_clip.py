#!/usr/bin/env python
"""CLIP re-normalization: fine-tune only CLIP's LayerNorms on base-class GT crops (EZSD).

    tools/finetune_clip.py --clip CLIP --train-dataset TRAIN --val-dataset VAL --output-dir DIR

Writes DIR/clip_renormalized.pt and DIR/renorm_report.json. `--help` lists the options and
examples; the command line is ezsd.offline.renormalization_cli, the method
ezsd.offline.renormalization.
"""

from detectron2.utils.logger import setup_logger

from ezsd.offline.renormalization_cli import main

if __name__ == "__main__":
    # here, not in main(): tests call main() in-process
    setup_logger(name="ezsd", abbrev_name="ezsd")
    main()
