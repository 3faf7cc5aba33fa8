"""EZSDDatasetMapper: stored regions follow the image's resize + flip, sampling, bad input."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from ezsd import add_ezsd_config
from ezsd.data.feature_store import dataset_fingerprint, write_image_regions, write_manifest
from ezsd.data.mapper import EZSDDatasetMapper
from ezsd.data.text_embedding_file import save_text_embeddings
from ezsd.utils.errors import UserInputError

W, H, D = 60, 40, 8
GT_BOXES = np.array([[5, 5, 25, 30], [30, 2, 58, 20]], np.float32)
# stored rows 2..7; row 3 has zero width (dropped)
PROPOSALS = np.array(
    [
        [0, 0, 10, 10],
        [7, 7, 7, 20],
        [10, 10, 40, 39],
        [20, 0, 60, 40],
        [1, 1, 50, 30],
        [2, 2, 3, 3],
    ],
    np.float32,
)


def _store(
    tmp_path,
    clip_hash="abc",
    base=("lemon", "brick"),
    image_ids=(1,),
    dataset=None,
    novel=("kiwi",),
):
    boxes = np.concatenate([GT_BOXES, PROPOSALS])
    num = len(boxes)
    embeddings = np.zeros((num, D))
    embeddings[:, 0] = np.arange(num)  # a row's target tells which stored row it is
    embeddings[:, 1] = 1.0
    for image_id in image_ids:
        write_image_regions(
            str(tmp_path / "feats"),
            image_id,
            boxes=boxes,
            embeddings=embeddings,
            confidence=np.linspace(0.9, 0.4, num),
            clip_class=np.zeros(num),
            objectness=np.linspace(1, 0, num),
            is_gt=np.arange(num) < len(GT_BOXES),
        )
    write_manifest(
        str(tmp_path / "feats"),
        clip_hash,
        list(base) + list(novel),
        list(base),
        {},
        {i: num for i in image_ids},
        dataset=dataset,
    )
    return str(tmp_path / "feats")


def _dataset_dict(tmp_path, image_id=1):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
        tmp_path / "a.png"
    )
    annos = [
        {"bbox": b.tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": i, "iscrowd": 0}
        for i, b in enumerate(GT_BOXES)
    ]
    return {
        "file_name": str(tmp_path / "a.png"),
        "image_id": image_id,
        "height": H,
        "width": W,
        "annotations": annos,
    }


def _mapper(store, num_proposals=3, flip=True, **kwargs):
    augs = [T.Resize((2 * H, 3 * W))] + (
        [T.RandomFlip(prob=1.0)] if flip else []
    )  # x3 wide, x2 high
    return EZSDDatasetMapper(
        True,
        augmentations=augs,
        image_format="RGB",
        feature_store=store,
        num_distill_proposals=num_proposals,
        **kwargs,
    )


def _expected(box, flip=True):
    x0, y0, x1, y1 = box[0] * 3, box[1] * 2, box[2] * 3, box[3] * 2
    return [3 * W - x1, y0, 3 * W - x0, y1] if flip else [x0, y0, x1, y1]


@pytest.mark.parametrize("flip", [True, False])
def test_regions_follow_resize_and_flip(tmp_path, flip):
    np.random.seed(0)
    out = _mapper(_store(tmp_path), flip=flip)(_dataset_dict(tmp_path))
    assert out["image"].shape == (3, 2 * H, 3 * W)
    regions = out["distill_regions"]
    assert regions.image_size == (2 * H, 3 * W)
    rows = regions.targets[:, 0].float().long().tolist()
    stored = np.concatenate([GT_BOXES, PROPOSALS])
    for box, row in zip(regions.boxes.tensor.numpy(), rows):
        np.testing.assert_allclose(box, _expected(stored[row], flip), atol=1e-4)
    # the GT regions line up with the image's transformed GT boxes
    np.testing.assert_allclose(
        regions.boxes.tensor[:2].numpy(), out["instances"].gt_boxes.tensor.numpy(), atol=1e-4
    )
    # every GT row, then 3 proposals sampled from the first 3 stored, minus the empty one (row 3)
    assert rows[:2] == [0, 1] and regions.is_gt.tolist() == [True] * 2 + [False] * 3
    assert set(rows[2:]) <= {2, 4}
    confidence = np.linspace(0.9, 0.4, 8).astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(
        regions.weights.numpy(), [1.0, 1.0] + [confidence[r] for r in rows[2:]]
    )
    assert regions.targets.dtype == torch.float16 and regions.targets.shape == (5, D)


def test_sampling_with_replacement_and_no_proposals(tmp_path):
    store = _store(tmp_path)
    np.random.seed(1)
    regions = _mapper(store, num_proposals=20)(_dataset_dict(tmp_path))["distill_regions"]
    rows = regions.targets[:, 0].float().long().tolist()
    assert len(rows) == 22 and set(rows[2:]) == {2, 4, 5, 6, 7}  # with replacement; 3 is empty
    regions = _mapper(store, num_proposals=0)(_dataset_dict(tmp_path))["distill_regions"]
    assert len(regions) == 2 and regions.is_gt.all()


def test_missing_regions_and_test_mode(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(UserInputError, match="no regions for image id 2.*ON_MISSING"):
        _mapper(store)(_dataset_dict(tmp_path, image_id=2))
    out = _mapper(store, on_missing="skip")(_dataset_dict(tmp_path, image_id=2))
    assert "distill_regions" not in out and len(out["instances"]) == 2
    test_mapper = EZSDDatasetMapper(
        False, augmentations=[], image_format="RGB", feature_store=store
    )
    out = test_mapper(_dataset_dict(tmp_path))
    assert "distill_regions" not in out and "instances" not in out
    with pytest.raises(UserInputError, match="ON_MISSING"):
        _mapper(store, on_missing="ignore")


TRAIN = "ezsd_test_mapper_train"


def _register(name, records, **meta):
    """(Re-)register a training dataset of `records` with base classes lemon and brick."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    meta.setdefault("thing_classes", ["lemon", "brick"])
    MetadataCatalog.get(name).set(
        base_classes=["brick", "lemon"], novel_classes=["kiwi"], image_root="/data/toy", **meta
    )


def _records(file_names=("a.png",), boxes=GT_BOXES):
    return [
        {
            "file_name": f"/data/toy/{f}",
            "image_id": i + 1,
            "height": H,
            "width": W,
            "annotations": [
                {"bbox": b.tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0} for b in boxes
            ],
        }
        for i, f in enumerate(file_names)
    ]


def _cfg(tmp_path, store, clip_hash, test_hash="same", train=(TRAIN,)):
    cfg = get_cfg()
    add_ezsd_config(cfg)
    path = str(tmp_path / "base.npy")
    save_text_embeddings(
        path, np.eye(2, D, dtype=np.float32), ["lemon", "brick"], clip_hash=clip_hash
    )
    cfg.MODEL.EZSD.TEXT_EMBEDDINGS = path
    if test_hash is not None:
        cfg.MODEL.EZSD.TEST_TEXT_EMBEDDINGS = str(tmp_path / "all.npy")
        save_text_embeddings(
            cfg.MODEL.EZSD.TEST_TEXT_EMBEDDINGS,
            np.eye(3, D, dtype=np.float32),
            ["lemon", "brick", "kiwi"],
            clip_hash=clip_hash if test_hash == "same" else test_hash,
        )
    cfg.MODEL.EZSD.EMBED_DIM = D
    cfg.MODEL.EZSD.DISTILL.FEATURES = store
    cfg.DATASETS.TRAIN = train
    return cfg


def test_from_config_checks_the_store(tmp_path):
    _register(TRAIN, _records())
    made_for = dataset_fingerprint(TRAIN, _records())
    store = _store(tmp_path, dataset=made_for)
    mapper = EZSDDatasetMapper(_cfg(tmp_path, store, "abc"), is_train=True)
    assert mapper.feature_store is not None and mapper.num_distill_proposals == 200
    with pytest.raises(
        UserInputError, match="with CLIP zzz but MODEL.EZSD.DISTILL.FEATURES .* with CLIP abc"
    ):
        EZSDDatasetMapper(_cfg(tmp_path, store, "zzz"), is_train=True)
    other = _store(tmp_path / "other", base=("lemon", "lime"), dataset=made_for)
    with pytest.raises(UserInputError, match="base classes"):
        EZSDDatasetMapper(_cfg(tmp_path, other, "abc"), is_train=True)
    cfg = _cfg(tmp_path, "", "abc")
    with pytest.raises(UserInputError, match="DISTILL.FEATURES is empty"):
        EZSDDatasetMapper(cfg, is_train=True)
    cfg.MODEL.EZSD.DISTILL.ENABLED = False
    assert EZSDDatasetMapper(cfg, is_train=True).feature_store is None
    assert EZSDDatasetMapper(_cfg(tmp_path, store, "abc"), is_train=False).feature_store is None
    with pytest.raises(UserInputError, match="manifest.json: not found"):
        EZSDDatasetMapper(_cfg(tmp_path, str(tmp_path / "nowhere"), "abc"), is_train=True)


def test_store_of_a_split_with_other_novel_classes_is_refused(tmp_path):
    """The store's novel classes (its manifest's class names that are not base) must be the
    training dataset's novel_classes: one line naming the manifest, the dataset and both lists."""
    _register(TRAIN, _records())
    store = _store(tmp_path, novel=("plum",), dataset=dataset_fingerprint(TRAIN, _records()))
    with pytest.raises(UserInputError) as e:
        EZSDDatasetMapper(_cfg(tmp_path, store, "abc"), is_train=True)
    message = str(e.value)
    assert message.startswith(f"{store}/manifest.json: made for the novel classes ['plum']")
    assert f"'{TRAIN}', whose novel classes are ['kiwi']" in message and "\n" not in message


def test_store_of_another_dimension_than_embed_dim_is_refused(tmp_path):
    """Region targets of another dimension than MODEL.EZSD.EMBED_DIM: one line naming a region
    file and the key with both values (not a shape error at the first training step)."""
    _register(TRAIN, _records())
    store = _store(tmp_path, dataset=dataset_fingerprint(TRAIN, _records()))
    cfg = _cfg(tmp_path, store, "abc")
    cfg.MODEL.EZSD.EMBED_DIM = 2 * D
    with pytest.raises(UserInputError) as e:
        EZSDDatasetMapper(cfg, is_train=True)
    assert str(e.value) == (
        f"MODEL.EZSD.DISTILL.FEATURES {store}/regions/1.npz: region targets of dimension {D}, "
        f"but MODEL.EZSD.EMBED_DIM is {2 * D}; set it to the embedding dimension of the CLIP "
        "that made the targets"
    )


def test_store_of_other_images_is_refused(tmp_path):
    """A store is bound to its dataset: name, number of images, (image id, file name) list and
    boxes; image ids alone (1..N in every ShapesOVD split and seed) do not tell."""
    _register(TRAIN, _records(("a.png", "b.png")))
    store = _store(
        tmp_path, image_ids=(1, 2), dataset=dataset_fingerprint(TRAIN, _records(("a.png", "b.png")))
    )
    assert EZSDDatasetMapper(_cfg(tmp_path, store, "abc"), is_train=True).feature_store is not None

    def refused(records, name=TRAIN):
        _register(name, records)
        with pytest.raises(UserInputError) as e:
            EZSDDatasetMapper(_cfg(tmp_path, store, "abc", train=(name,)), is_train=True)
        message = str(e.value)
        assert (
            "\n" not in message and "manifest.json" in message and f"'{TRAIN}' (2 images" in message
        )
        return message

    assert "number of images differs" in refused(_records(("a.png", "b.png", "c.png")))
    message = refused(_records(("a.png", "c.png")))  # same ids, another file
    assert "(image id, file name) list digest differs" in message and "training uses" in message
    assert "boxes digest differs" in refused(_records(("a.png", "b.png"), GT_BOXES + 1))
    other_name = refused(_records(("a.png", "b.png")), name="ezsd_test_mapper_train_seed1")
    assert (
        "the dataset differs" in other_name
        and "'ezsd_test_mapper_train_seed1' (2 images" in other_name
    )
    _register(TRAIN, _records(("a.png", "b.png")))
    old = _store(tmp_path / "old", image_ids=(1, 2))  # no dataset recorded
    with pytest.raises(UserInputError, match="records no dataset"):
        EZSDDatasetMapper(_cfg(tmp_path, old, "abc"), is_train=True)
    with pytest.raises(UserInputError, match="holds the regions of one dataset"):
        EZSDDatasetMapper(_cfg(tmp_path, store, "abc", train=(TRAIN, TRAIN)), is_train=True)


def test_text_embeddings_of_another_clip_than_the_store_are_refused(tmp_path):
    """Training and test text embeddings and the targets must come from one CLIP: a mismatch of
    any of them is one line naming both sides; a text file without a CLIP hash cannot be checked
    and is refused too."""
    _register(TRAIN, _records())
    store = _store(tmp_path, dataset=dataset_fingerprint(TRAIN, _records()))
    with pytest.raises(UserInputError) as e:
        EZSDDatasetMapper(_cfg(tmp_path, store, "abc", test_hash="zzz"), is_train=True)
    message = str(e.value)
    assert "TEST_TEXT_EMBEDDINGS" in message and "CLIP zzz" in message and "CLIP abc" in message
    assert "\n" not in message
    with pytest.raises(UserInputError, match="TEXT_EMBEDDINGS .*base.npy records no CLIP hash"):
        EZSDDatasetMapper(_cfg(tmp_path, store, None, test_hash="abc"), is_train=True)


def test_training_on_a_split_with_novel_boxes_is_refused(tmp_path):
    """An evaluation split (novel boxes) as DATASETS.TRAIN is refused where the train loader's
    mapper is built, without loading it; a dataset of unknown kind is scanned; and a record with a
    novel box never passes the mapper."""
    cfg = _cfg(tmp_path, "", "abc", test_hash=None)
    cfg.MODEL.EZSD.DISTILL.ENABLED = False
    for name in ("shapes_ovd_val", "coco_ovd_val", "lvis_v1_ovd_val"):
        cfg.DATASETS.TRAIN = (name,)
        with pytest.raises(UserInputError) as e:
            EZSDDatasetMapper(cfg, is_train=True)
        assert str(e.value).startswith(f"DATASETS.TRAIN: dataset '{name}' is an evaluation split")
    # no novel_annotated flag: its boxes decide
    novel = [
        dict(r, annotations=r["annotations"] + [dict(r["annotations"][0], category_id=2)])
        for r in _records()
    ]
    _register(TRAIN, novel, thing_classes=["lemon", "brick", "kiwi"])
    cfg.DATASETS.TRAIN = (TRAIN,)
    with pytest.raises(
        UserInputError, match="holds a box of the novel category 'kiwi' .image id 1"
    ):
        EZSDDatasetMapper(cfg, is_train=True)
    _register(TRAIN, _records(), thing_classes=["lemon", "brick", "kiwi"])
    mapper = EZSDDatasetMapper(cfg, is_train=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a.png")
    record = dict(novel[0], file_name=str(tmp_path / "a.png"))
    with pytest.raises(UserInputError, match="novel category 'kiwi'"):
        mapper(record)
    assert len(mapper(dict(_records()[0], file_name=str(tmp_path / "a.png")))["instances"]) == 2
