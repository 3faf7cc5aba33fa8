"""The tiny random CLIP the tests share."""

import torch
from clip.model import CLIP

EMBED_DIM = 32


def tiny_clip(seed=0, embed_dim=EMBED_DIM):
    """The smallest CLIP of OpenAI's architecture (ViT tower, 32 px input, context 16) that
    build_model can re-infer from its shapes (it takes heads = width // 64, so widths are 64),
    with the real 49,408-token vocabulary."""
    torch.manual_seed(seed)
    return CLIP(
        embed_dim=embed_dim,
        image_resolution=32,
        vision_layers=2,
        vision_width=64,
        vision_patch_size=8,
        context_length=16,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=1,
    ).eval()
