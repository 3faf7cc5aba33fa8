"""EZSD's distillation loss: L1 between region embeddings and CLIP image embeddings of the
same boxes."""

from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["normalize_weights_per_image", "distillation_loss", "regions_per_process"]


def normalize_weights_per_image(weights: torch.Tensor, num_per_image: Sequence[int], eps=1e-6):
    """Rescale the weights of each image's regions to mean 1 (an all-zero image stays zero)."""
    out = []
    for w in weights.split(list(num_per_image)):
        out.append(w / w.mean().clamp(min=eps) if len(w) else w)
    return torch.cat(out) if out else weights


def regions_per_process(num_regions: int, device=None) -> float:
    """The number of distillation regions of the whole batch divided by the number of training
    processes (`num_regions` itself in one process).

    A collective call in a distributed run: every process must make it, each with its own count.
    DistributedDataParallel averages the processes' gradients, so each process dividing its sum by
    this number yields the gradient of the mean over all regions of the batch, as one process with
    the whole batch computes it. Dividing by the process's own count instead would weight a region
    by 1 / (regions of its process), so the regions of a process with few would count more (issue
    23 item 6: 2 processes at 1 image each ended 0.14-0.28 of the distance the weights travelled
    away from 1 process; tests/test_multiprocess.py).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return float(num_regions)
    total = torch.tensor([float(num_regions)], device=device)
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def distillation_loss(
    region_embeddings: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    num_per_image: Sequence[int],
    factor: float = 1.0,
    num_regions: Optional[float] = None,
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
        num_regions: the K of the mean (default: the rows given). In a multi-process run,
            :func:`regions_per_process`, so that the processes' averaged gradients are those of
            the mean over the regions of the whole batch.

    Computed in float32 whatever the input dtypes (fp16 targets, bf16/fp16 embeddings under
    autocast): the per-element differences are small next to the embeddings' magnitudes.
    """
    if region_embeddings.shape[0] == 0:
        return region_embeddings.float().sum() * 0.0
    region_embeddings = region_embeddings.float()
    targets = F.normalize(targets.float(), dim=1)
    weights = normalize_weights_per_image(weights.float(), num_per_image)
    l1 = (region_embeddings - targets).abs()  # (K, D)
    if num_regions is None:
        num_regions = region_embeddings.shape[0]
    # factor * D * mean_{k,d} = factor * sum_{k,d} / K
    return factor * (l1 * weights[:, None]).sum() / max(num_regions, 1e-6)
