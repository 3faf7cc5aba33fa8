"""EZSD's region classifier: temperature-scaled cosine similarity with CLIP text embeddings,
plus a learned background score (the paper's classifier; cf. Detic's zero_shot_classifier.py).

    logits[:, c] = T * cos(region, text_c)      c = 0 .. C-1
    logits[:, C] = T * <w_bg, region>           (region L2-normalised, w_bg: no bias)

The text embeddings are a registered, non-persistent buffer (`text_embeddings`: moved by
`.to(device)`, absent from checkpoints), so a checkpoint holds only T and w_bg and is
vocabulary-free. The classifier keeps a *training* vocabulary and an *inference* one (by default
the same; e.g. base + novel names for zero-shot testing) and makes the one of its mode active on
`train()` / `eval()`. `set_vocabulary` replaces a vocabulary without rebuilding anything.
"""

import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ezsd.utils.errors import UserInputError

__all__ = ["VocabularyClassifier"]


class VocabularyClassifier(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        text_embeddings: torch.Tensor,
        class_names: Sequence[str],
        *,
        test_text_embeddings: Optional[torch.Tensor] = None,
        test_class_names: Optional[Sequence[str]] = None,
        temperature: float = 100.0,
        learn_temperature: bool = True,
    ):
        """
        Args:
            embed_dim: dimension D of region and text embeddings.
            text_embeddings, class_names: the training vocabulary, (C, D) and C names.
            test_text_embeddings, test_class_names: the inference vocabulary (None: the
                training one).
            temperature: initial (or fixed) T; stored as log T.
            learn_temperature: T is a parameter (True) or a fixed buffer (False).
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.bg_score = nn.Linear(embed_dim, 1, bias=False)
        nn.init.normal_(self.bg_score.weight, std=0.01)
        log_t = torch.tensor(math.log(temperature), dtype=torch.float32)
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)
        self.register_buffer("text_embeddings", torch.zeros(0, embed_dim), persistent=False)
        self.register_buffer("novel_text_embeddings", torch.zeros(0, embed_dim), persistent=False)
        self._vocabularies = {}  # split -> (normalised (C, D) embeddings on the CPU, names)
        self._store(text_embeddings, class_names, "train")
        if test_text_embeddings is not None:
            self._store(test_text_embeddings, test_class_names, "test")
        self._activate()

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    @property
    def class_names(self) -> List[str]:
        """Names of the active vocabulary (index = class id of the logits)."""
        return list(self._active()[1])

    @property
    def training_names(self) -> List[str]:
        """Names of the training vocabulary (the base classes), whatever the mode."""
        return list(self._vocabularies["train"][1])

    def set_vocabulary(self, embeddings, names, split: Optional[str] = None):
        """Replace a vocabulary; no retraining, no rebuilding.

        Args:
            embeddings: (C, D) array or tensor of text embeddings (L2-normalised here).
            names: the C class names, in class-id order.
            split: "train" or "test" (the vocabulary used in training / eval mode); None = the
                current mode's. The active buffer and `num_classes` change if it is the current one.
        """
        split = split or ("train" if self.training else "test")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        self._store(embeddings, names, split)
        self._activate()

    def train(self, mode: bool = True):
        super().train(mode)
        self._activate()
        return self

    @property
    def inference_names(self) -> List[str]:
        """Names of the inference vocabulary (the training one's when there is none)."""
        return list(self._vocabularies.get("test", self._vocabularies["train"])[1])

    @property
    def novel_names(self) -> List[str]:
        """Names of the inference vocabulary that the training one lacks (the novel classes),
        in the order of `novel_logits`."""
        return list(self._novel_names)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(R, D) region embeddings -> (R, C + 1) logits (classes, then background)."""
        return self._logits(embeddings, self.text_embeddings, background=True)

    def novel_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(R, D) region embeddings -> (R, N) logits T * cos with the N `novel_names`, in
        either mode (for training options that let them compete: ezsd.modeling.novel_negatives)."""
        return self._logits(embeddings, self.novel_text_embeddings, background=False)

    def _logits(self, embeddings, text, background):
        """T * cos(region, text) [then T * background score], in float32 even under autocast:
        T (~100) times a bf16/fp16 cosine is off by up to ~0.4."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            embeddings = F.normalize(embeddings.flatten(1).float(), dim=1)
            logits = embeddings @ text.float().t()
            if background:
                logits = torch.cat([logits, self.bg_score(embeddings)], dim=1)
            return self.temperature.float() * logits

    def _store(self, embeddings, names, split):
        embeddings = torch.as_tensor(embeddings, dtype=torch.float32).detach().cpu()
        names = [str(n) for n in names]
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embed_dim:
            raise UserInputError(
                f"text embeddings of shape {tuple(embeddings.shape)}: "
                f"expected (C, {self.embed_dim})"
                " (MODEL.EZSD.EMBED_DIM must be the CLIP embedding dimension)"
            )
        if embeddings.shape[0] != len(names) or not names:
            raise UserInputError(f"{embeddings.shape[0]} text embeddings for {len(names)} names")
        self._vocabularies[split] = (F.normalize(embeddings, dim=1), names)

    def _active(self):
        if self.training or "test" not in self._vocabularies:  # no inference one: the training one
            return self._vocabularies["train"]
        return self._vocabularies["test"]

    def _activate(self):
        embeddings, names = self._active()
        device = self.log_temperature.device
        # assigning a tensor to a buffer's name keeps it a (non-persistent) buffer
        self.text_embeddings = embeddings.to(device)
        self.num_classes = len(names)
        training = set(self._vocabularies["train"][1])
        test_embeddings, test_names = self._vocabularies.get("test", self._vocabularies["train"])
        rows = [i for i, n in enumerate(test_names) if n not in training]
        self._novel_names = [test_names[i] for i in rows]
        self.novel_text_embeddings = test_embeddings[rows].to(device)
