"""tools/run_pipeline.py (ezsd.shapes_pipeline) reuses a stage's outputs only when they were
made from the inputs asked for now, and results.json records every input that decides its figures
(no tool is run here)."""

import hashlib
import json
import os

import pytest

import ezsd.shapes_pipeline as run_pipeline
from ezsd.utils.errors import UserInputError


def _data(root, seed=0, num_train=4, num_val=2, novel=("kite", "cup")):
    """The files of a generated ShapesOVD folder that the data stage reads."""
    folder = root / "datasets" / "shapes_ovd"
    folder.mkdir(parents=True)
    info = {"seed": seed, "novel_classes": list(novel)}
    for split, num in (("train", num_train), ("val", num_val)):
        images = [{"id": i + 1, "file_name": f"{i:06d}.jpg"} for i in range(num)]
        (folder / f"{split}.json").write_text(json.dumps({"info": info, "images": images}))
    (folder / "split.json").write_text(json.dumps({"base": ["ball"], "novel": list(novel)}))


def _pipeline(root, *argv):
    args = run_pipeline.parse_args(
        ["--output-dir", str(root), "--novel", "kite,cup", *map(str, argv)]
    )
    pipeline = run_pipeline.Pipeline(args)
    pipeline.ran = []
    pipeline.run_tool = lambda stage, *a: pipeline.ran.append(stage)
    return pipeline


def test_data_of_other_counts_or_seed_is_refused(tmp_path):
    _data(tmp_path)
    same = _pipeline(tmp_path, "--num-train", 4, "--num-val", 2)
    same.data()
    assert same.ran == []  # reused
    for argv, difference in (
        (("--num-train", 5, "--num-val", 2), "num_train: 4 there, 5 asked"),
        (("--num-train", 4, "--num-val", 3), "num_val: 2 there, 3 asked"),
        (("--num-train", 4, "--num-val", 2, "--seed", 1), "seed: 0 there, 1 asked"),
    ):
        with pytest.raises(UserInputError) as e:
            _pipeline(tmp_path, *argv).data()
        assert difference in str(e.value) and "shapes_ovd: holds other ShapesOVD data" in str(
            e.value
        )


def test_a_stage_made_from_other_inputs_is_refused_not_reused(tmp_path):
    pipeline = _pipeline(tmp_path)
    folder = str(tmp_path / "features_raw_fast")
    os.makedirs(folder)
    runs = []
    inputs = {"mode": "fast", "num_train": 4}
    with pytest.raises(UserInputError, match="holds outputs without a record of their inputs"):
        pipeline.stage("features", lambda: True, lambda: runs.append(1), folder, inputs)
    pipeline.stage("features", lambda: False, lambda: runs.append(1), folder, inputs)
    assert (
        runs == [1]
        and json.loads(open(os.path.join(folder, "pipeline_inputs.json")).read()) == inputs
    )
    assert pipeline.stage_seconds["features"] >= 0
    pipeline.stage("features", lambda: True, lambda: runs.append(1), folder, inputs)
    assert runs == [1]  # done and made from the same inputs: skipped
    assert pipeline.stage_seconds["features"] is None  # not 0: the earlier run's cost
    with pytest.raises(UserInputError) as e:
        pipeline.stage(
            "features", lambda: True, lambda: runs.append(1), folder, dict(inputs, num_train=8)
        )
    assert "stage 'features'" in str(e.value) and "num_train: 4 there, 8 asked" in str(e.value)


def test_results_record_every_input_that_decides_the_figures(tmp_path):
    _data(tmp_path)
    pipeline = _pipeline(
        tmp_path, "--num-train", 4, "--num-val", 2, "--max-iter", 7, "--variant", "vild_like"
    )
    pipeline.data()
    pipeline.text_files = {s: str(tmp_path / f"{s}.npy") for s in ("train", "test")}
    pipeline.feature_dir = str(tmp_path / "features_raw_random")
    pipeline.train()
    assert pipeline.ran == ["train"]
    train = tmp_path / "train"
    cfg = run_pipeline.load_ezsd_config(run_pipeline.CONFIG, pipeline.train_opts)
    recorded = json.loads((train / "pipeline_inputs.json").read_text())["config"]
    assert recorded.endswith(" " + hashlib.sha256(cfg.dump().encode()).hexdigest()[:12])
    (train / "config.yaml").write_text(cfg.dump())
    metrics = {
        k: 1.0 for k in ("AP50_base", "AP50_novel", "AP50_all", "AP_base", "AP_novel", "AP_all")
    }
    os.makedirs(train / "inference" / "shapes_ovd_val")
    (train / "inference" / "shapes_ovd_val" / "ovd_metrics.json").write_text(
        json.dumps({"bbox": metrics})
    )
    (train / "metrics.json").write_text(json.dumps({"iteration": 6, "total_loss": 1.0}) + "\n")
    results = pipeline.results(started=0)
    assert (results["seed"], results["num_train"], results["num_val"]) == (0, 4, 2)
    assert results["novel_classes"] == ["cup", "kite"] and results["split"] == "shapes_ovd_val"
    assert results["max_iter"] == 7 and results["variant"] == "vild_like"
    assert results["proposal_mode"] == "random" and results["renorm_epochs"] is None
    assert results["rpn_candidates"] is None  # recorded for the rpn mode only
    assert results["novel_negatives_inside"] == 0.7  # the pipeline's default, not the paper's 0
    assert results["git_commit"] and len(results["git_commit"].split("+")[0]) == 40
    assert json.loads((tmp_path / "results.json").read_text()) == results


@pytest.mark.parametrize("opts, stored", [((), 32), (("MODEL.EZSD.DISTILL.NUM_PROPOSALS", 64), 64)])
def test_features_store_the_regions_the_training_distills(tmp_path, opts, stored):
    """--opts that change how many regions training distills change how many are stored: a store
    of the config's 32 would otherwise feed a run asked for 64 with 32 (no error, fewer regions)."""
    _data(tmp_path, num_train=4, num_val=2)
    pipeline = _pipeline(
        tmp_path, "--num-train", 4, "--num-val", 2, "--clip-proposals", "fast", "--opts", *opts
    )
    calls = []
    pipeline.run_tool = lambda stage, script, *args: calls.append(args)
    pipeline.features()
    (args,) = calls
    assert args[args.index("--regions-per-image") + 1] == stored
    recorded = json.loads((tmp_path / "features_raw_fast" / "pipeline_inputs.json").read_text())
    assert recorded["regions"] == stored


def test_rpn_proposals_of_another_candidate_count_are_refused(tmp_path):
    """The default rpn mode passes --rpn-candidates to the features stage and records it, so a
    store ranked among another number of RPN boxes is refused, not reused."""
    _data(tmp_path, num_train=4, num_val=2)
    rpn_weights = tmp_path / "rpn.pth"
    rpn_weights.write_bytes(b"an RPN checkpoint")

    def features(*argv):
        pipeline = _pipeline(tmp_path, "--num-train", 4, "--num-val", 2, *argv)
        pipeline.rpn_weights = str(rpn_weights)
        calls = []
        pipeline.run_tool = lambda stage, script, *args: calls.append(args)
        pipeline.features()
        return calls

    (args,) = features()
    assert args[args.index("--proposal-mode") + 1] == "rpn"
    assert args[args.index("--rpn-candidates") + 1] == run_pipeline.RPN_CANDIDATES
    folder = tmp_path / "features_raw_rpn"
    assert json.loads((folder / "pipeline_inputs.json").read_text())["rpn_candidates"] == 50
    (folder / "manifest.json").write_text("{}")  # the stage is done
    assert features() == []  # same inputs: reused
    with pytest.raises(UserInputError, match="rpn_candidates: 50 there, 20 asked"):
        features("--rpn-candidates", 20)


def test_an_rpn_trained_with_another_config_is_refused(tmp_path, monkeypatch):
    """The rpn stage records the digest of its merged config, so an RPN trained before the config
    changed (e.g. an FPN of another width after a repository update) is refused, not reused."""
    _data(tmp_path, num_train=4, num_val=2)
    config = tmp_path / "rpn.yaml"
    config.write_text(f'_BASE_: "{run_pipeline.RPN_CONFIG}"\n')
    monkeypatch.setattr(run_pipeline, "RPN_CONFIG", str(config))

    def rpn():
        pipeline = _pipeline(tmp_path, "--num-train", 4, "--num-val", 2)
        pipeline.rpn()
        return pipeline.ran

    assert rpn() == ["rpn"]
    recorded = json.loads((tmp_path / "rpn" / "pipeline_inputs.json").read_text())["config"]
    assert recorded.startswith(os.path.relpath(config, run_pipeline.REPO) + " ")
    (tmp_path / "rpn" / "model_final.pth").write_bytes(b"an RPN checkpoint")  # the stage is done
    assert rpn() == []  # same config: reused
    config.write_text(config.read_text() + "MODEL:\n  FPN:\n    OUT_CHANNELS: 32\n")
    with pytest.raises(UserInputError, match=f"config: '{recorded}' there, '.+' asked"):
        rpn()


def test_novel_negatives_out_of_range_are_refused_before_any_stage():
    with pytest.raises(UserInputError, match=r"--novel-negatives-inside 1.5 is not in \[0, 1\]"):
        run_pipeline.parse_args(["--output-dir", "x", "--novel-negatives-inside", "1.5"])
