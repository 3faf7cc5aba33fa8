"""The COCO and LVIS schedules are the paper's epochs of the images the loader keeps."""

import math
import os

import pytest

from ezsd.config import load_ezsd_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "config, images, epochs, steps",
    [
        # coco_ovd_train after FILTER_EMPTY_ANNOTATIONS (mmdet's filter keeps the same 107,761)
        ("COCO-OVD/ezsd_mask_rcnn_R_50_FPN_1x.yaml", 107_761, 12, (8, 11)),
        # LVIS v1 train (at most 3.4% fewer once images holding only rare boxes are dropped)
        ("LVIS-OVD/ezsd_mask_rcnn_R_50_FPN_4x.yaml", 100_170, 48, (32, 44)),
    ],
)
def test_schedule_in_epochs_of_the_loaded_split(config, images, epochs, steps):
    solver = load_ezsd_config(os.path.join(REPO, "configs", config)).SOLVER
    per_epoch = images / solver.IMS_PER_BATCH
    assert solver.IMS_PER_BATCH == 16
    assert solver.MAX_ITER == math.ceil(epochs * per_epoch)
    assert tuple(solver.STEPS) == tuple(round(s * per_epoch + 1e-9) for s in steps)
    # the arithmetic is written next to the numbers
    text = open(os.path.join(REPO, "configs", config)).read()
    assert f"{images:,}" in text and f"{solver.MAX_ITER:,}" in text
