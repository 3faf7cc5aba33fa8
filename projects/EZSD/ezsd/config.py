import hashlib
import os

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from ezsd.utils.errors import UserInputError


def add_ezsd_config(cfg):
    """Add the config keys of EZSD. Every key has a comment saying what it controls.

    Also registers the detector's components (`ezsd.modeling`) so that `build_model(cfg)` finds
    them; `import ezsd` alone does not load the detector (see ezsd/__init__.py)."""
    from . import modeling  # noqa: F401  (registers EZSDRCNN, EZSDROIHeads, EZSDBoxHead)

    _C = cfg
    _C.MODEL.EZSD = CN()

    # CLIP used by the offline tools and the text embeddings: an OpenAI name ("ViT-B/32") or a
    # local state-dict file (a re-normalized checkpoint is such a file).
    _C.MODEL.EZSD.CLIP = CN()
    _C.MODEL.EZSD.CLIP.MODEL = "ViT-B/32"
    # Prompt templates for class-name text embeddings; several are averaged (prompt ensemble).
    _C.MODEL.EZSD.CLIP.PROMPTS = ["a photo of a {}"]

    # ---- detector (ezsd/modeling, ezsd/data/mapper.py) ----
    # Dimension of the region embedding = the CLIP embedding dimension (512 for ViT-B/32).
    _C.MODEL.EZSD.EMBED_DIM = 512
    # Training vocabulary: text-embedding file (FILE.npy + FILE.names.json) of DATASETS.TRAIN's
    # classes (a relative path is looked up under DETECTRON2_DATASETS first, then as given; same
    # for FEATURES).
    _C.MODEL.EZSD.TEXT_EMBEDDINGS = ""
    # Inference vocabulary (e.g. base + novel), checked against DATASETS.TEST[0]; "" = the
    # training one.
    _C.MODEL.EZSD.TEST_TEXT_EMBEDDINGS = ""
    # Classifier temperature T (logits = T * cosine); the initial value when learned.
    _C.MODEL.EZSD.TEMPERATURE = 100.0
    # Learn T (stored as log T) or keep it fixed.
    _C.MODEL.EZSD.LEARN_TEMPERATURE = True
    # LR multiplier of the classifier parameters whose gradient carries a factor T (~100): log T
    # and the background vector (below 1.0 slows their steps relative to the rest of the model).
    _C.MODEL.EZSD.TEMPERATURE_LR_FACTOR = 1.0
    # Semantic-based regression: condition box regression on a class text embedding.
    _C.MODEL.EZSD.SEMANTIC_REGRESSION = True
    # -- Extensions: options that are NOT the paper's (ezsd.modeling.extensions,
    # ezsd.modeling.not_background, ezsd.modeling.novel_negatives), off by default. (Their names
    # stay at MODEL.EZSD level: every training run's config.yaml holds them.)
    # Inference: each class probability times sigmoid(RPN objectness) ** this; 0 = off (the
    # paper). Detic's MULT_PROPOSAL_SCORE idea; needs proposals with objectness_logits.
    _C.MODEL.EZSD.TEST_OBJECTNESS_EXPONENT = 0.0
    # Inference: the training vocabulary's names compete in a softmax with each other and
    # background only, the other (novel) names likewise; False = one softmax (the paper).
    _C.MODEL.EZSD.TEST_SPLIT_SOFTMAX = False
    # Training: RPN anchors and sampled ROI proposals labelled background whose IoU with one of
    # the image's distilled CLIP regions is at least this are left out of the losses instead
    # (they may be unlabeled novel objects); 0 = off (the paper). The RPN must be 'EZSDRPN'.
    _C.MODEL.EZSD.NOT_BACKGROUND_IOU = 0.0
    # Training: sampled ROI proposals labelled background, away from every base box (IoU < 0.3,
    # under half their area inside one), whose RPN objectness probability is at least this are
    # left out of the ROI losses instead (they may be unlabeled novel objects); 0 = off (the
    # paper).
    _C.MODEL.EZSD.NOT_BACKGROUND_OBJECTNESS = 0.0
    # Training: the novel names (of MODEL.EZSD.TEST_TEXT_EMBEDDINGS, absent from the training
    # vocabulary) join the classification softmax as wrong answers on the sampled proposals
    # labelled as a base class and on the background ones with at least this share of their area
    # inside a base box (parts of base objects); 0 = off (the paper: novel names only at test).
    _C.MODEL.EZSD.NOVEL_NEGATIVES_INSIDE = 0.0
    # -- end of the extensions
    # EZSD box head layout (conv/FC widths and norm come from
    # MODEL.ROI_BOX_HEAD.CONV_DIM/FC_DIM/NORM).
    _C.MODEL.EZSD.BOX_HEAD = CN()
    # 3x3 convs shared by the classification and regression branches.
    _C.MODEL.EZSD.BOX_HEAD.NUM_SHARED_CONV = 3
    # 3x3 convs in each branch.
    _C.MODEL.EZSD.BOX_HEAD.NUM_BRANCH_CONV = 1
    # FC layers in each branch.
    _C.MODEL.EZSD.BOX_HEAD.NUM_BRANCH_FC = 2
    # Distillation of CLIP region embeddings into the region embedding.
    _C.MODEL.EZSD.DISTILL = CN()
    # Add the distillation loss (needs pre-computed region features and EZSDDatasetMapper).
    _C.MODEL.EZSD.DISTILL.ENABLED = True
    # Distillation loss factor (the loss is also multiplied by EMBED_DIM): 1.0 COCO, 0.5 LVIS.
    _C.MODEL.EZSD.DISTILL.WEIGHT = 1.0
    # CLIP proposals distilled per image: sampled with replacement from the first this many stored.
    _C.MODEL.EZSD.DISTILL.NUM_PROPOSALS = 200
    # Folder of pre-computed region features (holds manifest.json); relative paths are under
    # DETECTRON2_DATASETS.
    _C.MODEL.EZSD.DISTILL.FEATURES = ""
    # An image without stored regions: "error" (default) or "skip" (train it without
    # distillation, counted and logged).
    _C.MODEL.EZSD.DISTILL.ON_MISSING = "error"

    # ---- solver (ezsd.engine) ----
    # Optimizer: "SGD" (the paper's; SOLVER.MOMENTUM, SOLVER.NESTEROV) or "ADAMW" (betas 0.9/0.999).
    _C.SOLVER.OPTIMIZER = "SGD"


def load_ezsd_config(config_file, opts=(), opts_name="command-line option"):
    """A detectron2 config with the EZSD keys, merged from `config_file` and then `opts`
    (KEY VALUE ...), not frozen. A missing file, an unknown key or a bad value is a one-line
    UserInputError naming the file (or `opts_name`)."""
    cfg = get_cfg()
    add_ezsd_config(cfg)
    if not os.path.isfile(config_file):
        raise UserInputError(f"config file not found: {config_file}")
    # yacs raises KeyError (unknown key), ValueError or AssertionError (bad value or type); their
    # args[0] is the message (str() of a KeyError puts it in quotes).
    for source, merge in (
        (config_file, lambda: cfg.merge_from_file(config_file)),
        (opts_name, lambda: cfg.merge_from_list(list(opts))),
    ):
        try:
            merge()
        except (KeyError, ValueError, AssertionError, yaml.YAMLError) as e:
            msg = e.args[0] if e.args and isinstance(e, KeyError) else e
            raise UserInputError(f"{source}: {msg}".replace("\n", " ")) from None
    return cfg


def config_digest(config_file, opts=(), opts_name="command-line option"):
    """The short sha256 (12 hex digits) of the dump of `config_file` merged with `opts`: what a
    record of the config a model or file was made with compares."""
    dump = load_ezsd_config(config_file, opts, opts_name).dump().encode()
    return hashlib.sha256(dump).hexdigest()[:12]
