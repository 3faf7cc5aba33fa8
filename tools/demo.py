#!/usr/bin/env python
"""Detect objects in images with a trained EZSD model, for a dataset's classes or your own names.

The vocabulary is swapped into the trained model (`set_vocabulary`), nothing is retrained:
  --vocabulary DATASET       a registered dataset's thing_classes; their text embeddings come from
                             MODEL.EZSD.TEST_TEXT_EMBEDDINGS (or TEXT_EMBEDDINGS) when its names
                             sidecar lists exactly those classes, else they are computed with the
                             configured CLIP (MODEL.EZSD.CLIP.MODEL, PROMPTS) and cached
  --custom-vocabulary a,b,c  any names, embedded with the configured CLIP and cached in --cache-dir
                             (key: CLIP checkpoint hash + prompts + names)
Without --vocabulary: custom if --custom-vocabulary is given, else the config's DATASETS.TEST[0].

Writes, into --output DIR, one annotated PNG per image and DIR/detections.json:
  {"vocabulary": [...], "confidence_threshold": t, "weights": FILE,
   "images": [{"file": PATH, "visualization": "NAME.png", "height": H, "width": W,
               "detections": [{"box": [x0, y0, x1, y1], "label": NAME, "score": S}, ...]}, ...]}
Every input is checked before anything is written: a bad input is a one-line error, no output.

Examples, after `make demo` (ShapesOVD, output/demo/):
  # the training run's own config: its text embeddings and re-normalized CLIP; MODEL.WEIGHTS
  # defaults to the run's last checkpoint when the config lies in its OUTPUT_DIR
  tools/demo.py --config-file output/demo/train/config.yaml \\
      --input output/demo/datasets/shapes_ovd/val --output output/demo/vis --vocabulary shapes_ovd_val
  # the plain config + the trained weights, with class names of your choice
  tools/demo.py --config-file configs/ShapesOVD/ezsd_R_18_FPN.yaml --cpu \\
      --input 'output/demo/datasets/shapes_ovd/val/*.jpg' --output output/demo/vis_custom \\
      --custom-vocabulary lemon,lime,banana --opts MODEL.WEIGHTS output/demo/train/model_final.pth
`make demo` trains for 100 iterations only: its scores are low, so lower --confidence-threshold
(e.g. 0.001) to see its boxes at all.
"""
import argparse
import glob
import hashlib
import json
import logging
import os

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image
from tqdm import tqdm

import ezsd  # noqa: F401  (registers the datasets and model components)
from ezsd.config import load_ezsd_config
from ezsd.clip import (
    clip_checkpoint_hash, load_clip, load_text_embeddings, names_path, save_text_embeddings,
    text_embeddings,
)  # fmt: skip
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.file_io import (
    atomic_write, atomic_write_json, check_writable_dir, resolve_data_path,
)  # fmt: skip

logger = logging.getLogger("ezsd.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DETECTIONS_FILE = "detections.json"


def default_cache_dir():
    return os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "ezsd", "text")


def parse_args(argv=None):
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="image files, folders (their images) or quoted glob patterns")  # fmt: skip
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="annotated PNGs and detections.json go here")  # fmt: skip
    parser.add_argument("--vocabulary", metavar="DATASET|custom",
                        help="a registered dataset (its thing_classes) or 'custom'")  # fmt: skip
    parser.add_argument("--custom-vocabulary", metavar="NAMES",
                        help="comma-separated class names, for --vocabulary custom")  # fmt: skip
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="minimum score of a detection (default 0.5)")  # fmt: skip
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (MODEL.DEVICE cpu)")
    parser.add_argument("--cache-dir", default=default_cache_dir(),
                        help="cache of computed text embeddings (default %(default)s)")  # fmt: skip
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config options, e.g. MODEL.WEIGHTS model_final.pth (comes last)")  # fmt: skip
    return parser.parse_args(argv)


# ---- checking the inputs (nothing is written before all of them pass) -------------------------


def setup_cfg(args):
    cfg = load_ezsd_config(args.config_file, args.opts, opts_name="--opts")
    if not 0.0 <= args.confidence_threshold <= 1.0:
        raise UserInputError(f"--confidence-threshold {args.confidence_threshold} is not in [0, 1]")
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    if args.cpu:
        cfg.MODEL.DEVICE = "cpu"
    elif cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"MODEL.DEVICE is {cfg.MODEL.DEVICE} but CUDA is not available: using the CPU")
        cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = weights_file(cfg, args.config_file, "MODEL.WEIGHTS" in args.opts[::2])
    cfg.freeze()
    return cfg


def weights_file(cfg, config_file, weights_from_opts=False):
    """MODEL.WEIGHTS, checked. When the config is a training run's own config.yaml (it lies in its
    OUTPUT_DIR) and --opts does not name MODEL.WEIGHTS, that run's last checkpoint: the config's
    MODEL.WEIGHTS is what the run started from (e.g. a pre-trained backbone), not what it trained."""
    weights = cfg.MODEL.WEIGHTS
    last = os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
    in_run = os.path.isdir(cfg.OUTPUT_DIR) and os.path.samefile(
        os.path.dirname(os.path.abspath(config_file)), cfg.OUTPUT_DIR
    )
    if not weights_from_opts and in_run and os.path.isfile(last):
        with open(last) as f:
            weights = os.path.join(cfg.OUTPUT_DIR, f.read().strip())
        logger.info(f"using the training run's last checkpoint {weights}")
    if not weights:
        raise UserInputError(
            "MODEL.WEIGHTS is empty: pass the trained model, e.g. --opts MODEL.WEIGHTS "
            "output/demo/train/model_final.pth"
        )
    if "://" not in weights and not os.path.isfile(weights):
        raise UserInputError(f"MODEL.WEIGHTS {weights}: no such file")
    return weights


def collect_images(inputs):
    """The image files named by `inputs` (files, folders, glob patterns), each readable."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, f) for f in os.listdir(item)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, f))
            )  # fmt: skip
            if not found:
                raise UserInputError(f"--input {item}: the folder holds no image "
                                     f"({', '.join(IMAGE_EXTENSIONS)})")  # fmt: skip
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


def vocabulary_names(args, cfg):
    """The class names to detect, from --vocabulary / --custom-vocabulary (or DATASETS.TEST[0])."""
    vocabulary = args.vocabulary
    if vocabulary is None:
        if args.custom_vocabulary is not None:
            vocabulary = "custom"
        elif len(cfg.DATASETS.TEST):
            vocabulary = cfg.DATASETS.TEST[0]
        else:
            raise UserInputError("no vocabulary: pass --vocabulary DATASET or --custom-vocabulary "
                                 "NAME,NAME,... (the config has no DATASETS.TEST)")  # fmt: skip
    if vocabulary == "custom":
        if args.custom_vocabulary is None:
            raise UserInputError("--vocabulary custom needs --custom-vocabulary NAME,NAME,...")
        names = [n.strip() for n in args.custom_vocabulary.split(",") if n.strip()]
        if not names:
            raise UserInputError(f"--custom-vocabulary '{args.custom_vocabulary}' holds no class name")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserInputError(f"--custom-vocabulary names a class twice: {', '.join(twice)}")
        return names
    if args.custom_vocabulary is not None:
        raise UserInputError(f"--custom-vocabulary needs --vocabulary custom, not '{vocabulary}'")
    if vocabulary not in DatasetCatalog.list():
        raise UserInputError(
            f"--vocabulary '{vocabulary}' is neither 'custom' nor a registered dataset "
            "(e.g. shapes_ovd_val, coco_ovd_val, lvis_v1_ovd_val)"
        )
    names = MetadataCatalog.get(vocabulary).get("thing_classes")
    if not names:  # a COCO json sets its thing_classes when first loaded
        try:
            DatasetCatalog.get(vocabulary)
        except (OSError, AssertionError) as e:
            raise UserInputError(f"dataset '{vocabulary}': cannot read its classes ({e})") from None
        names = MetadataCatalog.get(vocabulary).get("thing_classes")
    if not names:
        raise UserInputError(f"dataset '{vocabulary}' has no thing_classes")
    return list(names)


# ---- text embeddings ---------------------------------------------------------------------------


def vocabulary_embeddings(cfg, names, cache_dir):
    """(file, (C, D) float32 array) of `names`: the config's text-embedding file whose sidecar lists
    exactly these names, else computed with the configured CLIP through the cache."""
    for key in ("TEST_TEXT_EMBEDDINGS", "TEXT_EMBEDDINGS"):
        path = resolve_data_path(cfg.MODEL.EZSD[key])
        if not path or not path.endswith(".npy") or not os.path.isfile(names_path(path)):
            continue
        try:
            embeddings, file_names = load_text_embeddings(path)
        except UserInputError as e:
            logger.warning(f"MODEL.EZSD.{key} not used: {e}")
            continue
        if file_names == names:
            logger.info(f"text embeddings of the {len(names)} classes: {path} (MODEL.EZSD.{key})")
            return os.path.abspath(path), embeddings
    return cached_text_embeddings(cfg, names, cache_dir)


def cached_text_embeddings(cfg, names, cache_dir):
    """Text embeddings of `names` by MODEL.EZSD.CLIP.MODEL and PROMPTS, read from or written to
    CACHE_DIR/<key>.npy (+ .names.json), key = hash of (CLIP checkpoint hash, prompts, names)."""
    clip_model = cfg.MODEL.EZSD.CLIP.MODEL
    prompts = list(cfg.MODEL.EZSD.CLIP.PROMPTS)
    clip_hash = clip_checkpoint_hash(clip_model)
    key = hashlib.sha256(json.dumps([clip_hash, prompts, names]).encode()).hexdigest()[:16]
    path = os.path.abspath(os.path.join(os.path.expanduser(cache_dir), f"{key}.npy"))
    if os.path.isfile(path) and os.path.isfile(names_path(path)):
        try:
            embeddings, _ = load_text_embeddings(path, expected_names=names)
            logger.info(f"text embeddings of the {len(names)} classes: {path} (cached)")
            return path, embeddings
        except (UserInputError, OSError, ValueError) as e:  # a damaged cache file: made again
            logger.warning(f"cache file not used: {e}")
    logger.info(f"computing text embeddings of {len(names)} classes with CLIP {clip_model}")
    model = load_clip(clip_model, device=cfg.MODEL.DEVICE)
    embeddings = text_embeddings(model, names, prompts).cpu().numpy()
    try:
        save_text_embeddings(path, embeddings, names, clip=clip_model, clip_hash=clip_hash,
                             prompts=prompts)  # fmt: skip
    except OSError as e:
        raise UserInputError(f"--cache-dir {cache_dir}: cannot write the text embeddings ({e})")
    return path, embeddings


# ---- model and inference -----------------------------------------------------------------------


class _Checkpointer(DetectionCheckpointer):
    """Keeps the keys that did not load: the demo refuses weights of another model instead of
    running a partly random one (detectron2 only warns)."""

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def build_detector(cfg, config_file, vocabulary_file, names, embeddings):
    """The trained model in eval mode, with `names` as its inference vocabulary."""
    cfg = cfg.clone()
    cfg.defrost()
    # A checkpoint holds no vocabulary: build with this one (the training datasets' class checks
    # do not apply), then make it the inference vocabulary with set_vocabulary.
    cfg.MODEL.EZSD.TEXT_EMBEDDINGS = vocabulary_file
    cfg.MODEL.EZSD.TEST_TEXT_EMBEDDINGS = ""
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(names)
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    model = build_model(cfg)
    if not hasattr(model, "set_vocabulary"):
        raise UserInputError(f"{config_file}: MODEL.META_ARCHITECTURE "
                             f"'{cfg.MODEL.META_ARCHITECTURE}' is not an EZSD model")  # fmt: skip
    checkpointer = _Checkpointer(model)
    try:
        checkpointer.load(cfg.MODEL.WEIGHTS)
    except (OSError, RuntimeError, EOFError, ValueError, KeyError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserInputError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: not a checkpoint ({first_line})") from None
    missing = list(checkpointer.incompatible.missing_keys)
    other_shape = [k for k, *_ in checkpointer.incompatible.incorrect_shapes]
    if missing or other_shape:
        detail = ", ".join(
            f"{len(keys)} {what} (e.g. {keys[0]})"
            for keys, what in ((missing, "missing"), (other_shape, "of another shape")) if keys
        )  # fmt: skip
        raise UserInputError(
            f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} does not fit the model of {config_file}: parameters "
            f"{detail}; use the config the weights were trained with"
        )
    model.set_vocabulary(embeddings, names, split="test")
    return model.eval()


class Detector:
    """One image (BGR array) in, its Instances (on the CPU, original image coordinates) out;
    the test-time resizing and input format of DefaultPredictor."""

    def __init__(self, cfg, model):
        self.model = model
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    @torch.no_grad()
    def __call__(self, image_bgr):
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
        inputs = {"image": tensor, "height": height, "width": width}
        return self.model([inputs])[0]["instances"].to("cpu")


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


def detections_of(instances, names):
    boxes = instances.pred_boxes.tensor.tolist()
    return [
        {"box": [round(v, 2) for v in box], "label": names[int(c)], "score": round(float(s), 4)}
        for box, c, s in zip(boxes, instances.pred_classes, instances.scores)
    ]


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="ezsd")
    cfg = setup_cfg(args)
    images = collect_images(args.input)
    names = vocabulary_names(args, cfg)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UserInputError(f"--output {args.output}: exists and is not a folder")
    vocabulary_file, embeddings = vocabulary_embeddings(cfg, names, args.cache_dir)
    model = build_detector(cfg, args.config_file, vocabulary_file, names, embeddings)
    check_writable_dir(args.output, "--output")  # the first write, after every check
    detector = Detector(cfg, model)
    metadata = Metadata(name="ezsd_demo", thing_classes=names)

    records = []
    for path, png in tqdm(list(zip(images, output_names(images))), desc="demo", disable=None):
        image = read_image(path, format="BGR")
        instances = detector(image)
        visualizer = Visualizer(image[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
        drawn = visualizer.draw_instance_predictions(instances).get_image()
        with atomic_write(os.path.join(args.output, png)) as f:
            Image.fromarray(drawn).save(f, format="PNG")
        records.append(dict(file=path, visualization=png, height=image.shape[0],
                            width=image.shape[1], detections=detections_of(instances, names)))  # fmt: skip
    atomic_write_json(
        os.path.join(args.output, DETECTIONS_FILE),
        dict(vocabulary=names, confidence_threshold=args.confidence_threshold,
             weights=cfg.MODEL.WEIGHTS, images=records),
        indent=1,
    )  # fmt: skip
    total = sum(len(r["detections"]) for r in records)
    logger.info(f"{total} detections in {len(records)} images: {args.output}/{DETECTIONS_FILE}")


if __name__ == "__main__":
    main()
