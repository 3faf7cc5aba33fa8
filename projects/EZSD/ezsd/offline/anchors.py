"""Dense candidate boxes for CLIP proposals (the official EZSD code's anchor grid).

Every cell of a `stride` grid holds len(sizes) * len(ratios) boxes centred on the cell centre,
((j + 0.5) * stride, (i + 0.5) * stride); a box of size s and ratio r (= height / width) is
s / sqrt(r) wide and s * sqrt(r) high (MMDetection's convention), so all ratios of a size have
the area s^2. Boxes are clipped to the image: a CLIP crop of a clipped box is the crop of the
unclipped one (crops are clipped anyway), and stored proposals stay inside the image.
"""

import math

import torch

__all__ = ["ANCHOR_PRESETS", "anchor_shapes", "dense_anchors", "num_dense_anchors"]

# paper: DESIGN.md section 1 (15 per cell, ~15.7k per 1333x800 image).
# shapes: ShapesOVD's 256 px images with objects of 14..120 px (longer side): stride 8 gives the
# same number of candidates per image as the paper (15,360 at 256x256), and five sizes spaced by
# 2^0.75 cover the object sizes (a box between two sizes keeps IoU >= 0.5 with the closer one).
ANCHOR_PRESETS = {
    "paper": dict(stride=32, sizes=(32, 64, 128, 256, 512), ratios=(0.5, 1.0, 2.0)),
    "shapes": dict(stride=8, sizes=(16, 27, 45, 76, 128), ratios=(0.5, 1.0, 2.0)),
}


def anchor_shapes(sizes, ratios):
    """(len(sizes) * len(ratios), 2) widths and heights, size-major."""
    shapes = []
    for size in sizes:
        for ratio in ratios:
            shapes.append((size / math.sqrt(ratio), size * math.sqrt(ratio)))
    return torch.tensor(shapes, dtype=torch.float32).reshape(-1, 2)


def num_dense_anchors(height, width, stride, sizes, ratios):
    return math.ceil(height / stride) * math.ceil(width / stride) * len(sizes) * len(ratios)


def dense_anchors(height, width, stride, sizes, ratios, clip=True):
    """Return float32 (N, 4) XYXY boxes, N = ceil(H/stride) * ceil(W/stride) * sizes * ratios,
    ordered row by row, cell by cell, then size-major shapes (deterministic)."""
    if stride <= 0 or not sizes or not ratios or min(sizes) <= 0 or min(ratios) <= 0:
        raise ValueError(
            f"anchors need a positive stride, sizes and ratios: {stride}, {sizes}, {ratios}"
        )
    ys = (torch.arange(math.ceil(height / stride), dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(math.ceil(width / stride), dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1)  # (cells, 2)
    half = anchor_shapes(sizes, ratios) / 2  # (A, 2)
    boxes = torch.cat([centres[:, None] - half[None], centres[:, None] + half[None]], dim=2)
    boxes = boxes.reshape(-1, 4)
    return clip_boxes(boxes, height, width) if clip else boxes


def clip_boxes(boxes, height, width):
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes
