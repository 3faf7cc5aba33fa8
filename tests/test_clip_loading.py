"""CLIP loading: a state dict written by save_clip_checkpoint loads back to the same model."""

import hashlib
import urllib.error

import clip
import pytest
import torch

from ezsd.clip import clip_checkpoint_hash, load_clip, save_clip_checkpoint
from ezsd.utils.errors import UserInputError

from tiny_clip import tiny_clip


def _outputs(model):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32)
    tokens = clip.tokenize(["a photo of a cat", "a photo of a bow (weapon)"], context_length=16)
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def test_round_trip_fp32(tmp_path):
    model = tiny_clip()
    path = tmp_path / "clip.pt"
    save_clip_checkpoint(model, path, fp16=False)
    loaded = load_clip(str(path))
    assert loaded.visual.input_resolution == 32 and loaded.context_length == 16
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for a, b in zip(_outputs(model), _outputs(loaded)):
        torch.testing.assert_close(a, b)


def test_round_trip_fp16_and_wrapped(tmp_path):
    """The default fp16 file loads as fp32 on CPU; a {"state_dict": ...} wrapper is accepted."""
    model = tiny_clip()
    path = tmp_path / "clip16.pt"
    save_clip_checkpoint(model, path)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": torch.load(path), "epoch": 3}, wrapped)
    expected = _outputs(model)
    for p in (path, wrapped):
        loaded = load_clip(p)
        assert all(t.dtype == torch.float32 for t in loaded.parameters())
        for a, b in zip(expected, _outputs(loaded)):
            torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)  # fp16 weights


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_torchscript_archive(tmp_path):
    """OpenAI's downloads are TorchScript archives; a path to one loads too."""
    model = tiny_clip()
    path = tmp_path / "scripted.pt"
    torch.jit.save(
        torch.jit.trace_module(model, {"encode_image": torch.zeros(1, 3, 32, 32)}), str(path)
    )
    for a, b in zip(_outputs(model), _outputs(load_clip(path))):
        torch.testing.assert_close(a, b)


def test_checkpoint_hash(tmp_path):
    path = tmp_path / "clip.pt"
    save_clip_checkpoint(tiny_clip(), path)
    assert clip_checkpoint_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert clip_checkpoint_hash("ViT-B/32") == "40d365715913"  # OpenAI's published sha256 prefix


def test_unknown_name_is_one_line_error():
    with pytest.raises(UserInputError) as e:
        load_clip("ViT-Q/99")
    message = str(e.value)
    assert "\n" not in message and "ViT-Q/99" in message and "local CLIP state-dict file" in message


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(UserInputError, match="not a CLIP checkpoint"):
        load_clip(path)
    torch.save({"weight": torch.zeros(1)}, path)
    with pytest.raises(UserInputError, match="not a CLIP state dict"):
        load_clip(path)
    state = tiny_clip().state_dict()
    del state["visual.proj"]  # now looks like a ResNet tower, which it is not
    torch.save(state, path)
    with pytest.raises(UserInputError, match="inconsistent CLIP state dict"):
        load_clip(path)


def test_download_impossible(monkeypatch):
    """Without network an OpenAI name fails with a message pointing at a local file."""

    def offline(url, root):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(clip.clip, "_download", offline)
    with pytest.raises(UserInputError, match="cannot download CLIP 'RN50'.*path of the .pt file"):
        load_clip("RN50")
