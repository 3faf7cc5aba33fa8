"""Everything that touches CLIP: loading, text embeddings, region crops and their accuracy.

Used by the offline tools. The detector never imports CLIP: it reads the files these tools write,
text embeddings through `ezsd.clip.embedding_file` (NumPy only). So that importing that module
does not pull in CLIP, this package imports its submodules lazily, on first use of a name
(PEP 562); `from ezsd.clip import load_clip` works as usual.
"""

import importlib

_EXPORTS = {
    "crop_classification_accuracy": "crop_accuracy",
    "load_text_embeddings": "embedding_file",
    "names_path": "embedding_file",
    "save_text_embeddings": "embedding_file",
    "clip_checkpoint_hash": "loading",
    "load_clip": "loading",
    "save_clip_checkpoint": "loading",
    "crop_boxes": "regions",
    "crop_regions": "regions",
    "encode_regions": "regions",
    "DEFAULT_PROMPTS": "text",
    "ENSEMBLE_PROMPTS": "text",
    "clean_class_name": "text",
    "text_embeddings": "text",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
