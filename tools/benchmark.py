#!/usr/bin/env python
"""Benchmarks of EZSD's pipeline, each figure measured side by side in one process.

    tools/benchmark.py --output-dir DIR [--device cuda] [--real-size] [size flags]

Writes DIR/benchmarks.json and prints the figures next to their goals: the features stage against
the CLIP encoder alone, the fast and exhaustive (and rpn) proposal modes, EZSD's training step
against a plain Faster R-CNN, bytes per stored region. `--help` lists the options; the benchmarks
are ezsd.benchmark. Figures and their commands: docs/BENCHMARKS.md.
"""

import sys

from ezsd.benchmark import parse_args, run_benchmarks
from ezsd.utils.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(map(str, argv))
    return run_benchmarks(args, command=" ".join(["tools/benchmark.py", *argv]))


if __name__ == "__main__":
    from detectron2.utils.logger import setup_logger

    setup_logger(name="ezsd", abbrev_name="ezsd")
    main()
