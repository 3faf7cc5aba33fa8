"""Class-name text embeddings from CLIP's text tower, with prompt templates."""

import re

import clip
import torch
import torch.nn.functional as F

from ezsd.utils.errors import UserInputError

__all__ = [
    "DEFAULT_PROMPTS",
    "ENSEMBLE_PROMPTS",
    "add_prompt_arguments",
    "prompts_from_args",
    "clean_class_name",
    "text_embeddings",
]

# The paper's prompt (and the official code's).
DEFAULT_PROMPTS = ("a photo of a {}",)
# A short prompt ensemble (a subset of CLIP's ImageNet templates that fits a 16-token context).
ENSEMBLE_PROMPTS = (
    "a photo of a {}",
    "a photo of the {}",
    "a photo of a small {}",
    "a photo of a large {}",
    "a cropped photo of a {}",
    "a close-up photo of a {}",
    "a bright photo of a {}",
    "a dark photo of a {}",
)


def add_prompt_arguments(parser):
    """The tools' shared `--prompt TEMPLATE` (repeatable) / `--ensemble` options."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--prompt",
        action="append",
        help=f"template with '{{}}' (repeatable); default '{DEFAULT_PROMPTS[0]}'",
    )
    group.add_argument("--ensemble", action="store_true", help="the built-in prompt ensemble")


def prompts_from_args(args):
    return tuple(ENSEMBLE_PROMPTS if args.ensemble else (args.prompt or DEFAULT_PROMPTS))


def clean_class_name(name):
    """Turn a dataset class name into words: "bow_(weapon)" -> "bow (weapon)".

    Underscores become spaces and runs of spaces collapse. Parenthesised qualifiers are kept (as
    ViLD and Detic do for LVIS): dropping them would give "bow_(weapon)" and
    "bow_(decorative_ribbons)" the same text, hence identical, indistinguishable embeddings.
    """
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip()


@torch.no_grad()
def text_embeddings(model, class_names, prompts=DEFAULT_PROMPTS, device=None):
    """Return a float32 (C, D) tensor of L2-normalised text embeddings, one row per class.

    With several prompts each template's embedding is normalised, the templates are averaged and
    the mean is renormalised (CLIP's prompt ensembling), so no template dominates by its norm.

    Args:
        model: a CLIP model (see `load_clip`).
        class_names (list[str]): raw dataset names; `clean_class_name` is applied.
        prompts (sequence[str]): templates with one "{}" for the class name.
        device: where to put the result; it is computed on the model's device.
    """
    prompts = tuple(prompts)
    if not prompts or any(p.count("{}") != 1 for p in prompts):
        raise UserInputError(
            f"prompt templates must each hold one '{{}}' for the class name: {prompts}"
        )
    model_device = model.token_embedding.weight.device
    total = None
    for template in prompts:
        texts = [template.format(clean_class_name(n)) for n in class_names]
        try:
            tokens = clip.tokenize(texts, context_length=model.context_length)
        except RuntimeError as e:  # a prompt longer than this CLIP's context
            raise UserInputError(f"{e} (template '{template}')") from None
        emb = F.normalize(model.encode_text(tokens.to(model_device)).float(), dim=-1)
        total = emb if total is None else total + emb
    return F.normalize(total, dim=-1).to(device or model_device)
