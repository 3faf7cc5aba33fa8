"""CLIP proposals: candidate boxes scored by CLIP against base + novel names.

Score of a box (the official EZSD recipe): its 1.0x crop (square zero-padded, as every CLIP crop
here) is embedded by CLIP, p = softmax(s * cos(crop, text_c)) over all C class names, with s the
CLIP's learned logit scale (100 for OpenAI's CLIPs, the paper's value; see
`resolve_logit_scale`), and
objectness = log(C) - entropy(p): 0 for a uniform p (nothing CLIP knows), log(C) for a one-hot p.
Candidates are then reduced by class-agnostic NMS (IoU 0.7) to the top K by objectness.

Three ways to choose the candidates:

* exhaustive: every dense anchor (`anchors.dense_anchors`), ~15k CLIP crop encodings per image.
* fast (coarse-to-fine local search): score a coarse grid first (ratio-1 boxes only, each size
  on a stride proportional to the size, not one fine stride for all sizes), then, for a few
  rounds, take the best boxes found so far (NMS-separated seeds) and score their 8 neighbours:
  shifted by +-step of the box's side along x and y, scaled and stretched by 1 +- 2*step. Each
  box carries its own step (a pattern search): expanding a box halves its step, its neighbours
  inherit it, so a seed that keeps improving keeps moving and one that does not is refined more
  finely. Boxes already scored (IoU >= 0.95 with one) are not scored again.
  The final NMS + top-K runs over every box scored. About 12x fewer encodings than exhaustive on
  ShapesOVD, but lower novel recall (docs/PRECOMPUTE.md).
* rpn (RPN pre-filter): the candidates are the top `rpn_candidates` boxes of a class-agnostic
  RPN trained on base boxes (`rpn_candidates.RPNCandidates`); CLIP scores each, and they are
  ranked by CLIP objectness as above. On ShapesOVD it finds more novel objects than exhaustive
  with 15-50x fewer encodings (docs/PRECOMPUTE.md).

A fourth mode is the ablation's baseline, not a CLIP proposal method:

* random: `top_k` dense anchors drawn uniformly, no CLIP encoding; every box gets confidence 1
  (uniform distillation weights) and CLIP class -1. These are regions *not* chosen by CLIP, as in
  ViLD-style distillation (the `vild_like` variant of tools/run_pipeline.py). The draw is seeded
  by the image's bytes, so every run and every shard split gives an image the same boxes.
"""

import dataclasses
import math
import zlib
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, nms

from ezsd.clip import CropSettings, encode_regions
from ezsd.clip.regions import flatten_crop

from .anchors import clip_boxes, dense_anchors

__all__ = [
    "ProposalSettings",
    "CropScorer",
    "resolve_logit_scale",
    "clip_objectness",
    "nms_top_k",
    "exhaustive_proposals",
    "fast_proposals",
    "candidate_proposals",
    "random_proposals",
    "coarse_anchors",
    "compute_proposals",
]

MODES = ("exhaustive", "fast", "rpn", "random")


@dataclasses.dataclass(frozen=True)
class ProposalSettings:
    """Everything that decides which proposals an image gets (recorded in the manifests)."""

    mode: str = "exhaustive"
    stride: int = 32
    sizes: Tuple[float, ...] = (32, 64, 128, 256, 512)
    ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)
    nms_thresh: float = 0.7
    top_k: int = 1000
    logit_scale: Optional[float] = None  # None: the CLIP's own learned scale (100 for OpenAI's)
    crop: CropSettings = CropSettings(scale=1.0)  # recorded as crop_scale, min_size
    # fast mode (ignored by exhaustive)
    fast_coarse_stride: float = 1.0  # coarse stride of a size = max(stride, this * size)
    fast_coarse_ratios: Tuple[float, ...] = (1.0,)
    fast_rounds: int = 3
    fast_seeds: int = 40  # boxes refined per round
    fast_seed_nms: float = 0.5  # IoU that separates seeds
    fast_step: float = 0.25  # first round's shift, as a fraction of the box side; halves per round
    # rpn mode (ignored by the others)
    rpn_candidates: int = 1000  # RPN boxes scored by CLIP per image
    # recorded so that a resume cannot mix the boxes of two RPNs, or of one run two ways
    rpn_weights_hash: Optional[str] = None
    rpn_config_hash: Optional[str] = None  # ezsd.config.config_digest of --rpn-config

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"proposal mode '{self.mode}' is not one of {MODES}")
        if self.rpn_candidates < 1:
            raise ValueError(f"rpn_candidates must be positive, not {self.rpn_candidates}")

    def to_dict(self):
        d = flatten_crop(dataclasses.asdict(self))
        for mode in ("fast", "rpn"):
            if self.mode != mode:
                d = {k: v for k, v in d.items() if not k.startswith(f"{mode}_")}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def clip_objectness(logits):
    """(N, C) logits -> objectness (N,) = log C - entropy(softmax), max prob (N,), argmax (N,)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    confidence, clip_class = logp.max(dim=-1)
    return math.log(logits.shape[-1]) - entropy, confidence.exp(), clip_class


def nms_top_k(boxes, objectness, iou_thresh, k):
    """Indices of the top-`k` boxes by objectness after class-agnostic NMS, best first."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    return nms(boxes.float(), objectness.float(), iou_thresh)[:k]


def resolve_logit_scale(model, logit_scale=None):
    """The softmax temperature of the proposal scores: CLIP's own learned `logit_scale.exp()`
    unless given. OpenAI's CLIPs learned exactly 100 (log 4.6052, the clamp), the paper's value;
    a smaller CLIP learns its own (the ShapesOVD one ~13.7) and at 100 its softmax is one-hot on
    almost every crop, background included, so objectness would rank nothing."""
    if logit_scale is not None:
        return float(logit_scale)
    return round(float(model.logit_scale.detach().float().exp()), 4)


class CropScorer:
    """Scores boxes of an image with CLIP; counts the crop encodings it made."""

    def __init__(self, model, text_embeddings, settings, batch_size=256):
        self.model = model
        self.text = F.normalize(text_embeddings.float(), dim=-1).to(
            model.visual.conv1.weight.device
        )
        self.settings = settings
        self.logit_scale = resolve_logit_scale(model, settings.logit_scale)
        self.batch_size = batch_size
        self.num_encodings = 0

    def __call__(self, image, boxes):
        s = self.settings
        emb = encode_regions(self.model, image, boxes, s.crop, self.batch_size)
        self.num_encodings += boxes.shape[0]
        logits = self.logit_scale * F.normalize(emb.float(), dim=-1) @ self.text.T
        return tuple(t.cpu() for t in clip_objectness(logits))


def _result(boxes, scores, settings, num_encodings):
    objectness, confidence, clip_class = scores
    keep = nms_top_k(boxes, objectness, settings.nms_thresh, settings.top_k)
    return dict(
        boxes=boxes[keep],
        objectness=objectness[keep],
        confidence=confidence[keep],
        clip_class=clip_class[keep],
        num_encodings=num_encodings,
    )


def exhaustive_proposals(scorer, image, settings):
    """Score every dense anchor; return dict(boxes, objectness, confidence, clip_class,
    num_encodings), rows sorted by objectness (best first)."""
    height, width = image.shape[-2:]
    boxes = dense_anchors(height, width, settings.stride, settings.sizes, settings.ratios)
    return _result(boxes, scorer(image, boxes), settings, boxes.shape[0])


def coarse_anchors(height, width, settings):
    """The fast mode's first candidates: each size on its own stride max(stride, f * size)."""
    grids = []
    for size in settings.sizes:
        stride = max(settings.stride, settings.fast_coarse_stride * size)
        grids.append(dense_anchors(height, width, stride, (size,), settings.fast_coarse_ratios))
    return torch.cat(grids)


def _neighbours(boxes, step):
    """8 neighbours per box: shifts of +-step * side along x and y, scale and stretch
    1 +- 2*step."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    w, h = size[:, 0:1], size[:, 1:2]
    zero = torch.zeros_like(w)
    grow = 1 + 2 * step
    shifts = torch.stack(
        [
            torch.cat(v, 1)
            for v in ((step * w, zero), (-step * w, zero), (zero, step * h), (zero, -step * h))
        ],
        1,
    )
    sizes = torch.stack(
        [
            size * grow,
            size / grow,
            torch.cat([w * grow, h / grow], 1),
            torch.cat([w / grow, h * grow], 1),
        ],
        1,
    )
    centres = torch.cat([centre[:, None] + shifts, centre[:, None].expand(-1, 4, -1)], 1)
    sizes = torch.cat([size[:, None].expand(-1, 4, -1), sizes], 1)
    return torch.cat([centres - sizes / 2, centres + sizes / 2], 2).reshape(-1, 4)


def fast_proposals(scorer, image, settings):
    """Coarse-to-fine local search (module docstring); same output as `exhaustive_proposals`."""
    height, width = image.shape[-2:]
    start = scorer.num_encodings
    boxes = coarse_anchors(height, width, settings)
    scores = list(scorer(image, boxes))
    # Pattern search: a box is expanded with its own step, which then halves; its neighbours
    # inherit the step, so a seed that keeps improving keeps moving at the same pace.
    steps = torch.full((boxes.shape[0],), float(settings.fast_step))
    for _ in range(settings.fast_rounds):
        seeds = nms_top_k(boxes, scores[0], settings.fast_seed_nms, settings.fast_seeds)
        cand = clip_boxes(
            torch.cat([_neighbours(boxes[i : i + 1], float(steps[i])) for i in seeds]),
            height,
            width,
        )
        cand_steps = steps[seeds].repeat_interleave(8)
        steps[seeds] /= 2
        side = cand[:, 2:] - cand[:, :2]
        ok = (side >= 2).all(dim=1)
        cand, cand_steps = cand[ok], cand_steps[ok]
        if cand.shape[0]:  # drop repeats: of boxes already scored and among the candidates
            ok = box_iou(cand, boxes).amax(dim=1) < 0.95
            cand, cand_steps = cand[ok], cand_steps[ok]
            ok = nms(cand, torch.arange(cand.shape[0], 0, -1, dtype=torch.float32), 0.95)
            cand, cand_steps = cand[ok], cand_steps[ok]
        if cand.shape[0] == 0:
            continue
        new = scorer(image, cand)
        boxes, steps = torch.cat([boxes, cand]), torch.cat([steps, cand_steps])
        scores = [torch.cat([a, b]) for a, b in zip(scores, new)]
    return _result(boxes, scores, settings, scorer.num_encodings - start)


def candidate_proposals(scorer, image, settings, boxes):
    """Score given candidate `boxes` (e.g. an RPN's) with CLIP; same output as
    `exhaustive_proposals`."""
    boxes = boxes[((boxes[:, 2:] - boxes[:, :2]) >= 2).all(dim=1)]
    return _result(boxes, scorer(image, boxes), settings, boxes.shape[0])


def random_proposals(image, settings):
    """`settings.top_k` dense anchors drawn without replacement (module docstring)."""
    height, width = image.shape[-2:]
    boxes = dense_anchors(height, width, settings.stride, settings.sizes, settings.ratios)
    generator = torch.Generator().manual_seed(zlib.crc32(image.cpu().numpy().tobytes()))
    keep = torch.randperm(boxes.shape[0], generator=generator)[: settings.top_k]
    num = keep.shape[0]
    return dict(
        boxes=boxes[keep],
        objectness=torch.zeros(num),
        confidence=torch.ones(num),
        clip_class=torch.full((num,), -1, dtype=torch.long),
        num_encodings=0,
    )


def compute_proposals(scorer, image, settings, candidates=None):
    """Proposals of one image (CHW uint8 tensor on the scorer's device) in `settings.mode`;
    `candidates(image) -> boxes` is needed by the rpn mode (an `RPNCandidates`)."""
    if settings.mode == "random":
        return random_proposals(image, settings)
    if settings.mode == "rpn":
        return candidate_proposals(scorer, image, settings, candidates(image))
    fn = fast_proposals if settings.mode == "fast" else exhaustive_proposals
    return fn(scorer, image, settings)
