"""The evaluation tools of a trained model's parts: tools/eval_on_gt_boxes.py (the detector's
classifier on GT boxes), `python -m ezsd.offline.recall` (proposal recall) and
`python -m ezsd.evaluation.novel_errors` (what became of each novel object), on a generated
3-image ShapesOVD split and a randomly initialised ShapesOVD detector (CPU)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import BoxMode

from ezsd.config import load_ezsd_config
from ezsd.data.feature_store import dataset_fingerprint
from ezsd.data.shapes_ovd import CATEGORY_NAMES, generate_shapes_ovd
from ezsd.data.text_embedding_file import save_text_embeddings
from ezsd.evaluation.gt_boxes import detect_on_boxes, evaluate_on_gt_boxes, probability_shares
from ezsd.evaluation.gt_boxes import main as eval_on_gt_main
from ezsd.utils.errors import UserInputError

from train_workspace import CONFIG, REPO, SHAPES_BASE, register_shapes_splits

TRAIN, VAL = "test_eval_tools_train", "test_eval_tools_val"
D = 16


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """(cfg, model in eval mode, path of its config.yaml with MODEL.WEIGHTS set) on 3 val images."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval_tools")
    generate_shapes_ovd(str(root / "shapes_ovd"), seed=0, num_train=1, num_val=3, image_size=128)
    register_shapes_splits(root / "shapes_ovd", TRAIN, VAL)
    for name, names in (("base", SHAPES_BASE), ("all", CATEGORY_NAMES)):
        emb = F.normalize(
            torch.randn(len(names), D, generator=torch.Generator().manual_seed(1)), dim=1
        )
        save_text_embeddings(str(root / f"{name}.npy"), emb.numpy(), list(names))
    cfg = load_ezsd_config(
        CONFIG,
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.EZSD.EMBED_DIM",
            D,
            "MODEL.EZSD.CLIP.MODEL",
            "ViT-B/32",
            "MODEL.EZSD.TEXT_EMBEDDINGS",
            str(root / "base.npy"),
            "MODEL.EZSD.TEST_TEXT_EMBEDDINGS",
            str(root / "all.npy"),
            "DATASETS.TRAIN",
            f"('{TRAIN}',)",
            "DATASETS.TEST",
            f"('{VAL}',)",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            0.0,
            "INPUT.MIN_SIZE_TEST",
            96,
            "INPUT.MAX_SIZE_TEST",
            96,  # resized: boxes mapped both ways
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    cfg.MODEL.WEIGHTS = str(root / "model.pth")
    torch.save({"model": model.state_dict()}, cfg.MODEL.WEIGHTS)
    config_file = root / "config.yaml"
    config_file.write_text(cfg.dump())
    return cfg, model, str(config_file)


def _gt_classes(record):
    return [a["category_id"] for a in record["annotations"] if not a.get("iscrowd", 0)]


def test_detections_on_given_boxes_keep_the_boxes_unless_regressed(detector):
    cfg, model, _ = detector
    boxes = torch.tensor([[10.0, 12, 50, 60], [50, 30, 90, 80], [5, 60, 40, 95]])
    image = torch.rand(3, 96, 96) * 255
    kept = detect_on_boxes(model, image, boxes)
    assert len(kept) > 0
    # every detection is one of the given boxes, and every given box is detected (threshold 0)
    match = (kept.pred_boxes.tensor[:, None] == boxes[None]).all(-1)
    assert match.any(1).all() and match.any(0).all()
    assert kept.pred_classes.max() < len(CATEGORY_NAMES)  # the inference vocabulary's classes
    moved = detect_on_boxes(model, image, boxes, regress=True)
    assert (
        len(moved) > 0
        and not (moved.pred_boxes.tensor[:, None] == boxes[None]).all(-1).any(1).all()
    )
    assert len(detect_on_boxes(model, image, torch.zeros(0, 4))) == 0


def test_a_classifier_right_on_every_box_gets_ap50_100(detector, monkeypatch):
    """Scores one-hot on each GT box's class (the boxes come in annotation order): AP50 100 on
    base and novel, so boxes, classes and image sizes reach the evaluator unchanged. The model's
    own (random) classifier scores less."""
    cfg, model, _ = detector
    predictor = model.roi_heads.box_predictor
    records = DatasetCatalog.get(VAL)
    assert all(_gt_classes(r) for r in records)
    truth = iter([_gt_classes(r) for r in records])

    def oracle(predictions, proposals):
        classes = torch.tensor(next(truth))
        probs = F.one_hot(classes, predictor.num_classes + 1).float()
        assert len(classes) == len(proposals[0])
        return [probs]

    random, random_shares = evaluate_on_gt_boxes(cfg, model, VAL)
    monkeypatch.setattr(predictor, "predict_probs", oracle)
    right, shares = evaluate_on_gt_boxes(cfg, model, VAL)
    assert right["AP50_base"] == pytest.approx(100.0) and right["AP50_novel"] == pytest.approx(
        100.0
    )
    assert random["AP50_all"] < 90.0
    boxes = sum(len(_gt_classes(r)) for r in records)
    assert sum(g["boxes"] for g in shares.values()) == boxes and set(shares) == {"base", "novel"}
    for group in shares.values():
        assert (group["own"], group["background"], group["top1"]) == (1.0, 0.0, 1.0)
    assert all(g["own"] < 1.0 for g in random_shares.values())


def test_probability_shares_per_group():
    """Two base boxes and one novel box over classes (base a, base b, novel c) and background."""
    probs = torch.tensor(
        [[0.6, 0.1, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.3, 0.1, 0.1, 0.5]]
    )  # own classes a, b, c
    shares = probability_shares(probs, torch.tensor([0, 1, 2]), torch.tensor([False, False, True]))
    assert shares["base"] == dict(
        boxes=2, own=0.4, background=0.25, other_base=0.1, other_novel=0.25, top1=0.5
    )
    assert shares["novel"] == dict(
        boxes=1, own=0.1, background=0.5, other_base=0.3, other_novel=0.0, top1=0.0
    )


def test_eval_on_gt_boxes_command_line(detector, tmp_path, capsys):
    _, _, config_file = detector
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "eval_on_gt_boxes.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert (
        result.returncode == 0 and "--config-file" in result.stdout and "--regress" in result.stdout
    )
    out = eval_on_gt_main(["--config-file", config_file, "--output", str(tmp_path / "out")])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == out and printed["dataset"] == VAL and printed["boxes"] == "gt"
    assert all(0.0 <= printed[k] <= 100.0 for k in ("AP50_base", "AP50_novel", "AP50_all"))
    assert os.path.isfile(tmp_path / "out" / "ovd_metrics.json")
    assert set(printed["probabilities"]) <= {"base", "novel"} and printed["probabilities"]
    with pytest.raises(UserInputError, match="'nowhere' is not a registered dataset"):
        eval_on_gt_main(["--config-file", config_file, "--dataset", "nowhere"])
    with pytest.raises(UserInputError, match="has no novel boxes"):
        eval_on_gt_main(["--config-file", config_file, "--dataset", TRAIN])


def test_proposal_recall_command_line(detector, tmp_path, capsys):
    """--help documents every option; a proposal folder holding each val image's GT boxes after
    one box far from every object: recall 0 at k=1, 1 at k=1+most, printed as JSON."""
    from ezsd.offline.recall import main as recall_main

    result = subprocess.run(
        [sys.executable, "-m", "ezsd.offline.recall", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0
    for option in ("--dataset", "--proposals", "--k", "--iou", "--group", "--max-images"):
        assert option in result.stdout
    records = DatasetCatalog.get(VAL)
    most = max(len(r["annotations"]) for r in records)
    for record in records:
        gt = [
            BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            for a in record["annotations"]
        ]
        boxes = np.array([[500, 500, 510, 510], *gt], dtype=np.float32).reshape(-1, 4)
        np.savez(tmp_path / f"{record['image_id']}.npz", boxes=boxes, num_encodings=3)
    (tmp_path / "settings.json").write_text(json.dumps({"data": dataset_fingerprint(VAL, records)}))
    recall_main(
        ["--dataset", VAL, "--proposals", str(tmp_path), "--k", f"1,{1 + most}", "--group", "novel"]
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["recall"] == {"1": 0.0, str(1 + most): 1.0} and printed["gt_boxes"] > 0
    with pytest.raises(SystemExit):
        recall_main(["--dataset", VAL, "--proposals", str(tmp_path / "none")])


def test_novel_error_breakdown_command_line(detector, tmp_path, capsys):
    """Hand-made detections on the val split's novel objects, one outcome each in turn: the right
    name, a base name scored above the right one, another novel name, and a box shifted off the
    object (IoU < 0.5); base objects are ignored. The counts come back as made."""
    from detectron2.data import MetadataCatalog

    from ezsd.evaluation.novel_errors import OUTCOMES
    from ezsd.evaluation.novel_errors import main as novel_errors_main

    meta = MetadataCatalog.get(VAL)
    gt = json.loads(open(meta.json_file).read())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    ids = {n: i for i, n in names.items()}
    novel = list(meta.novel_classes)
    base_id = ids[SHAPES_BASE[0]]
    detections, expected = [], dict.fromkeys(OUTCOMES, 0)
    objects = [a for a in gt["annotations"] if names[a["category_id"]] in novel]
    assert len(objects) >= 4
    for k, a in enumerate(objects):
        x, y, w, h = a["bbox"]
        det = dict(image_id=a["image_id"], bbox=[x, y, w, h], score=0.5)
        outcome = OUTCOMES[[1, 3, 2, 0][k % 4]]
        expected[outcome] += 1
        other = ids[next(n for n in novel if n != names[a["category_id"]])]
        if outcome == "right":
            detections.append(dict(det, category_id=a["category_id"]))
        elif outcome == "base":
            detections += [dict(det, category_id=a["category_id"], score=0.4)]
            detections += [dict(det, category_id=base_id, score=0.9)]
        elif outcome == "other_novel":
            detections.append(dict(det, category_id=other))
        else:
            detections.append(dict(det, bbox=[x + w, y + h, w, h], category_id=a["category_id"]))
    for a in gt["annotations"]:  # base objects: not counted, whatever their detections
        if names[a["category_id"]] not in novel:
            detections.append(
                dict(image_id=a["image_id"], bbox=a["bbox"], score=1.0, category_id=ids[novel[0]])
            )
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(detections))
    novel_errors_main(["--dataset", VAL, "--detections", str(path)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {o: printed[o] for o in OUTCOMES} == expected
    assert printed["novel_objects"] == len(objects)
    assert printed["right_name_covers"] == expected["right"] + expected["base"]
    assert sum(n for _, _, n in printed["confusions"]) == expected["base"] + expected["other_novel"]
    path.write_text(json.dumps([dict(detections[0], image_id=10**6)]))
    with pytest.raises(UserInputError, match="are not in --dataset"):
        novel_errors_main(["--dataset", VAL, "--detections", str(path)])
    path.write_text(json.dumps([dict(detections[0], category_id=10**6)]))
    with pytest.raises(UserInputError, match="another vocabulary"):
        novel_errors_main(["--dataset", VAL, "--detections", str(path)])
    with pytest.raises(UserInputError, match="has no novel boxes"):
        novel_errors_main(["--dataset", TRAIN, "--detections", str(path)])


def test_novel_detection_places():
    """Hand-made detections with a novel name, one per place (and the ones not placed: a base
    name, a score below the threshold), are counted where they lie."""
    from ezsd.evaluation.novel_errors import PLACES, novel_detection_places

    gt = dict(
        categories=[dict(id=1, name="lemon"), dict(id=2, name="kiwi"), dict(id=3, name="plum")],
        annotations=[
            dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 40, 40]),  # base
            dict(id=2, image_id=1, category_id=2, bbox=[60, 60, 20, 20]),  # novel
            dict(id=3, image_id=1, category_id=3, bbox=[100, 0, 20, 20]),  # novel
        ],
    )

    def det(bbox, score, category_id=2):
        return dict(image_id=1, category_id=category_id, bbox=bbox, score=score)

    detections = [
        det([60, 60, 20, 20], 0.9),  # right
        det([61, 60, 20, 20], 0.8),  # duplicate
        det([0, 0, 40, 40], 0.95),  # base_object
        det([100, 0, 20, 20], 0.7),  # novel_object (a plum named kiwi)
        det([5, 5, 10, 10], 0.6),  # inside_base
        det([102, 2, 8, 8], 0.6, category_id=3),  # inside_novel (a part of the plum)
        det([50, 50, 20, 20], 0.6),  # loose: IoU 0.14 with the kiwi
        det([200, 200, 10, 10], 0.6),  # background
        det([60, 60, 20, 20], 0.99, category_id=1),  # a base name: not placed
        det([200, 200, 10, 10], 0.4),  # below --min-score: not placed
    ]
    places = novel_detection_places(gt, ["kiwi", "plum"], detections, min_score=0.5)
    assert places == dict(novel_detections=8, **dict.fromkeys(PLACES, 1))
    # without the better-scored box on the kiwi, the second one is right
    alone = novel_detection_places(gt, ["kiwi", "plum"], detections[1:])
    assert (alone["right"], alone["duplicate"]) == (1, 0)


def test_detections_of_other_data_with_the_same_image_ids_are_refused(detector, tmp_path):
    """The evaluator writes beside its detections the fingerprint of the data they were made on,
    so novel_errors and eval_clip_regions refuse them for another split: ShapesOVD numbers the
    images of every split and seed from 1, so the ids alone pass."""
    from ezsd.evaluation.novel_errors import main as novel_errors_main

    cfg, model, _ = detector
    out = tmp_path / "eval"
    evaluate_on_gt_boxes(cfg, model, VAL, output_dir=str(out))
    detections = str(out / "coco_instances_results.json")
    made = json.loads((out / "coco_instances_results.dataset.json").read_text())
    assert made == dataset_fingerprint(VAL, DatasetCatalog.get(VAL))
    novel_errors_main(["--dataset", VAL, "--detections", detections])  # its own data

    other = "test_eval_tools_other_val"
    data = tmp_path / "shapes_ovd"
    generate_shapes_ovd(str(data), seed=1, num_train=1, num_val=3, image_size=128)
    register_shapes_splits(data, "test_eval_tools_other_train", other)
    other_ids = {r["image_id"] for r in DatasetCatalog.get(other)}
    assert other_ids == {r["image_id"] for r in DatasetCatalog.get(VAL)}
    refusal = f"made for dataset '{VAL}' .* but --detections is evaluated on '{other}'"
    with pytest.raises(UserInputError, match=refusal):
        novel_errors_main(["--dataset", other, "--detections", detections])
    # the tool, on the builtin ShapesOVD val split of another generated folder
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "eval_clip_regions.py"),
            "--clip",
            "ViT-B/32",  # never loaded: the inputs are checked first
            "--dataset",
            "shapes_ovd_val",
            "--regions",
            detections,
            "--output",
            str(tmp_path / "clip_eval"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and last.startswith("error: "), result.stderr[-2000:]
    assert (
        f"made for dataset '{VAL}'" in last
        and "but --regions is evaluated on 'shapes_ovd_val'" in last
    )
    assert not (tmp_path / "clip_eval").exists()
