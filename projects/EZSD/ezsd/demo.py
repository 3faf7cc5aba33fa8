"""The inference demo behind tools/demo.py: detect objects in images with a trained EZSD model,
for a dataset's classes or one's own names (ezsd.predictor), and write annotated pictures and
detections.json. `main(argv)` is the command line; its help follows.

Detect objects in images with a trained EZSD model, for a dataset's classes or your own names.

The vocabulary is swapped into the trained model (`set_vocabulary`), nothing is retrained:
  --vocabulary DATASET       a registered dataset's thing_classes; their text embeddings come from
                             MODEL.EZSD.TEST_TEXT_EMBEDDINGS (or TEXT_EMBEDDINGS) when its names
                             sidecar lists exactly those classes, else they are computed with the
                             configured CLIP (MODEL.EZSD.CLIP.MODEL, PROMPTS) and cached
  --custom-vocabulary a,b,c  any names, embedded with the configured CLIP and cached in --cache-dir
                             (key: CLIP checkpoint hash + prompts + names)
Without --vocabulary: custom if --custom-vocabulary is given, else the config's DATASETS.TEST[0].

The model's detections pass its per-class NMS (as in the evaluation); then, by default, one name
per object: of the detections that overlap at --overlap-iou or more, whatever their names, the
best-scored is kept (an object is not drawn twice, once per look-alike name).

Writes, into --output DIR, one annotated PNG per image and DIR/detections.json:
  {"vocabulary": [...], "confidence_threshold": t, "overlap_iou": u, "weights": FILE,
   "images": [{"file": PATH, "visualization": "NAME.png", "height": H, "width": W,
               "detections": [{"box": [x0, y0, x1, y1], "label": NAME, "score": S}, ...]}, ...]}
Every input is checked before anything is written: a bad input is a one-line error, no output.

Examples, after `make demo` (ShapesOVD, output/demo/):
  # the training run's own config: its text embeddings and re-normalized CLIP; MODEL.WEIGHTS
  # defaults to the run's last checkpoint when the config lies in its OUTPUT_DIR
  tools/demo.py --config-file output/demo/train/config.yaml \\
      --input output/demo/datasets/shapes_ovd/val --output output/demo/vis \\
      --vocabulary shapes_ovd_val
  # the plain config + the trained weights and the CLIP they were trained against (refused if
  # another), with class names of your choice
  tools/demo.py --config-file configs/ShapesOVD/ezsd_R_18_FPN.yaml --cpu \\
      --input 'output/demo/datasets/shapes_ovd/val/*.jpg' --output output/demo/vis_custom \\
      --custom-vocabulary lemon,lime,banana \\
      --opts MODEL.WEIGHTS output/demo/train/model_final.pth \\
      MODEL.EZSD.CLIP.MODEL output/demo/renorm/clip_renormalized.pt
"""

import argparse
import glob
import logging
import os

import torch
from detectron2.data.detection_utils import read_image
from detectron2.layers import nms
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image
from tqdm import tqdm

from ezsd.checkpoint import weights_file
from ezsd.config import load_ezsd_config
from ezsd.predictor import (
    VocabularyPredictor,
    default_cache_dir,
    resolve_vocabulary,
    vocabulary_embeddings,
)
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.file_io import atomic_write, atomic_write_json, check_writable_dir

__all__ = ["argument_parser", "main", "run_demo", "collect_images", "draw_detections"]

logger = logging.getLogger("ezsd.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DETECTIONS_FILE = "detections.json"


def argument_parser():
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="image files, folders (their images) or quoted glob patterns",
    )
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="annotated PNGs and detections.json go here"
    )
    parser.add_argument(
        "--vocabulary",
        metavar="DATASET|custom",
        help="a registered dataset (its thing_classes) or 'custom'",
    )
    parser.add_argument(
        "--custom-vocabulary",
        metavar="NAMES",
        help="comma-separated class names, for --vocabulary custom",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="minimum score of a detection (default 0.5)",
    )
    parser.add_argument(
        "--overlap-iou",
        type=float,
        default=0.5,
        help="of the detections overlapping at this IoU or more, whatever their names, keep the "
        "best-scored (default 0.5; 1: every name's own boxes, as the evaluation keeps them)",
    )
    parser.add_argument(
        "--picture-size",
        type=int,
        default=768,
        metavar="PIXELS",
        help="draw smaller images enlarged to this shorter side, so that labels "
        "are readable (default 768; 0: the image's own size)",
    )
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (MODEL.DEVICE cpu)")
    parser.add_argument(
        "--cache-dir",
        default=default_cache_dir(),
        help="cache of computed text embeddings (default %(default)s)",
    )
    parser.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="KEY VALUE",
        help="config options, e.g. MODEL.WEIGHTS model_final.pth (comes last)",
    )
    return parser


# ---- checking the inputs (nothing is written before all of them pass) -------------------------


def setup_cfg(config_file, opts, confidence_threshold, cpu=False):
    cfg = load_ezsd_config(config_file, opts, opts_name="--opts")
    if not 0.0 <= confidence_threshold <= 1.0:
        raise UserInputError(f"--confidence-threshold {confidence_threshold} is not in [0, 1]")
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = confidence_threshold
    if cpu:
        cfg.MODEL.DEVICE = "cpu"
    elif cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE} but CUDA is not available: using the CPU"
        )
        cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = weights_file(cfg, config_file, opts)
    cfg.freeze()
    return cfg


def collect_images(inputs):
    """The image files named by `inputs` (files, folders, glob patterns), each readable."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, f)
                for f in os.listdir(item)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, f))
            )
            if not found:
                raise UserInputError(
                    f"--input {item}: the folder holds no image ({', '.join(IMAGE_EXTENSIONS)})"
                )
        elif any(c in item for c in "*?["):
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
            if not found:
                raise UserInputError(f"--input '{item}': the pattern matches no file")
        elif os.path.isfile(item):
            found = [item]
        else:
            raise UserInputError(f"--input {item}: no such file or folder")
        paths.extend(found)
    paths = list({os.path.abspath(p): p for p in paths}.values())  # each file once, in order
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise UserInputError(f"--input {path}: not a readable image ({e})") from None
    return paths


def output_names(paths):
    """One PNG name per input: its file name's stem, made unique with _1, _2, ..."""
    taken, names = {DETECTIONS_FILE}, []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, i = f"{stem}.png", 0
        while name in taken:
            i += 1
            name = f"{stem}_{i}.png"
        taken.add(name)
        names.append(name)
    return names


def one_name_per_object(instances, overlap_iou):
    """`instances` without the detections that overlap a better-scored one (any class) at IoU
    >= `overlap_iou`; 1 keeps them all."""
    if overlap_iou >= 1 or len(instances) < 2:
        return instances
    keep = nms(instances.pred_boxes.tensor, instances.scores, overlap_iou)
    return instances[keep.sort().values]  # the model's order


def detections_of(instances, names):
    boxes = instances.pred_boxes.tensor.tolist()
    return [
        {"box": [round(v, 2) for v in box], "label": names[int(c)], "score": round(float(s), 4)}
        for box, c, s in zip(boxes, instances.pred_classes, instances.scores)
    ]


def draw_detections(image_bgr, instances, metadata, picture_size=0):
    """The picture of `instances` on the image (RGB array), labelled with metadata.thing_classes.
    An image whose shorter side is below `picture_size` pixels is drawn enlarged to it, so that
    boxes and labels stay readable on small images (0: the image's own size)."""
    scale = max(1.0, picture_size / min(image_bgr.shape[:2]))
    visualizer = Visualizer(
        image_bgr[:, :, ::-1], metadata, scale=scale, instance_mode=ColorMode.IMAGE
    )
    return visualizer.draw_instance_predictions(instances).get_image()


def run_demo(
    config_file,
    inputs,
    output,
    vocabulary=None,
    custom_vocabulary=None,
    confidence_threshold=0.5,
    cpu=False,
    cache_dir=None,
    opts=(),
    picture_size=768,
    overlap_iou=0.5,
):
    """Detect the vocabulary's classes in the images named by `inputs` and write OUTPUT/<name>.png
    and OUTPUT/detections.json (the arguments are the command line's; see the module's help).
    Every input is checked before anything is written. Returns the detections.json dict."""
    opts = list(opts)
    cfg = setup_cfg(config_file, opts, confidence_threshold, cpu)
    if not 0.0 < overlap_iou <= 1.0:
        raise UserInputError(f"--overlap-iou {overlap_iou} is not in (0, 1]")
    images = collect_images(inputs)
    default_dataset = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None
    names = resolve_vocabulary(vocabulary, custom_vocabulary, default_dataset)
    if os.path.exists(output) and not os.path.isdir(output):
        raise UserInputError(f"--output {output}: exists and is not a folder")
    embeddings_file, embeddings = vocabulary_embeddings(cfg, names, cache_dir)
    predictor = VocabularyPredictor(cfg, names, embeddings, embeddings_file, config_file)
    check_writable_dir(output, "--output")  # the first write, after every check

    records = []
    for path, png in tqdm(list(zip(images, output_names(images))), desc="demo", disable=None):
        image = read_image(path, format="BGR")
        instances = one_name_per_object(predictor(image)["instances"].to("cpu"), overlap_iou)
        drawn = draw_detections(image, instances, predictor.metadata, picture_size)
        with atomic_write(os.path.join(output, png)) as f:
            Image.fromarray(drawn).save(f, format="PNG")
        records.append(
            dict(
                file=path,
                visualization=png,
                height=image.shape[0],
                width=image.shape[1],
                detections=detections_of(instances, names),
            )
        )
    result = dict(
        vocabulary=names,
        confidence_threshold=confidence_threshold,
        overlap_iou=overlap_iou,
        weights=cfg.MODEL.WEIGHTS,
        images=records,
    )
    atomic_write_json(os.path.join(output, DETECTIONS_FILE), result, indent=1)
    total = sum(len(r["detections"]) for r in records)
    logger.info(f"{total} detections in {len(records)} images: {output}/{DETECTIONS_FILE}")
    return result


@exit_on_user_error
def main(argv=None):
    args = argument_parser().parse_args(argv)
    return run_demo(
        args.config_file,
        args.input,
        args.output,
        args.vocabulary,
        args.custom_vocabulary,
        args.confidence_threshold,
        args.cpu,
        args.cache_dir,
        args.opts,
        args.picture_size,
        args.overlap_iou,
    )
