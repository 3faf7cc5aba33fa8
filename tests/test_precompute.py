"""CLIP proposals and region-feature pre-computation (ezsd.offline,
tools/precompute_clip_features.py).

Tiny on purpose: a few 64 px ShapesOVD images, a random ViT CLIP with 32 px input, 96 anchors per
image; the whole file runs in well under a minute on two CPU cores.
"""

import glob
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode

import ezsd.offline.precompute_cli as precompute_cli
from ezsd.clip import save_clip_checkpoint
from ezsd.data.datasets import register_ovd_dataset
from ezsd.data.feature_store import FeatureStore, dataset_fingerprint
from ezsd.data.shapes_ovd import CATEGORY_NAMES, DEFAULT_NOVEL_CLASSES, generate_shapes_ovd
from ezsd.offline.anchors import dense_anchors, num_dense_anchors
from ezsd.offline.proposals import (
    ProposalSettings,
    clip_objectness,
    compute_proposals,
    fast_proposals,
    nms_top_k,
    resolve_logit_scale,
)
from ezsd.offline.region_features import FeatureSettings, base_gt_filter, select_regions
from ezsd.offline.sharding import shard_records
from ezsd.utils.errors import UserInputError

from killpoint import killpoint_command, run_until_killpoint
from tiny_clip import tiny_clip
from train_workspace import RPN_CONFIG, SHAPES_BASE, register_shapes_splits, tiny_rpn_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "precompute_clip_features.py")
TRAIN = "test_precompute_shapes_train"
VAL = "test_precompute_shapes_val"
ANCHORS = ["--anchor-stride", "16", "--anchor-sizes", "16,32", "--anchor-ratios", "0.5,1,2"]
NUM_TRAIN = 6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny matmuls on a shared 2-core machine run 10-40x faster than with
    two spinning threads, and the subprocess below must compute exactly as this process does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """6 train + 2 val ShapesOVD images at 64 px, registered in-process; a tiny random CLIP."""
    root = tmp_path_factory.mktemp("precompute")
    data = root / "shapes_ovd"
    generate_shapes_ovd(str(data), seed=0, num_train=NUM_TRAIN, num_val=2, image_size=64)
    register_shapes_splits(data, TRAIN, VAL)
    model = tiny_clip()
    clip_path = root / "tiny_clip.pt"
    save_clip_checkpoint(model, str(clip_path))
    return dict(root=root, clip=str(clip_path), tool=precompute_cli)


def _run(world, out, *extra, dataset=TRAIN):
    argv = [
        "--dataset",
        dataset,
        "--clip",
        world["clip"],
        "--output",
        str(out),
        "--no-progress",
        "--batch-size",
        "64",
        *ANCHORS,
        *extra,
    ]
    return world["tool"].main(argv)


def _tool_command(world, out):
    """Environment and command line of the tool as a separate process."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(world["root"]), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        TOOL,
        "--dataset",
        "shapes_ovd_train",
        "--clip",
        world["clip"],
        "--output",
        str(out),
        "--no-progress",
        "--batch-size",
        "64",
        *ANCHORS,
    ]
    return env, cmd


def _single_run(world):
    """The uninterrupted one-process run that resumed, sharded and multi-rank runs must equal."""
    single = world["root"] / "single"
    if not (single / "manifest.json").exists():
        _run(world, single)
    return single


def _assert_same_store(reference, out):
    for sub in ("regions", "proposals"):
        _assert_same_arrays(_arrays(str(reference / sub)), _arrays(str(out / sub)))
    assert (
        FeatureStore(str(out)).manifest["images"] == FeatureStore(str(reference)).manifest["images"]
    )


def _arrays(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.npz"))):
        with np.load(path) as data:
            out[os.path.basename(path)] = {k: data[k] for k in data.files}
    return out


def _assert_same_arrays(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert sorted(a[name]) == sorted(b[name]), name
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name}:{key}")


def _temp_files(root):
    return [p for p in glob.glob(os.path.join(root, "**", ".tmp-*"), recursive=True)]


# ---------------------------------------------------------------- units on hand-made inputs


def test_dense_anchors_count_shape_and_geometry():
    boxes = dense_anchors(64, 96, 16, (16, 32), (0.5, 1.0, 2.0), clip=False)
    assert (
        boxes.shape == (4 * 6 * 6, 4) == (num_dense_anchors(64, 96, 16, (16, 32), (0.5, 1, 2)), 4)
    )
    # first cell centred at (8, 8): size 16 ratio 0.5 is 16*sqrt(2) wide and 16/sqrt(2) high
    w, h = 16 * math.sqrt(2), 16 / math.sqrt(2)
    torch.testing.assert_close(boxes[0], torch.tensor([8 - w / 2, 8 - h / 2, 8 + w / 2, 8 + h / 2]))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    torch.testing.assert_close(areas[:3], torch.full((3,), 256.0))  # every ratio keeps the area
    clipped = dense_anchors(64, 96, 16, (16, 32), (0.5, 1.0, 2.0))
    assert clipped.shape == boxes.shape and clipped.min() >= 0
    assert clipped[:, 2].max() <= 96 and clipped[:, 3].max() <= 64
    # paper defaults: 15 per cell, ~15.7k on a 1333x800 image
    assert num_dense_anchors(800, 1333, 32, (32, 64, 128, 256, 512), (0.5, 1, 2)) == 25 * 42 * 15


def test_objectness_is_log_c_minus_entropy():
    p = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    objectness, confidence, clip_class = clip_objectness(torch.log(p) + 3.0)  # logits up to a shift
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(objectness, torch.tensor([math.log(2) - entropy, 0.0]))
    torch.testing.assert_close(confidence, torch.tensor([0.75, 0.5]))
    assert clip_class[0] == 0
    sharp, _, cls = clip_objectness(torch.tensor([[0.0, 0.0, 100.0, 0.0]]))
    assert abs(float(sharp) - math.log(4)) < 1e-4 and cls.item() == 2
    # the softmax scale is the CLIP's own: 100 for OpenAI's (log 4.6052), or as given
    model = torch.nn.Module()
    model.logit_scale = torch.nn.Parameter(torch.tensor(math.log(100.0)))
    assert resolve_logit_scale(model) == pytest.approx(100.0, abs=1e-3)
    assert resolve_logit_scale(model, 13.7) == 13.7


def test_nms_top_k_is_class_agnostic_and_sorted():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 11.0]])
    scores = torch.tensor([0.5, 0.9, 0.2, 0.1])
    assert nms_top_k(boxes, scores, 0.7, 10).tolist() == [1, 2]
    assert nms_top_k(boxes, scores, 0.7, 1).tolist() == [1]
    assert nms_top_k(boxes, scores, 0.99, 10).tolist() == [1, 0, 2, 3]


def test_proposals_filtered_against_base_gt_only():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # IoU with gt: 1.0, 0.3 exactly (30 of 100 px overlap... see below), just under 0.3, 0
    proposals = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 3.0],  # 30 / 100 = 0.3: dropped (>= 0.3)
            [0.0, 0.0, 10.0, 2.9],  # 0.29: kept
            [50.0, 50.0, 60.0, 60.0],
        ]
    )
    assert base_gt_filter(proposals, gt, 0.3).tolist() == [False, False, True, True]
    assert base_gt_filter(proposals, torch.zeros(0, 4), 0.3).all()  # no base box: keep all
    props = dict(boxes=proposals, clip_class=torch.tensor([0, 1, 1, 3]))
    settings = FeatureSettings(gt_iou_thresh=0.3, top_k=300)
    assert select_regions(props, gt, 2, settings).tolist() == [2, 3]
    drop = FeatureSettings(gt_iou_thresh=0.3, top_k=300, drop_base_argmax=True)
    assert select_regions(props, gt, 2, drop).tolist() == [3]  # class 1 < 2 base classes
    assert select_regions(props, torch.zeros(0, 4), 2, FeatureSettings(top_k=2)).tolist() == [0, 1]
    # --gt-inside: a part of the base object (IoU 0.29, wholly inside it) and a box half inside it
    part_and_half = torch.tensor([[0.0, 0.0, 10.0, 2.9], [5.0, 0.0, 15.0, 2.0]])
    assert base_gt_filter(part_and_half, gt, 0.3).tolist() == [True, True]  # 0: off
    assert base_gt_filter(part_and_half, gt, 0.3, inside_thresh=0.7).tolist() == [False, True]
    assert base_gt_filter(part_and_half, gt, 0.3, inside_thresh=0.5).tolist() == [False, False]
    inside = FeatureSettings(gt_iou_thresh=0.3, gt_inside_thresh=0.7, top_k=300)
    assert select_regions(props, gt, 2, inside).tolist() == [3]
    # recorded in a store's settings when on; off, the settings of stores made before it
    assert inside.to_dict()["gt_inside_thresh"] == 0.7
    assert "gt_inside_thresh" not in settings.to_dict()


def test_proposal_recall_counts_the_groups_gt_boxes_hit_by_the_top_k(world, tmp_path):
    """Per val image: a box far from every object first, then the GT boxes; the top 1 hits none,
    the top 1 + (most boxes) hit all; as training would distill them (boxes on a base object
    dropped), no base box and the novel boxes that overlap no base box at IoU >= 0.3; a folder
    without files is a one-line error."""
    from ezsd.offline.recall import proposal_recall

    records = DatasetCatalog.get(VAL)
    most = max(len(r["annotations"]) for r in records)
    for record in records:
        gt = [
            BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            for a in record["annotations"]
        ]
        boxes = np.array([[500, 500, 510, 510], *gt], dtype=np.float32).reshape(-1, 4)
        np.savez(tmp_path / f"{record['image_id']}.npz", boxes=boxes, num_encodings=7)
    settings = json.dumps({"data": dataset_fingerprint(VAL, records)})
    (tmp_path / "settings.json").write_text(settings)
    result = proposal_recall(VAL, str(tmp_path), ks=(1, 1 + most), group="all")
    assert result["gt_boxes"] == sum(len(r["annotations"]) for r in records) > 0
    assert result["recall"] == {"1": 0.0, str(1 + most): 1.0}
    assert result["images"] == len(records) and result["encodings_per_image"] == 7.0
    distilled = {
        group: proposal_recall(VAL, str(tmp_path), ks=(1 + most,), group=group, as_distilled=True)
        for group in ("base", "novel")
    }
    assert distilled["base"]["recall"] == {str(1 + most): 0.0}
    meta, apart = MetadataCatalog.get(VAL), []
    for record in records:
        boxes = {True: [], False: []}
        for a in record["annotations"]:
            is_novel = meta.thing_classes[a["category_id"]] in meta.novel_classes
            boxes[is_novel].append(
                BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            )
        apart += base_gt_filter(boxes[True], boxes[False], 0.3).tolist()
    assert distilled["novel"]["recall"] == {str(1 + most): sum(apart) / len(apart)}
    assert 0 < sum(apart) and distilled["novel"]["gt_boxes"] == len(apart)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "settings.json").write_text(settings)
    with pytest.raises(UserInputError, match="no proposal file"):
        proposal_recall(VAL, str(tmp_path / "empty"), ks=(1,))


def test_shards_partition_deterministically():
    records = [{"image_id": i} for i in (5, 3, 9, 1, 7)]
    shards = [shard_records(records, 2, i) for i in range(2)]
    ids = sorted(r["image_id"] for s in shards for r in s)
    assert ids == [1, 3, 5, 7, 9] and not {r["image_id"] for r in shards[0]} & {
        r["image_id"] for r in shards[1]
    }
    assert shards == [shard_records(list(reversed(records)), 2, i) for i in range(2)]


def test_fast_mode_scores_few_boxes():
    settings = ProposalSettings(
        mode="fast",
        stride=8,
        sizes=(16, 32),
        ratios=(0.5, 1, 2),
        top_k=50,
        fast_rounds=4,
        fast_seeds=4,
    )
    out = fast_proposals(
        _IoUScorer([20, 20, 44, 44]), torch.zeros(3, 64, 64, dtype=torch.uint8), settings
    )
    exhaustive = num_dense_anchors(64, 64, 8, (16, 32), (0.5, 1, 2))
    assert out["num_encodings"] * 2 < exhaustive
    assert out["objectness"][0] > 0.7  # the search climbs from IoU 0.21 (best coarse box)
    assert (out["objectness"][:-1] >= out["objectness"][1:]).all()


class _IoUScorer:
    """Fake CLIP scorer: objectness = IoU with one target box; counts its encodings."""

    num_encodings = 0

    def __init__(self, target):
        self.target = torch.tensor([target], dtype=torch.float32)

    def __call__(self, image, boxes):
        from torchvision.ops import box_iou

        self.num_encodings += len(boxes)
        iou = box_iou(boxes, self.target)[:, 0]
        return iou, iou, torch.zeros(len(boxes), dtype=torch.long)


def test_candidate_mode_scores_only_the_candidates_ranked_by_clip():
    scorer = _IoUScorer([10, 10, 30, 30])
    candidates = torch.tensor(
        [[0, 0, 20, 20], [10, 10, 30, 30], [11, 11, 31, 31], [40, 40, 60, 60], [5, 5, 6, 50]],
        dtype=torch.float32,
    )  # last: 1 px wide, dropped
    settings = ProposalSettings(mode="rpn", top_k=10, nms_thresh=0.7)
    out = compute_proposals(
        scorer,
        torch.zeros(3, 64, 64, dtype=torch.uint8),
        settings,
        candidates=lambda image: candidates,
    )
    assert out["num_encodings"] == scorer.num_encodings == 4
    # ranked by the (CLIP) score, not the candidates' order; the near-duplicate is suppressed
    assert out["boxes"].tolist() == [[10, 10, 30, 30], [0, 0, 20, 20], [40, 40, 60, 60]]
    assert (out["objectness"][:-1] >= out["objectness"][1:]).all()
    assert "rpn_candidates" in settings.to_dict() and "fast_rounds" not in settings.to_dict()
    assert "rpn_candidates" not in ProposalSettings(mode="fast").to_dict()


def test_random_mode_draws_anchors_seeded_by_the_image_without_clip():
    settings = ProposalSettings(mode="random", stride=8, sizes=(16, 32), ratios=(1,), top_k=20)
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    out = compute_proposals(None, image, settings)  # no scorer: nothing is encoded
    anchors = dense_anchors(64, 64, 8, (16, 32), (1,))
    assert out["num_encodings"] == 0 and out["boxes"].shape == (20, 4)
    assert len({tuple(b) for b in out["boxes"].tolist()}) == 20  # without replacement
    assert all((anchors == b).all(dim=1).any() for b in out["boxes"])
    assert (out["confidence"] == 1).all() and (out["clip_class"] == -1).all()
    again = compute_proposals(None, image.clone(), settings)
    other = compute_proposals(None, 255 - image, settings)
    assert torch.equal(out["boxes"], again["boxes"])
    assert not torch.equal(out["boxes"], other["boxes"])


# ---------------------------------------------------------------- the tool, end to end


def test_store_is_readable_compact_and_base_only(world, caplog):
    out = world["root"] / "single"
    with caplog.at_level(logging.INFO, logger="ezsd.offline.pipeline"):
        summary = _run(world, out)
    # without the bar, the progress is logged (the pipeline runner's logs)
    progress = [m for m in caplog.messages if m.startswith("CLIP all [") and "img/s" in m]
    assert progress and progress[-1].split(": ")[1].startswith(f"{NUM_TRAIN} of {NUM_TRAIN} ")
    assert (
        summary["merged"]
        and summary["images"] == NUM_TRAIN
        and summary["proposal_encodings"] == NUM_TRAIN * 96
    )
    store = FeatureStore(str(out))
    store.check_dataset(TRAIN, DatasetCatalog.get(TRAIN))  # the trainer's check: base, novel, data
    names = store.manifest["class_names"]
    assert names[: len(store.manifest["base_classes"])] == store.manifest["base_classes"]
    assert set(names) == set(CATEGORY_NAMES)
    records = {str(r["image_id"]): r for r in DatasetCatalog.get(TRAIN)}
    assert sorted(store.manifest["images"]) == sorted(records)
    sizes = []
    for image_id, count in store.manifest["images"].items():
        regions = store.load(image_id)
        assert regions["embeddings"].dtype == np.float16 and regions["embeddings"].shape == (
            count,
            32,
        )
        is_gt = regions["is_gt"]
        assert is_gt.sum() == len(records[image_id]["annotations"])  # every base GT box, first
        assert not is_gt[is_gt.argmin() :].any() or is_gt.all()
        base_idx = np.array([names.index(n) for n in store.manifest["base_classes"]])
        assert np.isin(regions["clip_class"][is_gt], base_idx).all()
        proposals = torch.from_numpy(regions["boxes"][~is_gt])
        assert base_gt_filter(proposals, torch.from_numpy(regions["boxes"][is_gt]), 0.3).all()
        obj = regions["objectness"][~is_gt].astype(np.float32)
        assert (np.diff(obj) <= 1e-3).all()  # best first
        sizes.append((os.path.getsize(os.path.join(out, "regions", f"{image_id}.npz")), count))
    # Bytes per region at this 32-d embedding, and what it gives at 512-d with 300 regions.
    empty = out / "empty.npz"
    np.savez(empty, **{k: v[:0] for k, v in store.load(image_id).items()})
    per_region = max((size - os.path.getsize(empty)) / n for size, n in sizes)
    assert per_region <= 2 * 32 + 24
    assert (per_region + 2 * (512 - 32)) + os.path.getsize(empty) / 300 <= 1100
    assert not _temp_files(str(out))


def test_two_shards_union_equals_single_run(world):
    single = _single_run(world)
    sharded = world["root"] / "sharded"
    first = _run(world, sharded, "--num-shards", "2", "--shard-id", "1")
    assert first["images"] == NUM_TRAIN // 2 and not first["merged"]
    assert not (sharded / "manifest.json").exists()  # unfinished store: no manifest yet
    assert _run(world, sharded, "--num-shards", "2", "--shard-id", "0")["merged"]
    for sub in ("regions", "proposals"):
        _assert_same_arrays(_arrays(str(single / sub)), _arrays(str(sharded / sub)))
    a, b = FeatureStore(str(single)).manifest, FeatureStore(str(sharded)).manifest
    assert a == b


def test_resume_skips_finished_images_and_stale_temps(world):
    out = world["root"] / "resume"
    _run(world, out)
    reference = _arrays(str(out / "regions"))
    victim = sorted(reference)[2]
    os.remove(out / "regions" / victim)
    os.remove(out / "proposals" / victim)
    (out / "regions" / f".tmp-abcd1234-{victim}").write_bytes(b"partial")  # a killed writer's
    os.remove(out / "manifest.json")
    summary = _run(world, out)
    assert summary["resumed"] == NUM_TRAIN - 1
    assert summary["proposal_encodings"] == 96  # one image re-scored, the others skipped
    assert summary["feature_encodings"] == len(reference[victim]["boxes"])
    assert (out / "manifest.json").exists() and not _temp_files(str(out))
    _assert_same_arrays(reference, _arrays(str(out / "regions")))
    # a resume with other settings is refused rather than mixing two kinds of targets
    with pytest.raises(SystemExit):
        _run(world, out, "--gt-iou", "0.5")


def test_killed_run_then_resumed_gives_the_same_files(world):
    """SIGKILL a real subprocess right after a (seeded) random image, resume it, compare with an
    uninterrupted run; no image is computed twice."""
    single = _single_run(world)
    out = world["root"] / "killed"
    env, cmd = _tool_command(world, out)
    kill_after = random.Random(0).randint(1, NUM_TRAIN - 2)  # finished images
    # killed right after its kill_after-th image's regions are written (the child waits there)
    run_until_killpoint(
        killpoint_command(
            os.path.basename(TOOL),
            "ezsd.offline.pipeline:write_image_regions",
            f"n == {kill_after}",
            *cmd[2:],
        ),
        env,
    )
    assert not (out / "manifest.json").exists()
    finished = {
        p: os.stat(p).st_mtime_ns
        for sub in ("regions", "proposals")
        for p in glob.glob(str(out / sub / "*.npz"))
    }
    num_done = len(glob.glob(str(out / "regions" / "*.npz")))
    assert num_done == kill_after
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same_store(single, out)
    assert not _temp_files(str(out))
    # The re-run skipped exactly the finished images and rewrote none of the killed run's files
    # (proposals of an image killed before its regions were written are reused, not re-scored).
    assert f"{NUM_TRAIN} images ({num_done} already done, 0 unreadable)" in done.stdout
    assert {p: os.stat(p).st_mtime_ns for p in finished} == finished


def test_bad_input_is_a_one_line_error(world, capsys):
    cases = [
        (["--dataset", "no_such_dataset"], "not a registered dataset"),
        (["--dataset", VAL], "not a training split"),  # its metadata says novel boxes
        (["--clip", str(world["root"] / "missing.pt")], "missing.pt"),
    ]
    for extra, message in cases:
        argv = [
            "--dataset",
            TRAIN,
            "--clip",
            world["clip"],
            "--output",
            str(world["root"] / "bad"),
            "--no-progress",
            *ANCHORS,
            *extra,
        ]
        with pytest.raises(SystemExit) as e:
            world["tool"].main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (world["root"] / "bad" / "manifest.json").exists()
    # proposals alone may run on an evaluation split (they read no box)
    assert _run(world, world["root"] / "val", "--stage", "proposals", dataset=VAL)["merged"]
    with pytest.raises(UserInputError):
        from ezsd.offline.pipeline import PrecomputeConfig, run_precompute

        run_precompute(
            PrecomputeConfig(dataset=TRAIN, output=str(world["root"] / "bad2"), stage="features")
        )
    shutil.rmtree(world["root"] / "bad", ignore_errors=True)


def test_rpn_mode_scores_the_rpn_candidates_and_records_the_rpn(world, capsys):
    from ezsd.data.proposal_store import ProposalStore
    from ezsd.offline.rpn_candidates import RPNCandidates

    weights = tiny_rpn_checkpoint(world["root"])
    out = world["root"] / "rpn"
    rpn = ["--proposal-mode", "rpn", "--rpn-config", RPN_CONFIG, "--rpn-candidates", "40"]
    summary = _run(world, out, "--stage", "proposals", "--rpn-weights", weights, *rpn, dataset=VAL)
    assert summary["merged"] and 0 < summary["proposal_encodings"] <= 2 * 40
    candidates = RPNCandidates(RPN_CONFIG, weights, 40)
    for record in DatasetCatalog.get(VAL):
        props = ProposalStore(str(out / "proposals")).load(str(record["image_id"]))
        image = torch.from_numpy(np.array(read_image(record["file_name"], format="RGB"))).permute(
            2, 0, 1
        )
        boxes = candidates(image)
        assert 0 < props["num_encodings"] <= 40 and len(props["boxes"]) <= props["num_encodings"]
        # every proposal is one of the RPN's candidates, in CLIP-objectness order
        assert all((boxes == b).all(dim=1).any() for b in props["boxes"])
        assert (props["objectness"][:-1] >= props["objectness"][1:]).all()
    # another RPN checkpoint, or the same one under another config (here another test size: the
    # weights load, the boxes differ), cannot resume into these proposals; a missing checkpoint
    # is a clear error
    other = tiny_rpn_checkpoint(world["root"], seed=1)
    other_config = world["root"] / "rpn_other_size.yaml"
    other_config.write_text(f'_BASE_: "{RPN_CONFIG}"\nINPUT:\n  MIN_SIZE_TEST: 96\n')
    for weights_arg, config_arg, message in (
        (other, RPN_CONFIG, "rpn_weights_hash"),
        (weights, str(other_config), "rpn_config_hash"),
        (str(world["root"] / "none.pth"), RPN_CONFIG, "none.pth"),
    ):
        args = [*rpn[:3], config_arg, *rpn[4:]]
        with pytest.raises(SystemExit) as e:
            _run(
                world, out, "--stage", "proposals", "--rpn-weights", weights_arg, *args, dataset=VAL
            )
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and message in err[0], err
    with pytest.raises(SystemExit):  # the detector's config is not an RPN-only model
        _run(
            world,
            world["root"] / "rpn_bad",
            "--stage",
            "proposals",
            "--proposal-mode",
            "rpn",
            "--rpn-config",
            os.path.join(REPO, "configs", "ShapesOVD", "ezsd_R_18_FPN.yaml"),
            "--rpn-weights",
            weights,
            dataset=VAL,
        )
    assert "ProposalNetwork" in capsys.readouterr().err


def test_torchrun_ranks_take_one_shard_each(world):
    """torchrun --nproc-per-node 2 (gloo on CPU): the same store as one process."""
    single = _single_run(world)
    out = world["root"] / "ddp"
    env, cmd = _tool_command(world, out)
    torchrun = [
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29500 + os.getpid() % 1000),
    ]
    cmd = [cmd[0], *torchrun, *cmd[1:]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout + done.stderr
    assert "shard 0 of 2 (rank 0 of 2)" in log and "shard 1 of 2 (rank 1 of 2)" in log
    _assert_same_store(single, out)


def test_unreadable_image_is_skipped_and_listed_or_fatal_with_strict(world, capsys):
    data = world["root"] / "shapes_ovd"
    broken = world["root"] / "broken"
    shutil.copytree(data / "train", broken / "train")
    (broken / "train" / "000002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    name = "test_precompute_broken_train"
    if name not in DatasetCatalog.list():
        register_ovd_dataset(
            name,
            str(data / "train.json"),
            str(broken / "train"),
            SHAPES_BASE,
            DEFAULT_NOVEL_CLASSES,
            thing_classes=SHAPES_BASE,
        )
    summary = _run(world, broken / "out", dataset=name)
    assert summary["skipped"] == 1 and summary["merged"]
    manifest = FeatureStore(str(broken / "out")).manifest
    assert [s["image_id"] for s in manifest["skipped_images"]] == [3]
    assert len(manifest["images"]) == NUM_TRAIN - 1
    with pytest.raises(SystemExit):
        _run(world, broken / "strict", "--strict", dataset=name)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "000002.jpg" in err[0]
