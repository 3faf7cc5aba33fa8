"""What a training checkpoint records beside the weights, and the refusals of `load_weights`'
checks (ezsd.checkpoint) when a model meets another evaluation split or other input settings.
End to end through tools/train_net.py: tests/test_train_net.py."""

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from ezsd.checkpoint import (
    TrainedInputs,
    check_trained_inputs,
    check_trained_vocabulary,
    trained_inputs,
)
from ezsd.config import load_ezsd_config
from ezsd.utils.errors import UserInputError

from train_workspace import CONFIG


@pytest.fixture
def split_with_novel_cup():
    name = "test_checkpoint_split"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(novel_classes=["cup", "kite"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_a_split_whose_novel_classes_were_trained_on_is_refused(split_with_novel_cup):
    cfg = load_ezsd_config(CONFIG, ["DATASETS.TEST", f"('{split_with_novel_cup}',)"])
    check_trained_vocabulary({"names": ["ball", "hat"]}, "m.pth", cfg)  # base names only
    with pytest.raises(UserInputError) as e:
        check_trained_vocabulary({"names": ["ball", "cup"]}, "m.pth", cfg)
    assert str(e.value) == (
        "MODEL.WEIGHTS m.pth was trained with boxes of ['cup'], which DATASETS.TEST[0] "
        f"{split_with_novel_cup} counts as novel: use the split it was trained for"
    )
    cfg.DATASETS.TEST = ("not_registered",)  # nothing to check against
    check_trained_vocabulary({"names": ["ball", "cup"]}, "m.pth", cfg)


def test_other_input_settings_are_refused_and_unrecorded_ones_pass():
    cfg = load_ezsd_config(CONFIG)
    state = TrainedInputs(cfg).state_dict()
    assert state == trained_inputs(cfg) and set(state) >= {"MODEL.PIXEL_STD", "INPUT.FORMAT"}
    check_trained_inputs(state, "m.pth", cfg)
    other = load_ezsd_config(
        CONFIG, ["INPUT.FORMAT", "RGB", "MODEL.ANCHOR_GENERATOR.SIZES", "[[8], [16], [32], [64]]"]
    )
    with pytest.raises(UserInputError) as e:
        check_trained_inputs(state, "m.pth", other)
    message = str(e.value)
    assert message.startswith("MODEL.WEIGHTS m.pth was trained with other settings than the config")
    assert "INPUT.FORMAT: 'BGR' there, 'RGB' asked" in message
    assert "MODEL.ANCHOR_GENERATOR.SIZES" in message and "[[8.0], [16.0]" in message
    assert "PIXEL_STD" not in message  # only what differs is named
    older = {k: v for k, v in state.items() if k != "INPUT.FORMAT"}  # a setting not recorded
    with pytest.raises(UserInputError, match="ANCHOR_GENERATOR.SIZES"):
        check_trained_inputs(older, "m.pth", other)
    check_trained_inputs(older, "m.pth", load_ezsd_config(CONFIG, ["INPUT.FORMAT", "RGB"]))
    # a flat anchor list is one level's values, as detectron2 reads it; ints equal floats
    flat = ["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[0.5, 1, 2]"]
    check_trained_inputs(state, "m.pth", load_ezsd_config(CONFIG, flat))
