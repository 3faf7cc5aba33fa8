"""Pre-train the ShapesOVD detector's ResNet on image-level labels: ShapesOVD's ImageNet.

EZSD starts its detector from an ImageNet-pretrained ResNet, and ImageNet holds COCO's novel
categories at image level. The analogue here: detectron2's own ResNet (built from the detector's
config, so the weights load into it by name) trained as a classifier of all the categories on
ShapesOVD's broad CLIP domain (`render_clip_pairs`, never the detection images or their boxes).
It writes a detectron2 checkpoint (`{"model": {"backbone.bottom_up.*": ...}}`) for MODEL.WEIGHTS.
The defaults reproduce weights/shapes_r18_pretrained.pth (docs/SHAPES_RESULTS.md has its figures).

Batch `k` is rendered from seed (seed, k), so a run killed and resumed (`--resume`, from the
state saved every --save-every steps, with the same settings: another seed, schedule or config
is refused) sees the same data as an uninterrupted one.
"""

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import build_resnet_backbone

from ezsd.config import config_digest, load_ezsd_config
from ezsd.data.shapes_ovd import CATEGORY_NAMES, render_clip_pairs
from ezsd.data.shapes_ovd.clip_domain import HELD_OUT_SEED_OFFSET
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.file_io import atomic_write, check_writable_dir
from ezsd.utils.schedule import decay_param_groups, warmup_cosine
from ezsd.utils.settings import settings_difference

PREFIX = "backbone.bottom_up."  # where build_resnet_fpn_backbone puts the ResNet in the detector


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config-file",
        default="configs/ShapesOVD/ezsd_R_18_FPN_pretrained.yaml",
        help="detector config: MODEL.RESNETS and the pixel mean/std come from it",
    )
    p.add_argument("--out", default="weights/shapes_r18_pretrained.pth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--weight-decay", type=float, default=5e-5)
    p.add_argument("--warmup", type=int, default=25, help="linear warm-up steps, then cosine")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--eval-images", type=int, default=1200)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--save-every", type=int, default=100, help="steps between resumable states")
    p.add_argument("--resume", action="store_true", help="continue from OUT.state if present")
    p.add_argument("--workers", type=int, default=1, help="processes rendering batches ahead")
    return p.parse_args(argv)


class Classifier(torch.nn.Module):
    """The detector's ResNet (all stages trainable, BN) + global average pool + linear."""

    def __init__(self, cfg):
        super().__init__()
        cfg = cfg.clone()
        cfg.MODEL.RESNETS.NORM = "BN"  # frozen BN cannot learn from scratch
        # The detector's deepest stage: the classifier pools it, and no stage above it is built.
        self.stage = max(cfg.MODEL.RESNETS.OUT_FEATURES)
        cfg.MODEL.RESNETS.OUT_FEATURES = [self.stage]
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
        self.resnet = build_resnet_backbone(cfg, ShapeSpec(channels=3))
        self.fc = torch.nn.Linear(
            self.resnet.output_shape()[self.stage].channels, len(CATEGORY_NAMES)
        )
        # The detector's input convention (channel order, mean/std), so features transfer as-is.
        self.bgr = cfg.INPUT.FORMAT == "BGR"
        self.register_buffer("mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(cfg.MODEL.PIXEL_STD).view(1, -1, 1, 1), False)

    def forward(self, images_rgb_uint8):
        x = torch.from_numpy(images_rgb_uint8).permute(0, 3, 1, 2).float()
        if self.bgr:
            x = x.flip(1)
        x = (x - self.mean) / self.std
        return self.fc(self.resnet(x)[self.stage].mean((2, 3)))


@torch.no_grad()
def accuracy(model, args):
    model.eval()
    images, labels, _ = render_clip_pairs(
        args.seed + HELD_OUT_SEED_OFFSET, args.eval_images, args.image_size
    )
    preds = torch.cat([model(images[i : i + 256]).argmax(1) for i in range(0, len(images), 256)])
    model.train()
    return float((preds.numpy() == labels).mean())


class Batches(torch.utils.data.Dataset):
    def __init__(self, args, first_step):
        self.args, self.first_step = args, first_step

    def __len__(self):
        return self.args.steps - self.first_step

    def __getitem__(self, i):
        a = self.args
        images, labels, _ = render_clip_pairs(
            [a.seed, self.first_step + i], a.batch_size, a.image_size
        )
        return images, torch.from_numpy(labels)


def run_settings(args):
    """What decides a run's batches and updates, recorded in its resumable state: the config (its
    digest), the seed and the schedule."""
    names = ("seed", "steps", "batch_size", "lr", "weight_decay", "warmup", "image_size")
    return dict(config=config_digest(args.config_file), **{n: getattr(args, n) for n in names})


def check_same_settings(recorded, settings, state_path):
    """Refuse to resume a state made with other settings: its steps would mix two runs."""
    if recorded is None:
        raise UserInputError(
            f"{state_path}: records no settings (an older version), so it cannot be resumed "
            "safely; delete it or run without --resume"
        )
    diff = settings_difference(recorded, settings, keys=settings)
    if diff:
        raise UserInputError(
            f"{state_path}: made with other settings ({diff}); resume with the same "
            "ones, or delete it or run without --resume to start over"
        )


def save(path, obj):
    with atomic_write(path) as f:
        torch.save(obj, f)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    cfg = load_ezsd_config(args.config_file)
    check_writable_dir(os.path.dirname(os.path.abspath(args.out)), "--out folder")
    torch.manual_seed(args.seed)
    model = Classifier(cfg).train()
    opt = torch.optim.SGD(
        decay_param_groups(model, args.weight_decay), lr=args.lr, momentum=0.9, nesterov=True
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, args.warmup, args.steps)
    )
    state_path, step = args.out + ".state", 0
    settings = run_settings(args)
    if args.resume and os.path.exists(state_path):
        state = torch.load(state_path, weights_only=False)
        check_same_settings(state.get("settings"), settings, state_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = state["step"]
        print(f"resumed at step {step} from {state_path}")
    loader = torch.utils.data.DataLoader(
        Batches(args, step), batch_size=None, num_workers=args.workers
    )
    start, running = time.time(), []
    for images, labels in loader:
        logits = model(images.numpy())
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        running.append((loss.item(), (logits.argmax(1) == labels).float().mean().item()))
        if step % args.log_every == 0 or step == args.steps:
            loss_avg, acc_avg = np.mean(running, axis=0)
            print(
                f"step {step:4d}/{args.steps}  loss {loss_avg:.3f}  train acc {acc_avg:.3f}  "
                f"lr {sched.get_last_lr()[0]:.3f}  {time.time() - start:.0f}s",
                flush=True,
            )
            running = []
        if step % args.save_every == 0 and step < args.steps:
            save(
                state_path,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "step": step,
                    "settings": settings,
                },
            )
    acc = accuracy(model, args)
    # fp16 halves the file; load_state_dict copies the values into the detector's float32 weights.
    weights = {
        PREFIX + k: v.half() if v.is_floating_point() else v
        for k, v in model.resnet.state_dict().items()
    }
    save(
        args.out,
        {
            "model": weights,
            "__author__": "ezsd tools/pretrain_backbone.py",
            "held_out_accuracy": acc,
        },
    )
    if os.path.exists(state_path):
        os.remove(state_path)
    print(
        f"trained {step} steps in {time.time() - start:.0f}s; held-out accuracy {acc:.4f} over "
        f"{len(CATEGORY_NAMES)} classes ({args.eval_images} CLIP-domain images); wrote {args.out}"
    )
