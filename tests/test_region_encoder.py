"""Batched region crops against a per-box PIL reference; region embeddings; crop accuracy.

Tolerance: on boxes whose crop geometry is whole pixels (the PIL reference must round its crop
and paste offsets, so fractional boxes would compare a shifted reference), the batched crop
differs from PIL's by at most 3 grey levels (of 255) on average per box; measured 0.5-2.0 on this
image at 64 and 224 px. The difference is interpolation only: roi_align interpolates bilinearly
where PIL's bicubic is sharper (enlarged small boxes), averages a box of samples where PIL filters
with a wider bicubic kernel (shrunk large boxes), and cuts the black padding sharply where PIL's
bicubic blends the crop's edge into it over about two source pixels. Local differences at sharp
edges reach 50-100 grey levels on heavily enlarged crops, hence a mean, not a max, criterion.
"""

import json
import os
import runpy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ezsd.clip import (
    CropSettings,
    crop_boxes,
    crop_classification_accuracy,
    crop_regions,
    encode_regions,
    save_clip_checkpoint,
)
from ezsd.clip.regions import CLIP_MEAN, CLIP_STD

from tiny_clip import tiny_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
# Whole-pixel geometry (sides * 1.2 whole, clipped square minus each side even); several touch
# or cross the border, [140, 100, 146, 106] is grown to the 10 px minimum, others shrink.
BOXES = [
    [100, 100, 110, 110],
    [50, 60, 100, 80],
    [0, 0, 20, 40],
    [300, 200, 320, 240],
    [10, 10, 210, 170],
    [20, 30, 220, 230],
    [140, 100, 146, 106],
    [0, 0, 300, 220],
]


@pytest.fixture(scope="module")
def image():
    """A 240x320 RGB image with smooth waves, flat patches with sharp edges, and noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    img = np.stack(
        [128 + 60 * np.sin(xx / (7 + 3 * c)) * np.cos(yy / (11 + c)) for c in range(3)], -1
    )
    for _ in range(12):
        x, y, s = rng.integers(0, 280), rng.integers(0, 200), rng.integers(10, 60)
        img[y : y + s, x : x + s] = rng.integers(0, 255, 3)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    return tiny_clip()


def reference_crop(image, box, resolution, scale=1.2, min_size=10.0):
    """The straightforward recipe: PIL crop, paste centred on a black square, bicubic resize."""
    height, width = image.shape[:2]
    crop = crop_boxes([box], height, width, CropSettings(scale, min_size))[0].tolist()
    crop = Image.fromarray(image).crop(tuple(round(v) for v in crop))
    w, h = crop.size
    square = Image.new("RGB", (max(w, h),) * 2)
    square.paste(crop, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
    pixels = np.array(square.resize((resolution,) * 2, Image.Resampling.BICUBIC))
    return (torch.from_numpy(pixels).permute(2, 0, 1) / 255.0 - MEAN) / STD


@pytest.mark.parametrize("resolution", [64, 224])
def test_matches_pil_reference(image, resolution):
    for box in BOXES:  # the reference is exact only on whole-pixel geometry
        crop = crop_boxes([box], 240, 320)[0].double().round(decimals=3)
        side = (crop[2:] - crop[:2]).max()
        assert torch.equal(crop, crop.round()) and ((side - (crop[2:] - crop[:2])) % 2 == 0).all()
    crops = crop_regions(image, torch.tensor(BOXES), resolution)
    assert crops.shape == (len(BOXES), 3, resolution, resolution) and crops.dtype == torch.float32
    for box, crop in zip(BOXES, crops):
        grey_levels = ((crop - reference_crop(image, box, resolution)) * STD * 255).abs().mean()
        assert grey_levels < 3.0, (box, float(grey_levels))


def test_padding_is_black_and_tensor_input(image):
    """A tall box leaves black (zero before mean/std) columns; CHW tensors equal HWC arrays."""
    crops = crop_regions(image, [[150, 50, 170, 150]], 64)
    black = -MEAN / STD
    torch.testing.assert_close(crops[0, :, :, :10], black.expand(3, 64, 10))
    torch.testing.assert_close(crops[0, :, :, -10:], black.expand(3, 64, 10))
    assert (crops[0, :, :, 28:36] - black).abs().amin() > 0.01
    chw = torch.from_numpy(image).permute(2, 0, 1)
    torch.testing.assert_close(crop_regions(chw, BOXES, 32), crop_regions(image, BOXES, 32))


def test_tiny_and_outside_boxes(image):
    # sub-pixel box: grown to the 10 px minimum about its centre
    torch.testing.assert_close(
        crop_regions(image, [[104.8, 104.8, 105.2, 105.2]], 32),
        crop_regions(image, [[100, 100, 110, 110]], 32, CropSettings(scale=1.0)),
    )
    # without a minimum: a degenerate box crops to a nearly uniform patch, never NaN
    tiny = crop_regions(
        image,
        [[105.2, 105.2, 105.2, 105.2], [60.1, 60.1, 60.4, 60.3]],
        32,
        CropSettings(min_size=0),
    )
    assert torch.isfinite(tiny).all()
    # a box wholly outside the image (or a corner box clipped to nothing) gives a black crop
    outside = crop_regions(image, [[400, 10, 420, 30]], 32)
    torch.testing.assert_close(outside[0], (-MEAN / STD).expand(3, 32, 32))


def test_encode_batches(model, image):
    boxes = torch.tensor(BOXES, dtype=torch.float32)
    assert encode_regions(model, image, torch.zeros(0, 4)).shape == (0, 32)
    assert crop_regions(image, torch.zeros(0, 4), 32).shape == (0, 3, 32, 32)
    one = encode_regions(model, image, boxes[:1])
    many = encode_regions(model, image, boxes, batch_size=3)
    assert one.shape == (1, 32) and many.shape == (8, 32) and many.dtype == torch.float32
    torch.testing.assert_close(many[:1], one, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        reference = model.encode_image(torch.stack([reference_crop(image, b, 32) for b in BOXES]))
    cosine = F.cosine_similarity(many, reference)
    assert cosine.min() > 0.995, cosine


def _write_dataset(root):
    """Two images with coloured squares, as a COCO json whose categories carry a "split"."""
    categories = [
        {"id": 1, "name": "red_square", "split": "base"},
        {"id": 3, "name": "green_square", "split": "base"},
        {"id": 7, "name": "blue_square", "split": "novel"},
    ]
    colours = {1: (220, 30, 30), 3: (30, 200, 30), 7: (30, 30, 220)}
    images, annotations = [], []
    for image_id, layout in enumerate(
        [[(1, 10, 10), (7, 60, 30)], [(3, 20, 40), (7, 70, 5), (1, 5, 50)]], 1
    ):
        pixels = np.full((80, 100, 3), 128, np.uint8)
        for cat, x, y in layout:
            pixels[y : y + 20, x : x + 20] = colours[cat]
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=cat,
                    bbox=[x, y, 20, 20],
                    area=400,
                    iscrowd=0,
                )
            )
        Image.fromarray(pixels).save(os.path.join(root, f"{image_id}.png"))
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 100, "height": 80})
    path = os.path.join(root, "data.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path


def test_crop_accuracy_tool(model, tmp_path, capsys):
    json_file = _write_dataset(str(tmp_path))
    checkpoint = str(tmp_path / "tiny.pt")
    save_clip_checkpoint(model, checkpoint, fp16=False)
    main = runpy.run_path(os.path.join(REPO, "tools", "eval_clip_crops.py"))["main"]
    out = str(tmp_path / "report.json")
    report = main(
        ["--clip", checkpoint, "--json", json_file, "--image-root", str(tmp_path), "--out", out]
    )
    assert "base-among-all" in capsys.readouterr().out
    assert report["class_names"] == ["red_square", "green_square", "blue_square"]
    assert (report["num_base"], report["num_novel"], report["num_all"]) == (3, 2, 5)
    confusion = np.array(report["confusion"])
    assert confusion.sum() == 5 and confusion.sum(axis=1).tolist() == [2, 1, 2]
    assert report["novel-among-all"] == confusion[2, 2] / 2
    assert json.load(open(out))["num_all"] == 5

    # the function itself, on dataset dicts with a group that has no box
    dicts = [
        {
            "file_name": os.path.join(tmp_path, "1.png"),
            "annotations": [{"bbox": [10, 10, 30, 30], "bbox_mode": 0, "category_id": 0}],
        }
    ]
    result = crop_classification_accuracy(model, dicts, ["a", "b"], ["a"], ["b"])
    assert result["num_base"] == 1 and result["novel-among-all"] is None
    assert result["base-among-all"] in (0.0, 1.0) and result["per_class"]["b"] is None
