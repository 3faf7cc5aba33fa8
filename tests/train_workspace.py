"""The toy detector workspace that the train_net tests share: ShapesOVD images, a tiny random
CLIP, text embeddings and region features made by the real tools (as subprocesses)."""

import os
import subprocess
import sys

import torch
from detectron2.data import DatasetCatalog

from ezsd.clip import save_clip_checkpoint
from ezsd.data.datasets import register_ovd_dataset
from ezsd.data.shapes_ovd import CATEGORY_NAMES, DEFAULT_NOVEL_CLASSES, generate_shapes_ovd

from tiny_clip import EMBED_DIM, tiny_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "ShapesOVD", "ezsd_R_18_FPN.yaml")


def tool_command(name, *args):
    return [sys.executable, os.path.join(REPO, "tools", name), *map(str, args)]


RPN_CONFIG = os.path.join(REPO, "configs", "ShapesOVD", "rpn_R_18_FPN.yaml")


def run_tool(name, *args, env, timeout=None):
    return subprocess.run(
        tool_command(name, *args),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SHAPES_BASE = [c for c in CATEGORY_NAMES if c not in DEFAULT_NOVEL_CLASSES]


def register_shapes_splits(data, train_name, val_name):
    """Register a generated ShapesOVD folder's train (base only) and val (all) splits in this
    process under the given names (once: a name already registered is kept)."""
    for name, split, novel_annotated in ((train_name, "train", False), (val_name, "val", True)):
        if name not in DatasetCatalog.list():
            register_ovd_dataset(
                name,
                str(data / f"{split}.json"),
                str(data / split),
                SHAPES_BASE,
                DEFAULT_NOVEL_CLASSES,
                novel_annotated=novel_annotated,
                thing_classes=CATEGORY_NAMES if novel_annotated else SHAPES_BASE,
            )


def workspace_env(root):
    """The tools' environment for the workspace under `root`."""
    return dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1")


def build_workspace(root):
    """6 train + 3 val images of 128 px under `root`; returns the tools' environment."""
    generate_shapes_ovd(str(root / "shapes_ovd"), seed=0, num_train=6, num_val=3, image_size=128)
    save_clip_checkpoint(tiny_clip(), str(root / "clip.pt"))
    env = workspace_env(root)
    for dataset, out in (("shapes_ovd_train", "text_base.npy"), ("shapes_ovd_val", "text_all.npy")):
        result = run_tool(
            "dump_text_embeddings.py",
            "--clip",
            root / "clip.pt",
            "--dataset",
            dataset,
            "--out",
            root / out,
            env=env,
        )
        assert result.returncode == 0, result.stderr
    result = run_tool(
        "precompute_clip_features.py",
        "--dataset",
        "shapes_ovd_train",
        "--output",
        root / "features",
        "--clip",
        root / "clip.pt",
        "--anchor-preset",
        "shapes",
        "--regions-per-image",
        20,
        "--no-progress",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return env


def train_args(root, output_dir, *extra):
    """train_net.py arguments of a 4-iteration CPU run on the workspace; `extra` overrides."""
    return [
        "--config-file",
        CONFIG,
        "MODEL.DEVICE",
        "cpu",
        "OUTPUT_DIR",
        output_dir,
        "MODEL.EZSD.EMBED_DIM",
        EMBED_DIM,
        "MODEL.EZSD.CLIP.MODEL",
        root / "clip.pt",
        "MODEL.EZSD.TEXT_EMBEDDINGS",
        root / "text_base.npy",
        "MODEL.EZSD.TEST_TEXT_EMBEDDINGS",
        root / "text_all.npy",
        "MODEL.EZSD.DISTILL.FEATURES",
        root / "features",
        "MODEL.EZSD.DISTILL.NUM_PROPOSALS",
        10,
        "SOLVER.IMS_PER_BATCH",
        2,
        "SOLVER.MAX_ITER",
        4,
        "SOLVER.STEPS",
        "(3,)",
        "SOLVER.WARMUP_ITERS",
        1,
        "SOLVER.CHECKPOINT_PERIOD",
        2,
        "DATALOADER.NUM_WORKERS",
        0,
        "INPUT.MIN_SIZE_TRAIN",
        "(128,)",
        "INPUT.MAX_SIZE_TRAIN",
        128,
        "INPUT.MIN_SIZE_TEST",
        128,
        "INPUT.MAX_SIZE_TEST",
        128,
        *extra,
    ]


def tiny_rpn_checkpoint(folder, seed=0):
    """A randomly initialised RPN-only model of the ShapesOVD rpn config, saved as a checkpoint
    (the candidates of the rpn proposal mode; untrained, so its boxes are arbitrary but valid)."""
    from detectron2.modeling import build_model

    from ezsd.config import load_ezsd_config

    torch.manual_seed(seed)
    model = build_model(load_ezsd_config(RPN_CONFIG, ["MODEL.DEVICE", "cpu"]))
    path = os.path.join(str(folder), f"rpn{seed}.pth")
    torch.save({"model": model.state_dict()}, path)
    return path
