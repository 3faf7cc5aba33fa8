"""Loading trained weights into a detector: strictly, where detectron2's checkpointer only warns.

detectron2 loads what fits and logs the rest, so weights of another model (another embedding
size, head layout or a backbone-only file) give a partly random detector and an AP near 0 without
an error. Every path that runs a trained model (train_net.py --eval-only, the demo, the
evaluation tools) loads through `load_weights`, which refuses them.

A checkpoint holds no vocabulary (text embeddings are a buffer, not a parameter), but its
classifier is trained against the text embeddings of one CLIP: training records that CLIP and the
training class names (`TrainedVocabulary`, saved beside the model), and `load_weights` refuses
text embeddings of another CLIP, which would otherwise give wrong classes of the right shape, and
an evaluation split whose novel classes the model was trained on, which would inflate novel AP.
Nor does a checkpoint hold the settings its weights were trained under without being weights:
input normalization and anchors (`TrainedInputs`). Others of the same shapes load silently and
give a detector that sees other inputs; `load_weights` refuses them.
"""

import logging
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from ezsd.data.text_embedding_file import text_embedding_info
from ezsd.modeling.vocabulary import vocabulary_clip_sources
from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import resolve_data_path
from ezsd.utils.settings import settings_difference

__all__ = [
    "weights_file",
    "load_weights",
    "build_detector",
    "TrainedVocabulary",
    "TrainedInputs",
    "trained_checkpointables",
]

# The checkpoint entries of `TrainedVocabulary` and `TrainedInputs`.
VOCABULARY_KEY = "ezsd_trained_vocabulary"
INPUTS_KEY = "ezsd_trained_inputs"

logger = logging.getLogger(__name__)


def weights_file(cfg, config_file, opts=()):
    """MODEL.WEIGHTS, checked. When the config is a training run's own config.yaml (it lies in its
    OUTPUT_DIR) and the command-line overrides `opts` (KEY VALUE ...) do not set MODEL.WEIGHTS,
    that run's last checkpoint: the config's MODEL.WEIGHTS is what the run started from (e.g. a
    pre-trained backbone), not what it trained."""
    weights = cfg.MODEL.WEIGHTS
    weights_from_opts = "MODEL.WEIGHTS" in list(opts)[::2]
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


def trained_checkpointables(cfg):
    """The records a training run saves in every checkpoint beside the model (detectron2
    Checkpointer checkpointables, keyword arguments of its constructor)."""
    return {VOCABULARY_KEY: TrainedVocabulary(cfg), INPUTS_KEY: TrainedInputs(cfg)}


class TrainedVocabulary:
    """A checkpointable of detectron2's Checkpointer (saved in every checkpoint of a training run
    under VOCABULARY_KEY): the training text-embedding file, the CLIP hash it records and its
    class names (None for a model without one, e.g. an RPN-only model). Resuming with text
    embeddings of another CLIP is refused."""

    def __init__(self, cfg):
        self.cfg = cfg

    def state_dict(self):
        path = resolve_data_path(self.cfg.MODEL.EZSD.TEXT_EMBEDDINGS)
        if not path or not os.path.isfile(path):
            return {"text_embeddings": None, "clip_hash": None, "names": None}
        info = text_embedding_info(path)
        return {"text_embeddings": path, "clip_hash": info["clip_hash"], "names": info["names"]}

    def load_state_dict(self, state):
        check_trained_vocabulary(state, "the checkpoint resumed", self.cfg)


def check_trained_vocabulary(state, weights, cfg):
    """Refuse the text embeddings of `cfg` when they come from another CLIP than the training
    vocabulary recorded in the checkpoint `weights` (`state`: TrainedVocabulary's), and the
    evaluation split DATASETS.TEST[0] when it evaluates as novel a class the model was trained
    on."""
    _check_novel_not_trained(state.get("names"), weights, cfg)
    trained = state.get("clip_hash")
    if not trained:
        return
    for label, clip_hash in vocabulary_clip_sources(cfg):
        if clip_hash and clip_hash != trained:
            raise UserInputError(
                f"{label} was made with CLIP {clip_hash}, but MODEL.WEIGHTS {weights} was trained "
                f"against text embeddings of CLIP {trained} ({state['text_embeddings']}): use "
                "text embeddings of that CLIP (MODEL.EZSD.CLIP.MODEL embeds the names that the "
                "config's text-embedding files do not hold)"
            )


def _check_novel_not_trained(trained_names, weights, cfg):
    """A model trained with boxes of a class that the evaluation split counts as novel (e.g. a
    ShapesOVD model of another split) would score it as if found zero-shot."""
    dataset = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None
    if not trained_names or dataset not in DatasetCatalog.list():
        return
    trained = set(trained_names) & set(MetadataCatalog.get(dataset).get("novel_classes") or ())
    if trained:
        raise UserInputError(
            f"MODEL.WEIGHTS {weights} was trained with boxes of {sorted(trained)}, which "
            f"DATASETS.TEST[0] {dataset} counts as novel: use the split it was trained for"
        )


class TrainedInputs:
    """A checkpointable saved beside the model under INPUTS_KEY: the config settings the weights
    were trained under that are not weights (`trained_inputs`). Resuming under others is
    refused."""

    def __init__(self, cfg):
        self.cfg = cfg

    def state_dict(self):
        return trained_inputs(self.cfg)

    def load_state_dict(self, state):
        check_trained_inputs(state, "the checkpoint resumed", self.cfg)


def trained_inputs(cfg):
    """What the weights of a model built from `cfg` expect without holding it: the input
    normalization and channel order, and the anchors its RPN regresses from."""
    anchors = cfg.MODEL.ANCHOR_GENERATOR
    return {
        "MODEL.PIXEL_MEAN": _floats(cfg.MODEL.PIXEL_MEAN),
        "MODEL.PIXEL_STD": _floats(cfg.MODEL.PIXEL_STD),
        "INPUT.FORMAT": cfg.INPUT.FORMAT,
        "MODEL.ANCHOR_GENERATOR.SIZES": _per_level(anchors.SIZES),
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": _per_level(anchors.ASPECT_RATIOS),
    }


def _per_level(anchor_values):
    """An anchor setting as a list per feature level: detectron2 reads a flat list as one level's
    values, the same for every level."""
    values = _floats(anchor_values)
    return values if values and isinstance(values[0], list) else [values]


def _floats(value):
    """A config list (nested or not, of ints or floats) as lists of floats: 32 and 32.0 agree."""
    if isinstance(value, (list, tuple)):
        return [_floats(v) for v in value]
    return float(value)


def check_trained_inputs(state, weights, cfg):
    """Refuse `cfg` when a setting recorded in the checkpoint `weights` (`state`: TrainedInputs')
    differs from it."""
    now = trained_inputs(cfg)
    diff = settings_difference(state, now, keys=set(now) & set(state))
    if diff:
        raise UserInputError(
            f"MODEL.WEIGHTS {weights} was trained with other settings than the config "
            f"({diff}): use the config the weights were trained with"
        )


class _Checkpointer(DetectionCheckpointer):
    """Keeps the keys that did not load (detectron2 only logs them)."""

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def load_weights(model, weights, cfg, config_file=None):
    """Load `weights` into `model`, built from `cfg`. Weights that are not a checkpoint, that leave
    parameters missing or of another shape, or whose training vocabulary came from another CLIP
    than cfg's text embeddings are a UserInputError naming `config_file` (the model's config)."""
    checkpointer = _Checkpointer(model)
    try:
        checkpoint = checkpointer.load(weights)
    except (OSError, RuntimeError, EOFError, ValueError, KeyError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserInputError(f"MODEL.WEIGHTS {weights}: not a checkpoint ({first_line})") from None
    missing = list(checkpointer.incompatible.missing_keys)
    other_shape = [k for k, *_ in checkpointer.incompatible.incorrect_shapes]
    if missing or other_shape:
        detail = ", ".join(
            f"{len(keys)} {what} (e.g. {keys[0]})"
            for keys, what in ((missing, "missing"), (other_shape, "of another shape"))
            if keys
        )
        raise UserInputError(
            f"MODEL.WEIGHTS {weights} does not fit the model of {config_file or 'the config'}: "
            f"parameters {detail}; use the config the weights were trained with"
        )
    if VOCABULARY_KEY in checkpoint:
        check_trained_vocabulary(checkpoint[VOCABULARY_KEY], weights, cfg)
    else:
        logger.warning(f"{weights} records no training vocabulary: its CLIP cannot be checked")
    if INPUTS_KEY in checkpoint:
        check_trained_inputs(checkpoint[INPUTS_KEY], weights, cfg)
    else:
        logger.warning(
            f"{weights} records no input settings: its input normalization and anchors cannot be "
            "checked"
        )
    return model


def build_detector(cfg, config_file=None):
    """`build_model(cfg)` with MODEL.WEIGHTS loaded by `load_weights`, in eval mode."""
    return load_weights(build_model(cfg), cfg.MODEL.WEIGHTS, cfg, config_file).eval()
