"""Optimiser helpers shared by the stand-alone training tools (small CLIP, backbone
pre-training)."""

import math


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor at `step`: linear warm-up over `warmup` steps, then cosine decay to 0 at
    `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def decay_param_groups(model, weight_decay: float):
    """Two parameter groups: matrices and kernels with `weight_decay`, biases and norms without."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
