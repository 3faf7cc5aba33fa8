"""The shipped small CLIP (weights/shapes_clip_vit.pt) and the tool that trains it."""

import os

import clip
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ezsd.clip.small_clip_training as small_clip_training
from ezsd.clip import encode_regions, load_clip, text_embeddings
from ezsd.data.shapes_ovd import (
    BACKGROUND_CAPTIONS,
    BACKGROUND_LABEL,
    CATEGORY_NAMES,
    render_clip_pairs,
    render_scene,
)

REPO = os.path.join(os.path.dirname(__file__), "..")
WEIGHTS = os.path.join(REPO, "weights", "shapes_clip_vit.pt")
CHANCE = 1.0 / len(CATEGORY_NAMES)


@pytest.fixture(scope="module")
def shipped():
    model = load_clip(WEIGHTS)
    return model, text_embeddings(model, CATEGORY_NAMES)


@torch.no_grad()
def test_shipped_clip_knows_its_own_domain(shipped):
    model, text = shipped
    images, labels, _ = render_clip_pairs(
        seed=2024, num=48, image_size=model.visual.input_resolution
    )
    pred = (
        F.normalize(model.encode_image(small_clip_training.to_tensor(images)), dim=-1) @ text.T
    ).argmax(1)
    assert (pred.numpy() == labels).mean() > 0.8  # chance: 1/24


@torch.no_grad()
def test_shipped_clip_is_unsure_on_object_free_images(shipped):
    """It has seen images of none of the categories: its top softmax probability over the names
    (at its own logit scale) is far lower on them than on images of a category, as a real CLIP's
    is on background. CLIP proposals' objectness and the distilled background rely on it."""
    model, text = shipped
    images, labels, _ = render_clip_pairs(
        seed=2025, num=96, image_size=model.visual.input_resolution, background_fraction=0.5
    )
    image = F.normalize(model.encode_image(small_clip_training.to_tensor(images)).float(), dim=-1)
    top = (model.logit_scale.exp().float() * image @ text.float().T).softmax(1).max(1).values
    on_objects = top[torch.from_numpy(labels >= 0)].mean()
    on_background = top[torch.from_numpy(labels == BACKGROUND_LABEL)].mean()
    assert on_objects > 0.8 and on_background < on_objects - 0.25, (on_objects, on_background)


def test_object_free_pairs_name_no_category_and_leave_the_default_unchanged():
    images, labels, captions = render_clip_pairs(
        seed=3, num=40, image_size=32, background_fraction=0.25
    )
    background = labels == BACKGROUND_LABEL
    assert background.sum() == 10 and images.shape == (40, 32, 32, 3)
    for caption, is_background in zip(captions, background):
        named = [n for n in CATEGORY_NAMES if n in caption.split()]
        assert (caption in BACKGROUND_CAPTIONS and not named) if is_background else len(named) == 1
    default = render_clip_pairs(seed=3, num=40, image_size=32)
    again = render_clip_pairs(seed=3, num=40, image_size=32, background_fraction=0.0)
    assert (default[1] >= 0).all() and all(
        np.array_equal(a, b) for a, b in zip(default[:2], again[:2])
    )


def test_shipped_clip_beats_chance_on_detection_crops(shipped):
    model, text = shipped
    rng = np.random.default_rng(7)
    correct = total = 0
    for _ in range(6):
        image, objects = render_scene(rng)
        boxes = []
        for _, mask in objects:
            ys, xs = np.nonzero(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        emb = encode_regions(model, np.asarray(image), boxes)
        pred = (F.normalize(emb, dim=-1) @ text.T).argmax(1).numpy()
        correct += int((pred == np.array([cat for cat, _ in objects])).sum())
        total += len(objects)
    assert total >= 20 and correct / total > 2 * CHANCE


def test_training_tool_runs_and_round_trips(tmp_path):
    out = str(tmp_path / "tiny.pt")
    tiny = [
        "--out",
        out,
        "--steps",
        "2",
        "--batch-size",
        "16",
        "--image-size",
        "32",
        "--vision-width",
        "64",
        "--vision-layers",
        "1",
        "--text-width",
        "64",
        "--text-layers",
        "1",
        "--embed-dim",
        "32",
        "--eval-images",
        "12",
        "--workers",
        "0",
    ]
    trained = small_clip_training.main(tiny).eval()
    rebuilt = load_clip(out)
    assert rebuilt.visual.input_resolution == 32 and rebuilt.context_length == 16
    assert rebuilt.token_embedding.weight.shape[0] == 49408
    images, _, captions = render_clip_pairs(seed=0, num=4, image_size=32)
    tokens = clip.tokenize(captions, context_length=16)
    x = small_clip_training.to_tensor(images)
    with torch.no_grad():
        for a, b in (
            (trained.encode_image(x), rebuilt.encode_image(x)),
            (trained.encode_text(tokens), rebuilt.encode_text(tokens)),
        ):
            assert torch.allclose(a, b, rtol=1e-2, atol=1e-2)  # fp16 storage of the weights
