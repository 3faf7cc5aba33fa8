"""Open-vocabulary evaluators: base/novel AP checked against an independent pycocotools run."""

import json

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ezsd.data.datasets import register_lvis_ovd_dataset, register_ovd_dataset
from ezsd.evaluation import OVDCOCOEvaluator, OVDLVISEvaluator

NAMES = ["lemon", "brick", "lime", "tire"]  # ids 1..4; lime and tire are novel
NOVEL = ["lime", "tire"]


def _scene(seed, num_images=6):
    """Ground truth and noisy predictions (jittered, some wrong classes, some false positives)."""
    rng = np.random.default_rng(seed)
    images, annotations, predictions = [], [], []
    for image_id in range(1, num_images + 1):
        images.append(
            {
                "id": image_id,
                "file_name": f"{image_id}.png",
                "width": 200,
                "height": 150,
                "coco_url": f"http://x/val2017/{image_id}.png",
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
            }
        )
        boxes, classes, scores = [], [], []
        for _ in range(rng.integers(2, 6)):
            x, y = rng.uniform(0, 120), rng.uniform(0, 90)
            w, h = rng.uniform(10, 60), rng.uniform(10, 50)
            cat = int(rng.integers(1, 5))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
            jitter = rng.normal(0, 4, 4)
            pred_cat = cat if rng.uniform() < 0.7 else int(rng.integers(1, 5))
            boxes.append([x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]])
            classes.append(pred_cat - 1)
            scores.append(rng.uniform(0.3, 1.0))
        for _ in range(2):  # false positives
            x, y = rng.uniform(0, 150), rng.uniform(0, 100)
            boxes.append([x, y, x + 20, y + 20])
            classes.append(int(rng.integers(0, 4)))
            scores.append(rng.uniform(0, 0.8))
        inst = Instances(
            (150, 200),
            pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
            pred_classes=torch.tensor(classes),
            scores=torch.tensor(scores, dtype=torch.float32),
        )
        predictions.append(({"image_id": image_id}, {"instances": inst}))
    return images, annotations, predictions


def _run(evaluator, predictions):
    evaluator.reset()
    for inputs, outputs in predictions:
        evaluator.process([inputs], [outputs])
    return evaluator.evaluate()


def _pycocotools_ap(json_file, results_file, cat_names, iou):
    gt = COCO(json_file)
    gt.dataset.setdefault("info", {})
    dt = gt.loadRes(results_file)
    ev = COCOeval(gt, dt, "bbox")
    ev.params.catIds = [c["id"] for c in gt.loadCats(gt.getCatIds()) if c["name"] in cat_names]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[1 if iou == 0.5 else 0] * 100


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_ovd_metrics_match_pycocotools_on_class_subsets(tmp_path, seed):
    images, annotations, predictions = _scene(seed)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    json_file = tmp_path / "val.json"
    json_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    name = f"_t_eval_coco_{seed}"
    register_ovd_dataset(
        name,
        str(json_file),
        str(tmp_path),
        ["lemon", "brick"],
        NOVEL,
        novel_annotated=True,
        thing_classes=NAMES,
    )
    out_dir = tmp_path / "inference"
    results = _run(
        OVDCOCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(out_dir)),
        predictions,
    )["bbox"]
    results_file = str(out_dir / "coco_instances_results.json")
    for group, names in (("base", ["lemon", "brick"]), ("novel", NOVEL), ("all", NAMES)):
        for metric, iou in (("AP50", 0.5), ("AP", None)):
            expected = _pycocotools_ap(str(json_file), results_file, names, iou)
            assert results[f"{metric}_{group}"] == pytest.approx(expected, abs=1e-6), (
                metric,
                group,
            )
    assert 0 < results["AP50_novel"] < 100 and results["AP50_base"] != results["AP50_novel"]
    written = json.loads((out_dir / "ovd_metrics.json").read_text())["bbox"]
    assert written["AP50_novel"] == results["AP50_novel"]


def _coco_subset_ap(gt, results_file, cat_ids, iou, max_dets):
    """Mean AP over `cat_ids` from pycocotools (all areas, `max_dets` per image)."""
    ev = COCOeval(gt, gt.loadRes(results_file), "bbox")
    ev.params.catIds, ev.params.maxDets = list(cat_ids), [max_dets]
    ev.evaluate()
    ev.accumulate()
    p = ev.eval["precision"][:, :, :, 0, 0]
    if iou is not None:
        p = p[np.isclose(ev.params.iouThrs, iou)]
    return float(np.mean(p[p > -1]) * 100)


FREQUENCY = {"lemon": "f", "brick": "c", "lime": "r", "tire": "r"}


@pytest.mark.parametrize("seed", [3, 4])
def test_lvis_ovd_metrics_match_an_independent_computation(tmp_path, seed):
    """lvis==0.5.3 (np.float, run under NumPy 2) against pycocotools on an exhaustively labelled
    tiny LVIS-format set (every absent category is a negative of its image, so LVIS's federated
    rules count every detection as COCO does): base = frequent + common, novel = rare."""
    assert int(np.__version__.split(".")[0]) >= 2
    images, annotations, predictions = _scene(seed)
    for image in images:
        present = {a["category_id"] for a in annotations if a["image_id"] == image["id"]}
        image["neg_category_ids"] = [c for c in range(1, 5) if c not in present]
    categories = [
        {
            "id": i + 1,
            "name": n,
            "synonyms": [n],
            "frequency": FREQUENCY[n],
            "image_count": 1,
            "instance_count": 1,
        }
        for i, n in enumerate(NAMES)
    ]
    json_file = tmp_path / "lvis_val.json"
    json_file.write_text(
        json.dumps(
            {"images": images, "annotations": annotations, "categories": categories, "info": {}}
        )
    )
    name = f"_t_eval_lvis_{seed}"
    register_lvis_ovd_dataset(
        name, str(json_file), str(tmp_path) + "/", categories, novel_annotated=True
    )
    assert MetadataCatalog.get(name).novel_classes == NOVEL
    out = tmp_path / "out"
    results = _run(
        OVDLVISEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(out)), predictions
    )["bbox"]
    assert "float" not in np.__dict__  # the alias is removed again
    gt = COCO(str(json_file))
    results_file = str(out / "lvis_instances_results.json")
    groups = {"base": [1, 2], "novel": [3, 4], "all": [1, 2, 3, 4]}
    for group, ids in groups.items():
        for metric, iou in (("AP50", 0.5), ("AP", None)):
            expected = _coco_subset_ap(gt, results_file, ids, iou, 300)
            assert results[f"{metric}_{group}"] == pytest.approx(expected, abs=1e-6), (
                metric,
                group,
            )
    assert results["AP_novel"] == pytest.approx(results["APr"], abs=1e-6)
    assert results["AP_all"] == pytest.approx(results["AP"], abs=1e-6)
    assert results["APc"] == pytest.approx(
        _coco_subset_ap(gt, results_file, [2], None, 300), abs=1e-6
    )
    assert 0 < results["AP50_novel"] < 100 and results["AP_base"] != results["AP_novel"]
    written = json.loads((out / "ovd_metrics.json").read_text())["bbox"]
    assert written == {k: results[k] for k in written} and {
        "APr",
        "APc",
        "APf",
        "AP50_novel",
    } <= set(written)


def test_evaluators_refuse_class_names_missing_from_the_ground_truth(tmp_path):
    """A base/novel name that the ground truth does not have is an error, not a class left out."""
    from ezsd.utils.errors import UserInputError

    images, annotations, _ = _scene(0)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    json_file = tmp_path / "val.json"
    json_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    register_ovd_dataset(
        "_t_eval_unknown",
        str(json_file),
        str(tmp_path),
        ["lemon", "brick"],
        ["lime", "tyre"],
        novel_annotated=True,
        thing_classes=NAMES,
    )
    with pytest.raises(UserInputError) as e:
        OVDCOCOEvaluator("_t_eval_unknown", tasks=("bbox",), distributed=False)
    assert str(e.value) == (
        f"{json_file}: has no category named ['tyre'] (1 of the novel classes "
        "of dataset '_t_eval_unknown'); the evaluation would leave them out"
    )
