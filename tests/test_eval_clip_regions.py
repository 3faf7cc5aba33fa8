"""CLIP as the region classifier (ezsd.clip.region_detections, tools/eval_clip_regions.py):
scoring against the vocabulary, the three box sources, and the tool on the toy workspace."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import BoxMode

from ezsd.clip import clip_region_instances, encode_regions, region_boxes, region_recall
from ezsd.utils.errors import UserInputError

from tiny_clip import tiny_clip
from train_workspace import REPO, run_tool

BOXES = np.array([[4, 4, 40, 40], [60, 8, 120, 50], [10, 70, 70, 120]], np.float32)


def test_each_box_is_scored_highest_for_the_text_that_is_its_own_embedding():
    model = tiny_clip()
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3)).astype(np.uint8)
    # The "vocabulary" is the boxes' own crop embeddings: class i is box i.
    text = F.normalize(encode_regions(model, image, BOXES), dim=-1)
    found = clip_region_instances(model, image, BOXES, text, temperature=100.0, score_threshold=0.0)
    assert len(found) == 9  # every (box, class) pair: the boxes do not overlap, nothing is dropped
    assert found.image_size == (128, 128)
    for i, box in enumerate(torch.from_numpy(BOXES)):
        mine = (found.pred_boxes.tensor == box).all(dim=1)
        assert mine.sum() == 3
        assert found.pred_classes[mine][found.scores[mine].argmax()] == i
        assert torch.isclose(found.scores[mine].sum(), torch.tensor(1.0), atol=1e-4)  # a softmax
    best = clip_region_instances(model, image, BOXES, text, detections_per_image=4)
    assert len(best) == 4 and torch.equal(
        best.scores, found.scores.sort(descending=True).values[:4]
    )
    assert len(clip_region_instances(model, image, np.zeros((0, 4)), text)) == 0


def _records():
    ann = dict(bbox=[10, 20, 30, 40], bbox_mode=BoxMode.XYWH_ABS, category_id=0)
    crowd = dict(ann, bbox=[0, 0, 5, 5], iscrowd=1)
    return [dict(image_id=1, annotations=[ann, crowd]), dict(image_id=2, annotations=[])]


def test_boxes_from_ground_truth_proposal_files_and_detector_results(tmp_path):
    records = _records()
    gt = region_boxes("gt", records, top_k=100)
    assert gt[1].tolist() == [[10, 20, 40, 60]] and gt[2].shape == (0, 4)  # XYXY, no crowd box

    proposals = tmp_path / "proposals"
    proposals.mkdir()
    ranked = np.arange(20, dtype=np.float32).reshape(5, 4)
    np.savez(proposals / "1.npz", boxes=ranked)
    from_files = region_boxes(str(proposals), records, top_k=3)
    assert list(from_files) == [1] and from_files[1].tolist() == ranked[:3].tolist()

    results = tmp_path / "coco_instances_results.json"
    results.write_text(
        json.dumps(
            [
                dict(image_id=1, bbox=[0, 0, 10, 10], score=0.3, category_id=1),
                dict(image_id=1, bbox=[5, 5, 10, 10], score=0.5, category_id=1),
                dict(
                    image_id=1, bbox=[0, 0, 10, 10], score=0.9, category_id=2
                ),  # same box, other class
                dict(
                    image_id=99, bbox=[1, 1, 2, 2], score=1.0, category_id=1
                ),  # not in the dataset
            ]
        )
    )
    from_results = region_boxes(str(results), records, top_k=100)
    assert list(from_results) == [1]
    assert from_results[1].tolist() == [[0, 0, 10, 10], [5, 5, 15, 15]]  # distinct, best first
    assert region_boxes(str(results), records, top_k=1)[1].tolist() == [[0, 0, 10, 10]]


def test_recall_counts_the_gt_boxes_some_region_covers_at_iou_half():
    records = _records()
    records[0]["annotations"].append(
        dict(bbox=[100, 100, 10, 10], bbox_mode=BoxMode.XYWH_ABS, category_id=1)
    )
    names = ["cup", "fork"]
    groups = dict(base=["cup"], novel=["fork"], all=names)
    covering = {1: np.array([[10, 20, 40, 55], [0, 0, 3, 3]], np.float32)}  # IoU 35/40 with the cup
    recall = region_recall(records, covering, names, groups)
    assert recall == dict(base=(1.0, 1), novel=(0.0, 1), all=(0.5, 2))
    shifted = {1: np.array([[30, 20, 60, 60]], np.float32)}  # IoU 10/50 with the cup
    assert region_recall(records, shifted, names, groups)["base"] == (0.0, 1)
    assert region_recall(records, {}, names, groups)["all"][1] == 0  # no image evaluated


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not 'gt', a proposals folder or a results json"),
        ("{not json", "not a COCO results json"),
        ('[{"image_id": 1}]', "not a COCO results json"),
        ('[{"image_id": 7, "bbox": [0, 0, 1, 1], "score": 1.0}]', "no result for any image"),
    ],
)
def test_bad_region_sources_are_named(tmp_path, content, message):
    path = tmp_path / "regions.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserInputError, match=message) as error:
        region_boxes(str(path), _records(), top_k=10)
    assert "regions.json" in str(error.value)


def test_tool_on_ground_truth_boxes(shapes_workspace, tmp_path):
    """Exact boxes: every detection that is right is right at any IoU, so AP equals AP50."""
    root, env = shapes_workspace
    clip = f"{REPO}/weights/shapes_clip_vit.pt"
    result = run_tool(
        "eval_clip_regions.py",
        "--clip",
        clip,
        "--dataset",
        "shapes_ovd_val",
        "--regions",
        "gt",
        "--output",
        tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    bbox = json.loads((tmp_path / "ovd_metrics.json").read_text())["bbox"]
    for group in ("base", "novel", "all"):
        assert 0 < bbox[f"AP50_{group}"] <= 100
        assert bbox[f"AP_{group}"] == pytest.approx(bbox[f"AP50_{group}"])
    assert "| novel" in result.stdout
    report = json.loads((tmp_path / "clip_regions.json").read_text())
    assert report["recall"] == dict(base=1.0, novel=1.0, all=1.0) and report["images"] == 3
    assert report["AP50_novel"] == bbox["AP50_novel"]

    bad = run_tool(
        "eval_clip_regions.py",
        "--clip",
        clip,
        "--dataset",
        "shapes_ovd_train",
        "--regions",
        "gt",
        "--output",
        tmp_path / "x",
        env=env,
    )
    assert bad.returncode == 2
    assert not (tmp_path / "x").exists()  # nothing written for a refused input
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: --dataset 'shapes_ovd_train' has no novel boxes: use an evaluation split "
        "(register_ovd_dataset(..., novel_annotated=True))"
    )


def test_tool_refuses_an_output_under_a_file(shapes_workspace, tmp_path):
    root, env = shapes_workspace
    (tmp_path / "file").write_text("")
    bad = run_tool(
        "eval_clip_regions.py",
        "--clip",
        f"{REPO}/weights/shapes_clip_vit.pt",
        "--dataset",
        "shapes_ovd_val",
        "--regions",
        "gt",
        "--output",
        tmp_path / "file" / "out",
        env=env,
    )
    assert bad.returncode == 2 and "--output" in bad.stderr.strip().splitlines()[-1], bad.stderr[
        -1000:
    ]


@pytest.mark.parametrize("reader", ["eval_clip_regions", "proposal_recall"])
def test_proposals_of_another_split_are_refused(shapes_workspace, tmp_path, reader):
    """ShapesOVD numbers each split's images 1..N, so the train split's proposal files are found
    for val's image ids: both readers compare the data the folder records with the dataset's."""
    root, env = shapes_workspace
    proposals = root / "features" / "proposals"  # made for shapes_ovd_train
    if reader == "eval_clip_regions":
        args = ["tools/eval_clip_regions.py", "--clip", root / "clip.pt", "--regions", proposals]
        args += ["--output", tmp_path / "out"]
    else:
        args = ["-m", "ezsd.offline.recall", "--proposals", proposals]
    result = subprocess.run(
        [sys.executable, *map(str, args), "--dataset", "shapes_ovd_val"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and last.startswith("error: "), result.stderr[-2000:]
    assert "made for dataset 'shapes_ovd_train'" in last, last
    assert "it is read for 'shapes_ovd_val'" in last and not (tmp_path / "out").exists()
