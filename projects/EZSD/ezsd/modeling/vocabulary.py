"""The detector's vocabularies from a config: text-embedding files (MODEL.EZSD.TEXT_EMBEDDINGS for
training, MODEL.EZSD.TEST_TEXT_EMBEDDINGS for inference), checked against the classes of the
datasets they serve and against the CLIP that made them."""

import os

import torch
from detectron2.data import MetadataCatalog

from ezsd.data.text_embedding_file import check_same_clip, load_text_embeddings, text_embedding_info
from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import file_sha256, resolve_data_path
from ezsd.utils.names import names_difference

__all__ = [
    "dataset_class_names",
    "load_vocabulary_file",
    "vocabularies_from_config",
    "check_vocabulary_clip",
    "check_vocabulary_against_datasets",
    "vocabulary_clip_sources",
]

CONFIG_KEYS = {"train": "MODEL.EZSD.TEXT_EMBEDDINGS", "test": "MODEL.EZSD.TEST_TEXT_EMBEDDINGS"}


def dataset_class_names(dataset_name):
    """The `thing_classes` of a registered dataset, or None when not (yet) known (a COCO json sets
    them when first loaded)."""
    if not dataset_name:
        return None
    return MetadataCatalog.get(dataset_name).get("thing_classes")


def load_vocabulary_file(path, expected_names=None, config_key="", dataset_name=""):
    """Read a text-embedding file (FILE.npy + FILE.names.json); return (float32 tensor (C, D),
    names). With `expected_names`, the sidecar's names must equal them (UserInputError otherwise,
    naming both files, the first differing name, and where the expected names came from)."""
    if not path:
        raise UserInputError(
            f"{config_key or 'the text-embedding file'} is empty; write one with "
            "tools/dump_text_embeddings.py and set it"
        )
    try:
        embeddings, names = load_text_embeddings(
            resolve_data_path(path), expected_names=expected_names
        )
    except UserInputError as e:
        where = " ".join(
            x for x in (config_key, f"dataset '{dataset_name}'" if dataset_name else "") if x
        )
        raise UserInputError(f"{e} [{where}]" if where else str(e)) from None
    return torch.from_numpy(embeddings.copy()), list(names)


def _common_classes(dataset_names, config_key):
    """(a dataset name, its thing_classes) for the datasets of `config_key`: every one whose
    classes are known must have the same ones, since one vocabulary serves them all. (first
    name, None) when none is known yet; ("", None) when there is none."""
    known = [(n, dataset_class_names(n)) for n in dataset_names]
    known = [(n, list(c)) for n, c in known if c is not None]
    for name, classes in known[1:]:
        if classes != known[0][1]:
            raise UserInputError(
                f"{config_key}: datasets '{known[0][0]}' ({len(known[0][1])} classes) and "
                f"'{name}' ({len(classes)} classes) have different classes; one text-embedding "
                "file serves them all, so evaluate (or train) them in separate runs"
            )
    if known:
        return known[0]
    return (dataset_names[0] if len(dataset_names) else ""), None


def _check_dim(embeddings, path, config_key, embed_dim):
    """Refuse the embeddings of the file `path` (setting `config_key`) unless they are
    MODEL.EZSD.EMBED_DIM-dimensional (the classifier would refuse them without naming the file)."""
    if embeddings.shape[1] != embed_dim:
        raise UserInputError(
            f"{config_key} {path}: text embeddings of dimension {embeddings.shape[1]}, but "
            f"MODEL.EZSD.EMBED_DIM is {embed_dim}; set it to the embedding dimension of the CLIP "
            "that made them"
        )


def vocabularies_from_config(cfg):
    """{"text_embeddings", "class_names"[, "test_text_embeddings", "test_class_names"]} of the
    config's files, each checked against its datasets' classes where those are known, with the
    number of training classes, MODEL.EZSD.EMBED_DIM and the CLIP (see `check_vocabulary_clip`)."""
    ez = cfg.MODEL.EZSD
    train_ds, train_classes = _common_classes(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
    test_ds, test_classes = _common_classes(cfg.DATASETS.TEST, "DATASETS.TEST")
    emb, names = load_vocabulary_file(
        ez.TEXT_EMBEDDINGS, train_classes, CONFIG_KEYS["train"], train_ds
    )
    if len(names) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise UserInputError(
            f"{ez.TEXT_EMBEDDINGS} holds {len(names)} classes but MODEL.ROI_HEADS.NUM_CLASSES "
            f"is {cfg.MODEL.ROI_HEADS.NUM_CLASSES}; they must agree (training classes)"
        )
    _check_dim(emb, ez.TEXT_EMBEDDINGS, CONFIG_KEYS["train"], ez.EMBED_DIM)
    ret = dict(text_embeddings=emb, class_names=names)
    if ez.TEST_TEXT_EMBEDDINGS:
        test_emb, test_names = load_vocabulary_file(
            ez.TEST_TEXT_EMBEDDINGS,
            test_classes,
            CONFIG_KEYS["test"],
            test_ds,
        )
        _check_dim(test_emb, ez.TEST_TEXT_EMBEDDINGS, CONFIG_KEYS["test"], ez.EMBED_DIM)
        ret.update(test_text_embeddings=test_emb, test_class_names=test_names)
    elif test_classes is not None and names_difference(names, test_classes) is not None:
        raise UserInputError(
            f"dataset '{test_ds}' (DATASETS.TEST) has other classes than {ez.TEXT_EMBEDDINGS} "
            f"({names_difference(names, test_classes)}): set MODEL.EZSD.TEST_TEXT_EMBEDDINGS to "
            f"text embeddings of its classes (tools/dump_text_embeddings.py --dataset {test_ds})"
        )
    check_vocabulary_clip(cfg)
    return ret


def vocabulary_clip_sources(cfg):
    """[(label, clip_hash or None)] of the config's text-embedding files (TEXT_EMBEDDINGS, then
    TEST_TEXT_EMBEDDINGS when set), for `check_same_clip`."""
    ez = cfg.MODEL.EZSD
    paths = [(k, resolve_data_path(ez[k])) for k in ("TEXT_EMBEDDINGS", "TEST_TEXT_EMBEDDINGS")]
    return [
        (f"MODEL.EZSD.{k} {path}", text_embedding_info(path)["clip_hash"])
        for k, path in paths
        if path
    ]


def check_vocabulary_clip(cfg):
    """Refuse training and test text embeddings made with different CLIPs, or with another CLIP
    than MODEL.EZSD.CLIP.MODEL when that is a local file (its sha256 is what the files record).
    The pair of embedding files must both record a hash when one does."""
    ez = cfg.MODEL.EZSD
    sources = vocabulary_clip_sources(cfg)
    common = check_same_clip(sources, require_all=True)
    clip_file = resolve_data_path(ez.CLIP.MODEL)
    if common and clip_file and os.path.isfile(clip_file):
        check_same_clip(
            sources[:1] + [(f"MODEL.EZSD.CLIP.MODEL {clip_file}", file_sha256(clip_file))]
        )


def check_vocabulary_against_datasets(names, datasets, split):
    """Check the `split` ("train" / "test") vocabulary's `names` against the classes of each of
    `datasets` whose classes are known. Returns True when every one was known (nothing is left to
    check later), False when some are not yet (a COCO json sets them when first loaded)."""
    known = 0
    for dataset in datasets:
        expected = dataset_class_names(dataset)
        if expected is None:
            continue
        known += 1
        detail = names_difference(names, expected)
        if detail is not None:
            raise UserInputError(
                f"the {'training' if split == 'train' else 'inference'} text embeddings do not "
                f"match the classes of dataset '{dataset}' ({detail}); set {CONFIG_KEYS[split]} to "
                f"embeddings made with tools/dump_text_embeddings.py --dataset {dataset}, or call "
                "set_vocabulary()"
            )
    return known == len(datasets)
