"""The paper's ablation on ShapesOVD, behind tools/run_ablation.py: running the variants of
ezsd.shapes_pipeline (which owns VARIANTS, what each switches on) through it, and their table
and efficiency curve. `main(argv)` is the command line; its help follows.

The paper's ablation on ShapesOVD: every variant of tools/run_pipeline.py on the same data,
sharing the stages they have in common (data, re-normalized CLIP, text embeddings, features).

    tools/run_ablation.py --output-dir output/ablation [--max-iter N] [--eval-period N]

Writes OUTPUT_DIR/ablation.json (every variant's results.json), OUTPUT_DIR/ablation.md (the
table, with the paper's COCO figures quoted next to it) and OUTPUT_DIR/efficiency_curve.png
(novel AP50 against training iterations; needs --eval-period). Each variant runs in
OUTPUT_DIR/<variant>/ and the shared stages in OUTPUT_DIR/shared/; a re-run resumes.
"""

import argparse
import json
import os
import sys

from ezsd.shapes_pipeline import VARIANTS, run_pipeline
from ezsd.shapes_pipeline import parse_args as pipeline_arguments
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.file_io import atomic_write, atomic_write_json

__all__ = [
    "VARIANTS",
    "ADDS",
    "EXPECTED_ORDER",
    "parse_args",
    "run_ablation",
    "markdown_table",
    "plot_curves",
    "main",
]

# What each variant adds to the one above it, and the paper's COCO novel-AP50 gain for it
# (quoted from the paper, EZSD arXiv 2303.12145, ablation table; "-" where it gives none).
ADDS = {
    "no_distill": ("text-embedding classifier, no distillation", "-"),
    "vild_like": ("+ distillation of raw CLIP on random regions", "-"),
    "renorm": ("+ re-normalized CLIP", "+11.1 (quoted)"),
    "renorm_clip_proposals": ("+ CLIP proposals as distilled regions", "+5.8 (quoted)"),
    "full": ("+ semantic-based regression (EZSD)", "-"),
}
EXPECTED_ORDER = list(VARIANTS)  # the paper's order, weakest first


def parse_args(argv=None):
    # allow_abbrev off: run_pipeline.py's --variant must not pass for an abbreviated --variants.
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter, allow_abbrev=False
    )
    p.add_argument("--output-dir", required=True)
    p.add_argument(
        "--variants",
        default=",".join(EXPECTED_ORDER),
        help="comma-separated subset of: " + ",".join(VARIANTS),
    )
    p.add_argument(
        "--eval-period",
        type=int,
        default=0,
        help="evaluate every this many iterations (for the efficiency curve)",
    )
    args, pipeline_args = p.parse_known_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        raise UserInputError(f"--variants: unknown {unknown}; choose from {','.join(VARIANTS)}")
    for flag in ("--output-dir", "--shared-dir", "--variant"):
        if flag in pipeline_args:
            raise UserInputError(f"{flag} is set by run_ablation.py per variant")
    args.pipeline_args = pipeline_args  # passed on to run_pipeline.py (--seed, --max-iter, ...)
    return args


def run_variant(args, variant):
    """One variant through ezsd.shapes_pipeline (its stages shared under OUTPUT_DIR/shared);
    returns its results.json. A failing stage is reported as the pipeline reports it, then as
    the variant's failure."""
    out = os.path.join(args.output_dir, variant)
    argv = [
        "--output-dir",
        out,
        "--shared-dir",
        os.path.join(args.output_dir, "shared"),
        "--variant",
        variant,
        "--eval-period",
        str(args.eval_period),
        # the paper's classification (the pipeline's default adds novel names as negatives)
        "--novel-negatives-inside",
        "0",
        *args.pipeline_args,
    ]
    print(f"[ezsd ablation] {variant}: tools/run_pipeline.py {' '.join(argv)}", flush=True)
    try:
        results = run_pipeline(pipeline_arguments(argv))
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise UserInputError(f"variant '{variant}' failed (its log is under {out}/logs)") from None
    print(json.dumps(results, indent=1), flush=True)
    return results


def markdown_table(results):
    lines = [
        "| variant | adds | AP50 base | AP50 novel | AP50 all | AP novel "
        "| paper: novel AP50 gain |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for variant, r in results.items():
        adds, paper = ADDS[variant]
        lines.append(
            f"| `{variant}` | {adds} | {r['AP50_base']:.1f} | {r['AP50_novel']:.1f} | "
            f"{r['AP50_all']:.1f} | {r['AP_novel']:.1f} | {paper} |"
        )
    measured = sorted(results, key=lambda v: results[v]["AP50_novel"])
    expected = [v for v in EXPECTED_ORDER if v in results]
    lines.append("")
    lines.append(
        f"Novel AP50 order, lowest first: {' < '.join(measured)}"
        + (
            " (the expected order)"
            if measured == expected
            else f" (expected {' < '.join(expected)})"
        )
    )
    return "\n".join(lines) + "\n"


def plot_curves(results, path):
    """Novel AP50 against iterations for every variant that has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, r in results.items():
        if len(r.get("curve", [])) > 1:
            iters, _, novel = zip(*r["curve"])
            ax.plot(iters, novel, marker="o", label=variant)
    ax.set_xlabel("training iteration")
    ax.set_ylabel("novel AP50 (ShapesOVD val)")
    ax.set_title("Training efficiency")
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def run_ablation(output_dir, variants, eval_period=0, pipeline_args=(), command=None):
    """Run every variant (sharing OUTPUT_DIR/shared); write ablation.json, ablation.md and, with
    `eval_period`, efficiency_curve.png; return the table (markdown)."""
    args = argparse.Namespace(
        output_dir=output_dir,
        variants=list(variants),
        eval_period=eval_period,
        pipeline_args=list(pipeline_args),
    )
    os.makedirs(output_dir, exist_ok=True)
    results = {v: run_variant(args, v) for v in args.variants}
    atomic_write_json(
        os.path.join(output_dir, "ablation.json"),
        {"command": command or sys.argv, "variants": results},
        indent=1,
    )
    table = markdown_table(results)
    with atomic_write(os.path.join(output_dir, "ablation.md"), "w") as f:
        f.write(table)
    if eval_period:
        plot_curves(results, os.path.join(output_dir, "efficiency_curve.png"))
    return table


@exit_on_user_error
def main(argv=None):
    """The command line: `parse_args(argv)`, then `run_ablation`; prints the table."""
    args = parse_args(argv)
    print(run_ablation(args.output_dir, args.variants, args.eval_period, args.pipeline_args))
