"""Train the small CLIP shipped for ShapesOVD (weights/shapes_clip_vit.pt).

OpenAI's own `clip.model.CLIP` (ViT image tower, real tokenizer, full 49,408-token vocabulary),
trained contrastively on ShapesOVD's CLIP domain, which covers every category: like a web-trained
CLIP it knows the novel concepts at image level. The defaults reproduce the shipped file; see
docs/SMALL_CLIP.md for the command, the log and the measured accuracies.

The loss is CLIP's symmetric InfoNCE with class-aware targets: captions of the same class in a
batch are positives, not negatives (with 24 classes a batch of 128 holds ~4 per class). A
fraction of the images shows no category (captions such as "a photo of a background"): their
captions are positives of one another, and every category caption is a negative for them.
"""

import argparse
import math
import time

import clip
import numpy as np
import torch
import torch.nn.functional as F
from clip.model import CLIP

from ezsd.clip import load_clip, save_clip_checkpoint
from ezsd.clip.regions import CLIP_MEAN, CLIP_STD
from ezsd.data.shapes_ovd import BACKGROUND_LABEL, CATEGORY_NAMES, render_clip_pairs
from ezsd.data.shapes_ovd.clip_domain import HELD_OUT_SEED_OFFSET
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.schedule import decay_param_groups, warmup_cosine


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="weights/shapes_clip_vit.pt", help="fp16 state dict to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps, then cosine")
    p.add_argument(
        "--background-fraction",
        type=float,
        default=0.25,
        help="share of object-free images (captions name no category)",
    )
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument(
        "--vision-width", type=int, default=128, help="multiple of 64 (heads = width/64)"
    )
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--text-width", type=int, default=128, help="multiple of 64 (heads = width/64)")
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--context-length", type=int, default=16)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--eval-images", type=int, default=1200)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--workers", type=int, default=1, help="processes rendering batches ahead")
    return p.parse_args(argv)


def build_clip(args):
    """A CLIP exactly as `clip.model.build_model` rebuilds it from the saved state dict."""
    for name in ("vision_width", "text_width"):
        if getattr(args, name) % 64:
            raise UserInputError(
                f"--{name.replace('_', '-')} {getattr(args, name)}: must be a multiple of 64"
            )
    return CLIP(
        embed_dim=args.embed_dim,
        image_resolution=args.image_size,
        vision_layers=args.vision_layers,  # an int selects the ViT tower
        vision_width=args.vision_width,
        vision_patch_size=args.patch_size,
        context_length=args.context_length,
        vocab_size=len(clip.simple_tokenizer.SimpleTokenizer().encoder),
        transformer_width=args.text_width,
        transformer_heads=args.text_width // 64,
        transformer_layers=args.text_layers,
    )


def to_tensor(images):
    """uint8 (N, H, W, 3) -> CLIP-normalised float (N, 3, H, W)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


class Batches(torch.utils.data.Dataset):
    """Batch `step` is rendered from seed (seed, step): the same data for any worker count."""

    def __init__(self, args):
        self.seed, self.size, self.n = args.seed, args.image_size, args.batch_size
        self.context_length, self.steps = args.context_length, args.steps
        self.background_fraction = args.background_fraction

    def __len__(self):
        return self.steps

    def __getitem__(self, step):
        images, labels, captions = render_clip_pairs(
            [self.seed, step], self.n, self.size, self.background_fraction
        )
        tokens = clip.tokenize(captions, context_length=self.context_length, truncate=True)
        return to_tensor(images), torch.from_numpy(labels), tokens


def class_aware_clip_loss(model, images, tokens, labels):
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(model.encode_text(tokens), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)  # symmetric, so it serves both directions
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def name_embeddings(model, args):
    """L2-normalised text embeddings of "a photo of a {}" for every category, in CATEGORY_NAMES
    order."""
    prompts = clip.tokenize(
        [f"a photo of a {n}" for n in CATEGORY_NAMES], context_length=args.context_length
    )
    return F.normalize(model.encode_text(prompts).float(), dim=-1)


@torch.no_grad()
def zero_shot_accuracy(model, args):
    """Top-1 over all category names with the prompt "a photo of a {}", on held-out images."""
    model.eval()
    images, labels, _ = render_clip_pairs(
        args.seed + HELD_OUT_SEED_OFFSET, args.eval_images, args.image_size
    )
    txt = name_embeddings(model, args)
    preds = torch.cat(
        [
            (
                F.normalize(model.encode_image(to_tensor(images[i : i + 256])).float(), dim=-1)
                @ txt.t()
            ).argmax(1)
            for i in range(0, len(images), 256)
        ]
    )
    model.train()
    return (preds.numpy() == labels).mean(), preds


@torch.no_grad()
def background_confidence(model, args):
    """Mean top softmax probability over the category names (at CLIP's own logit scale) of
    held-out images with an object and of object-free ones: a CLIP that knows "none of these" is
    less sure on the latter, which is what CLIP proposals' objectness measures."""
    model.eval()
    images, labels, _ = render_clip_pairs(
        args.seed + HELD_OUT_SEED_OFFSET, 512, args.image_size, 0.5
    )
    txt = name_embeddings(model, args)
    img = F.normalize(model.encode_image(to_tensor(images)).float(), dim=-1)
    top = (model.logit_scale.exp().float() * img @ txt.t()).softmax(1).max(1).values.numpy()
    model.train()
    return float(top[labels >= 0].mean()), float(top[labels == BACKGROUND_LABEL].mean())


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    if not 0.0 <= args.background_fraction < 1.0:
        raise UserInputError(f"--background-fraction {args.background_fraction}: must be in [0, 1)")
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    model = build_clip(args).float().train()
    opt = torch.optim.AdamW(decay_param_groups(model, args.weight_decay), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, args.warmup, args.steps)
    )
    loader = torch.utils.data.DataLoader(
        Batches(args), batch_size=None, shuffle=False, num_workers=args.workers
    )
    print(
        f"training {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters for "
        f"{args.steps} steps of {args.batch_size} (ln(batch) = {math.log(args.batch_size):.2f})"
    )
    start, running = time.time(), []
    for step, (images, labels, tokens) in enumerate(loader):
        loss = class_aware_clip_loss(model, images, tokens, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(
                f"step {step + 1:4d}  loss {np.mean(running):.3f}  "
                f"lr {sched.get_last_lr()[0]:.2e}  "
                f"scale {model.logit_scale.exp().item():.1f}  {time.time() - start:.0f}s",
                flush=True,
            )
            running = []
    acc, preds = zero_shot_accuracy(model, args)
    save_clip_checkpoint(model, args.out, fp16=True)
    rebuilt = load_clip(args.out)  # clip.model.build_model, as every tool loads it
    acc_rebuilt, preds_rebuilt = zero_shot_accuracy(rebuilt, args)
    agree = (preds == preds_rebuilt).float().mean().item()
    print(
        f"trained in {time.time() - start:.0f}s; clean zero-shot accuracy {acc:.4f} "
        f"({args.eval_images} held-out CLIP-domain images, 'a photo of a {{}}')"
    )
    print(
        f"wrote {args.out}; rebuilt by clip.model.build_model: accuracy {acc_rebuilt:.4f}, "
        f"predictions agree on {agree:.4f} of images"
    )
    on_objects, on_background = background_confidence(rebuilt, args)
    print(
        f"top softmax probability over the category names: {on_objects:.3f} on images with an "
        f"object, {on_background:.3f} on object-free images (256 held-out each)"
    )
    return model
