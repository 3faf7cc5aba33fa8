"""Training in 2 processes on CPU: tools/train_net.py --num-gpus 2 with MODEL.DEVICE cpu (gloo,
DistributedDataParallel without device ids), against the same run in one process.

The pre-computation's own multi-rank path (torchrun, one shard per rank, the same store as one
process) is tests/test_precompute.py::test_torchrun_ranks_take_one_shard_each."""
import json

import pytest
import torch
from detectron2.engine import default_argument_parser

import ezsd.engine
from train_workspace import run_tool, train_args

# Deterministic and small: GroupNorm instead of BatchNorm (batch statistics differ between one
# batch of 2 and two batches of 1), no random flip, 96 px, the same SEED (the same image order:
# iteration i trains images 2i and 2i+1, in one batch or one on each rank) and initial weights;
# every anchor and every proposal sampled (no random subset); only the distillation regions
# (drawn with replacement by the mapper) differ between the runs. The head keeps the width the
# 3% agreement was measured at (CONV_DIM 128). At the ShapesOVD config's 64 the runs' loss_cls
# after 6 iterations differed, 1.08 vs 2.82; not explained yet (an open point of issue #7).
# SGD (the paper's; the ShapesOVD config uses AdamW): its steps are linear in the averaged
# gradients, whereas Adam's per-parameter normalisation magnifies the sampling noise of the
# distillation regions in the early steps, in which the weights' agreement is measured.
SMALL = ["MODEL.ROI_BOX_HEAD.CONV_DIM", 128, "SOLVER.OPTIMIZER", "SGD", "SOLVER.BASE_LR", 0.02,
         "SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 3, "SEED", 7, "DATASETS.TEST", "()",
         "INPUT.RANDOM_FLIP", "none", "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "",
         "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", 96,
         "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 4096, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 128]  # fmt: skip


def _weights(path):
    model = torch.load(path, map_location="cpu", weights_only=False)["model"]
    return torch.cat([v.float().flatten() for k, v in sorted(model.items()) if v.is_floating_point()])


def _train_net():
    return ezsd.engine


def _initial_weights(root, path):
    """A fresh model of the SMALL config, saved as MODEL.WEIGHTS for both runs."""
    train_net = _train_net()
    args = default_argument_parser().parse_args(list(map(str, train_args(root, "", *SMALL))))
    torch.manual_seed(0)
    model = train_net.Trainer.build_model(train_net.load_config(args))
    torch.save({"model": model.state_dict()}, path)


@pytest.fixture(scope="module")
def runs(shapes_workspace):
    root, env = shapes_workspace
    out = {"init": root / "processes_init.pth"}
    _initial_weights(root, out["init"])
    for n in (1, 2):
        out[n] = root / f"processes_{n}"
        result = run_tool("train_net.py", "--num-gpus", n, "--dist-url", "auto",
                          *train_args(root, out[n], *SMALL, "MODEL.WEIGHTS", out["init"]),
                          env=env, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_two_cpu_processes_split_the_batch_and_follow_one_process(runs):
    one, two = runs[1], runs[2]
    # IMS_PER_BATCH 2 is the total: one image per process.
    assert "SOLVER.IMS_PER_BATCH 2 = 1 per process x 2 processes" in (two / "log.txt").read_text()
    assert "SOLVER.IMS_PER_BATCH 2 = 1 per process x 2 processes" in (two / "log.txt.rank1").read_text()
    assert "SOLVER.IMS_PER_BATCH 2 = 2 per process x 1 processes" in (one / "log.txt").read_text()

    # Losses (medians over the 6 iterations, averaged over the ranks) agree with one process.
    final = {n: json.loads((runs[n] / "metrics.json").read_text().splitlines()[-1]) for n in (1, 2)}
    assert final[1]["iteration"] == final[2]["iteration"] == 5
    for key in ("total_loss", "loss_cls", "loss_distill", "loss_box_reg", "loss_rpn_cls"):
        assert final[2][key] == pytest.approx(final[1][key], rel=0.1), key

    # The weights follow the same path: gradients averaged over the ranks are those of the batch
    # (up to the sampling of anchors, proposals and distillation regions). The two final models
    # are much closer to each other than to where both started.
    w1, w2 = _weights(one / "model_final.pth"), _weights(two / "model_final.pth")
    w0 = _weights(runs["init"])
    assert (w1 - w2).norm() < 0.1 * (w1 - w0).norm()  # 0.03 measured


def test_checkpoints_are_written_once_by_rank_0(runs):
    two = runs[2]
    assert sorted(p.name for p in two.glob("*.pth")) == ["model_0000002.pth", "model_0000005.pth",
                                                         "model_final.pth"]  # fmt: skip
    assert (two / "last_checkpoint").read_text() == "model_final.pth"
    saves = (two / "log.txt").read_text().count("Saving checkpoint to")
    assert saves == 3 and "Saving checkpoint" not in (two / "log.txt.rank1").read_text()


def test_batch_that_does_not_split_evenly_is_refused_before_starting_processes(shapes_workspace, capsys):
    root, _ = shapes_workspace
    train_net = _train_net()
    argv = ["--num-gpus", "2", *train_args(root, root / "processes_3", "SOLVER.IMS_PER_BATCH", 3)]
    with pytest.raises(SystemExit) as e:
        train_net.launch_main(default_argument_parser().parse_args(list(map(str, argv))))
    assert e.value.code == 2 and not (root / "processes_3").exists()
    err = capsys.readouterr().err.strip()
    assert err == "error: SOLVER.IMS_PER_BATCH 3 is not divisible by the 2 training processes"
