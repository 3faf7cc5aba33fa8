#!/usr/bin/env python
"""The paper's ablation on ShapesOVD: every variant of tools/run_pipeline.py on the same data,
sharing the stages they have in common (data, re-normalized CLIP, text embeddings, features).

    tools/run_ablation.py --output-dir output/ablation [--max-iter N] [--eval-period N]

Writes OUTPUT_DIR/ablation.json, ablation.md (the table, with the paper's COCO figures quoted next
to it) and efficiency_curve.png (with --eval-period). `--help` lists the options; the variants and
the runner are ezsd.ablation.
"""

import sys

from ezsd.ablation import parse_args, run_ablation
from ezsd.utils.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    print(
        run_ablation(
            args.output_dir,
            args.variants,
            args.eval_period,
            args.pipeline_args,
            command=sys.argv if argv is None else ["tools/run_ablation.py", *argv],
        )
    )


if __name__ == "__main__":
    main()
