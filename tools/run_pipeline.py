#!/usr/bin/env python
"""Run EZSD end to end on ShapesOVD with the small CLIP, stage by stage, with the real tools.

    tools/run_pipeline.py --output-dir output/demo [--seed N] [--novel a,b,c] [--variant V]

Writes OUTPUT_DIR/results.json (the open-vocabulary AP figures and every input that decides
them). `--help` lists the stages and the options; the pipeline is ezsd.shapes_pipeline.
"""

from ezsd.shapes_pipeline import main

if __name__ == "__main__":
    main()
