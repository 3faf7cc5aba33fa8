"""tools/run_ablation.py and the variants of tools/run_pipeline.py: a tiny real run of two variants
that share their stages, then the table and the efficiency plot on hand-made results."""

import json
import os
import subprocess

import pytest
import torch
from PIL import Image

import ezsd.ablation as run_ablation
import ezsd.shapes_pipeline as run_pipeline

from train_workspace import REPO, tool_command


def _results(novel_by_variant):
    return {
        v: dict(
            AP50_base=50.0,
            AP50_novel=n,
            AP50_all=40.0,
            AP_novel=n / 2,
            curve=[[1, 10.0, n / 2], [2, 20.0, n]],
        )
        for v, n in novel_by_variant.items()
    }


def test_table_states_whether_the_measured_order_is_the_expected_one():
    good = run_ablation.markdown_table(_results({"no_distill": 1, "vild_like": 5, "full": 9}))
    assert "| `vild_like` | + distillation of raw CLIP on random regions | 50.0 | 5.0 |" in good
    assert "no_distill < vild_like < full (the expected order)" in good
    bad = run_ablation.markdown_table(_results({"no_distill": 7, "vild_like": 5, "full": 9}))
    assert "vild_like < no_distill < full (expected no_distill < vild_like < full)" in bad


def test_efficiency_curve_is_a_png(tmp_path):
    path = tmp_path / "curve.png"
    run_ablation.plot_curves(_results({"vild_like": 5, "full": 9}), str(path))
    assert Image.open(path).format == "PNG"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output-dir", "x", "--variants", "full,nope"], "unknown ['nope']"),
        (["--output-dir", "x", "--variant", "full"], "--variant is set by run_ablation.py"),
    ],
)
def test_bad_arguments_are_named(argv, message):
    with pytest.raises(Exception, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_ablation.parse_args(argv)


@pytest.mark.parametrize("max_iter", [1, 2, 3, 7, 200, 5000])
def test_scaled_schedule_is_one_detectron2_accepts(max_iter):
    """--max-iter keeps the LR steps and warm-up at the config's fractions, down to toy runs."""
    from detectron2.solver import build_lr_scheduler

    opts = run_pipeline.scaled_schedule(run_pipeline.CONFIG, max_iter)
    cfg = run_pipeline.load_ezsd_config(run_pipeline.CONFIG)
    cfg.merge_from_list([str(o) for o in opts])
    assert cfg.SOLVER.MAX_ITER == max_iter
    assert all(0 < s < max_iter for s in cfg.SOLVER.STEPS)
    full = run_pipeline.load_ezsd_config(run_pipeline.CONFIG).SOLVER
    if max_iter == full.MAX_ITER:
        assert tuple(cfg.SOLVER.STEPS) == tuple(full.STEPS)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(max_iter):
        optimizer.step()
        scheduler.step()


def _run_toy(tool, *args):
    """Run a pipeline tool at a toy training size (batch 2, no loader workers, 8 distilled
    regions, one thread); it must succeed."""
    command = tool_command(
        tool,
        *args,
        "--opts",
        "SOLVER.IMS_PER_BATCH",
        2,
        "DATALOADER.NUM_WORKERS",
        0,
        "MODEL.EZSD.DISTILL.NUM_PROPOSALS",
        8,
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_two_variants_share_data_text_and_features(tmp_path):
    """no_distill and vild_like (raw CLIP, random regions) at a toy size: 2 training iterations,
    evaluated after each one (6 val images: the first with novel boxes of seed 0 is the 5th)."""
    out = tmp_path / "ablation"
    _run_toy(
        "run_ablation.py",
        "--output-dir",
        out,
        "--variants",
        "no_distill,vild_like",
        "--eval-period",
        1,
        "--num-train",
        4,
        "--num-val",
        6,
        "--max-iter",
        2,
    )

    ablation = json.loads((out / "ablation.json").read_text())["variants"]
    assert sorted(ablation) == ["no_distill", "vild_like"]
    for variant, r in ablation.items():
        assert r["variant"] == variant and 0 <= r["AP50_novel"] <= 100
        assert [point[0] for point in r["curve"]] == [1, 2]
        assert r["novel_negatives_inside"] == 0.0  # the paper's classification
    # One data set, one set of raw-CLIP text embeddings, random-region features made once, no
    # re-normalized CLIP (neither variant uses it); no_distill never ran the features stage.
    assert sorted(os.listdir(out / "shared")) == ["datasets", "features_raw_random", "text_raw"]
    assert "features" not in ablation["no_distill"]["stage_seconds"]
    manifest = json.loads((out / "shared" / "features_raw_random" / "manifest.json").read_text())
    assert manifest["settings"]["proposals"]["mode"] == "random"
    assert (out / "ablation.md").read_text().count("| `") == 2
    assert Image.open(out / "efficiency_curve.png").format == "PNG"


def test_clip_proposals_from_the_rpn_stage(tmp_path):
    """renorm_clip_proposals at a toy size: the rpn stage trains an RPN-only model on the base
    boxes, whose candidates the features stage scores with the re-normalized CLIP."""
    out = tmp_path / "pipeline"
    _run_toy(
        "run_pipeline.py",
        "--output-dir",
        out,
        "--variant",
        "renorm_clip_proposals",
        "--clip-proposals",
        "rpn",
        "--num-train",
        4,
        "--num-val",
        2,
        "--max-iter",
        1,
        "--rpn-max-iter",
        2,
    )
    results = json.loads((out / "results.json").read_text())
    assert {"rpn", "features", "train"} <= set(results["stage_seconds"])
    rpn_log = (out / "rpn" / "log.txt").read_text()
    assert "ProposalNetwork" in (out / "rpn" / "config.yaml").read_text() and "iter: 1" in rpn_log
    manifest = json.loads((out / "features_renorm_rpn" / "proposals" / "manifest.json").read_text())
    settings = manifest["settings"]
    candidates = run_pipeline.RPN_CANDIDATES
    assert settings["mode"] == "rpn" and settings["rpn_candidates"] == candidates
    assert results["rpn_candidates"] == candidates
    assert len(settings["rpn_weights_hash"]) == 12
    encodings = [image["encodings"] for image in manifest["images"].values()]
    assert len(encodings) == 4 and all(0 < n <= candidates for n in encodings)


def test_device_reaches_every_stage(tmp_path, monkeypatch):
    """--device cuda: each tool the pipeline runs gets it (--device, or MODEL.DEVICE for
    train_net.py); the commands are recorded instead of run."""
    args = run_pipeline.parse_args(
        ["--output-dir", str(tmp_path), "--device", "cuda", "--clip-proposals", "rpn"]
    )
    pipeline = run_pipeline.Pipeline(args)
    commands = []
    monkeypatch.setattr(pipeline, "run_tool", lambda stage, script, *a: commands.append((stage, a)))
    monkeypatch.setattr(pipeline, "_base_classes", lambda: ["circle"])
    for step in (pipeline.renorm, pipeline.text, pipeline.rpn, pipeline.features, pipeline.train):
        step()
    assert sorted({stage for stage, _ in commands}) == [
        "features",
        "renorm",
        "rpn",
        "text",
        "train",
    ]
    for stage, command in commands:
        pairs = {(str(k), str(v)) for k, v in zip(command, command[1:])}
        assert pairs & {("--device", "cuda"), ("MODEL.DEVICE", "cuda")}, (stage, command)
        assert ("MODEL.DEVICE", "cpu") not in pairs and ("--device", "cpu") not in pairs
