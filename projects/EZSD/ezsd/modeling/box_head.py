"""EZSD's box head: shared convs, then a classification branch that ends in an L2-normalised
region embedding (compared with CLIP text embeddings) and a regression branch whose features the
predictor concatenates with a text embedding (semantic-based regression)."""

from typing import Optional

import fvcore.nn.weight_init as weight_init
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY
from torch import nn

__all__ = ["EZSDBoxHead"]


def _conv_stack(in_channels, num, dim, norm):
    layers = []
    for _ in range(num):
        conv = Conv2d(
            in_channels,
            dim,
            kernel_size=3,
            padding=1,
            bias=not norm,
            norm=get_norm(norm, dim),
            activation=nn.ReLU(),
        )
        weight_init.c2_msra_fill(conv)
        layers.append(conv)
        in_channels = dim
    return layers, in_channels


def _fc_stack(in_size, num, dim):
    layers = [nn.Flatten()] if num else []
    for _ in range(num):
        fc = nn.Linear(in_size, dim)
        weight_init.c2_xavier_fill(fc)
        layers += [fc, nn.ReLU()]
        in_size = dim
    return layers, in_size


@ROI_BOX_HEAD_REGISTRY.register()
class EZSDBoxHead(nn.Module):
    """Shared convs -> (cls branch: convs + FCs + linear to `embed_dim` + L2 norm,
    reg branch: convs + FCs).

    `forward(x, num_reg=None)` returns `(embeddings (R, embed_dim), reg_features (R', C))`, where
    the regression branch runs on the first `num_reg` rows only (R' = num_reg, or R if None): the
    ROI heads append distillation regions after the proposals and need only their embeddings.
    `output_shape` is the embedding's shape; `reg_output_shape` that of the regression features.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        embed_dim: int,
        conv_dim: int = 256,
        num_shared_conv: int = 3,
        num_branch_conv: int = 1,
        num_branch_fc: int = 2,
        fc_dim: int = 1024,
        conv_norm: str = "",
    ):
        """
        Args:
            input_shape: shape of the pooled region features (channels, height, width).
            embed_dim: dimension of the region embedding (the CLIP embedding dimension).
            conv_dim: channels of every 3x3 conv.
            num_shared_conv: convs shared by both branches (3 in the paper).
            num_branch_conv, num_branch_fc: convs and FCs of each branch (1 and 2 in the paper).
            fc_dim: width of the FCs (1024 in the paper).
            conv_norm: normalization of the convs (see detectron2.layers.get_norm).
        """
        super().__init__()
        channels, height, width = input_shape.channels, input_shape.height, input_shape.width
        shared, channels = _conv_stack(channels, num_shared_conv, conv_dim, conv_norm)
        self.shared_convs = nn.Sequential(*shared)

        def branch():
            convs, c = _conv_stack(channels, num_branch_conv, conv_dim, conv_norm)
            fcs, size = _fc_stack(c * height * width, num_branch_fc, fc_dim)
            if not fcs:
                fcs = [nn.Flatten()]
            return nn.Sequential(*convs, *fcs), size

        self.cls_branch, cls_size = branch()
        self.reg_branch, reg_size = branch()
        self.embed = nn.Linear(cls_size, embed_dim)
        nn.init.normal_(self.embed.weight, std=0.01)
        nn.init.constant_(self.embed.bias, 0)
        self.embed_dim = embed_dim
        self._reg_size = reg_size

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.EZSD.BOX_HEAD
        return {
            "input_shape": input_shape,
            "embed_dim": cfg.MODEL.EZSD.EMBED_DIM,
            "conv_dim": cfg.MODEL.ROI_BOX_HEAD.CONV_DIM,
            "num_shared_conv": head.NUM_SHARED_CONV,
            "num_branch_conv": head.NUM_BRANCH_CONV,
            "num_branch_fc": head.NUM_BRANCH_FC,
            "fc_dim": cfg.MODEL.ROI_BOX_HEAD.FC_DIM,
            "conv_norm": cfg.MODEL.ROI_BOX_HEAD.NORM,
        }

    def forward(self, x: torch.Tensor, num_reg: Optional[int] = None):
        x = self.shared_convs(x)
        embeddings = F.normalize(self.embed(self.cls_branch(x)), dim=1)
        reg_features = self.reg_branch(x if num_reg is None else x[:num_reg])
        return embeddings, reg_features

    @property
    def output_shape(self):
        """Shape of the region embedding (what the cosine classifier consumes)."""
        return ShapeSpec(channels=self.embed_dim)

    @property
    def reg_output_shape(self):
        """Shape of the regression-branch features (flattened)."""
        return ShapeSpec(channels=int(np.prod(self._reg_size)))
