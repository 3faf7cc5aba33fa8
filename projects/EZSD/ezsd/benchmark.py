"""The benchmarks behind tools/benchmark.py. `main(argv)` is the command line; its help follows.

Benchmarks of EZSD's pipeline, each figure measured side by side in one process.

    tools/benchmark.py --output-dir DIR [--device cuda] [--real-size] [size flags]

Writes DIR/benchmarks.json (atomically) and prints a table of the figures next to their goals:

  features    whole features stage of the pre-computation (ezsd.offline.pipeline: read image,
              crop 1.2x, encode, write) vs the CLIP image encoder alone on pre-cropped tensors
              at the same batch size, timed before and after it (features_to_ceiling_ratio, >= 0.8)
  proposals   CLIP crop encodings per image and novel recall@300 (IoU 0.5) on ShapesOVD val,
              fast vs exhaustive mode (>= 10x fewer crops, recall within 1 point); with
              --rpn-weights also the rpn mode (candidates of that RPN-only model)
  training    seconds per iteration of EZSD (distillation on, targets read by EZSDDatasetMapper)
              vs the same detectron2 Faster R-CNN without distillation and embedding head
              (GeneralizedRCNN + StandardROIHeads + FastRCNNConvFCHead with NUM_CONV = shared +
              branch convs and NUM_FC = branch FCs of the same widths), everything else from the
              same config; iterations interleaved after warm-up (train_iter_ratio, <= 1.2) and
              EZSD's data-loading share of its iteration (data_time_share, < 0.05); with
              --compare-opts also EZSD with those options, interleaved with the two
              (train_iter_ratio_compared: its iteration time over EZSD's)
  storage     on-disk bytes per stored region (.npz), at the CLIP's embedding dimension and at
              512-d, next to the official EZSD code's layout (a JSON text file per image with
              boxes and embedding lists; one such file is written for the comparison)

Default: ShapesOVD generated into DIR (24 train / 24 val images, 256 px), the bundled small CLIP
(weights/shapes_clip_vit.pt) and configs/ShapesOVD/ezsd_R_18_FPN.yaml. `--real-size`: R50-FPN at
1333x800 (configs/Base-EZSD-RCNN-FPN.yaml without masks, 800 px ShapesOVD images resized to
800x1333) and a ViT-B/32-shaped CLIP with random weights (for GPU runs: `--device cuda --fp16`).
Figures and their commands: docs/BENCHMARKS.md.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time

import numpy as np
import torch

from ezsd.clip import (
    DEFAULT_PROMPTS,
    clip_checkpoint_hash,
    encode_regions,
    load_clip,
    save_clip_checkpoint,
    save_text_embeddings,
    text_embeddings,
)
from ezsd.config import load_ezsd_config
from ezsd.data.datasets import register_ovd_dataset
from ezsd.data.feature_store import FeatureStore, region_file, write_image_regions
from ezsd.data.shapes_ovd import CATEGORY_NAMES, DEFAULT_NOVEL_CLASSES, generate_shapes_ovd
from ezsd.offline.anchors import ANCHOR_PRESETS
from ezsd.offline.pipeline import PrecomputeConfig, measure_ceiling, run_precompute
from ezsd.offline.proposals import ProposalSettings
from ezsd.offline.recall import proposal_recall
from ezsd.utils.checkout import checkout_path
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.file_io import atomic_write, atomic_write_json

__all__ = ["FIGURES", "RATIOS", "argument_parser", "parse_args", "run_benchmarks", "main", "table"]

# The benchmark runs in a source checkout: its defaults are the repository's bundled files.
SMALL_CLIP = checkout_path("weights", "shapes_clip_vit.pt")
SHAPES_CONFIG = checkout_path("configs", "ShapesOVD", "ezsd_R_18_FPN.yaml")
REAL_CONFIG = checkout_path("configs", "Base-EZSD-RCNN-FPN.yaml")
RPN_CONFIG = checkout_path("configs", "ShapesOVD", "rpn_R_18_FPN.yaml")

TRAIN, VAL = "ezsd_benchmark_train", "ezsd_benchmark_val"

# Every figure of benchmarks.json, its goal (for the table) and, for ratios, its parts.
FIGURES = {
    "features_regions_per_s": "",
    "encoder_ceiling_regions_per_s": "",
    "features_to_ceiling_ratio": ">= 0.8",
    "proposals_fast_crops_per_image": "",
    "proposals_exhaustive_crops_per_image": "",
    "proposals_crop_reduction": ">= 10",
    "novel_recall300_fast": "",
    "novel_recall300_exhaustive": "",
    "proposals_rpn_crops_per_image": "",
    "proposals_rpn_crop_reduction": ">= 10",
    "novel_recall300_rpn": "",
    "train_iter_s_ezsd": "",
    "train_iter_s_vanilla": "",
    "train_iter_ratio": "<= 1.2",
    "train_iter_s_ezsd_compared": "",
    "train_iter_ratio_compared": "",
    "data_time_s_ezsd": "",
    "data_time_share": "< 0.05",
    "bytes_per_region": "",
    "bytes_per_region_512": "<= 1100",
    "official_json_bytes_per_region": "",
    "official_json_bytes_per_region_512": "",
}
RATIOS = {  # ratio: (numerator, denominator)
    "features_to_ceiling_ratio": ("features_regions_per_s", "encoder_ceiling_regions_per_s"),
    "proposals_crop_reduction": (
        "proposals_exhaustive_crops_per_image",
        "proposals_fast_crops_per_image",
    ),
    "proposals_rpn_crop_reduction": (
        "proposals_exhaustive_crops_per_image",
        "proposals_rpn_crops_per_image",
    ),
    "train_iter_ratio": ("train_iter_s_ezsd", "train_iter_s_vanilla"),
    "train_iter_ratio_compared": ("train_iter_s_ezsd_compared", "train_iter_s_ezsd"),
    "data_time_share": ("data_time_s_ezsd", "train_iter_s_ezsd"),
}


def log(message):
    print(f"[benchmark] {message}", flush=True)


def argument_parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--output-dir", required=True, help="where data, features and benchmarks.json go"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--fp16", action="store_true", help="half-precision CLIP (CUDA)")
    p.add_argument(
        "--real-size",
        action="store_true",
        help="R50-FPN at 1333x800 and a random ViT-B/32-shaped CLIP (for GPU runs)",
    )
    p.add_argument(
        "--clip",
        help="CLIP file (default: the bundled small CLIP; --real-size: a "
        "random ViT-B/32-shaped one written to DIR)",
    )
    p.add_argument(
        "--config",
        help="detector config (default: configs/ShapesOVD/ezsd_R_18_FPN.yaml; "
        "--real-size: configs/Base-EZSD-RCNN-FPN.yaml without masks)",
    )
    g = p.add_argument_group("sizes")
    g.add_argument("--num-train", type=int, default=24, help="generated training images")
    g.add_argument("--num-val", type=int, default=24, help="generated validation images")
    g.add_argument(
        "--image-size", type=int, help="generated image side (default 256; --real-size 800)"
    )
    g.add_argument(
        "--proposal-images",
        type=int,
        default=8,
        help="validation images scored in both proposal modes (exhaustive: ~15k crops each)",
    )
    g.add_argument(
        "--anchor-preset",
        choices=sorted(ANCHOR_PRESETS),
        help="proposal candidates (default: shapes; --real-size: paper)",
    )
    g.add_argument("--anchor-stride", type=int, help="overrides the preset's stride")
    g.add_argument(
        "--rpn-weights",
        help="also measure the rpn proposal mode with this RPN-only "
        "checkpoint (e.g. the rpn stage of tools/run_pipeline.py)",
    )
    g.add_argument("--rpn-config", default=RPN_CONFIG, help="its config")
    g.add_argument("--rpn-candidates", type=int, default=300, help="rpn mode: candidates per image")
    g.add_argument(
        "--regions-per-image", type=int, default=300, help="proposals kept per image (features)"
    )
    g.add_argument("--batch-size", type=int, default=256, help="CLIP crops per forward")
    g.add_argument(
        "--feature-chunks",
        type=int,
        default=4,
        help="runs the features stage is split into, the encoder alone timed between them",
    )
    g.add_argument(
        "--ceiling-batches",
        type=int,
        default=2,
        help="encoder-alone batches timed before, between and after the feature runs",
    )
    g.add_argument(
        "--ims-per-batch", type=int, help="training batch (default: the config's; --real-size 4)"
    )
    g.add_argument(
        "--warmup-iters", type=int, default=2, help="untimed iterations of each detector"
    )
    g.add_argument(
        "--iters", type=int, default=6, help="timed iterations of each detector (interleaved)"
    )
    g.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="data-loader workers (0: loading runs in the timed loop, an upper bound)",
    )
    g.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--skip",
        default="",
        help="comma-separated parts not to run (features, proposals, "
        "train, storage); their figures are absent",
    )
    g.add_argument(
        "--compare-opts",
        nargs="+",
        default=[],
        metavar="KEY VALUE",
        help="also time EZSD with these config options on top of --opts (e.g. a cheaper "
        "setting), interleaved with the two others: train_iter_ratio_compared",
    )
    p.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config options for both detectors, KEY VALUE ...",
    )
    return p


def parse_args(argv=None):
    """The command line's arguments, checked, with the defaults that depend on --real-size."""
    p = argument_parser()
    args = p.parse_args(argv)
    for name in (
        "num_train",
        "num_val",
        "proposal_images",
        "batch_size",
        "feature_chunks",
        "ceiling_batches",
        "iters",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - {"features", "proposals", "train", "storage"}
    if unknown:
        p.error(f"--skip: unknown parts {sorted(unknown)}")
    if len(args.compare_opts) % 2:
        p.error(f"--compare-opts: KEY VALUE pairs expected, got {args.compare_opts}")
    if args.image_size is None:
        args.image_size = 800 if args.real_size else 256
    if args.anchor_preset is None:
        args.anchor_preset = "paper" if args.real_size else "shapes"
    if args.ims_per_batch is None and args.real_size:
        args.ims_per_batch = 4
    return args


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------ set-up


def prepare_data(args, out):
    """ShapesOVD in OUT/datasets/shapes_ovd (reused when made with the same arguments), registered
    as ezsd_benchmark_{train,val}."""
    folder = os.path.join(out, "datasets", "shapes_ovd")
    stamp = dict(
        seed=args.seed, num_train=args.num_train, num_val=args.num_val, image_size=args.image_size
    )
    stamp_file = os.path.join(folder, "benchmark_stamp.json")
    try:
        with open(stamp_file) as f:
            reuse = json.load(f) == stamp
    except (OSError, ValueError):
        reuse = False
    if reuse:
        log(f"data: reusing {folder}")
    else:
        log(
            f"data: generating ShapesOVD ({args.num_train} train / {args.num_val} val images, "
            f"{args.image_size} px) in {folder}"
        )
        shutil.rmtree(folder, ignore_errors=True)
        generate_shapes_ovd(
            folder,
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
        )
        atomic_write_json(stamp_file, stamp)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    base = [c for c in CATEGORY_NAMES if c not in DEFAULT_NOVEL_CLASSES]
    for name, split, novel_annotated in ((TRAIN, "train", False), (VAL, "val", True)):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_ovd_dataset(
            name,
            os.path.join(folder, f"{split}.json"),
            os.path.join(folder, split),
            base,
            DEFAULT_NOVEL_CLASSES,
            novel_annotated=novel_annotated,
            thing_classes=CATEGORY_NAMES if novel_annotated else base,
        )
    return base, list(DEFAULT_NOVEL_CLASSES)


def random_vit_b32_clip(path, seed):
    """A CLIP of ViT-B/32's shapes (224 px, patch 32, 12 x 768 vision, 12 x 512 text, 512-d) with
    random weights, written where load_clip reads it (build_model re-infers the shapes)."""
    from clip.model import CLIP

    if not os.path.exists(path):
        torch.manual_seed(seed)
        model = CLIP(
            embed_dim=512,
            image_resolution=224,
            vision_layers=12,
            vision_width=768,
            vision_patch_size=32,
            context_length=77,
            vocab_size=49408,
            transformer_width=512,
            transformer_heads=8,
            transformer_layers=12,
        )
        save_clip_checkpoint(model, path)
    return path


def proposal_settings(args, mode):
    anchors = dict(ANCHOR_PRESETS[args.anchor_preset])
    if args.anchor_stride:
        anchors["stride"] = args.anchor_stride
    return ProposalSettings(
        mode=mode,
        stride=anchors["stride"],
        sizes=tuple(anchors["sizes"]),
        ratios=tuple(anchors["ratios"]),
        rpn_candidates=args.rpn_candidates,
    )


def precompute(args, clip, output, stage, dataset, mode, max_images, resume=False):
    from ezsd.offline.region_features import FeatureSettings

    cfg = PrecomputeConfig(
        dataset=dataset,
        output=output,
        stage=stage,
        clip=clip,
        proposal=proposal_settings(args, mode),
        features=FeatureSettings(top_k=args.regions_per_image),
        resume=resume,
        max_images=max_images,
        device=args.device,
        fp16=args.fp16,
        batch_size=args.batch_size,
        progress=True,
        rpn_config=args.rpn_config,
        rpn_weights=args.rpn_weights,
    )
    return run_precompute(cfg)


# ---------------------------------------------------------------------------------- figures


def bench_features(args, clip, out, fig, ctx):
    """Features stage (the whole code path) vs the encoder alone. The images go through the stage
    in --feature-chunks runs (each resumes the previous: only new images are computed), with the
    encoder alone timed before, between and after them, so that both see the same machine load."""
    from detectron2.data import DatasetCatalog

    folder = os.path.join(out, "features")
    shutil.rmtree(folder, ignore_errors=True)
    log("features: CLIP proposals of the training images (fast mode; untimed, needed as input)")
    precompute(args, clip, folder, "proposals", TRAIN, "fast", None)
    num_images = len(DatasetCatalog.get(TRAIN))
    chunks = max(1, min(args.feature_chunks, num_images))
    model = load_clip(clip, args.device, args.fp16)
    ceilings, ceilings_cpu = [], []

    def ceiling():
        cpu = time.process_time()
        ceilings.append(measure_ceiling(model, args.batch_size, args.ceiling_batches))
        # measure_ceiling runs one untimed warm-up batch first
        ceilings_cpu.append(
            args.batch_size * (args.ceiling_batches + 1) / (time.process_time() - cpu)
        )
        log(
            f"features: encoder alone ({args.ceiling_batches} batches of {args.batch_size}): "
            f"{ceilings[-1]:.1f} regions/s"
        )

    ceiling()
    seconds = cpu_seconds = 0.0
    regions = 0
    for i in range(chunks):
        upto = round(num_images * (i + 1) / chunks)
        log(
            "features: the features stage (read image, crop 1.2x, encode, write), "
            f"images up to {upto} ..."
        )
        _sync(args.device)
        start, cpu = time.perf_counter(), time.process_time()
        summary = precompute(args, clip, folder, "features", TRAIN, "fast", upto, resume=i > 0)
        _sync(args.device)
        seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu
        regions += summary["regions"]
        ceiling()
    fig["features_regions_per_s"] = regions / seconds
    fig["encoder_ceiling_regions_per_s"] = statistics.mean(ceilings)
    ctx["features"] = dict(
        images=num_images,
        regions=regions,
        seconds=seconds,
        runs=chunks,
        ceilings=ceilings,
        batch_size=args.batch_size,
        clip=clip,
        store=folder,
        # process CPU time instead of wall time: less sensitive to other jobs on the machine
        cpu_time_ratio=(regions / cpu_seconds) / statistics.mean(ceilings_cpu),
    )
    log(
        f"features: {fig['features_regions_per_s']:.1f} regions/s "
        f"({regions} regions of {num_images} images in {seconds:.1f} s); "
        f"encoder alone {fig['encoder_ceiling_regions_per_s']:.1f} regions/s"
    )
    return folder


def bench_proposals(args, clip, out, fig, ctx):
    """Crops per image and novel recall@300 of the proposal modes on the first val images."""
    modes = {}
    for mode in ("fast", "exhaustive") + (("rpn",) if args.rpn_weights else ()):
        folder = os.path.join(out, f"proposals_{mode}")
        shutil.rmtree(folder, ignore_errors=True)
        log(f"proposals: {mode} mode on {args.proposal_images} val images ...")
        summary = precompute(args, clip, folder, "proposals", VAL, mode, args.proposal_images)
        done = summary["images"] - summary["skipped"]
        recall = proposal_recall(
            VAL, summary["proposals_dir"], ks=(300,), group="novel", max_images=args.proposal_images
        )
        if not recall["gt_boxes"]:
            raise UserInputError(
                f"the first {args.proposal_images} val images hold no novel box: "
                "raise --proposal-images (or --num-val)"
            )
        modes[mode] = dict(
            crops_per_image=summary["proposal_encodings"] / max(done, 1),
            recall300=recall["recall"]["300"],
            images=recall["images"],
            novel_boxes=recall["gt_boxes"],
            seconds=summary["seconds"],
        )
        log(
            f"proposals: {mode}: {modes[mode]['crops_per_image']:.0f} crops/image, novel R@300 "
            f"{modes[mode]['recall300']:.3f} ({recall['gt_boxes']} novel boxes), "
            f"{summary['seconds']:.1f} s"
        )
    for mode in modes:
        fig[f"proposals_{mode}_crops_per_image"] = modes[mode]["crops_per_image"]
        fig[f"novel_recall300_{mode}"] = modes[mode]["recall300"]
    anchors = proposal_settings(args, "exhaustive")
    ctx["proposals"] = dict(
        modes,
        anchor_preset=args.anchor_preset,
        stride=anchors.stride,
        sizes=list(anchors.sizes),
        ratios=list(anchors.ratios),
        iou=0.5,
    )


def _dir_bytes(paths):
    return sum(os.path.getsize(p) for p in paths)


def official_json_record(arrays, embeddings, file_name, image_shape):
    """One image's targets in the official EZSD code's layout: the text of a JSON object with
    'feat' (the float32 embeddings as lists), 'bbox' (x1, y1, x2, y2, confidence, class,
    objectness per region), 'gt_labels' and 'img_metas', as its feature script writes per image
    (json.dumps of tensor.tolist())."""
    boxes = np.asarray(arrays["boxes"], np.float32)
    extra = np.stack([arrays["confidence"], arrays["clip_class"], arrays["objectness"]], 1)
    rows = np.concatenate([boxes, extra.astype(np.float32)], 1)
    is_gt = np.asarray(arrays["is_gt"], bool)
    height, width = image_shape
    return json.dumps(
        {
            "feat": np.asarray(embeddings, np.float32).tolist(),
            "bbox": rows.tolist(),
            "gt_labels": np.asarray(arrays["clip_class"])[is_gt].astype(int).tolist(),
            "img_metas": {
                "filename": file_name,
                "ori_filename": os.path.basename(file_name),
                "ori_shape": [height, width, 3],
                "img_shape": [height, width, 3],
                "scale_factor": [1.0, 1.0, 1.0, 1.0],
                "flip": False,
            },
        }
    )


def _widen(embeddings, dim, rng):
    """Embeddings resampled to `dim` columns from the measured values (same magnitudes)."""
    flat = np.asarray(embeddings, np.float32).reshape(-1)
    return rng.choice(flat, size=(embeddings.shape[0], dim)).astype(np.float32)


def bench_storage(args, clip, store_dir, out, fig, ctx):
    """Bytes per region of the store, at its dimension and re-written at 512-d, and of the
    official JSON layout (one file each, for the image with the most regions)."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image

    store = FeatureStore(store_dir)
    counts = {k: v for k, v in store.manifest["images"].items() if v > 0}
    total = sum(counts.values())
    files = [region_file(store_dir, k) for k in counts]
    fig["bytes_per_region"] = _dir_bytes(files) / total
    rng = np.random.default_rng(args.seed)
    wide_dir = os.path.join(out, "storage_512")
    shutil.rmtree(wide_dir, ignore_errors=True)
    for image_id in counts:
        arrays = store.load(image_id)
        arrays["embeddings"] = _widen(arrays["embeddings"], 512, rng)
        write_image_regions(wide_dir, image_id, **arrays)
    fig["bytes_per_region_512"] = _dir_bytes([region_file(wide_dir, k) for k in counts]) / total

    image_id = max(counts, key=counts.get)
    record = next(r for r in DatasetCatalog.get(TRAIN) if str(r["image_id"]) == image_id)
    arrays = store.load(image_id)
    image = read_image(record["file_name"], format="RGB")
    model = load_clip(clip, args.device, args.fp16)
    embeddings = (
        encode_regions(model, image, arrays["boxes"], batch_size=args.batch_size).cpu().numpy()
    )
    del model
    sizes = {}
    for dim, emb in ((embeddings.shape[1], embeddings), (512, _widen(embeddings, 512, rng))):
        path = os.path.join(out, "official_json_layout", f"{image_id}_{dim}d.json")
        with atomic_write(path, "w") as f:
            f.write(official_json_record(arrays, emb, record["file_name"], image.shape[:2]))
        sizes[dim] = os.path.getsize(path)
    num = counts[image_id]
    fig["official_json_bytes_per_region"] = sizes[embeddings.shape[1]] / num
    fig["official_json_bytes_per_region_512"] = sizes[512] / num
    ctx["storage"] = dict(
        embed_dim=int(embeddings.shape[1]),
        images=len(counts),
        regions=total,
        json_image_id=image_id,
        json_regions=num,
        npz_bytes_per_region_of_that_image=os.path.getsize(region_file(store_dir, image_id)) / num,
    )
    log(
        f"storage: {fig['bytes_per_region']:.0f} B/region ({embeddings.shape[1]}-d), "
        f"{fig['bytes_per_region_512']:.0f} B/region (512-d); official JSON layout "
        f"{fig['official_json_bytes_per_region']:.0f} / "
        f"{fig['official_json_bytes_per_region_512']:.0f} B/region"
    )


# --------------------------------------------------------------------------------- training


def detector_configs(args, clip, text_file, store_dir, num_classes, embed_dim):
    """(EZSD cfg, vanilla Faster R-CNN cfg): the same config but the ROI box branch."""
    fixed = [
        "MODEL.DEVICE",
        args.device,
        "MODEL.WEIGHTS",
        "",
        "MODEL.MASK_ON",
        False,
        "DATASETS.TRAIN",
        (TRAIN,),
        "DATASETS.TEST",
        (),
        "MODEL.ROI_HEADS.NUM_CLASSES",
        num_classes,
        "MODEL.EZSD.EMBED_DIM",
        embed_dim,
        "MODEL.EZSD.CLIP.MODEL",
        clip,
        "MODEL.EZSD.TEXT_EMBEDDINGS",
        text_file,
        "MODEL.EZSD.DISTILL.ENABLED",
        True,
        "MODEL.EZSD.DISTILL.FEATURES",
        store_dir,
        "DATALOADER.NUM_WORKERS",
        args.num_workers,
        "SEED",
        args.seed,
    ]
    if args.ims_per_batch:
        fixed += ["SOLVER.IMS_PER_BATCH", args.ims_per_batch]
    if args.real_size:
        fixed += ["INPUT.MIN_SIZE_TRAIN", (800,), "INPUT.MAX_SIZE_TRAIN", 1333]
    cfg = load_ezsd_config(
        args.config or (REAL_CONFIG if args.real_size else SHAPES_CONFIG),
        fixed + list(args.opts),
        opts_name="--opts",
    )
    vanilla = cfg.clone()
    head = cfg.MODEL.EZSD.BOX_HEAD
    vanilla.merge_from_list(
        [
            "MODEL.META_ARCHITECTURE",
            "GeneralizedRCNN",
            "MODEL.ROI_HEADS.NAME",
            "StandardROIHeads",
            "MODEL.ROI_BOX_HEAD.NAME",
            "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_CONV",
            head.NUM_SHARED_CONV + head.NUM_BRANCH_CONV,
            "MODEL.ROI_BOX_HEAD.NUM_FC",
            head.NUM_BRANCH_FC,
            "MODEL.EZSD.DISTILL.ENABLED",
            False,
        ]
    )
    cfg.freeze()
    vanilla.freeze()
    return cfg, vanilla


class _Run:
    """One detector's training as tools/train_net.py runs it (ezsd.engine.build_train_loop: the
    same inner loop, AMP included; the lr schedule stepped after each iteration), each iteration
    timed with its data-loading part. Each run keeps its own EventStorage."""

    def __init__(self, name, cfg, mapper, seed):
        from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
        from detectron2.data.samplers import TrainingSampler
        from detectron2.modeling import build_model
        from detectron2.solver import build_lr_scheduler
        from detectron2.solver import build_optimizer as build_default_optimizer
        from detectron2.utils.events import EventStorage

        from ezsd.engine import build_optimizer, build_train_loop

        self.name, self.device = name, cfg.MODEL.DEVICE
        torch.manual_seed(seed)
        model = build_model(cfg).train()
        # EZSD's optimizer (no weight decay on the temperature), detectron2's default for the
        # vanilla detector: the same SGD otherwise.
        optimizer = (build_optimizer if name == "ezsd" else build_default_optimizer)(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, optimizer)
        dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=True)
        loader = build_detection_train_loader(
            dataset=dataset,
            mapper=mapper,
            sampler=TrainingSampler(len(dataset), seed=seed),
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )
        self.loop = build_train_loop(cfg, model, loader, optimizer)
        self.storage = EventStorage(0)
        self.times, self.data_times, self.cpu_times, self.losses = [], [], [], None

    def step(self, record):
        with self.storage:
            _sync(self.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            self.loop.iter = self.storage.iter
            self.loop.run_step()
            self.scheduler.step()
            _sync(self.device)
            seconds = time.perf_counter() - start
            data_time = self.storage.history("data_time").latest()
            self.losses = {
                k: v for k, (v, _) in self.storage.latest().items() if k.startswith("loss_")
            }
            self.storage.step()
        if record:
            self.times.append(seconds)
            self.data_times.append(data_time)
            self.cpu_times.append(time.process_time() - cpu_start)
        return seconds, data_time


def bench_training(args, clip, store_dir, base, out, fig, ctx):
    from detectron2.data import DatasetMapper
    from detectron2.data import transforms as T

    from ezsd.data.mapper import EZSDDatasetMapper

    model = load_clip(clip, args.device)
    text = text_embeddings(model, base, DEFAULT_PROMPTS)
    embed_dim = int(text.shape[1])
    del model
    text_file = os.path.join(out, "text", "train.npy")
    save_text_embeddings(
        text_file,
        text.cpu().numpy(),
        base,
        clip=clip,
        clip_hash=clip_checkpoint_hash(clip),
        prompts=list(DEFAULT_PROMPTS),
    )
    cfg, vanilla_cfg = detector_configs(args, clip, text_file, store_dir, len(base), embed_dim)
    extra = {}
    if args.real_size:  # exactly 1333x800 inputs (the generated images are square)
        extra["augmentations"] = [T.Resize((800, 1333)), T.RandomFlip()]
    runs = [
        _Run("ezsd", cfg, EZSDDatasetMapper(cfg, is_train=True, **extra), args.seed),
        _Run("vanilla", vanilla_cfg, DatasetMapper(vanilla_cfg, is_train=True, **extra), args.seed),
    ]
    if args.compare_opts:
        compared_cfg = cfg.clone()
        compared_cfg.defrost()
        compared_cfg.merge_from_list(args.compare_opts)
        compared_cfg.freeze()
        mapper = EZSDDatasetMapper(compared_cfg, is_train=True, **extra)
        runs.append(_Run("ezsd_compared", compared_cfg, mapper, args.seed))
    log(
        f"train: {cfg.MODEL.BACKBONE.NAME} depth {cfg.MODEL.RESNETS.DEPTH}, batch "
        f"{cfg.SOLVER.IMS_PER_BATCH}, {args.warmup_iters} warm-up + {args.iters} "
        "timed iterations each, interleaved (each detector first in turn)"
    )
    for i in range(args.warmup_iters):
        for run in runs:
            run.step(record=False)
        log(f"train: warm-up {i + 1}/{args.warmup_iters}")
    if "loss_distill" not in runs[0].losses:
        raise RuntimeError("EZSD trained without its distillation loss")
    for i in range(args.iters):
        first = i % len(runs)
        took = {run.name: run.step(record=True) for run in runs[first:] + runs[:first]}
        log(
            f"train: round {i + 1}/{args.iters}: "
            + ", ".join(f"{name} {s:.3f} s (data {d:.3f})" for name, (s, d) in took.items())
        )
    ezsd_run, vanilla_run = runs[:2]
    for run in runs:
        fig[f"train_iter_s_{run.name}"] = statistics.median(run.times)
    fig["data_time_s_ezsd"] = statistics.median(ezsd_run.data_times)
    ctx["train"] = dict(
        config=args.config or (REAL_CONFIG if args.real_size else SHAPES_CONFIG),
        ims_per_batch=cfg.SOLVER.IMS_PER_BATCH,
        input_size="800x1333"
        if args.real_size
        else f"{cfg.INPUT.MIN_SIZE_TRAIN} / max {cfg.INPUT.MAX_SIZE_TRAIN}",
        num_workers=args.num_workers,
        statistic="median of the timed iterations",
        vanilla_box_head=f"FastRCNNConvFCHead NUM_CONV {vanilla_cfg.MODEL.ROI_BOX_HEAD.NUM_CONV} "
        f"NUM_FC {vanilla_cfg.MODEL.ROI_BOX_HEAD.NUM_FC} "
        f"CONV_DIM {cfg.MODEL.ROI_BOX_HEAD.CONV_DIM} "
        f"FC_DIM {cfg.MODEL.ROI_BOX_HEAD.FC_DIM}",
        distill_proposals_per_image=cfg.MODEL.EZSD.DISTILL.NUM_PROPOSALS,
        compare_opts=[str(o) for o in args.compare_opts],
        **{f"{r.name}_iter_s": r.times for r in runs},
        **{f"{r.name}_data_s": r.data_times for r in runs},
        **{f"{r.name}_process_cpu_s": r.cpu_times for r in runs},
        # CPU time of this process (all its threads): less sensitive to other jobs on the machine
        cpu_time_ratio=statistics.median(ezsd_run.cpu_times)
        / statistics.median(vanilla_run.cpu_times),
        ezsd_losses=ezsd_run.losses,
        vanilla_losses=vanilla_run.losses,
    )


# ------------------------------------------------------------------------------------- main


def goal_met(value, goal):
    """Whether `value` meets a goal written as "OP NUMBER" (OP one of >=, <=, <, >)."""
    op, bound = goal.split()
    return {
        ">=": value >= float(bound),
        "<=": value <= float(bound),
        "<": value < float(bound),
        ">": value > float(bound),
    }[op]


def table(fig):
    lines = [f"{'figure':<40} {'value':>12}  goal"]
    for key, goal in FIGURES.items():
        if key in fig:
            value = fig[key]
            text = f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
            verdict = ("  met" if goal_met(value, goal) else "  NOT met") if goal else ""
            lines.append(f"{key:<40} {text:>12}  {goal}{verdict}")
    for mode in ("fast", "rpn"):
        if f"novel_recall300_{mode}" in fig and "novel_recall300_exhaustive" in fig:
            gap = 100 * (fig["novel_recall300_exhaustive"] - fig[f"novel_recall300_{mode}"])
            lines.append(
                f"novel recall@300, exhaustive - {mode}: {gap:.1f} points (goal: at most 1"
                f"{', met' if gap <= 1 else ', NOT met'})"
            )
    return "\n".join(lines)


def run_benchmarks(args, command=None):
    """Every benchmark of `args` (from `parse_args`); writes OUTPUT_DIR/benchmarks.json, prints
    the table and returns what it wrote. `command`: the command line recorded with the figures."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    started = time.time()
    base, novel = prepare_data(args, out)
    if args.clip:
        clip = os.path.abspath(args.clip)
    elif args.real_size:
        clip = random_vit_b32_clip(os.path.join(out, "clip_vit_b32_random.pt"), args.seed)
    else:
        clip = SMALL_CLIP
    fig, ctx = {}, {}
    store_dir = None
    if not {"features", "storage", "train"} <= args.skip:
        store_dir = bench_features(args, clip, out, fig, ctx)
        if "features" in args.skip:
            for key in ("features_regions_per_s", "encoder_ceiling_regions_per_s"):
                fig.pop(key)
    if "proposals" not in args.skip:
        bench_proposals(args, clip, out, fig, ctx)
    if "storage" not in args.skip:
        bench_storage(args, clip, store_dir, out, fig, ctx)
    if "train" not in args.skip:
        bench_training(args, clip, store_dir, base, out, fig, ctx)
    for ratio, (num, den) in RATIOS.items():
        if num in fig and den in fig:
            fig[ratio] = fig[num] / fig[den]
    bad = {k: v for k, v in fig.items() if not (math.isfinite(v) and v > 0)}
    if bad:
        log(f"warning: figures not positive and finite: {bad}")
    result = dict(
        figures={k: fig[k] for k in FIGURES if k in fig},
        goals={k: g for k, g in FIGURES.items() if g and k in fig},
        context=dict(
            ctx,
            device=args.device,
            fp16=args.fp16,
            real_size=args.real_size,
            clip=clip,
            clip_hash=clip_checkpoint_hash(clip),
            threads=torch.get_num_threads(),
            torch=torch.__version__,
            seed=args.seed,
            wall_seconds=time.time() - started,
            command=command or " ".join(["tools/benchmark.py"] + sys.argv[1:]),
            data=dict(
                num_train=args.num_train,
                num_val=args.num_val,
                image_size=args.image_size,
                base=base,
                novel=novel,
            ),
        ),
    )
    path = os.path.join(out, "benchmarks.json")
    atomic_write_json(path, result, indent=1)
    print(table(fig))
    log(f"wrote {path} in {time.time() - started:.0f} s")
    return result


@exit_on_user_error
def main(argv=None):
    """The command line: `parse_args(argv)`, then `run_benchmarks`."""
    args = parse_args(argv)
    command = None if argv is None else " ".join(["tools/benchmark.py"] + list(map(str, argv)))
    return run_benchmarks(args, command)
