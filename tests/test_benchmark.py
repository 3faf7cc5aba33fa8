"""tools/benchmark.py at the tiniest size: every figure is written, positive and finite, and every
ratio is the quotient of its parts (a few 64 px ShapesOVD images, the tests' tiny CLIP, two
timed iterations of each detector; well under a minute on two CPU cores)."""

import glob
import json
import math
import os

import pytest

import ezsd.benchmark
from ezsd.clip import save_clip_checkpoint

from tiny_clip import tiny_clip
from train_workspace import tiny_rpn_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "benchmark.py")


def _load_tool():
    return ezsd.benchmark


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    clip_file = root / "tiny_clip.pt"
    save_clip_checkpoint(tiny_clip(), str(clip_file))
    tool = _load_tool()
    out = root / "out"
    argv = [
        "--output-dir",
        str(out),
        "--clip",
        str(clip_file),
        "--num-train",
        "2",
        "--num-val",
        "3",
        "--image-size",
        "64",
        "--proposal-images",
        "3",
        "--batch-size",
        "64",
        "--ceiling-batches",
        "2",
        "--ims-per-batch",
        "2",
        "--warmup-iters",
        "1",
        "--iters",
        "2",
        "--rpn-weights",
        tiny_rpn_checkpoint(root),
        "--rpn-candidates",
        "50",
        "--compare-opts",
        "MODEL.FPN.OUT_CHANNELS",
        "32",
        "--opts",
        "INPUT.MIN_SIZE_TRAIN",
        "(64,)",
        "INPUT.MAX_SIZE_TRAIN",
        "64",
    ]
    result = tool.main(argv)
    return tool, out, result


def test_every_figure_is_positive_and_finite(run, capsys):
    tool, out, result = run
    written = json.loads((out / "benchmarks.json").read_text())
    assert written == json.loads(json.dumps(result))  # what main returned is what it wrote
    figures = written["figures"]
    assert sorted(figures) == sorted(tool.FIGURES)
    for key, value in figures.items():
        assert isinstance(value, float) and math.isfinite(value), (key, value)
        # a recall may be 0 (the untrained RPN's boxes need not hit a novel object)
        assert (0 <= value <= 1) if key.startswith("novel_recall") else value > 0, (key, value)
    assert set(written["goals"]) == {k for k, goal in tool.FIGURES.items() if goal}
    assert not glob.glob(str(out / "**" / ".tmp-*"), recursive=True)  # atomic writes only


def test_ratios_are_quotients_of_their_parts(run):
    tool, out, _ = run
    figures = json.loads((out / "benchmarks.json").read_text())["figures"]
    assert set(tool.RATIOS) <= set(figures)
    for ratio, (numerator, denominator) in tool.RATIOS.items():
        assert math.isclose(
            figures[ratio], figures[numerator] / figures[denominator], rel_tol=1e-12
        )


def test_context_and_official_json_layout_file(run):
    _, out, result = run
    ctx = result["context"]
    train = ctx["train"]
    assert len(train["ezsd_iter_s"]) == len(train["vanilla_iter_s"]) == 2
    assert len(train["ezsd_compared_iter_s"]) == 2
    assert train["compare_opts"] == ["MODEL.FPN.OUT_CHANNELS", "32"]
    assert train["vanilla_box_head"].startswith("FastRCNNConvFCHead NUM_CONV 4 NUM_FC 2")
    assert "loss_distill" in train["ezsd_losses"] and "loss_distill" not in train["vanilla_losses"]
    storage = ctx["storage"]
    folder = out / "official_json_layout"
    assert len(list(folder.glob("*.json"))) == 2  # at the CLIP's dimension and at 512-d
    record = json.loads(
        (folder / f"{storage['json_image_id']}_{storage['embed_dim']}d.json").read_text()
    )
    assert len(record["feat"]) == len(record["bbox"]) == storage["json_regions"]
    assert {len(f) for f in record["feat"]} == {storage["embed_dim"]}
    assert ctx["proposals"]["exhaustive"]["novel_boxes"] > 0
    assert ctx["proposals"]["rpn"]["crops_per_image"] <= 50


def test_compare_opts_must_be_key_value_pairs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ezsd.benchmark.parse_args(
            ["--output-dir", str(tmp_path), "--compare-opts", "MODEL.FPN.OUT_CHANNELS"]
        )
    assert "KEY VALUE pairs" in capsys.readouterr().err
