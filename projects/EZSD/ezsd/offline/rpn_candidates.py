"""Candidate boxes for the 'rpn' CLIP-proposal mode: a class-agnostic RPN trained on base boxes.

The RPN is an ordinary detectron2 RPN-only model (META_ARCHITECTURE "ProposalNetwork", e.g.
configs/ShapesOVD/rpn_R_18_FPN.yaml or detectron2's rpn_R_50_FPN_1x.yaml trained on the base
split with tools/train_net.py). It only *proposes* candidates: CLIP still scores each one and the
proposals are ranked by CLIP objectness (`proposals.candidate_proposals`). It sees base boxes
only during its training, so novel objects are found because they look like objects, not
because a novel box was ever read. The model is built and its weights checked by
ezsd.checkpoint.build_detector (imported when an RPN is built: the offline code does not load the
detector's modules at import time).
"""

import os

import numpy as np
import torch
from detectron2.data import transforms as T

from ezsd.config import load_ezsd_config
from ezsd.utils.errors import UserInputError

__all__ = ["RPNCandidates"]


class RPNCandidates:
    """`candidates(image)`: (N, 4) float32 XYXY boxes in the image's pixels, N <= num_candidates,
    best RPN score first, for a CHW uint8 RGB image tensor."""

    def __init__(self, config_file, weights, num_candidates, device="cpu"):
        if not weights or not os.path.isfile(weights):
            raise UserInputError(f"--rpn-weights: checkpoint not found: {weights}")
        from ezsd.checkpoint import build_detector

        cfg = load_ezsd_config(
            config_file,
            [
                "MODEL.DEVICE",
                device,
                "MODEL.WEIGHTS",
                weights,
                "MODEL.RPN.POST_NMS_TOPK_TEST",
                str(num_candidates),
                "MODEL.RPN.PRE_NMS_TOPK_TEST",
                str(max(num_candidates * 2, 1000)),
            ],
            opts_name="--rpn-config",
        )
        if cfg.MODEL.META_ARCHITECTURE != "ProposalNetwork":
            raise UserInputError(
                f"--rpn-config {config_file}: MODEL.META_ARCHITECTURE is "
                f"'{cfg.MODEL.META_ARCHITECTURE}'; the candidates come from an "
                "RPN-only model ('ProposalNetwork')"
            )
        try:
            self.model = build_detector(cfg, config_file)
        except UserInputError as e:
            raise UserInputError(f"--rpn-weights: {e}") from None
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    @torch.no_grad()
    def __call__(self, image):
        height, width = image.shape[-2:]
        array = image.permute(1, 2, 0).cpu().numpy()
        if self.input_format == "BGR":
            array = array[:, :, ::-1]
        array = self.resize.get_transform(array).apply_image(array)
        tensor = torch.as_tensor(np.ascontiguousarray(array.transpose(2, 0, 1)))
        # ProposalNetwork rescales its proposals to (height, width) and clips them there.
        out = self.model([{"image": tensor, "height": height, "width": width}])[0]["proposals"]
        return out.proposal_boxes.tensor.float().cpu()
