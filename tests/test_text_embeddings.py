"""Text embeddings: normalised rows, prompt ensembling, and the name-order sidecar check."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog

from ezsd.clip import (
    ENSEMBLE_PROMPTS,
    clean_class_name,
    load_text_embeddings,
    save_clip_checkpoint,
    save_text_embeddings,
    text_embeddings,
)
from ezsd.utils.errors import UserInputError

from tiny_clip import tiny_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "dump_text_embeddings.py")
NAMES = ["cat", "bow_(weapon)", "bow_(decorative_ribbons)", "traffic light"]


@pytest.fixture(scope="module")
def model():
    return tiny_clip()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    save_clip_checkpoint(model, path)
    return str(path)


def test_clean_class_name():
    assert clean_class_name("bow_(weapon)") == "bow (weapon)"
    assert clean_class_name("  traffic__light ") == "traffic light"
    assert clean_class_name("person") == "person"


def test_shape_and_norm(model):
    emb = text_embeddings(model, NAMES)
    assert emb.shape == (4, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    # qualifiers are kept, so LVIS homonyms stay distinguishable
    assert not torch.allclose(emb[1], emb[2])


def test_ensemble(model):
    single = text_embeddings(model, NAMES, ["a photo of a {}"])
    assert torch.allclose(text_embeddings(model, NAMES, ["a photo of a {}"] * 2), single, atol=1e-6)
    ensemble = text_embeddings(model, NAMES, ENSEMBLE_PROMPTS)
    torch.testing.assert_close(ensemble.norm(dim=1), torch.ones(4))
    assert (ensemble - single).abs().max() > 1e-3


def test_bad_prompts(model):
    with pytest.raises(UserInputError, match="one '{}'"):
        text_embeddings(model, NAMES, ["a photo"])
    with pytest.raises(UserInputError, match="too long for context length 16"):
        text_embeddings(model, ["a very " * 10 + "long name"])


def test_file_pair_round_trip_and_mismatch(tmp_path):
    path = str(tmp_path / "emb.npy")
    emb = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    save_text_embeddings(path, emb, ["a", "b", "c"], prompts=["a photo of a {}"])
    loaded, names = load_text_embeddings(path, expected_names=["a", "b", "c"])
    np.testing.assert_array_equal(loaded, emb)
    assert names == ["a", "b", "c"]
    sidecar = str(tmp_path / "emb.names.json")
    with pytest.raises(UserInputError) as e:
        load_text_embeddings(path, expected_names=["a", "c", "b"])
    assert (
        path in str(e.value)
        and sidecar in str(e.value)
        and "class 1 is 'b' but 'c'" in str(e.value)
    )
    with pytest.raises(UserInputError, match="3 classes but 2 are expected"):
        load_text_embeddings(path, expected_names=["a", "b"])
    os.remove(sidecar)
    with pytest.raises(UserInputError, match="emb.names.json: no such file"):
        load_text_embeddings(path)
    with pytest.raises(UserInputError, match="must end in .npy"):
        save_text_embeddings(str(tmp_path / "emb.bin"), emb, ["a", "b", "c"])


def test_dump_tool_writes_both_files(model, checkpoint, tmp_path):
    out = tmp_path / "sub" / "names.npy"
    subprocess.run(
        [sys.executable, TOOL, "--clip", checkpoint, "--names", ",".join(NAMES), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    emb, names = load_text_embeddings(str(out), expected_names=NAMES)
    assert names == NAMES and emb.shape == (4, 32)
    np.testing.assert_allclose(emb, text_embeddings(model, NAMES).numpy(), atol=2e-2)  # fp16 file
    sidecar = json.loads((tmp_path / "sub" / "names.names.json").read_text())
    assert sidecar["prompts"] == ["a photo of a {}"] and len(sidecar["clip_hash"]) == 12


def test_dump_tool_dataset(checkpoint, tmp_path):
    out = str(tmp_path / "coco.npy")
    run = lambda dataset: subprocess.run(  # noqa: E731
        [sys.executable, TOOL, "--clip", checkpoint, "--dataset", dataset, "--out", out],
        capture_output=True,
        text=True,
    )
    assert run("coco_ovd_val").returncode == 0
    classes = MetadataCatalog.get("coco_ovd_val").thing_classes
    assert load_text_embeddings(out, expected_names=classes)[0].shape == (65, 32)
    result = run("no_such_set")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --dataset 'no_such_set' is not a registered dataset with thing_classes"
    )


def test_reader_does_not_import_clip():
    """The detector reads embedding files without importing CLIP (DESIGN.md section 4)."""
    code = (
        "import sys, ezsd; from ezsd.data.text_embedding_file import load_text_embeddings; "
        "sys.exit('clip' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_sidecar_records_the_clip_hash_and_mismatches_are_refused(tmp_path):
    from ezsd.data.text_embedding_file import check_same_clip, text_embedding_info

    path = str(tmp_path / "emb.npy")
    save_text_embeddings(path, np.eye(2, 4), ["a", "b"], clip_hash="abc", prompts=["{}"])
    info = text_embedding_info(path)
    assert info["clip_hash"] == "abc" and info["names"] == ["a", "b"] and info["prompts"] == ["{}"]
    save_text_embeddings(path, np.eye(2, 4), ["a", "b"])
    assert text_embedding_info(path)["clip_hash"] is None
    assert check_same_clip([("x.npy", "abc"), ("y.npy", None), ("z", "abc")]) == "abc"
    with pytest.raises(
        UserInputError, match="^y.npy was made with CLIP def but x.npy with CLIP abc"
    ):
        check_same_clip([("x.npy", "abc"), ("y.npy", "def")])
    with pytest.raises(UserInputError, match="^y.npy records no CLIP hash"):
        check_same_clip([("x.npy", "abc"), ("y.npy", None)], require_all=True)
    assert check_same_clip([("x.npy", None), ("y.npy", None)], require_all=True) is None
