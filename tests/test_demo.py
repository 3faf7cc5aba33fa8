"""tools/demo.py with a tiny random EZSD model (the ShapesOVD config) and a tiny CLIP on generated
images: a dataset's vocabulary, a custom one (computed once, then read from the cache), the PNGs
and detections.json, and bad input as a one-line error that writes nothing."""

import json
import logging
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from PIL import Image

import ezsd.demo
import ezsd.predictor
from ezsd import add_ezsd_config
from ezsd.clip import (
    clip_checkpoint_hash,
    save_clip_checkpoint,
    save_text_embeddings,
    text_embeddings,
)

from tiny_clip import EMBED_DIM, tiny_clip
from train_workspace import CONFIG
from train_workspace import run_tool as _tool

CUSTOM = ["teapot", "violin", "red kite"]
IMAGE_SIZES = {"a.png": (96, 80), "b.jpg": (64, 64)}  # file: (width, height)


@pytest.fixture(scope="module")
def demo_module():
    return ezsd.demo


@pytest.fixture
def demo(demo_module, monkeypatch):
    """ezsd.demo (tools/demo.py's command line), to run its main() in this process (which, unlike
    the tool, sets up no log handler); the "ezsd" logger's handlers are left out (detectron2's
    setup_logger binds them once to the sys.stdout of the moment, which pytest's capture replaces
    from test to test)."""
    monkeypatch.setattr(logging.getLogger("ezsd"), "handlers", [])
    return demo_module


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Images, a tiny CLIP, text embeddings of shapes_ovd_{train,val} and a 'trained' (random)
    model saved as a training run does: run/model_final.pth, run/last_checkpoint,
    run/config.yaml."""
    root = tmp_path_factory.mktemp("demo")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, (w, h) in IMAGE_SIZES.items():
        pixels = np.full((h, w, 3), 200, np.uint8)
        pixels[h // 4 : h // 2, w // 4 : w // 2] = rng.integers(0, 255, 3)  # a coloured box
        Image.fromarray(pixels).save(images / name)
    (images / "notes.txt").write_text("not an image")  # folders yield their images only

    clip_model = tiny_clip()
    clip_file = root / "clip.pt"
    save_clip_checkpoint(clip_model, str(clip_file))
    save_clip_checkpoint(tiny_clip(seed=1), str(root / "other_clip.pt"))
    clip_hash = clip_checkpoint_hash(clip_file)
    for split, out in (("shapes_ovd_train", "text_base.npy"), ("shapes_ovd_val", "text_all.npy")):
        names = MetadataCatalog.get(split).thing_classes
        embeddings = text_embeddings(clip_model, names).numpy()
        save_text_embeddings(str(root / out), embeddings, names, clip_hash=clip_hash)

    opts = [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.EZSD.EMBED_DIM",
        EMBED_DIM,
        "MODEL.EZSD.CLIP.MODEL",
        clip_file,
        "MODEL.EZSD.TEXT_EMBEDDINGS",
        root / "text_base.npy",
        "MODEL.EZSD.TEST_TEXT_EMBEDDINGS",
        root / "text_all.npy",
        "INPUT.MIN_SIZE_TEST",
        64,
        "INPUT.MAX_SIZE_TEST",
        96,
        "TEST.DETECTIONS_PER_IMAGE",
        5,
    ]
    opts = [str(x) for x in opts]
    cfg = get_cfg()
    add_ezsd_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(opts)
    run = root / "run"
    run.mkdir()
    cfg.OUTPUT_DIR = str(run)
    torch.manual_seed(0)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(run)).save("model_final")
    # The run started from a backbone-only checkpoint (as ShapesOVD's pre-trained config does):
    # its config.yaml names that file, which does not fit the whole model.
    backbone = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.bottom_up")}
    torch.save({"model": backbone}, root / "init_backbone.pth")
    cfg.MODEL.WEIGHTS = str(root / "init_backbone.pth")
    (run / "config.yaml").write_text(cfg.dump())  # as default_setup writes it
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1")
    return root, opts + ["MODEL.WEIGHTS", str(run / "model_final.pth")], env


def _outputs(out_dir, vocabulary, picture_size=768):
    """detections.json, checked against the images and the PNGs, which must be valid images drawn
    enlarged to `picture_size` on their shorter side (the default of --picture-size)."""
    result = json.loads((out_dir / "detections.json").read_text())
    assert result["vocabulary"] == vocabulary and result["overlap_iou"] == 0.5
    by_name = {os.path.basename(r["file"]): r for r in result["images"]}
    assert sorted(by_name) == sorted(IMAGE_SIZES)
    for name, (w, h) in IMAGE_SIZES.items():
        record = by_name[name]
        assert (record["width"], record["height"]) == (w, h)
        with Image.open(out_dir / record["visualization"]) as png:
            scale = max(1, picture_size / min(w, h))
            assert png.format == "PNG" and min(png.size) == round(min(w, h) * scale)
            assert all(abs(a - b * scale) <= 1 for a, b in zip(png.size, (w, h))), png.size
            png.verify()
        assert record["detections"], "threshold 0: every image has detections"
        for det in record["detections"]:
            x0, y0, x1, y1 = det["box"]
            assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
            assert det["label"] in vocabulary and 0 <= det["score"] <= 1
    assert not [f for f in os.listdir(out_dir) if f.startswith(".tmp-")]
    return result


def test_one_name_per_object_keeps_the_best_of_overlapping_detections():
    """Detections overlapping at the IoU, whatever their classes, leave the best-scored; the
    others stay, in the model's order; IoU 1 keeps every one."""
    boxes = [[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60], [0, 0, 10, 11], [0, 0, 30, 30]]
    instances = Instances(
        (100, 100),
        pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
        scores=torch.tensor([0.6, 0.9, 0.3, 0.8, 0.2]),
        pred_classes=torch.tensor([0, 1, 0, 1, 1]),
    )
    kept = ezsd.demo.one_name_per_object(instances, 0.5)
    assert kept.pred_boxes.tensor.tolist() == [boxes[1], boxes[2], boxes[4]]
    assert kept.scores.tolist() == pytest.approx([0.9, 0.3, 0.2])
    assert len(ezsd.demo.one_name_per_object(instances, 1.0)) == 5


def test_dataset_vocabulary_from_the_runs_config(workspace):
    """A training run's config.yaml alone: its last checkpoint, its TEST_TEXT_EMBEDDINGS file (the
    dataset's names), no CLIP and no cache."""
    root, _, env = workspace
    out, cache = root / "out_dataset", root / "cache_dataset"
    result = _tool(
        "demo.py",
        "--config-file",
        root / "run" / "config.yaml",
        "--input",
        root / "images",
        "--output",
        out,
        "--vocabulary",
        "shapes_ovd_val",
        "--confidence-threshold",
        0,
        "--cache-dir",
        cache,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _outputs(out, list(MetadataCatalog.get("shapes_ovd_val").thing_classes))
    assert "text_all.npy (MODEL.EZSD.TEST_TEXT_EMBEDDINGS)" in result.stdout
    assert "model_final.pth" in result.stdout  # the run's last checkpoint
    assert not cache.exists()


def test_custom_vocabulary_is_computed_once_then_cached(workspace, demo, monkeypatch):
    root, opts, env = workspace
    cache = root / "cache_custom"
    args = [
        "--config-file",
        CONFIG,
        "--output",
        "OUT",
        "--custom-vocabulary",
        " , ".join(CUSTOM),
        "--confidence-threshold",
        0,
        "--cpu",
        "--cache-dir",
        cache,
        "--opts",
        *opts,
    ]

    def with_output(out):
        return [str(out if a == "OUT" else a) for a in args]

    files = [root / "images" / "a.png", root / "images" / "b.jpg"]
    first = _tool("demo.py", "--input", *files, *with_output(root / "out_custom1"), env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    _outputs(root / "out_custom1", CUSTOM)
    assert "computing text embeddings of 3 classes" in first.stdout
    cached = sorted(os.listdir(cache))
    assert len(cached) == 2 and cached[0].endswith(".names.json") and cached[1].endswith(".npy")
    assert json.loads((cache / cached[0]).read_text())["names"] == CUSTOM
    stamp = os.stat(cache / cached[1]).st_mtime_ns

    # Again (in this process, with a glob): the cache is read, CLIP is never loaded.
    def no_clip(*args, **kwargs):
        raise AssertionError("CLIP was loaded although the text embeddings are cached")

    monkeypatch.setattr(ezsd.predictor, "load_clip", no_clip)
    demo.main(
        [
            "--input",
            str(root / "images" / "*.*g"),
            "--picture-size",
            "0",
            *with_output(root / "out_custom2"),
        ]
    )
    _outputs(root / "out_custom2", CUSTOM, picture_size=0)
    assert sorted(os.listdir(cache)) == cached and os.stat(cache / cached[1]).st_mtime_ns == stamp


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--config-file": ["nope.yaml"]}, "config file not found: nope.yaml"),
        ({"--input": ["missing.png"]}, "missing.png: no such file or folder"),
        ({"--input": ["broken.png"]}, "broken.png: not a readable image"),
        ({"--input": ["images/*.gif"]}, "'images/*.gif': the pattern matches no file"),
        ({"--input": ["empty"]}, "empty: the folder holds no image"),
        (
            {"--vocabulary": ["no_such_dataset"]},
            "'no_such_dataset' is neither 'custom' nor a registered dataset",
        ),
        ({"--vocabulary": ["custom"]}, "--vocabulary custom needs --custom-vocabulary"),
        ({"--vocabulary": ["custom"], "--custom-vocabulary": [" , ,"]}, "holds no class name"),
        (
            {"--vocabulary": ["custom"], "--custom-vocabulary": ["cup,mug,cup"]},
            "names a class twice: cup",
        ),
        ({"--custom-vocabulary": ["cup"]}, "--custom-vocabulary needs --vocabulary custom"),
        ({"--output": ["broken.png"]}, "--output broken.png: exists and is not a folder"),
        ({"--confidence-threshold": ["1.5"]}, "--confidence-threshold 1.5 is not in [0, 1]"),
        ({"--overlap-iou": ["0"]}, "--overlap-iou 0.0 is not in (0, 1]"),
        ({"--opts": ["MODEL.WEIGHTS", ""]}, "MODEL.WEIGHTS is empty"),
        ({"--opts": ["MODEL.WEIGHTS", "missing.pth"]}, "MODEL.WEIGHTS missing.pth: no such file"),
        ({"--opts": ["MODEL.ROI_BOX_HEAD.FC_DIM", "64"]}, "does not fit the model of"),
        (
            {
                "--vocabulary": ["custom"],
                "--custom-vocabulary": ["cup"],
                "--opts": ["MODEL.EZSD.CLIP.MODEL", "other_clip.pt"],
            },
            "MODEL.EZSD.CLIP.MODEL other_clip.pt (it embeds the other names) was made with CLIP",
        ),
    ],
)
def test_bad_input_is_a_one_line_error_and_writes_nothing(
    workspace, demo, tmp_path, monkeypatch, capsys, change, message
):
    root, opts, _ = workspace
    monkeypatch.chdir(root)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "empty").mkdir(exist_ok=True)
    args = {
        "--config-file": [CONFIG],
        "--input": ["images"],
        "--output": [str(tmp_path / "out")],
        "--vocabulary": ["shapes_ovd_val"],
        "--cache-dir": [str(tmp_path / "cache")],
    }
    args.update({k: v for k, v in change.items() if k != "--opts"})
    argv = [x for key, values in args.items() for x in (key, *values)]
    argv += ["--opts", *opts, *change.get("--opts", [])]
    with pytest.raises(SystemExit) as exit_info:
        demo.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err[-2000:]
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    assert (root / "broken.png").read_bytes() == b"\x89PNG\r\n\x1a\n truncated"
