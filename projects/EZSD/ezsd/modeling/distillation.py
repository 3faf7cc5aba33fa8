"""EZSD's distillation loss: L1 between region embeddings and CLIP image embeddings of the same boxes."""

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["normalize_weights_per_image", "distillation_loss"]


def normalize_weights_per_image(weights: torch.Tensor, num_per_image: Sequence[int], eps=1e-6):
    """Rescale the weights of each image's regions to mean 1 (an all-zero image stays zero)."""
    out = []
    for w in weights.split(list(num_per_image)):
        out.append(w / w.mean().clamp(min=eps) if len(w) else w)
    return torch.cat(out) if out else weights


def distillation_loss(
    region_embeddings: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    num_per_image: Sequence[int],
    factor: float = 1.0,
):
    """The weighted L1 distillation loss of EZSD (as the official code computes it):

        factor * D * mean_{k, d} ( w_k * | e_kd - t_kd / ||t_k|| | )

    over all K regions of the batch, where e is the (L2-normalised) region embedding, t the CLIP
    target and w the weights after rescaling to mean 1 per image (base GT boxes have weight 1,
    CLIP proposals their CLIP confidence).

    Args:
        region_embeddings: (K, D) region embeddings of the detector.
        targets: (K, D) CLIP image embeddings (any float dtype, not necessarily normalised).
        weights: (K,) raw weights.
        num_per_image: number of regions of each image (sums to K).
        factor: the loss weight (1.0 COCO, 0.5 LVIS in the paper).

    Computed in float32 whatever the input dtypes (fp16 targets, bf16/fp16 embeddings under
    autocast): the per-element differences are small next to the embeddings' magnitudes.
    """
    if region_embeddings.shape[0] == 0:
        return region_embeddings.float().sum() * 0.0
    region_embeddings = region_embeddings.float()
    targets = F.normalize(targets.float(), dim=1)
    weights = normalize_weights_per_image(weights.float(), num_per_image)
    l1 = (region_embeddings - targets).abs()  # (K, D)
    dim = region_embeddings.shape[1]
    return factor * dim * (l1 * weights[:, None]).mean()
