"""Text-embedding files: a (C, D) float32 .npy plus a sidecar `.names.json` with the class names
and the hash of the CLIP that made them.

The sidecar exists because an embedding file paired with the wrong class list (another order,
another vocabulary) or with another CLIP (targets, test vocabulary) fails silently with AP ~ 0;
with it both pairings are checked at load time. This module is the sidecar's only reader and
writer. It needs only NumPy, so readers (e.g. the detector) need neither torch nor CLIP.

Sidecar: {"names": [C names], "clip_hash": "<12 hex>" or null, ...provenance (clip, prompts)}.
"""

import json
import os

import numpy as np

from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import atomic_write, atomic_write_json
from ezsd.utils.names import check_names_match

__all__ = [
    "names_path",
    "save_text_embeddings",
    "load_text_embeddings",
    "text_embedding_info",
    "check_same_clip",
]


def names_path(path):
    """The sidecar of an embedding file: "x/coco.npy" -> "x/coco.names.json"."""
    path = os.fspath(path)
    if not path.endswith(".npy"):
        raise UserInputError(f"{path}: text-embedding files must end in .npy")
    return path[: -len(".npy")] + ".names.json"


def save_text_embeddings(path, embeddings, names, clip_hash=None, **info):
    """Write `embeddings` (C, D) as float32 to `path` and the names, `clip_hash` (the
    `clip_checkpoint_hash` of the CLIP that made them; None when unknown, then nothing can be
    checked against it) and `info` (provenance, e.g. the CLIP name and prompts) to its sidecar;
    both atomically."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    names = [str(n) for n in names]
    if embeddings.ndim != 2 or embeddings.shape[0] != len(names):
        raise ValueError(f"embeddings of shape {embeddings.shape} for {len(names)} names")
    sidecar = names_path(path)
    with atomic_write(path) as f:
        np.save(f, embeddings)
    atomic_write_json(sidecar, dict(names=names, clip_hash=clip_hash, **info), indent=1)


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
    names = text_embedding_info(path)["names"]
    if embeddings.ndim != 2 or embeddings.shape[0] != len(names):
        raise UserInputError(
            f"{path} holds {embeddings.shape[0]} embeddings but {sidecar} lists {len(names)} names"
        )
    if expected_names is not None:
        check_names_match(
            names,
            expected_names,
            f"{path} (names in {sidecar})",
            "re-create it for these classes with tools/dump_text_embeddings.py",
        )
    return embeddings.astype(np.float32, copy=False), names


def text_embedding_info(path):
    """The sidecar of the embedding file `path` as a dict with at least "names" (list of str) and
    "clip_hash" (str, or None when the file does not record its CLIP)."""
    sidecar = names_path(path)
    try:
        with open(sidecar) as f:
            info = json.load(f)
        names = info["names"]
        if not isinstance(names, list):
            raise TypeError(f"'names' is a {type(names).__name__}, not a list")
    except FileNotFoundError:
        raise UserInputError(
            f"{sidecar}: no such file (write the pair with tools/dump_text_embeddings.py)"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserInputError(f"{sidecar}: not a names file ({e!r})") from None
    info.setdefault("clip_hash", None)
    return info


def check_same_clip(sources, require_all=False):
    """Refuse files made with different CLIPs: `sources` is a list of (label, clip_hash or None),
    the label naming the file and the setting it came from (e.g. "MODEL.EZSD.TEXT_EMBEDDINGS
    x.npy"). Two known hashes that differ are a one-line UserInputError naming both sides. A
    source without a hash is refused when another one has a hash and `require_all` is set (it
    cannot be checked); otherwise it is left out. Returns the common hash (None if none known)."""
    known = [(label, h) for label, h in sources if h]
    for label, h in known[1:]:
        if h != known[0][1]:
            raise UserInputError(
                f"{label} was made with CLIP {h} but {known[0][0]} with CLIP {known[0][1]}; "
                "text embeddings and region features must come from the same CLIP checkpoint "
                "(re-create the odd one with tools/dump_text_embeddings.py or "
                "tools/precompute_clip_features.py)"
            )
    if require_all and known:
        for label, h in sources:
            if not h:
                raise UserInputError(
                    f"{label} records no CLIP hash, so it cannot be checked against {known[0][0]} "
                    f"(CLIP {known[0][1]}); re-create it with tools/dump_text_embeddings.py"
                )
    return known[0][1] if known else None
