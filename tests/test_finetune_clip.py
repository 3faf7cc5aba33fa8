"""CLIP re-normalization (ezsd.offline.renormalization and its command line,
tools/finetune_clip.py).

Tiny on purpose: a random ViT CLIP with 32 px input and 6 + 2 images of 64 px with coloured boxes;
the file runs in a few seconds on two CPU cores.
"""

import json
import os

import clip
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

import ezsd.offline.renormalization_cli as renormalization_cli
from ezsd.clip import load_clip, save_clip_checkpoint
from ezsd.data.datasets import register_ovd_dataset
from ezsd.offline.renormalization import (
    CHECKPOINT_NAME,
    REPORT_NAME,
    STATE_NAME,
    RenormSettings,
    base_box_samples,
    layernorm_parameter_names,
    renormalization_loss,
    train_layernorms,
)

from tiny_clip import tiny_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "finetune_clip.py")
BASE, NOVEL = ["apple", "brick", "lemon"], ["lime"]
COLOURS = {
    "apple": (200, 30, 30),
    "brick": (150, 70, 40),
    "lemon": (230, 220, 40),
    "lime": (60, 200, 40),
}
TRAIN, VAL, VAL_AS_TRAIN = "test_renorm_train", "test_renorm_val", "test_renorm_val_as_train"


def _write_split(folder, names, num_images, seed):
    """COCO json + PNGs: each image holds 2-3 filled rectangles of the given classes."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder / "images", exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        pixels = np.full((64, 64, 3), 90, dtype=np.uint8)
        for _ in range(int(rng.integers(2, 4))):
            cat = int(rng.integers(len(names)))
            w, h = (int(v) for v in rng.integers(10, 28, size=2))
            x, y = int(rng.integers(0, 64 - w)), int(rng.integers(0, 64 - h))
            pixels[y : y + h, x : x + w] = COLOURS[names[cat]]
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=cat + 1,
                    bbox=[x, y, w, h],
                    area=w * h,
                    iscrowd=0,
                )
            )
        file_name = f"{image_id:03d}.png"
        Image.fromarray(pixels).save(folder / "images" / file_name)
        images.append(dict(id=image_id, file_name=file_name, width=64, height=64))
    categories = [dict(id=i + 1, name=n) for i, n in enumerate(names)]
    with open(folder / "data.json", "w") as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return str(folder / "data.json"), str(folder / "images")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("renorm")
    train = _write_split(root / "train", BASE, 6, seed=0)
    val = _write_split(root / "val", BASE + NOVEL, 2, seed=1)
    for name, (json_file, image_root), novel_annotated in (
        (TRAIN, train, False),
        (VAL, val, True),
        (VAL_AS_TRAIN, val, True),
    ):
        if name not in DatasetCatalog.list():
            register_ovd_dataset(
                name, json_file, image_root, BASE, NOVEL, novel_annotated=novel_annotated
            )
    clip_path = root / "tiny_clip.pt"
    save_clip_checkpoint(tiny_clip(), clip_path)  # fp16, as the shipped CLIPs
    return dict(root=root, clip=str(clip_path))


@pytest.fixture(scope="module")
def tool():
    return renormalization_cli


def _samples():
    return base_box_samples(DatasetCatalog.get(TRAIN), BASE, BASE)


def _run(tool, world, out, *extra):
    argv = [
        "--clip",
        world["clip"],
        "--train-dataset",
        TRAIN,
        "--val-dataset",
        VAL,
        "--output-dir",
        str(out),
        "--no-progress",
        *extra,
    ]
    return tool.main(argv)


@pytest.mark.parametrize("tune_text_ln", [False, True])
def test_only_layernorms_change(world, tune_text_ln):
    model = load_clip(world["clip"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = RenormSettings(epochs=1, images_per_batch=2, lr=1e-2, tune_text_ln=tune_text_ln)
    train_layernorms(model, _samples(), settings, progress=False)  # asserts the frozen ones itself
    tuned = set(layernorm_parameter_names(model, tune_text_ln))
    assert all("ln_" in n for n in tuned)
    assert any(n.startswith("visual.") for n in tuned)
    assert any(not n.startswith("visual.") for n in tuned) == tune_text_ln
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= tuned
    if tune_text_ln:
        assert "ln_final.weight" in changed
    for n, p in model.named_parameters():
        if n not in tuned:  # bit-identical, not merely close
            bits = p.detach().contiguous().view(-1).view(torch.uint8)
            assert torch.equal(bits, before[n].contiguous().view(-1).view(torch.uint8)), n


def test_novel_names_as_negatives_change_the_loss(world):
    """--novel-negatives scores base crops against the novel names too (as negatives only)."""
    settings = RenormSettings(epochs=1, images_per_batch=6)
    plain = train_layernorms(load_clip(world["clip"]), _samples(), settings, progress=False)
    extra = train_layernorms(
        load_clip(world["clip"]), _samples(), settings, progress=False, negative_names=NOVEL
    )
    assert plain["losses"][0] != extra["losses"][0]


def test_loss_is_sigmoid_bce_on_100_cos():
    emb, text = torch.randn(5, 8), torch.randn(3, 8)
    labels = torch.tensor([0, 2, 1, 1, 0])
    cos = torch.nn.functional.normalize(emb, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    y = torch.nn.functional.one_hot(labels, 3).float()
    logsig = torch.nn.functional.logsigmoid
    expected = -(y * logsig(100 * cos) + (1 - y) * logsig(-100 * cos))
    torch.testing.assert_close(
        renormalization_loss(emb, text, labels), expected.mean(), rtol=1e-4, atol=1e-4
    )


def test_training_loss_decreases(world):
    model = load_clip(world["clip"])
    settings = RenormSettings(epochs=4, images_per_batch=6, lr=3e-3)  # one full batch per epoch
    state = train_layernorms(model, _samples(), settings, progress=False)
    losses = state["losses"]
    assert len(losses) == 4 and losses[-1] < losses[0], losses


def test_tool_writes_loadable_checkpoint_and_report(tool, world):
    out = world["root"] / "run_full"
    report = _run(tool, world, out, "--epochs", "2", "--images-per-batch", "2")
    for key in ("before", "after"):
        for group in ("base-among-all", "novel-among-all"):
            assert 0.0 <= report[key][group] <= 1.0
        assert report[key]["num_novel"] > 0 and report[key]["num_base"] > 0
    on_disk = json.loads((out / REPORT_NAME).read_text())
    assert on_disk["after"] == report["after"] and on_disk["epochs_done"] == 2
    assert len(on_disk["loss_per_epoch"]) == 2

    loaded = load_clip(out / CHECKPOINT_NAME)  # the CLIP loader reads it
    tokens = clip.tokenize(["a photo of a lime"], context_length=16)
    with torch.no_grad():
        assert torch.isfinite(loaded.encode_image(torch.zeros(1, 3, 32, 32))).all()
        assert torch.isfinite(loaded.encode_text(tokens)).all()
    # In the file: every untouched tensor bit-identical to the (fp16) source, tuned ones in fp32.
    source = torch.load(world["clip"], weights_only=True)
    tuned = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert set(source) == set(tuned)
    ln_names = set(report["tuned_parameters"])
    for k, v in source.items():
        if k in ln_names:
            assert tuned[k].dtype == torch.float32
        else:
            assert tuned[k].dtype == v.dtype and torch.equal(tuned[k], v), k
    assert any(not torch.equal(tuned[k].half(), source[k]) for k in ln_names)

    # A finished run re-run is a no-op (the checkpoint is not rewritten).
    mtime = os.path.getmtime(out / CHECKPOINT_NAME)
    again = _run(tool, world, out, "--epochs", "2", "--images-per-batch", "2")
    assert again["after"] == report["after"] and os.path.getmtime(out / CHECKPOINT_NAME) == mtime


def test_resumed_equals_uninterrupted(tool, world):
    straight, resumed = world["root"] / "straight", world["root"] / "resumed"
    args = ("--images-per-batch", "2", "--lr", "1e-2", "--seed", "3")
    _run(tool, world, straight, "--epochs", "2", *args)
    _run(tool, world, resumed, "--epochs", "1", *args)  # as if killed during epoch 2
    assert torch.load(resumed / STATE_NAME, weights_only=True)["epoch"] == 1
    report = _run(tool, world, resumed, "--epochs", "2", *args)
    assert report["epochs_done"] == 2 and len(report["loss_per_epoch"]) == 2
    a = torch.load(straight / CHECKPOINT_NAME, weights_only=True)
    b = torch.load(resumed / CHECKPOINT_NAME, weights_only=True)
    for k in report["tuned_parameters"]:
        assert torch.equal(a[k], b[k]), k
    # Other settings in the same folder are refused rather than mixed in.
    with pytest.raises(SystemExit):
        _run(tool, world, resumed, "--epochs", "3", "--images-per-batch", "2", "--lr", "1e-3")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--train-dataset": "no_such_dataset"}, "not a registered dataset"),
        ({"--val-dataset": "no_such_dataset"}, "not a registered dataset"),
        ({"--clip": "/nonexistent/clip.pt"}, "neither an existing file"),
        ({"--train-dataset": VAL_AS_TRAIN}, "holds novel boxes"),
    ],
)
def test_bad_input_is_a_one_line_error(tool, world, capsys, change, message):
    argv = {
        "--clip": world["clip"],
        "--train-dataset": TRAIN,
        "--val-dataset": VAL,
        "--output-dir": str(world["root"] / "bad"),
    }
    argv.update(change)
    with pytest.raises(SystemExit) as e:
        tool.main([x for kv in argv.items() for x in kv] + ["--no-progress"])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not os.path.exists(world["root"] / "bad" / CHECKPOINT_NAME)
