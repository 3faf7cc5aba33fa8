"""Load a CLIP model by OpenAI name or from a local state-dict file, and write such files.

Every tool gets its CLIP here, so an OpenAI download, a re-normalized checkpoint and the small
ShapesOVD CLIP all load the same way. `clip.load(path)` is not used for local files: on current
torch its TorchScript attempt consumes the file handle and the state-dict fallback then fails.
"""

import logging
import os
import urllib.error
import zipfile

import clip
import torch
from clip.model import build_model, convert_weights

from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import atomic_write, file_sha256

__all__ = ["load_clip", "save_clip_checkpoint", "clip_checkpoint_hash"]

logger = logging.getLogger(__name__)

# Keys every CLIP state dict has, whatever its towers (checked to reject unrelated files early).
_REQUIRED_KEYS = (
    "visual.conv1.weight",
    "text_projection",
    "positional_embedding",
    "token_embedding.weight",
    "ln_final.weight",
)


def load_clip(name_or_path, device="cpu", fp16=False):
    """Return a CLIP model (`clip.model.CLIP`, eval mode) on `device`.

    Args:
        name_or_path (str): an existing file (a state dict, fp16 or fp32, optionally wrapped as
            {"state_dict": ...}, or an OpenAI TorchScript archive), else an OpenAI model name
            from `clip.available_models()` (downloaded to ~/.cache/clip on first use).
        device (str or torch.device): where the model lives.
        fp16 (bool): keep CLIP's half-precision weights (LayerNorms still compute in fp32), for
            speed on CUDA. Ignored with a warning on CPU, where the model is always fp32.

    The model's input size is `model.visual.input_resolution` and its text context length is
    `model.context_length` (small CLIPs use less than OpenAI's 77).
    """
    name_or_path = os.fspath(name_or_path)
    device = torch.device(device)
    if os.path.isfile(name_or_path):
        state = _read_state_dict(name_or_path)
        try:
            model = build_model(state)  # infers the architecture; drops non-weight keys
            model.float().load_state_dict(state)  # again: build_model rounded weights to fp16
        except (KeyError, RuntimeError) as e:
            first_line = str(e).strip().splitlines()[0]
            msg = f"{name_or_path}: inconsistent CLIP state dict ({first_line})"
            raise UserInputError(msg) from None
    elif name_or_path in clip.available_models():
        try:
            model, _ = clip.load(name_or_path, device="cpu", jit=False)
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            raise UserInputError(
                f"cannot download CLIP '{name_or_path}' ({e}); download it elsewhere and pass "
                "the path of the .pt file instead"
            ) from None
    else:
        raise UserInputError(
            f"CLIP '{name_or_path}' is neither an existing file nor an OpenAI model name "
            f"({', '.join(clip.available_models())}); pass the path of a local CLIP state-dict file"
        )
    model.float()
    if fp16 and device.type == "cpu":
        logger.warning("fp16 CLIP was asked for on CPU; using fp32")
    elif fp16:
        convert_weights(model)  # OpenAI's mixed precision: LayerNorms and embeddings stay fp32
    return model.to(device).eval()


def _read_state_dict(path):
    try:
        if _is_torchscript(path):  # OpenAI's own downloads are TorchScript archives
            obj = torch.jit.load(path, map_location="cpu").state_dict()
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises many types for foreign files)
        lines = [s.strip() for s in str(e).splitlines() if s.strip()] or [type(e).__name__]
        # torch's weights-only refusal opens with advice to load unsafely; the cause comes later
        reason = next((s for s in lines if s.startswith("Unsupported")), lines[0])
        raise UserInputError(f"{path}: not a CLIP checkpoint ({reason})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    missing = [k for k in _REQUIRED_KEYS if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise UserInputError(f"{path}: not a CLIP state dict (no key '{missing[0]}')")
    return dict(obj)


def _is_torchscript(path):
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def save_clip_checkpoint(model, path, fp16=True):
    """Write `model`'s state dict where `load_clip` reads it (atomically).

    fp16 halves the file (as OpenAI ships its weights); fine-tuned LayerNorm parameters then keep
    about three significant digits, which `load_clip` widens back to fp32 on CPU.
    """
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if fp16 and value.is_floating_point():
            value = value.half()
        state[key] = value.clone()
    with atomic_write(path) as f:
        torch.save(state, f)


def clip_checkpoint_hash(name_or_path, length=12):
    """Short sha256 of a CLIP checkpoint, recorded in manifests to pair derived files with it.

    For an OpenAI model name this is the sha256 OpenAI publishes for the file (it is part of the
    download URL), so a name and the downloaded file it stands for hash the same.
    """
    name_or_path = os.fspath(name_or_path)
    if os.path.isfile(name_or_path):
        return file_sha256(name_or_path, length)
    if name_or_path in clip.available_models():
        return clip.clip._MODELS[name_or_path].split("/")[-2][:length]
    raise UserInputError(
        f"CLIP '{name_or_path}' is neither an existing file nor an OpenAI model name"
    )
