"""Inference with a vocabulary of one's choice: a trained EZSD model, any class names.

A checkpoint holds no vocabulary (the text embeddings are a non-persistent buffer), so the same
weights detect a dataset's classes or any names:

    names = resolve_vocabulary("custom", "lemon,lime")            # or a registered dataset
    file, embeddings = vocabulary_embeddings(cfg, names, cache_dir)  # config's file, else CLIP
    predictor = VocabularyPredictor(cfg, names, embeddings, file)
    instances = predictor(image_bgr)["instances"]

The weights are loaded by `ezsd.checkpoint.load_weights`, which refuses weights of another model.
"""

import hashlib
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from ezsd.checkpoint import load_weights
from ezsd.clip import (
    clip_checkpoint_hash,
    load_clip,
    load_text_embeddings,
    names_path,
    save_text_embeddings,
    text_embeddings,
)
from ezsd.data.text_embedding_file import check_same_clip, text_embedding_info
from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import resolve_data_path

__all__ = [
    "VocabularyPredictor",
    "resolve_vocabulary",
    "vocabulary_embeddings",
    "cached_text_embeddings",
    "default_cache_dir",
]

logger = logging.getLogger(__name__)


def default_cache_dir():
    """Where computed text embeddings are cached: $XDG_CACHE_HOME/ezsd/text (~/.cache/...)."""
    return os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "ezsd", "text")


# ---- the vocabulary ------------------------------------------------------------------------------


def resolve_vocabulary(vocabulary=None, custom_vocabulary=None, default_dataset=None):
    """The class names to detect.

    Args:
        vocabulary (str or None): a registered dataset (its thing_classes) or "custom"; None:
            "custom" if `custom_vocabulary` is given, else `default_dataset`.
        custom_vocabulary (str or None): comma-separated names, for "custom".
        default_dataset (str or None): e.g. the config's DATASETS.TEST[0].
    """
    if vocabulary is None:
        if custom_vocabulary is not None:
            vocabulary = "custom"
        elif default_dataset:
            vocabulary = default_dataset
        else:
            raise UserInputError(
                "no vocabulary: pass --vocabulary DATASET or --custom-vocabulary "
                "NAME,NAME,... (the config has no DATASETS.TEST)"
            )
    if vocabulary == "custom":
        if custom_vocabulary is None:
            raise UserInputError("--vocabulary custom needs --custom-vocabulary NAME,NAME,...")
        names = [n.strip() for n in custom_vocabulary.split(",") if n.strip()]
        if not names:
            raise UserInputError(f"--custom-vocabulary '{custom_vocabulary}' holds no class name")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserInputError(f"--custom-vocabulary names a class twice: {', '.join(twice)}")
        return names
    if custom_vocabulary is not None:
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


def vocabulary_embeddings(cfg, names, cache_dir=None):
    """(file, (C, D) float32 array) of `names`: the config's text-embedding file
    (MODEL.EZSD.TEST_TEXT_EMBEDDINGS, then TEXT_EMBEDDINGS) whose sidecar lists exactly these
    names, else computed with the configured CLIP through the cache (`cached_text_embeddings`).
    That CLIP must be the one the config's files record (the model was trained against them):
    names embedded by another CLIP would be refused by nothing later."""
    found = []
    for key in ("TEST_TEXT_EMBEDDINGS", "TEXT_EMBEDDINGS"):
        path = resolve_data_path(cfg.MODEL.EZSD[key])
        if not path or not path.endswith(".npy") or not os.path.isfile(names_path(path)):
            continue
        try:
            embeddings, file_names = load_text_embeddings(path)
        except UserInputError as e:
            logger.warning(f"MODEL.EZSD.{key} not used: {e}")
            continue
        found.append((f"MODEL.EZSD.{key} {path}", text_embedding_info(path)["clip_hash"]))
        if file_names == list(names):
            logger.info(f"text embeddings of the {len(names)} classes: {path} (MODEL.EZSD.{key})")
            return os.path.abspath(path), embeddings
    clip_model = cfg.MODEL.EZSD.CLIP.MODEL
    check_same_clip(
        found
        + [
            (
                f"MODEL.EZSD.CLIP.MODEL {clip_model} (it embeds the other names)",
                clip_checkpoint_hash(clip_model),
            )
        ]
    )
    return cached_text_embeddings(cfg, names, cache_dir)


def cached_text_embeddings(cfg, names, cache_dir=None):
    """Text embeddings of `names` by MODEL.EZSD.CLIP.MODEL and PROMPTS, read from or written to
    CACHE_DIR/<key>.npy (+ .names.json), key = hash of (CLIP checkpoint hash, prompts, names)."""
    cache_dir = cache_dir or default_cache_dir()
    clip_model = cfg.MODEL.EZSD.CLIP.MODEL
    prompts = list(cfg.MODEL.EZSD.CLIP.PROMPTS)
    clip_hash = clip_checkpoint_hash(clip_model)
    key = hashlib.sha256(json.dumps([clip_hash, prompts, list(names)]).encode()).hexdigest()[:16]
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
        save_text_embeddings(
            path, embeddings, names, clip=clip_model, clip_hash=clip_hash, prompts=prompts
        )
    except OSError as e:
        raise UserInputError(f"--cache-dir {cache_dir}: cannot write the text embeddings ({e})")
    return path, embeddings


# ---- the detector --------------------------------------------------------------------------------


class VocabularyPredictor(DefaultPredictor):
    """detectron2's DefaultPredictor (one BGR image in, `{"instances": ...}` out, test-time resize
    and input format of the config) for an EZSD model whose inference vocabulary is `names`.

    Args:
        cfg: an EZSD config whose MODEL.WEIGHTS is the trained model.
        names (list[str]): the class names to detect; `metadata.thing_classes` for visualization.
        embeddings: their (C, D) text embeddings, e.g. from `vocabulary_embeddings`.
        embeddings_file (str): the file those came from (a .npy with its names sidecar); the model
            is built with it as its vocabulary (a checkpoint holds none).
        config_file (str): where `cfg` came from, for error messages.
    """

    def __init__(self, cfg, names, embeddings, embeddings_file, config_file=None):
        cfg = cfg.clone()
        cfg.defrost()
        # Built with this vocabulary (the training datasets' class checks do not apply), then made
        # the inference vocabulary with set_vocabulary.
        cfg.MODEL.EZSD.TEXT_EMBEDDINGS = embeddings_file
        cfg.MODEL.EZSD.TEST_TEXT_EMBEDDINGS = ""
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(names)
        cfg.DATASETS.TRAIN = ()
        cfg.DATASETS.TEST = ()
        cfg.freeze()
        self.cfg = cfg
        model = build_model(cfg)
        if not hasattr(model, "set_vocabulary"):
            raise UserInputError(
                f"{config_file}: MODEL.META_ARCHITECTURE "
                f"'{cfg.MODEL.META_ARCHITECTURE}' is not an EZSD model"
            )
        load_weights(model, cfg.MODEL.WEIGHTS, cfg, config_file)
        model.set_vocabulary(embeddings, list(names), split="test")
        self.model = model.eval()
        self.metadata = Metadata(name="ezsd_vocabulary", thing_classes=list(names))
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        assert self.input_format in ["RGB", "BGR"], self.input_format
