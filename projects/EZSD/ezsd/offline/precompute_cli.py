"""Pre-compute EZSD's CLIP proposals and distillation targets (region features) of a training split.

Stages: `proposals` (CLIP-scored candidate boxes, any registered dataset), `features` (base GT +
kept proposals embedded by the re-normalized CLIP, a training split only), `all` (both).
Resumable (skips finished images), sharded (--num-shards/--shard-id) and torch.distributed-aware
(one shard per rank). Output layout: ezsd/offline/pipeline.py; measured figures: docs/PRECOMPUTE.md.

Examples:
  # ShapesOVD, everything in one go (exhaustive CLIP proposals on the shapes anchor preset)
  tools/precompute_clip_features.py --dataset shapes_ovd_train \\
      --clip weights/shapes_clip_renorm.pt --anchor-preset shapes --output features/shapes_renorm
  # the fast proposals (about 12x fewer CLIP crop encodings, lower novel recall)
  tools/precompute_clip_features.py ... --proposal-mode fast
  # candidates from an RPN-only model trained on the base boxes, ranked by CLIP (15x fewer
  # encodings at 1000 candidates, higher novel recall than exhaustive: docs/PRECOMPUTE.md)
  tools/train_net.py --config-file configs/ShapesOVD/rpn_R_18_FPN.yaml OUTPUT_DIR output/rpn
  tools/precompute_clip_features.py ... --proposal-mode rpn \
      --rpn-config configs/ShapesOVD/rpn_R_18_FPN.yaml --rpn-weights output/rpn/model_final.pth
  # COCO on 4 GPUs of one node (each rank one shard); or 15 jobs with --num-shards 15 --shard-id i
  torchrun --nproc-per-node 4 tools/precompute_clip_features.py --dataset coco_ovd_train \\
      --clip coco_clip_renorm.pt --drop-base-argmax --device cuda --fp16 --output features/coco
"""

import argparse
import logging

from ezsd.clip import add_prompt_arguments, prompts_from_args
from ezsd.offline.anchors import ANCHOR_PRESETS
from ezsd.offline.pipeline import STAGES, PrecomputeConfig, measure_ceiling, run_precompute
from ezsd.offline.proposals import MODES, ProposalSettings
from ezsd.offline.region_features import FeatureSettings
from ezsd.utils.errors import UserInputError, exit_on_user_error

logger = logging.getLogger("ezsd.precompute")

__all__ = ["parse_args", "build_config", "main"]


def _floats(text):
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got '{text}'"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got '{text}'")
    return values


def parse_args(argv=None):
    formatter = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    p.add_argument(
        "--dataset", required=True, help="registered dataset (features: a training split)"
    )
    p.add_argument("--output", required=True, help="feature store folder (regions/, manifest.json)")
    p.add_argument("--stage", choices=STAGES, default="all")
    p.add_argument(
        "--clip", help="CLIP (file or OpenAI name) that makes the targets: the re-normalized one"
    )
    p.add_argument("--proposal-clip", help="CLIP that scores proposals (default: --clip)")
    p.add_argument("--proposals", help="proposal folder (default: OUTPUT/proposals)")
    add_prompt_arguments(p)

    g = p.add_argument_group("CLIP proposals")
    g.add_argument(
        "--proposal-mode",
        choices=MODES,
        default="exhaustive",
        help="exhaustive (the paper's), fast or rpn: CLIP proposals; random: the "
        "ablation's baseline (vild_like), random regions, not CLIP proposals",
    )
    g.add_argument(
        "--anchor-preset",
        choices=sorted(ANCHOR_PRESETS),
        default="paper",
        help="paper: stride 32, sizes 32..512, ratios 0.5/1/2; shapes: stride 8, "
        "sizes 16..128 (ShapesOVD's 256 px images)",
    )
    g.add_argument("--anchor-stride", type=int, help="overrides the preset")
    g.add_argument(
        "--anchor-sizes", type=_floats, help="e.g. 32,64,128,256,512 (overrides the preset)"
    )
    g.add_argument(
        "--anchor-ratios", type=_floats, help="height/width, e.g. 0.5,1,2 (overrides the preset)"
    )
    g.add_argument("--proposal-nms", type=float, default=0.7, help="class-agnostic NMS IoU")
    g.add_argument("--proposal-top-k", type=int, default=1000, help="proposals kept per image")
    g.add_argument(
        "--proposal-logit-scale",
        type=float,
        help="softmax scale of the proposal scores (default: the CLIP's own learned "
        "scale, 100 for OpenAI's CLIPs as in the paper)",
    )
    g.add_argument(
        "--fast-coarse-stride",
        type=float,
        default=ProposalSettings.fast_coarse_stride,
        help="fast mode: coarse stride of a size = max(stride, this * size)",
    )
    g.add_argument(
        "--fast-rounds",
        type=int,
        default=ProposalSettings.fast_rounds,
        help="fast mode: refinement rounds",
    )
    g.add_argument(
        "--fast-seeds",
        type=int,
        default=ProposalSettings.fast_seeds,
        help="fast mode: boxes refined per round (8 neighbours each)",
    )
    g.add_argument(
        "--fast-step",
        type=float,
        default=ProposalSettings.fast_step,
        help="fast mode: first round's shift as a fraction of the box side",
    )
    g.add_argument(
        "--rpn-config",
        help="rpn mode: config of an RPN-only model (ProposalNetwork) "
        "trained on the base boxes, e.g. configs/ShapesOVD/rpn_R_18_FPN.yaml",
    )
    g.add_argument(
        "--rpn-weights", help="rpn mode: its checkpoint (tools/train_net.py's model_final.pth)"
    )
    g.add_argument(
        "--rpn-candidates",
        type=int,
        default=ProposalSettings.rpn_candidates,
        help="rpn mode: RPN boxes scored by CLIP per image",
    )

    g = p.add_argument_group("region features")
    g.add_argument(
        "--gt-iou", type=float, default=0.3, help="drop proposals with IoU >= this to a base GT box"
    )
    g.add_argument(
        "--gt-inside",
        type=float,
        default=0.0,
        help="also drop proposals with at least this share of their area inside one base GT box "
        "(parts of base objects; not the paper's); 0 = off",
    )
    g.add_argument(
        "--drop-base-argmax",
        action="store_true",
        help="drop proposals whose CLIP argmax is a base class (the official COCO setting)",
    )
    g.add_argument("--regions-per-image", type=int, default=300, help="proposals kept per image")

    g = p.add_argument_group("running")
    g.add_argument("--num-shards", type=int, default=1)
    g.add_argument("--shard-id", type=int, default=0)
    g.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip images whose output file exists (default: on)",
    )
    g.add_argument(
        "--strict", action="store_true", help="fail on an unreadable image instead of skipping it"
    )
    g.add_argument("--max-images", type=int, help="the first N images (by id) only")
    g.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per rank under torchrun)")
    g.add_argument("--fp16", action="store_true", help="half-precision CLIP (CUDA)")
    g.add_argument("--batch-size", type=int, default=256, help="crops per CLIP forward")
    g.add_argument(
        "--measure-ceiling",
        action="store_true",
        help="afterwards, time the CLIP image encoder alone at --batch-size (regions/s)",
    )
    g.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.num_shards < 1 or not 0 <= args.shard_id < args.num_shards:
        p.error(f"--shard-id must be in [0, --num-shards): {args.shard_id} of {args.num_shards}")
    return args


def build_config(args):
    anchors = dict(ANCHOR_PRESETS[args.anchor_preset])
    for key, value in (
        ("stride", args.anchor_stride),
        ("sizes", args.anchor_sizes),
        ("ratios", args.anchor_ratios),
    ):
        if value is not None:
            anchors[key] = value
    if args.rpn_candidates < 1:
        raise UserInputError(f"--rpn-candidates must be positive, not {args.rpn_candidates}")
    if not 0 <= args.gt_inside <= 1:
        raise UserInputError(f"--gt-inside must be in [0, 1], not {args.gt_inside}")
    if anchors["stride"] <= 0:
        raise UserInputError(f"--anchor-stride must be positive, not {anchors['stride']}")
    proposal = ProposalSettings(
        mode=args.proposal_mode,
        stride=anchors["stride"],
        sizes=tuple(anchors["sizes"]),
        ratios=tuple(anchors["ratios"]),
        nms_thresh=args.proposal_nms,
        top_k=args.proposal_top_k,
        logit_scale=args.proposal_logit_scale,
        fast_coarse_stride=args.fast_coarse_stride,
        fast_rounds=args.fast_rounds,
        fast_seeds=args.fast_seeds,
        fast_step=args.fast_step,
        rpn_candidates=args.rpn_candidates,
    )
    features = FeatureSettings(
        gt_iou_thresh=args.gt_iou,
        gt_inside_thresh=args.gt_inside,
        drop_base_argmax=args.drop_base_argmax,
        top_k=args.regions_per_image,
    )
    prompts = prompts_from_args(args)
    return PrecomputeConfig(
        dataset=args.dataset,
        output=args.output,
        stage=args.stage,
        clip=args.clip,
        proposal_clip=args.proposal_clip,
        proposals_dir=args.proposals,
        prompts=prompts,
        proposal=proposal,
        rpn_config=args.rpn_config,
        rpn_weights=args.rpn_weights,
        features=features,
        num_shards=args.num_shards,
        shard_id=args.shard_id,
        resume=args.resume,
        strict=args.strict,
        max_images=args.max_images,
        device=args.device,
        fp16=args.fp16,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args)
    summary = run_precompute(cfg)
    s = summary
    rate = s["regions"] / max(s["seconds"], 1e-9)
    encodings = s["proposal_encodings"] / max(s["images"] - s["resumed"] - s["skipped"], 1)
    print(
        f"{s['shard']}: {s['images']} images ({s['resumed']} already done, "
        f"{s['skipped']} unreadable) "
        f"in {s['seconds']:.1f}s; {s['regions']} regions ({rate:.1f}/s); "
        f"{encodings:.0f} proposal crop encodings per computed image; "
        + (
            "manifest written under "
            f"{s['output'] if cfg.stage != 'proposals' else s['proposals_dir']}"
            if s["merged"]
            else "manifest left to the last shard"
        )
    )
    if args.measure_ceiling:
        from ezsd.clip import load_clip

        model = load_clip(cfg.clip or cfg.proposal_clip, args.device, args.fp16)
        ceiling = measure_ceiling(model, args.batch_size)
        print(
            f"ceiling (CLIP image encoder alone, batch {args.batch_size}): "
            f"{ceiling:.1f} regions/s; "
            f"tool/ceiling = {rate / ceiling:.2f}"
        )
    return summary
