"""The cosine classifier against CLIP text embeddings, with semantic-based box regression.

Vocabularies. The classifier's text embeddings are a registered, non-persistent buffer
(`text_embeddings`, moved by `.to(device)`, absent from checkpoints, so a checkpoint is
vocabulary-free). The predictor holds a *training* vocabulary (the training dataset's classes) and
an *inference* vocabulary (by default the same; e.g. base + novel names for zero-shot testing) and
activates the one of its mode on `model.train()` / `model.eval()`. `set_vocabulary(embeddings,
names)` replaces the vocabulary of the current mode (or of the given `split`) without rebuilding
anything; `num_classes` always equals the active vocabulary's size.
"""

import math
import os
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from ezsd.data.text_embedding_file import check_same_clip, load_text_embeddings, text_embedding_info
from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import file_sha256, resolve_data_path
from ezsd.utils.names import names_difference

__all__ = [
    "EZSDPredictor", "load_vocabulary_file", "dataset_class_names", "temperature_scaled_parameters",
    "check_vocabulary_clip",
]  # fmt: skip


def dataset_class_names(dataset_name):
    """The `thing_classes` of a registered dataset, or None when not (yet) known (a COCO json sets
    them when first loaded)."""
    if not dataset_name:
        return None
    return MetadataCatalog.get(dataset_name).get("thing_classes")


def load_vocabulary_file(path, expected_names=None, config_key="", dataset_name=""):
    """Read a text-embedding file (FILE.npy + FILE.names.json); return (float32 tensor (C, D),
    names). With `expected_names`, the sidecar's names must equal them (UserInputError otherwise,
    naming both files, the first differing name, and where the expected names came from)."""
    if not path:
        raise UserInputError(
            f"{config_key or 'the text-embedding file'} is empty; write one with "
            "tools/dump_text_embeddings.py and set it"
        )
    try:
        embeddings, names = load_text_embeddings(
            resolve_data_path(path), expected_names=expected_names
        )
    except UserInputError as e:
        where = " ".join(
            x for x in (config_key, f"dataset '{dataset_name}'" if dataset_name else "") if x
        )
        raise UserInputError(f"{e} [{where}]" if where else str(e)) from None
    return torch.from_numpy(embeddings.copy()), list(names)


def _common_classes(dataset_names, config_key):
    """(a dataset name, its thing_classes) for the datasets of `config_key`: every one whose
    classes are known must have the same ones, since one vocabulary serves them all. (first
    name, None) when none is known yet; ("", None) when there is none."""
    known = [(n, dataset_class_names(n)) for n in dataset_names]
    known = [(n, list(c)) for n, c in known if c is not None]
    for name, classes in known[1:]:
        if classes != known[0][1]:
            raise UserInputError(
                f"{config_key}: datasets '{known[0][0]}' ({len(known[0][1])} classes) and "
                f"'{name}' ({len(classes)} classes) have different classes; one text-embedding "
                "file serves them all, so evaluate (or train) them in separate runs"
            )
    if known:
        return known[0]
    return (dataset_names[0] if len(dataset_names) else ""), None


def check_vocabulary_clip(cfg):
    """Refuse training and test text embeddings made with different CLIPs, or with another CLIP
    than MODEL.EZSD.CLIP.MODEL when that is a local file (its sha256 is what the files record).
    The pair of embedding files must both record a hash when one does."""
    ez = cfg.MODEL.EZSD
    files = [(k, resolve_data_path(getattr(ez, k))) for k in ("TEXT_EMBEDDINGS", "TEST_TEXT_EMBEDDINGS")]
    sources = [(f"MODEL.EZSD.{k} {path}", text_embedding_info(path)["clip_hash"])
               for k, path in files if path]  # fmt: skip
    common = check_same_clip(sources, require_all=True)
    clip_file = resolve_data_path(ez.CLIP.MODEL)
    if common and clip_file and os.path.isfile(clip_file):
        check_same_clip(sources[:1] + [(f"MODEL.EZSD.CLIP.MODEL {clip_file}", file_sha256(clip_file))])


class EZSDPredictor(FastRCNNOutputLayers):
    """Cosine classifier + background score + class-agnostic semantic regression.

    Input: `(region_embeddings (R, D), reg_features (R, F))` from :class:`EZSDBoxHead`.
    Output: `(scores (R, C + 1), deltas (R, 4))`, the contract of FastRCNNOutputLayers, whose
    losses and inference are reused (softmax cross-entropy, class-agnostic box regression):

        scores[:, c] = T * cos(region, text_c),  scores[:, C] = T * <w_bg, region>
        deltas = Linear([reg_features, text_k])   k = assigned GT class in training, argmax of
                                                   softmax(scores) at inference; zeros for background
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        box2box_transform,
        text_embeddings: torch.Tensor,
        class_names: Sequence[str],
        test_text_embeddings: Optional[torch.Tensor] = None,
        test_class_names: Optional[Sequence[str]] = None,
        reg_input_shape: ShapeSpec,
        semantic_regression: bool = True,
        temperature: float = 100.0,
        learn_temperature: bool = True,
        objectness_exponent: float = 0.0,
        split_softmax: bool = False,
        expected_datasets: Optional[dict] = None,
        **kwargs,
    ):
        """
        Args:
            input_shape: shape of the region embedding (channels = D).
            box2box_transform: as in FastRCNNOutputLayers.
            text_embeddings, class_names: the training vocabulary, (C, D) and C names.
            test_text_embeddings, test_class_names: the inference vocabulary (None: the training one).
            reg_input_shape: shape of the regression-branch features.
            semantic_regression: concatenate a text embedding to the regression features.
            temperature: initial (or fixed) T; stored as log T.
            learn_temperature: T is a parameter (True) or a fixed buffer (False).
            objectness_exponent: at inference, class probabilities are multiplied by
                sigmoid(proposal objectness) ** this (0: not at all).
            split_softmax: at inference, the training vocabulary's names (base) compete in a softmax
                with each other and background only, the other names (novel) likewise.
            expected_datasets: {"train": [names], "test": [names]}; a vocabulary's names are
                checked against each of those datasets' thing_classes at the first forward of its
                mode when they were unknown at build time.
            kwargs: the other FastRCNNOutputLayers arguments (test_score_thresh, ...).
        """
        embed_dim = input_shape.channels
        super().__init__(
            input_shape, box2box_transform=box2box_transform, num_classes=len(class_names),
            cls_agnostic_bbox_reg=True, **kwargs,
        )  # fmt: skip
        if self.use_sigmoid_ce or self.use_fed_loss:
            raise UserInputError("EZSD's cosine classifier uses softmax cross-entropy only "
                                 "(set MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE/USE_FED_LOSS False)")  # fmt: skip
        del self.cls_score  # replaced by the text embeddings and the background vector
        self.embed_dim = embed_dim
        self.bg_score = nn.Linear(embed_dim, 1, bias=False)
        nn.init.normal_(self.bg_score.weight, std=0.01)
        self.semantic_regression = semantic_regression
        reg_in = reg_input_shape.channels + (embed_dim if semantic_regression else 0)
        self.bbox_pred = nn.Linear(reg_in, len(box2box_transform.weights))
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.bbox_pred.bias, 0)

        log_t = torch.tensor(math.log(temperature), dtype=torch.float32)
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

        if objectness_exponent < 0:
            raise UserInputError(
                f"MODEL.EZSD.TEST_OBJECTNESS_EXPONENT must be >= 0, got {objectness_exponent}"
            )
        self.objectness_exponent = float(objectness_exponent)
        self.split_softmax = split_softmax

        self._expected_datasets = dict(expected_datasets or {})
        self._vocabularies = {}
        self._checked = set()
        self.register_buffer("text_embeddings", torch.zeros(0, embed_dim), persistent=False)
        self._store_vocabulary(text_embeddings, class_names, "train")
        if test_text_embeddings is not None:
            self._store_vocabulary(test_text_embeddings, test_class_names, "test")
        self._activate()

    @classmethod
    def from_config(cls, cfg, input_shape, reg_input_shape=None):
        ret = super().from_config(cfg, input_shape)
        ret.pop("num_classes")
        ret.pop("cls_agnostic_bbox_reg")
        ez = cfg.MODEL.EZSD
        train_ds, train_classes = _common_classes(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
        test_ds, test_classes = _common_classes(cfg.DATASETS.TEST, "DATASETS.TEST")
        emb, names = load_vocabulary_file(
            ez.TEXT_EMBEDDINGS, train_classes, "MODEL.EZSD.TEXT_EMBEDDINGS", train_ds,
        )  # fmt: skip
        if len(names) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise UserInputError(
                f"{ez.TEXT_EMBEDDINGS} holds {len(names)} classes but MODEL.ROI_HEADS.NUM_CLASSES "
                f"is {cfg.MODEL.ROI_HEADS.NUM_CLASSES}; they must agree (training classes)"
            )
        ret.update(text_embeddings=emb, class_names=names)
        if ez.TEST_TEXT_EMBEDDINGS:
            test_emb, test_names = load_vocabulary_file(
                ez.TEST_TEXT_EMBEDDINGS, test_classes, "MODEL.EZSD.TEST_TEXT_EMBEDDINGS", test_ds,
            )  # fmt: skip
            ret.update(test_text_embeddings=test_emb, test_class_names=test_names)
        elif test_classes is not None and (difference := names_difference(names, test_classes)):
            raise UserInputError(
                f"dataset '{test_ds}' (DATASETS.TEST) has other classes than {ez.TEXT_EMBEDDINGS} "
                f"({difference}): set MODEL.EZSD.TEST_TEXT_EMBEDDINGS to "
                f"text embeddings of its classes (tools/dump_text_embeddings.py --dataset {test_ds})"
            )
        check_vocabulary_clip(cfg)
        if reg_input_shape is None:
            reg_input_shape = ShapeSpec(channels=cfg.MODEL.ROI_BOX_HEAD.FC_DIM)
        ret.update(
            reg_input_shape=reg_input_shape,
            semantic_regression=ez.SEMANTIC_REGRESSION,
            temperature=ez.TEMPERATURE,
            learn_temperature=ez.LEARN_TEMPERATURE,
            objectness_exponent=ez.TEST_OBJECTNESS_EXPONENT,
            split_softmax=ez.TEST_SPLIT_SOFTMAX,
            expected_datasets={"train": list(cfg.DATASETS.TRAIN), "test": list(cfg.DATASETS.TEST)},
        )
        return ret

    # ---- vocabulary -------------------------------------------------------------------------

    @property
    def class_names(self) -> List[str]:
        """Names of the active vocabulary (index = class id of the predictions)."""
        return list(self._active_vocabulary()[1])

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def set_vocabulary(self, embeddings, names, split=None):
        """Replace the classifier's vocabulary; no retraining, no rebuilding.

        Args:
            embeddings: (C, D) array or tensor of text embeddings (L2-normalised here).
            names: the C class names, in class-id order.
            split: "train" or "test" (the vocabulary used in training / eval mode); None = the
                current mode's. The active buffer and `num_classes` change if it is the current one.
        """
        split = split or ("train" if self.training else "test")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        self._store_vocabulary(embeddings, names, split)
        self._checked.add(split)  # the caller's own vocabulary: not checked against a dataset
        self._activate()

    def _store_vocabulary(self, embeddings, names, split):
        embeddings = torch.as_tensor(embeddings, dtype=torch.float32).detach().cpu()
        names = [str(n) for n in names]
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embed_dim:
            raise UserInputError(
                f"text embeddings of shape {tuple(embeddings.shape)}: expected (C, {self.embed_dim})"
                " (MODEL.EZSD.EMBED_DIM must be the CLIP embedding dimension)"
            )
        if embeddings.shape[0] != len(names) or not names:
            raise UserInputError(f"{embeddings.shape[0]} text embeddings for {len(names)} names")
        self._vocabularies[split] = (F.normalize(embeddings, dim=1), names)

    def _active_vocabulary(self):
        if self.training or "test" not in self._vocabularies:  # no inference one: the training one
            return self._vocabularies["train"]
        return self._vocabularies["test"]

    def _activate(self):
        embeddings, names = self._active_vocabulary()
        device = self.log_temperature.device
        self.text_embeddings = embeddings.to(
            device
        )  # assigning a tensor to a buffer name keeps it a buffer
        self.num_classes = len(names)

    def train(self, mode: bool = True):
        super().train(mode)
        if self._vocabularies:
            self._activate()
        return self

    def _check_names_once(self):
        """Check the active vocabulary against its datasets' classes if that was not possible when
        the model was built (thing_classes unknown until the dataset's json was first loaded)."""
        split = "train" if self.training else "test"
        if split in self._checked:
            return
        datasets = self._expected_datasets.get(split) or []
        datasets = [datasets] if isinstance(datasets, str) else list(datasets)
        key = "MODEL.EZSD." + ("TEXT_EMBEDDINGS" if split == "train" else "TEST_TEXT_EMBEDDINGS")
        known = 0
        for dataset in datasets:
            expected = dataset_class_names(dataset)
            if expected is None:
                continue
            known += 1
            detail = names_difference(self.class_names, expected)
            if detail is not None:
                raise UserInputError(
                    f"the {'training' if split == 'train' else 'inference'} text embeddings do not "
                    f"match the classes of dataset '{dataset}' ({detail}); set {key} to embeddings "
                    f"made with tools/dump_text_embeddings.py --dataset {dataset}, or call "
                    "set_vocabulary()"
                )
        if known == len(datasets):  # all checked (or nothing to check against)
            self._checked.add(split)

    # ---- forward ----------------------------------------------------------------------------

    def regression_text(self, scores: torch.Tensor, gt_classes: Optional[torch.Tensor] = None):
        """The text embedding that conditions each region's regression (the official head's rule):
        in training, of its assigned class (zeros for background, class id C); at inference, of
        the argmax of the softmax over the C classes *and* background, the zero vector when
        background wins. `scores`: the (R, C + 1) logits (class columns, then background)."""
        padded = torch.cat(
            [self.text_embeddings, self.text_embeddings.new_zeros(1, self.embed_dim)]
        )
        if gt_classes is None:
            # softmax is monotonic: its argmax is the logits' argmax; index C = background -> zeros
            return padded[scores.argmax(dim=1)]
        return padded[gt_classes.clamp(0, self.num_classes)]

    def forward(self, x, gt_classes: Optional[torch.Tensor] = None):
        """
        Args:
            x: (region_embeddings (R, D), reg_features (R, F)).
            gt_classes: (R,) assigned classes in training (C = background); None at inference.
        Returns:
            scores (R, C + 1), proposal_deltas (R, 4)
        """
        self._check_names_once()
        embeddings, reg_features = x
        reg_features = reg_features.flatten(1)
        # float32 even under autocast: T (~100) times a bf16/fp16 cosine is off by up to ~0.4.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            embeddings = F.normalize(embeddings.flatten(1).float(), dim=1)
            cos = embeddings @ self.text_embeddings.float().t()
            temperature = self.temperature.float()
            scores = temperature * torch.cat([cos, self.bg_score(embeddings)], dim=1)
        if self.semantic_regression:
            text = self.regression_text(scores.detach(), gt_classes)
            reg_features = torch.cat([reg_features, text], dim=1)
        deltas = self.bbox_pred(reg_features)
        if self.training:
            try:
                get_event_storage().put_scalar("ezsd/temperature", float(temperature.detach()))
            except AssertionError:  # no EventStorage (used outside a trainer)
                pass
        return scores, deltas

    def predict_probs(self, predictions, proposals: List[Instances]):
        """Class probabilities per image, (R_i, C + 1): a softmax over all names and background,
        or with `split_softmax` one over the base names and one over the others; then, with
        `objectness_exponent` > 0, every class probability (not background's) times the
        proposal's sigmoid objectness to that power."""
        scores, _ = predictions
        probs = scores.softmax(-1)
        if self.split_softmax and not self.training:
            probs = self._split_softmax(scores, probs)
        if self.objectness_exponent:
            if not all(p.has("objectness_logits") for p in proposals):
                raise UserInputError("MODEL.EZSD.TEST_OBJECTNESS_EXPONENT > 0 needs proposals with "
                                     "objectness_logits (an RPN or pre-computed proposals with scores)")  # fmt: skip
            objectness = torch.cat([p.objectness_logits for p in proposals]).sigmoid()
            weight = objectness.to(probs.dtype)[:, None] ** self.objectness_exponent
            probs = torch.cat([probs[:, :-1] * weight, probs[:, -1:]], dim=1)
        return probs.split([len(p) for p in proposals], dim=0)

    def _split_softmax(self, scores: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Base names' probabilities from a softmax over base names + background, the other
        names' from one over those + background, so that no base name can take a novel object's
        probability nor the reverse; background's column stays the joint softmax's."""
        base_names = set(self._vocabularies["train"][1])
        is_base = torch.tensor([n in base_names for n in self.class_names], device=scores.device)
        class_probs = torch.empty_like(scores[:, :-1])
        for group in (is_base, ~is_base):
            if group.any():
                own = torch.cat([scores[:, :-1][:, group], scores[:, -1:]], dim=1).softmax(-1)
                class_probs[:, group] = own[:, :-1]
        return torch.cat([class_probs, probs[:, -1:]], dim=1)


def temperature_scaled_parameters(model: nn.Module) -> List[str]:
    """Names (as in `model.named_parameters()`) of the learned log T and background vector of
    every EZSDPredictor in `model`: their gradients carry the factor T, ~100x those of the other
    weights, so the trainer gives them MODEL.EZSD.TEMPERATURE_LR_FACTOR."""
    names = []
    for prefix, module in model.named_modules():
        if isinstance(module, EZSDPredictor):
            prefix = prefix + "." if prefix else ""
            own = dict(module.named_parameters())
            names += [prefix + n for n in ("log_temperature", "bg_score.weight") if n in own]
    return names
