"""tools/train_net.py end to end at toy scale: ShapesOVD images, a tiny random CLIP, the real
offline tools for text embeddings and region features, a few training iterations, evaluation."""
import json
import os
import subprocess
import sys

import pytest

from ezsd.clip import save_clip_checkpoint
from ezsd.data.shapes_ovd import generate_shapes_ovd

from tiny_clip import EMBED_DIM, tiny_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "ShapesOVD", "ezsd_R_18_FPN.yaml")


def _tool(name, *args, env):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", name), *map(str, args)],
                          env=env, cwd=REPO, capture_output=True, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Data, tiny CLIP, text embeddings and region features, made with the real tools."""
    root = tmp_path_factory.mktemp("train_net")
    generate_shapes_ovd(str(root / "shapes_ovd"), seed=0, num_train=6, num_val=3, image_size=128)
    model = tiny_clip()
    clip_file = root / "clip.pt"
    save_clip_checkpoint(model, str(clip_file))
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1")
    for dataset, out in (("shapes_ovd_train", "text_base.npy"), ("shapes_ovd_val", "text_all.npy")):
        result = _tool("dump_text_embeddings.py", "--clip", clip_file, "--dataset", dataset,
                       "--out", root / out, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr
    result = _tool("precompute_clip_features.py", "--dataset", "shapes_ovd_train", "--output",
                   root / "features", "--clip", clip_file, "--anchor-preset", "shapes",
                   "--regions-per-image", 20, "--no-progress", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root, env


def _train_args(root, output_dir, *extra):
    return [
        "--config-file", CONFIG, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", output_dir,
        "MODEL.EZSD.EMBED_DIM", EMBED_DIM, "MODEL.EZSD.CLIP.MODEL", root / "clip.pt",
        "MODEL.EZSD.TEXT_EMBEDDINGS", root / "text_base.npy",
        "MODEL.EZSD.TEST_TEXT_EMBEDDINGS", root / "text_all.npy",
        "MODEL.EZSD.DISTILL.FEATURES", root / "features", "MODEL.EZSD.DISTILL.NUM_PROPOSALS", 10,
        "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 4, "SOLVER.STEPS", "(3,)",
        "SOLVER.WARMUP_ITERS", 1, "SOLVER.CHECKPOINT_PERIOD", 2, "DATALOADER.NUM_WORKERS", 0,
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", 128,
        "INPUT.MIN_SIZE_TEST", 128, "INPUT.MAX_SIZE_TEST", 128, *extra,
    ]  # fmt: skip


def test_train_then_evaluate_base_and_novel(workspace):
    root, env = workspace
    output_dir = root / "run"
    result = _tool("train_net.py", *_train_args(root, output_dir), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output_dir / "model_final.pth").exists()
    metrics = json.loads((output_dir / "inference" / "shapes_ovd_val" / "ovd_metrics.json").read_text())
    for key in ("AP50_base", "AP50_novel", "AP50_all", "AP_base", "AP_novel", "AP_all"):
        assert key in metrics["bbox"]
    log = (output_dir / "log.txt").read_text()
    assert "loss_distill" in log  # the distillation loss was trained

    evaluation = _tool("train_net.py", "--eval-only",
                       *_train_args(root, root / "eval", "MODEL.WEIGHTS", output_dir / "model_final.pth"),
                       env=env)  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    again = json.loads((root / "eval" / "inference" / "shapes_ovd_val" / "ovd_metrics.json").read_text())
    assert again == metrics  # evaluation of the saved model reproduces the training run's figures


@pytest.mark.parametrize(
    "extra, message",
    [(("MODEL.EZSD.NO_SUCH_KEY", 1), "command-line option: Non-existent key: MODEL.EZSD.NO_SUCH_KEY"),
     (("MODEL.EZSD.TEST_TEXT_EMBEDDINGS", "text_base.npy"), "but 12 are expected"),
     (("MODEL.EZSD.DISTILL.FEATURES", "/nonexistent"), "manifest.json: not found")],
)  # fmt: skip
def test_bad_setup_is_a_one_line_error(workspace, extra, message):
    root, env = workspace
    extra = tuple(root / v if str(v).endswith(".npy") else v for v in extra)
    result = _tool("train_net.py", *_train_args(root, root / "bad", *extra), env=env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
