"""ShapesOVD generator: determinism, COCO validity, base/novel split, box validity, CLI, CLIP
pairs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO

from ezsd.data.shapes_ovd import (
    CATEGORY_FREQUENCY,
    CATEGORY_NAMES,
    DEFAULT_NOVEL_CLASSES,
    generate_shapes_ovd,
    render_clip_pairs,
)
from ezsd.data.shapes_ovd.statistics import split_statistics

TOOL = os.path.join(os.path.dirname(__file__), "..", "datasets", "prepare_shapes_ovd.py")
BASE = [n for n in CATEGORY_NAMES if n not in DEFAULT_NOVEL_CLASSES]


def _files(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _load(folder, split):
    with open(os.path.join(folder, f"{split}.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return str(
        generate_shapes_ovd(str(tmp_path_factory.mktemp("shapes")), seed=0, num_train=8, num_val=6)
    )


def test_categories_and_default_split():
    """COCO 48/17: at least 24 categories, about 3 base : 1 novel."""
    assert len(CATEGORY_NAMES) >= 24 and len(set(CATEGORY_NAMES)) == len(CATEGORY_NAMES)
    assert set(DEFAULT_NOVEL_CLASSES) < set(CATEGORY_NAMES)
    # in category order, as the registration reads any split (every process, one vocabulary)
    assert list(DEFAULT_NOVEL_CLASSES) == [n for n in CATEGORY_NAMES if n in DEFAULT_NOVEL_CLASSES]
    assert 0.2 <= len(DEFAULT_NOVEL_CLASSES) / len(CATEGORY_NAMES) <= 0.3
    assert len(CATEGORY_FREQUENCY) == len(CATEGORY_NAMES)
    assert max(CATEGORY_FREQUENCY) / min(CATEGORY_FREQUENCY) >= 10, "frequencies are long-tailed"


def test_proportions_are_cocos(tmp_path):
    """The statistics of datasets/README.md's table, on a freshly generated split: novel share of
    instances 10-18% in val and among the objects drawn in train, about 7 objects per image."""
    out = generate_shapes_ovd(str(tmp_path / "w"), seed=5, num_train=120, num_val=120)
    stats = split_statistics(os.path.join(out, "val.json"), DEFAULT_NOVEL_CLASSES)
    val = _load(out, "val")
    novel_ids = {CATEGORY_NAMES.index(n) + 1 for n in DEFAULT_NOVEL_CLASSES}
    novel_boxes = sum(a["category_id"] in novel_ids for a in val["annotations"])
    assert stats["instances"] == len(val["annotations"])
    assert stats["novel_share"] == pytest.approx(novel_boxes / len(val["annotations"]))
    assert 0.10 <= stats["novel_share"] <= 0.18, stats
    assert 6.0 <= stats["objects_per_image"] <= 8.0, stats
    assert sum(stats["small_medium_large"]) == pytest.approx(1.0)
    counts = stats["instances_per_category"]
    assert counts[CATEGORY_NAMES[int(np.argmax(CATEGORY_FREQUENCY))]] == max(counts.values())
    train = _load(out, "train")
    unlabeled = train["info"]["unlabeled_novel_objects"]
    assert 0.10 <= unlabeled / (unlabeled + len(train["annotations"])) <= 0.18


def test_deterministic_per_seed(world, tmp_path):
    first = _files(world)
    assert sorted(first) == sorted(
        ["train.json", "val.json", "split.json"]
        + [f"train/{i:06d}.jpg" for i in range(8)]
        + [f"val/{i:06d}.jpg" for i in range(6)]
    )
    assert (
        _files(generate_shapes_ovd(str(tmp_path / "again"), seed=0, num_train=8, num_val=6))
        == first
    )
    other = _files(generate_shapes_ovd(str(tmp_path / "other"), seed=1, num_train=8, num_val=6))
    assert other["train/000000.jpg"] != first["train/000000.jpg"]


def test_split_changes_labels_not_images(world, tmp_path):
    """Novel objects are drawn in training images whatever the split: only the labels differ."""
    novel = ("grape", "coin")
    alt = generate_shapes_ovd(
        str(tmp_path / "alt"), seed=0, num_train=8, num_val=6, novel_classes=novel
    )
    assert _files(os.path.join(alt, "train")) == _files(os.path.join(world, "train"))
    assert {c["name"] for c in _load(alt, "train")["categories"]} == set(CATEGORY_NAMES) - set(
        novel
    )
    assert _load(alt, "split") == {
        "base": [n for n in CATEGORY_NAMES if n not in novel],
        "novel": ["coin", "grape"],
    }


def test_jsons_load_with_pycocotools(world):
    for split in ("train", "val"):
        coco = COCO(os.path.join(world, f"{split}.json"))
        assert len(coco.getImgIds()) == (8 if split == "train" else 6)
        assert len(coco.getAnnIds()) > 0
        for img in coco.dataset["images"]:
            assert os.path.isfile(os.path.join(world, split, img["file_name"]))


def test_train_holds_base_only_and_val_holds_all(world):
    train, val = _load(world, "train"), _load(world, "val")
    assert [c["name"] for c in train["categories"]] == BASE
    assert {c["split"] for c in train["categories"]} == {"base"}
    base_ids = {CATEGORY_NAMES.index(n) + 1 for n in BASE}
    assert {a["category_id"] for a in train["annotations"]} <= base_ids
    assert [c["name"] for c in val["categories"]] == list(CATEGORY_NAMES)
    assert [c["id"] for c in val["categories"]] == list(range(1, len(CATEGORY_NAMES) + 1))
    for c in val["categories"]:
        assert c["split"] == ("novel" if c["name"] in DEFAULT_NOVEL_CLASSES else "base")
    assert {a["category_id"] for a in val["annotations"]} - base_ids, "val should hold novel boxes"


def test_boxes_valid(world):
    for split in ("train", "val"):
        data = _load(world, split)
        size = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            width, height = size[a["image_id"]]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height
            assert 0 < a["area"] <= w * h and a["iscrowd"] == 0


def _run_tool(*args):
    return subprocess.run(
        [sys.executable, TOOL, *args], capture_output=True, text=True, timeout=300
    )


def test_cli_rejects_unknown_novel_name(tmp_path):
    result = _run_tool(
        "--out", str(tmp_path / "x"), "--num-train", "1", "--num-val", "1", "--novel", "tomato,kiwi"
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and "kiwi" in errors[0] and ",".join(CATEGORY_NAMES) in errors[0], (
        result.stderr
    )
    assert not os.path.exists(tmp_path / "x" / "train.json")


def test_cli_lists_categories():
    result = _run_tool("--list-categories")
    assert result.returncode == 0 and result.stdout.strip() == ",".join(CATEGORY_NAMES)


def test_clip_pairs_cover_every_class():
    images, labels, captions = render_clip_pairs(seed=3, num=30, image_size=64)
    assert images.shape == (30, 64, 64, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(len(CATEGORY_NAMES)))
    assert all(CATEGORY_NAMES[label] in caption for label, caption in zip(labels, captions))
    again = render_clip_pairs(seed=3, num=30, image_size=64)
    assert np.array_equal(again[0], images) and again[2] == captions
