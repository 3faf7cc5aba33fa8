"""Text-embedding files: a (C, D) float32 .npy plus a sidecar `.names.json` with the class names.

The sidecar exists because an embedding file paired with the wrong class list (another order,
another vocabulary) fails silently with AP ~ 0; with it the pairing is checked at load time.
This module needs only NumPy, so readers (e.g. the detector) need neither torch nor CLIP.
"""

import json
import os

import numpy as np

from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import atomic_write, atomic_write_json

__all__ = ["names_path", "save_text_embeddings", "load_text_embeddings"]


def names_path(path):
    """The sidecar of an embedding file: "x/coco.npy" -> "x/coco.names.json"."""
    path = os.fspath(path)
    if not path.endswith(".npy"):
        raise UserInputError(f"{path}: text-embedding files must end in .npy")
    return path[: -len(".npy")] + ".names.json"


def save_text_embeddings(path, embeddings, names, **info):
    """Write `embeddings` (C, D) as float32 to `path` and the names (plus `info`, e.g. the CLIP
    hash and prompts, for provenance) to its sidecar; both atomically."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    names = [str(n) for n in names]
    if embeddings.ndim != 2 or embeddings.shape[0] != len(names):
        raise ValueError(f"embeddings of shape {embeddings.shape} for {len(names)} names")
    sidecar = names_path(path)
    with atomic_write(path) as f:
        np.save(f, embeddings)
    atomic_write_json(sidecar, dict(names=names, **info), indent=1)


def load_text_embeddings(path, expected_names=None):
    """Return (embeddings float32 (C, D), names) from an embedding file and its sidecar.

    Raises UserInputError naming both files when they disagree with each other or, if
    `expected_names` is given (e.g. a dataset's thing_classes), with those names.
    """
    path = os.fspath(path)
    sidecar = names_path(path)
    for p in (path, sidecar):
        if not os.path.isfile(p):
            raise UserInputError(
                f"{p}: no such file (write the pair with tools/dump_text_embeddings.py)"
            )
    embeddings = np.load(path)
    try:
        with open(sidecar) as f:
            names = json.load(f)["names"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserInputError(f"{sidecar}: not a names file ({e!r})") from None
    if embeddings.ndim != 2 or embeddings.shape[0] != len(names):
        raise UserInputError(
            f"{path} holds {embeddings.shape[0]} embeddings but {sidecar} lists {len(names)} names"
        )
    if expected_names is not None:
        expected_names = list(expected_names)
        if len(expected_names) != len(names):
            raise UserInputError(
                f"{path} (names in {sidecar}) has {len(names)} classes but {len(expected_names)} "
                "are expected; re-create it for these classes with tools/dump_text_embeddings.py"
            )
        for i, (got, want) in enumerate(zip(names, expected_names)):
            if got != want:
                raise UserInputError(
                    f"{path} (names in {sidecar}): class {i} is '{got}' but '{want}' is expected; "
                    "re-create it for these classes with tools/dump_text_embeddings.py"
                )
    return embeddings.astype(np.float32, copy=False), names
