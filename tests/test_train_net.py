"""tools/train_net.py end to end at toy scale: ShapesOVD images, a tiny random CLIP, the real
offline tools for text embeddings and region features, a few training iterations, evaluation."""

import json
import math

import pytest
import torch

from ezsd.clip import (
    clip_checkpoint_hash,
    save_clip_checkpoint,
    save_text_embeddings,
    text_embeddings,
)
from ezsd.data.shapes_ovd import CATEGORY_NAMES

from tiny_clip import tiny_clip
from train_workspace import SHAPES_BASE
from train_workspace import run_tool as _tool
from train_workspace import train_args as _train_args


@pytest.fixture(scope="module")
def workspace(shapes_workspace):
    """Data, tiny CLIP, text embeddings and region features, made with the real tools."""
    return shapes_workspace


def test_train_then_evaluate_base_and_novel(workspace):
    root, env = workspace
    output_dir = root / "run"
    result = _tool("train_net.py", *_train_args(root, output_dir), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output_dir / "model_final.pth").exists()
    metrics = json.loads(
        (output_dir / "inference" / "shapes_ovd_val" / "ovd_metrics.json").read_text()
    )
    for key in ("AP50_base", "AP50_novel", "AP50_all", "AP_base", "AP_novel", "AP_all"):
        value = metrics["bbox"][key]  # NaN (no class of the group evaluated) would be a failure
        assert math.isfinite(value) and 0 <= value <= 100, (key, value)
    log = (output_dir / "log.txt").read_text()
    assert "loss_distill" in log  # the distillation loss was trained

    evaluation = _tool(
        "train_net.py",
        "--eval-only",
        *_train_args(root, root / "eval", "MODEL.WEIGHTS", output_dir / "model_final.pth"),
        env=env,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    again = json.loads(
        (root / "eval" / "inference" / "shapes_ovd_val" / "ovd_metrics.json").read_text()
    )
    assert again == metrics  # evaluation of the saved model reproduces the training run's figures

    # The checkpoint records the CLIP of its training vocabulary, and evaluation refuses text
    # embeddings of another CLIP although the config's CLIP and both files agree on that one.
    final = output_dir / "model_final.pth"
    trained = torch.load(final, weights_only=False)["ezsd_trained_vocabulary"]
    assert trained["clip_hash"] == clip_checkpoint_hash(root / "clip.pt")
    other = root / "other_clip.pt"
    save_clip_checkpoint(tiny_clip(seed=1), str(other))
    files = []
    for names, out in ((SHAPES_BASE, "other_base.npy"), (CATEGORY_NAMES, "other_all.npy")):
        embeddings = text_embeddings(tiny_clip(seed=1), names).numpy()
        save_text_embeddings(
            str(root / out), embeddings, names, clip_hash=clip_checkpoint_hash(other)
        )
        files.append(root / out)
    refused = _tool(
        "train_net.py",
        "--eval-only",
        *_train_args(root, root / "eval_other", "MODEL.WEIGHTS", final),
        "MODEL.EZSD.CLIP.MODEL",
        other,
        "MODEL.EZSD.TEXT_EMBEDDINGS",
        files[0],
        "MODEL.EZSD.TEST_TEXT_EMBEDDINGS",
        files[1],
        env=env,
    )
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode != 0 and last.startswith("error: "), refused.stderr[-2000:]
    assert "other_base.npy was made with CLIP" in last, last
    assert f"MODEL.WEIGHTS {final} was trained against text embeddings of CLIP" in last, last

    # It records the settings its weights were trained under without holding them: another
    # input normalization, which loads into the same shapes, is refused.
    inputs = torch.load(final, weights_only=False)["ezsd_trained_inputs"]
    refused = _tool(
        "train_net.py",
        "--eval-only",
        *_train_args(root, root / "eval_std", "MODEL.WEIGHTS", final),
        "MODEL.PIXEL_STD",
        "[2.0, 2.0, 2.0]",
        env=env,
    )
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode != 0 and last.startswith("error: "), refused.stderr[-2000:]
    trained_std = inputs["MODEL.PIXEL_STD"]
    assert f"MODEL.PIXEL_STD: {trained_std} there, [2.0, 2.0, 2.0] asked" in last, last
    assert not (root / "eval_std" / "inference").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ("MODEL.EZSD.NO_SUCH_KEY", 1),
            "command-line option: Non-existent key: MODEL.EZSD.NO_SUCH_KEY",
        ),
        (
            ("MODEL.EZSD.TEST_TEXT_EMBEDDINGS", "text_base.npy"),
            f"but {len(CATEGORY_NAMES)} are expected",
        ),
        (("MODEL.EZSD.DISTILL.FEATURES", "/nonexistent"), "manifest.json: not found"),
    ],
)
def test_bad_setup_is_a_one_line_error(workspace, extra, message):
    root, env = workspace
    extra = tuple(root / v if str(v).endswith(".npy") else v for v in extra)
    result = _tool("train_net.py", *_train_args(root, root / "bad", *extra), env=env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "weights, message",
    [
        ("", "MODEL.WEIGHTS is empty"),
        ("backbone_only.pth", "does not fit the model of"),
    ],
)
def test_eval_only_refuses_weights_that_are_not_the_trained_model(
    workspace, tmp_path, weights, message
):
    """detectron2's checkpointer evaluates a model it could not load (no weights, or weights of
    another model) from random parameters and only logs it; --eval-only refuses both."""
    root, env = workspace
    if weights:
        weights = tmp_path / weights
        torch.save({"model": {"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)}}, weights)
    result = _tool(
        "train_net.py",
        "--eval-only",
        *_train_args(root, tmp_path / "eval", "MODEL.WEIGHTS", weights),
        env=env,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-2000:]
    assert not (tmp_path / "eval" / "inference").exists()


def test_nan_loss_stops_training_with_detectron2s_check(workspace):
    """A diverging run (an absurd learning rate, no gradient clipping) is stopped by one of
    detectron2's own checks (non-finite loss, or non-finite RPN boxes/scores): non-zero exit, a
    FloatingPointError that says so, no final model."""
    root, env = workspace
    output_dir = root / "nan"
    result = _tool(
        "train_net.py",
        *_train_args(
            root,
            output_dir,
            "SOLVER.BASE_LR",
            1e12,
            "SOLVER.CLIP_GRADIENTS.ENABLED",
            False,
            "SOLVER.WARMUP_ITERS",
            0,
            "SOLVER.MAX_ITER",
            6,
            "SOLVER.CHECKPOINT_PERIOD",
            100,
        ),
        env=env,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("FloatingPointError: ") and any(
        m in last for m in ("Loss became infinite or NaN", "Training has diverged")
    ), last
    assert not (output_dir / "model_final.pth").exists()
