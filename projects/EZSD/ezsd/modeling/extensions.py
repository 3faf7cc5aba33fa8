"""Test-time options that are NOT part of the EZSD paper (MODEL.EZSD.TEST_SPLIT_SOFTMAX,
MODEL.EZSD.TEST_OBJECTNESS_EXPONENT), off by default.

The paper's class probabilities are one softmax over all names and background. These options
change them at inference only; training, checkpoints and the default inference are unaffected:

- TEST_SPLIT_SOFTMAX: the training vocabulary's names (base) compete in a softmax with each other
  and background only, the other names (novel) likewise, so that no base name can take a novel
  object's probability nor the reverse. Background's probability stays the joint softmax's.
- TEST_OBJECTNESS_EXPONENT A > 0: every class probability (not background's) is multiplied by the
  proposal's sigmoid objectness to the power A.
"""

from dataclasses import dataclass
from typing import List, Sequence

import torch
from detectron2.structures import Instances

from ezsd.utils.errors import UserInputError

__all__ = ["TestTimeExtensions", "split_softmax", "weight_by_objectness"]


def split_softmax(scores: torch.Tensor, is_base: torch.Tensor) -> torch.Tensor:
    """(R, C + 1) logits -> probabilities: each group of names (`is_base` (C,) and its complement)
    in its own softmax with background; background's column from the softmax over all."""
    class_probs = torch.empty_like(scores[:, :-1])
    for group in (is_base, ~is_base):
        if group.any():
            own = torch.cat([scores[:, :-1][:, group], scores[:, -1:]], dim=1).softmax(-1)
            class_probs[:, group] = own[:, :-1]
    return torch.cat([class_probs, scores.softmax(-1)[:, -1:]], dim=1)


def weight_by_objectness(probs: torch.Tensor, proposals: List[Instances], exponent: float):
    """Class probabilities (not background's) times sigmoid(proposal objectness) ** exponent."""
    if not all(p.has("objectness_logits") for p in proposals):
        raise UserInputError(
            "MODEL.EZSD.TEST_OBJECTNESS_EXPONENT > 0 needs proposals "
            "with objectness_logits (an RPN or pre-computed proposals with scores)"
        )
    objectness = torch.cat([p.objectness_logits for p in proposals]).sigmoid()
    weight = objectness.to(probs.dtype)[:, None] ** exponent
    return torch.cat([probs[:, :-1] * weight, probs[:, -1:]], dim=1)


@dataclass
class TestTimeExtensions:
    """The non-paper test-time options of one predictor (the defaults: none)."""

    split_softmax: bool = False
    objectness_exponent: float = 0.0

    __test__ = False  # not a pytest test class, despite its name

    def __post_init__(self):
        if self.objectness_exponent < 0:
            raise UserInputError(
                f"MODEL.EZSD.TEST_OBJECTNESS_EXPONENT must be >= 0, got {self.objectness_exponent}"
            )
        self.objectness_exponent = float(self.objectness_exponent)

    @classmethod
    def from_config(cls, cfg):
        ez = cfg.MODEL.EZSD
        return cls(
            split_softmax=ez.TEST_SPLIT_SOFTMAX, objectness_exponent=ez.TEST_OBJECTNESS_EXPONENT
        )

    def class_probabilities(
        self,
        scores: torch.Tensor,
        proposals: List[Instances],
        class_names: Sequence[str],
        base_names: Sequence[str],
        training: bool,
    ):
        """(R, C + 1) probabilities from the (R, C + 1) logits, with the options that are on;
        the split softmax applies in eval mode only (as before the options were grouped)."""
        if self.split_softmax and not training:
            base = set(base_names)
            is_base = torch.tensor([n in base for n in class_names], device=scores.device)
            probs = split_softmax(scores, is_base)
        else:
            probs = scores.softmax(-1)
        if self.objectness_exponent:
            probs = weight_by_objectness(probs, proposals, self.objectness_exponent)
        return probs
