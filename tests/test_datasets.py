"""Open-vocabulary dataset registration: base/novel bookkeeping, no novel box in training, bad
input."""

import json
import logging
import math
import os
import subprocess
import sys

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import ezsd  # noqa: F401  (registers the builtin datasets)
from ezsd.data.datasets import (
    COCO_OVD_BASE_CLASSES,
    COCO_OVD_NOVEL_CLASSES,
    register_lvis_ovd_dataset,
    register_ovd_dataset,
)
from ezsd.utils.errors import UserInputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATEGORIES = [{"id": 1, "name": "lemon"}, {"id": 2, "name": "brick"}, {"id": 5, "name": "lime"}]


def _write_coco(path, categories, annotations, width=100, height=80):
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": width, "height": height},
            {"id": 2, "file_name": "b.png", "width": width, "height": height},
        ],
        "annotations": [
            dict(id=i + 1, iscrowd=0, area=1.0, **a) for i, a in enumerate(annotations)
        ],
        "categories": categories,
    }
    path.write_text(json.dumps(data))
    return str(path)


def _register(name, json_file, image_root, novel_annotated):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_ovd_dataset(name, json_file, image_root, ["lemon", "brick"], ["lime"], novel_annotated)


def test_builtin_coco_ovd_metadata():
    train, val = MetadataCatalog.get("coco_ovd_train"), MetadataCatalog.get("coco_ovd_val")
    assert len(COCO_OVD_BASE_CLASSES) == 48 and len(COCO_OVD_NOVEL_CLASSES) == 17
    assert train.thing_classes == list(COCO_OVD_BASE_CLASSES)
    assert len(val.thing_classes) == 65 and set(val.thing_classes) == set(
        COCO_OVD_BASE_CLASSES + COCO_OVD_NOVEL_CLASSES
    )
    # contiguous ids follow COCO's category-id order: airplane (id 5) sits between base classes
    assert val.thing_classes[:6] == ["person", "bicycle", "car", "motorcycle", "airplane", "bus"]
    assert val.base_classes == train.base_classes == list(COCO_OVD_BASE_CLASSES)
    assert val.novel_classes == list(COCO_OVD_NOVEL_CLASSES)
    assert not train.novel_annotated and val.novel_annotated


def test_builtin_lvis_ovd_metadata():
    train, val = MetadataCatalog.get("lvis_v1_ovd_train"), MetadataCatalog.get("lvis_v1_ovd_val")
    assert (len(train.base_classes), len(train.novel_classes)) == (866, 337)
    assert train.thing_classes == train.base_classes and len(val.thing_classes) == 1203
    assert set(val.thing_classes) == set(val.base_classes) | set(val.novel_classes)
    assert val.evaluator_type == "lvis"


def test_builtin_shapes_ovd_metadata():
    from ezsd.data.shapes_ovd import CATEGORY_NAMES, DEFAULT_NOVEL_CLASSES

    train, val = MetadataCatalog.get("shapes_ovd_train"), MetadataCatalog.get("shapes_ovd_val")
    assert val.thing_classes == list(CATEGORY_NAMES)
    assert train.novel_classes == list(DEFAULT_NOVEL_CLASSES)
    assert not set(train.thing_classes) & set(DEFAULT_NOVEL_CLASSES)


def test_train_split_loads_base_boxes_only(tmp_path):
    json_file = _write_coco(
        tmp_path / "train.json",
        CATEGORIES[:2],
        [
            dict(image_id=1, category_id=1, bbox=[10, 10, 20, 20]),
            dict(image_id=2, category_id=2, bbox=[5, 5, 30, 10]),
        ],
    )
    _register("_t_train", json_file, str(tmp_path), novel_annotated=False)
    dicts = DatasetCatalog.get("_t_train")
    assert MetadataCatalog.get("_t_train").thing_classes == ["lemon", "brick"]
    assert sorted(a["category_id"] for d in dicts for a in d["annotations"]) == [0, 1]


def test_train_split_with_a_novel_category_is_refused(tmp_path):
    json_file = _write_coco(
        tmp_path / "train.json",
        CATEGORIES,
        [
            dict(image_id=1, category_id=5, bbox=[10, 10, 20, 20]),
        ],
    )
    _register("_t_leak", json_file, str(tmp_path), novel_annotated=False)
    with pytest.raises(UserInputError, match=r"train\.json: holds the novel categories \['lime'\]"):
        DatasetCatalog.get("_t_leak")


def test_eval_split_keeps_all_classes_and_ids(tmp_path):
    json_file = _write_coco(
        tmp_path / "val.json",
        CATEGORIES,
        [
            dict(image_id=1, category_id=5, bbox=[10, 10, 20, 20]),
            dict(image_id=1, category_id=2, bbox=[1, 1, 5, 5]),
        ],
    )
    _register("_t_val", json_file, str(tmp_path), novel_annotated=True)
    dicts = DatasetCatalog.get("_t_val")
    meta = MetadataCatalog.get("_t_val")
    assert meta.thing_classes == ["lemon", "brick", "lime"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 5: 2}
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [2, 1]


def test_invalid_boxes_are_dropped_with_a_counted_warning(tmp_path, caplog):
    json_file = _write_coco(
        tmp_path / "val.json",
        CATEGORIES,
        [
            dict(image_id=1, category_id=1, bbox=[10, 10, 20, 20]),  # valid
            dict(image_id=1, category_id=1, bbox=[10, 10, 0, 20]),  # zero width
            dict(image_id=1, category_id=2, bbox=[10, 10, -5, 20]),  # negative width
            dict(image_id=2, category_id=2, bbox=[200, 10, 20, 20]),  # outside the image
            dict(image_id=2, category_id=5, bbox=[float("nan"), 1, 3, 3]),  # not finite
            dict(image_id=2, category_id=5, bbox=[90, 70, 20, 20]),  # reaches past the border
        ],
    )
    _register("_t_bad_boxes", json_file, str(tmp_path), novel_annotated=True)
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get("_t_bad_boxes")
    boxes = [a["bbox"] for d in dicts for a in d["annotations"]]
    assert len(boxes) == 2
    assert boxes[1] == [90, 70, 100, 80]  # clipped, now XYXY
    assert all(math.isfinite(v) for b in boxes for v in b)
    assert "dropped 4 invalid boxes" in caplog.text and "clipped 1 boxes" in caplog.text


@pytest.mark.parametrize(
    "problem, message",
    [
        ("missing_json", "annotation file not found"),
        ("truncated_json", "not valid JSON"),
        ("missing_images", "image folder not found"),
        ("wrong_classes", "do not match"),
    ],
)
def test_bad_dataset_files_give_one_line_errors(tmp_path, problem, message):
    json_file = _write_coco(tmp_path / "val.json", CATEGORIES, [])
    image_root = str(tmp_path)
    if problem == "missing_json":
        json_file = str(tmp_path / "nope.json")
    elif problem == "truncated_json":
        text = (tmp_path / "val.json").read_text()
        (tmp_path / "val.json").write_text(text[: len(text) // 2])
    elif problem == "missing_images":
        image_root = str(tmp_path / "images")
    elif problem == "wrong_classes":
        json_file = _write_coco(tmp_path / "val.json", CATEGORIES[:2], [])
    _register("_t_" + problem, json_file, image_root, novel_annotated=True)
    with pytest.raises(UserInputError, match=message) as info:
        DatasetCatalog.get("_t_" + problem)
    assert "\n" not in str(info.value)


def test_lvis_train_split_refuses_rare_boxes_and_remaps_ids(tmp_path):
    categories = [
        {"id": 1, "name": "apple", "synonyms": ["apple"], "frequency": "f"},
        {"id": 2, "name": "gong", "synonyms": ["gong"], "frequency": "r"},
        {"id": 3, "name": "bow", "synonyms": ["bow"], "frequency": "c"},
    ]
    images = [{"id": 1, "width": 50, "height": 50, "coco_url": "http://x/train2017/1.jpg"}]

    def write(name, annotations):
        annotations = [
            dict(id=i + 1, image_id=1, area=1.0, segmentation=[[1, 1, 9, 1, 9, 9]], **a)
            for i, a in enumerate(annotations)
        ]
        path = tmp_path / name
        path.write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
        return str(path)

    good = write("good.json", [dict(category_id=3, bbox=[1, 1, 9, 9])])
    rare = write("rare.json", [dict(category_id=2, bbox=[1, 1, 9, 9])])
    for name, path in (("_t_lvis_good", good), ("_t_lvis_rare", rare)):
        register_lvis_ovd_dataset(name, path, str(tmp_path) + "/", categories)
    assert MetadataCatalog.get("_t_lvis_good").thing_classes == ["apple", "bow"]
    (record,) = DatasetCatalog.get("_t_lvis_good")
    assert record["annotations"][0]["category_id"] == 1
    assert record["file_name"].endswith("train2017/1.jpg")
    with pytest.raises(UserInputError, match="rare \\(novel\\) category 'gong'"):
        DatasetCatalog.get("_t_lvis_rare")


def test_prepare_coco_ovd_writes_both_splits(tmp_path):
    names = list(COCO_OVD_BASE_CLASSES + COCO_OVD_NOVEL_CLASSES) + ["dining table"]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    annotations = [dict(image_id=1, category_id=c["id"], bbox=[1, 1, 5, 5]) for c in categories]
    for split in ("train2017", "val2017"):
        _write_coco(tmp_path / f"instances_{split}.json", categories, annotations)
    subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "datasets", "prepare_coco_ovd.py"),
            "--annotations",
            str(tmp_path),
        ],
        check=True,
    )
    train = json.loads((tmp_path / "ovd_instances_train2017_base.json").read_text())
    val = json.loads((tmp_path / "ovd_instances_val2017_all.json").read_text())
    novel_ids = {c["id"] for c in categories if c["name"] in COCO_OVD_NOVEL_CLASSES}
    assert len(train["categories"]) == 48 and len(train["annotations"]) == 48
    assert not novel_ids & {a["category_id"] for a in train["annotations"]}
    assert len(val["categories"]) == 65 and len(val["annotations"]) == 65
    assert len(train["images"]) == len(val["images"]) == 2


def test_prepare_coco_ovd_missing_input_is_one_line_error(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "datasets", "prepare_coco_ovd.py"),
            "--annotations",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "instances_train2017.json: file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_shapes_ovd_split_file_is_read_in_category_order(tmp_path):
    """Every process builds the same vocabulary order whatever order split.json lists."""
    from ezsd.data.datasets.builtin import shapes_ovd_novel_classes
    from ezsd.data.shapes_ovd import CATEGORY_NAMES

    (tmp_path / "shapes_ovd").mkdir()
    split = tmp_path / "shapes_ovd" / "split.json"
    split.write_text(json.dumps({"base": [], "novel": ["umbrella", "apple", "clock"]}))
    assert list(shapes_ovd_novel_classes(str(tmp_path))) == [
        n for n in CATEGORY_NAMES if n in ("umbrella", "apple", "clock")
    ]
    split.write_text(json.dumps({"base": [], "novel": ["apple", "kiwi"]}))
    with pytest.raises(
        UserInputError, match="split.json: --novel: 'kiwi' is not a ShapesOVD category"
    ):
        shapes_ovd_novel_classes(str(tmp_path))
