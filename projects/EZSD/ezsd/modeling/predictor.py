"""EZSD's box predictor: the vocabulary classifier and semantic-based box regression.

    scores = VocabularyClassifier(region)           (R, C + 1): T * cos(region, text_c), background
    deltas = Linear([reg_features, text_k])         (R, 4), class-agnostic; k = the assigned GT
                                                    class in training, the argmax of softmax(scores)
                                                    at inference; the zero vector for background

Losses and inference are FastRCNNOutputLayers' (softmax cross-entropy, class-agnostic regression).
Options that are not the paper's (off by default): at test time `ezsd.modeling.extensions`; in
training the novel names' columns of `ezsd.modeling.novel_negatives` (see `forward`).
"""

from typing import List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat, cross_entropy
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from ezsd.utils.errors import UserInputError

from .extensions import TestTimeExtensions
from .vocabulary import (
    check_vocabulary_against_datasets,
    check_vocabulary_clip,
    dataset_class_names,
    load_vocabulary_file,
    vocabularies_from_config,
)
from .vocabulary_classifier import VocabularyClassifier

__all__ = [
    "EZSDPredictor",
    "load_vocabulary_file",
    "dataset_class_names",
    "temperature_scaled_parameters",
    "check_vocabulary_clip",
]


class EZSDPredictor(FastRCNNOutputLayers):
    """FastRCNNOutputLayers whose `cls_score` is a :class:`VocabularyClassifier` and whose box
    regression is conditioned on a text embedding.

    Input: `(region_embeddings (R, D), reg_features (R, F))` from :class:`EZSDBoxHead`.
    Output: `(scores (R, C + 1), deltas (R, 4))` (see `forward` for the training option that
    adds columns). `num_classes`, `class_names` and
    `set_vocabulary` are the classifier's (the active vocabulary's).
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        box2box_transform,
        text_embeddings: torch.Tensor,
        class_names,
        test_text_embeddings: Optional[torch.Tensor] = None,
        test_class_names=None,
        reg_input_shape: ShapeSpec,
        semantic_regression: bool = True,
        temperature: float = 100.0,
        learn_temperature: bool = True,
        extensions: Optional[TestTimeExtensions] = None,
        expected_datasets: Optional[dict] = None,
        **kwargs,
    ):
        """
        Args:
            input_shape: shape of the region embedding (channels = D).
            box2box_transform: as in FastRCNNOutputLayers.
            text_embeddings, class_names, test_text_embeddings, test_class_names, temperature,
                learn_temperature: the classifier's (see VocabularyClassifier).
            reg_input_shape: shape of the regression-branch features.
            semantic_regression: concatenate a text embedding to the regression features.
            extensions: test-time options that are not the paper's (None: none).
            expected_datasets: {"train": [names], "test": [names]}; a vocabulary's names are
                checked against each of those datasets' thing_classes at the first forward of its
                mode when they were unknown at build time.
            kwargs: the other FastRCNNOutputLayers arguments (test_score_thresh, ...).
        """
        super().__init__(
            input_shape,
            box2box_transform=box2box_transform,
            num_classes=len(class_names),
            cls_agnostic_bbox_reg=True,
            **kwargs,
        )
        if self.use_sigmoid_ce or self.use_fed_loss:
            raise UserInputError(
                "EZSD's cosine classifier uses softmax cross-entropy only "
                "(set MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE/USE_FED_LOSS False)"
            )
        embed_dim = input_shape.channels
        self.embed_dim = embed_dim
        self.cls_score = VocabularyClassifier(
            embed_dim,
            text_embeddings,
            class_names,
            test_text_embeddings=test_text_embeddings,
            test_class_names=test_class_names,
            temperature=temperature,
            learn_temperature=learn_temperature,
        )
        self.semantic_regression = semantic_regression
        reg_in = reg_input_shape.channels + (embed_dim if semantic_regression else 0)
        self.bbox_pred = nn.Linear(reg_in, len(box2box_transform.weights))
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.bbox_pred.bias, 0)
        self.extensions = extensions or TestTimeExtensions()
        self._expected_datasets = {
            k: [v] if isinstance(v, str) else list(v) for k, v in (expected_datasets or {}).items()
        }
        self._checked = set()  # the modes whose vocabulary was checked against its datasets

    @classmethod
    def from_config(cls, cfg, input_shape, reg_input_shape=None):
        ret = super().from_config(cfg, input_shape)
        ret.pop("num_classes")
        ret.pop("cls_agnostic_bbox_reg")
        ez = cfg.MODEL.EZSD
        ret.update(vocabularies_from_config(cfg))
        ret.update(
            reg_input_shape=reg_input_shape or ShapeSpec(channels=cfg.MODEL.ROI_BOX_HEAD.FC_DIM),
            semantic_regression=ez.SEMANTIC_REGRESSION,
            temperature=ez.TEMPERATURE,
            learn_temperature=ez.LEARN_TEMPERATURE,
            extensions=TestTimeExtensions.from_config(cfg),
            expected_datasets={"train": cfg.DATASETS.TRAIN, "test": cfg.DATASETS.TEST},
        )
        return ret

    # ---- the vocabulary: the classifier's ---------------------------------------------------

    @property
    def num_classes(self) -> int:
        """The active vocabulary's size."""
        if isinstance(self._modules.get("cls_score"), VocabularyClassifier):
            return self.cls_score.num_classes
        return self._init_num_classes

    @num_classes.setter
    def num_classes(self, value):
        # FastRCNNOutputLayers.__init__ assigns it; afterwards it follows the vocabulary
        if isinstance(self._modules.get("cls_score"), VocabularyClassifier):
            raise AttributeError("num_classes follows the vocabulary: use set_vocabulary()")
        self._init_num_classes = value

    @property
    def class_names(self) -> List[str]:
        return self.cls_score.class_names

    def set_vocabulary(self, embeddings, names, split=None):
        """See :meth:`VocabularyClassifier.set_vocabulary`; the caller's own vocabulary is not
        checked against a dataset's classes."""
        self.cls_score.set_vocabulary(embeddings, names, split)
        self._checked.add(split or ("train" if self.training else "test"))

    # shortcuts to the classifier's tensors
    text_embeddings = property(lambda self: self.cls_score.text_embeddings)
    log_temperature = property(lambda self: self.cls_score.log_temperature)
    temperature = property(lambda self: self.cls_score.temperature)
    bg_score = property(lambda self: self.cls_score.bg_score)

    def _check_names_once(self):
        """Check the active vocabulary against its datasets' classes if that was not possible when
        the model was built (thing_classes unknown until the dataset's json was first loaded)."""
        split = "train" if self.training else "test"
        if split not in self._checked and check_vocabulary_against_datasets(
            self.class_names, self._expected_datasets.get(split, []), split
        ):
            self._checked.add(split)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the classifier was a module of its own hold its two tensors
        # at the predictor's level: the same values, loaded where they live now.
        for name in ("log_temperature", "bg_score.weight"):
            old, new = prefix + name, prefix + "cls_score." + name
            if old in state_dict and new not in state_dict:
                state_dict[new] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- forward ----------------------------------------------------------------------------

    def regression_text(self, scores: torch.Tensor, gt_classes: Optional[torch.Tensor] = None):
        """The text embedding that conditions each region's regression (the official head's rule):
        in training, of its assigned class (zeros for background, class id C); at inference, of
        the argmax of the softmax over the C classes *and* background, the zero vector when
        background wins. `scores`: the (R, C + 1) logits (class columns, then background)."""
        text = self.cls_score.text_embeddings
        padded = torch.cat([text, text.new_zeros(1, self.embed_dim)])
        if gt_classes is None:
            # softmax is monotonic: its argmax is the logits' argmax; index C = background -> zeros
            return padded[scores.argmax(dim=1)]
        return padded[gt_classes.clamp(0, self.num_classes)]

    def forward(
        self,
        x,
        gt_classes: Optional[torch.Tensor] = None,
        novel_negative: Optional[torch.Tensor] = None,
    ):
        """
        Args:
            x: (region_embeddings (R, D), reg_features (R, F)).
            gt_classes: (R,) assigned classes in training (C = background); None at inference.
            novel_negative: (R,) bool, training only (ezsd.modeling.novel_negatives, not the
                paper's): the regions on which the N novel names compete; None = none.
        Returns:
            scores (R, C + 1), or (R, C + 1 + N) with `novel_negative`: the novel names' logits
            after background's, -inf where they do not compete; proposal_deltas (R, 4)
        """
        self._check_names_once()
        embeddings, reg_features = x
        scores = self.cls_score(embeddings)
        if novel_negative is not None:
            if novel_negative.shape != scores.shape[:1]:
                raise ValueError(
                    f"novel_negative of shape {tuple(novel_negative.shape)}, "
                    f"for {len(scores)} regions"
                )
            novel = self.cls_score.novel_logits(embeddings)
            novel = novel.masked_fill(~novel_negative[:, None], float("-inf"))
            scores = torch.cat([scores, novel], dim=1)
        reg_features = reg_features.flatten(1)
        if self.semantic_regression:
            text = self.regression_text(scores.detach(), gt_classes)
            reg_features = torch.cat([reg_features, text], dim=1)
        deltas = self.bbox_pred(reg_features)
        if self.training:
            try:
                get_event_storage().put_scalar("ezsd/temperature", float(self.temperature.detach()))
            except AssertionError:  # no EventStorage (used outside a trainer)
                pass
        return scores, deltas

    def losses(self, predictions, proposals):
        """FastRCNNOutputLayers' losses; with the novel names' columns in the scores (see
        `forward`), the classification loss is the softmax cross-entropy over all columns (the
        logged fast_rcnn accuracies stay those of the training names and background)."""
        scores, deltas = predictions
        own = self.num_classes + 1
        losses = super().losses((scores[:, :own], deltas), proposals)
        if scores.shape[1] > own:
            gt_classes = cat([p.gt_classes for p in proposals], dim=0)
            loss_cls = cross_entropy(scores, gt_classes, reduction="mean")
            losses["loss_cls"] = loss_cls * self.loss_weight.get("loss_cls", 1.0)
        return losses

    def predict_probs(self, predictions, proposals: List[Instances]):
        """Class probabilities per image, (R_i, C + 1): the softmax over all names and background
        (the paper's), or what the test-time extensions that are on make of the scores."""
        scores, _ = predictions
        probs = self.extensions.class_probabilities(
            scores, proposals, self.class_names, self.cls_score.training_names, self.training
        )
        return probs.split([len(p) for p in proposals], dim=0)


def temperature_scaled_parameters(model: nn.Module) -> List[str]:
    """Names (as in `model.named_parameters()`) of the learned log T and background vector of
    every VocabularyClassifier in `model`: their gradients carry the factor T, ~100x those of the
    other weights, so the trainer gives them MODEL.EZSD.TEMPERATURE_LR_FACTOR."""
    names = []
    for prefix, module in model.named_modules():
        if isinstance(module, VocabularyClassifier):
            prefix = prefix + "." if prefix else ""
            own = dict(module.named_parameters())
            names += [prefix + n for n in ("log_temperature", "bg_score.weight") if n in own]
    return names
