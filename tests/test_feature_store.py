"""The region feature store: round trip, size per region, and refusal of mismatched targets."""

import os

import numpy as np
import pytest

from ezsd.data.feature_store import FeatureStore, write_image_regions, write_manifest
from ezsd.utils.errors import UserInputError


def _regions(num, dim=512, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (num, 2))
    return dict(
        boxes=np.concatenate([xy, xy + rng.uniform(1, 50, (num, 2))], axis=1),
        embeddings=rng.normal(size=(num, dim)),
        confidence=rng.uniform(size=num),
        clip_class=rng.integers(0, 65, num),
        objectness=np.sort(rng.uniform(size=num))[::-1],
        is_gt=np.arange(num) < 3,
    )


def _store(tmp_path, counts):
    for image_id, num in counts.items():
        write_image_regions(str(tmp_path), image_id, **_regions(num, seed=image_id))
    write_manifest(str(tmp_path), "abc123", ["lemon", "lime"], ["lemon"], {"top_k": 300}, counts)
    return FeatureStore(str(tmp_path))


def test_round_trip_and_dtypes(tmp_path):
    store = _store(tmp_path, {7: 20, 9: 0})
    regions = store.load(7)
    expected = _regions(20, seed=7)
    np.testing.assert_allclose(regions["boxes"], expected["boxes"], rtol=1e-6)
    np.testing.assert_allclose(regions["embeddings"], expected["embeddings"], atol=4e-3, rtol=1e-3)
    assert regions["embeddings"].dtype == np.float16 and regions["is_gt"].sum() == 3
    assert store.load(9)["boxes"].shape == (0, 4)
    assert 7 in store and 8 not in store
    with pytest.raises(UserInputError, match="no regions for image id 8"):
        store.load(8)


def test_size_per_region_is_compact(tmp_path):
    _store(tmp_path, {1: 300})
    size = os.path.getsize(os.path.join(tmp_path, "regions", "1.npz"))
    assert size / 300 <= 1.1 * 1024, f"{size / 300:.0f} bytes per region"


def test_store_of_other_base_or_novel_classes_is_refused(tmp_path):
    """A store of other base or novel classes (novel: its class names that are not base) than
    the training dataset's metadata is refused in one line naming the manifest, the dataset and
    both lists, even when its images match."""
    from detectron2.data import MetadataCatalog

    from ezsd.data.feature_store import dataset_fingerprint

    name = "ezsd_test_store_classes"
    MetadataCatalog.get(name).set(thing_classes=["lemon"])
    write_image_regions(str(tmp_path), 1, **_regions(4))
    made_for = dataset_fingerprint(name, [])  # the images match: only the classes differ
    write_manifest(str(tmp_path), "abc", ["lemon", "lime"], ["lemon"], {}, {1: 4}, dataset=made_for)
    store = FeatureStore(str(tmp_path))

    def classes(base, novel):
        MetadataCatalog.remove(name)
        MetadataCatalog.get(name).set(thing_classes=base, base_classes=base, novel_classes=novel)

    classes(["lemon"], ["lime"])
    store.check_dataset(name, [])
    classes(["lemon"], ["kiwi", "lime"])  # a split with another novel class
    with pytest.raises(UserInputError) as e:
        store.check_dataset(name, [])
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}/manifest.json: made for")
    assert (
        f"the novel classes ['lime'] but training uses '{name}', whose novel classes are "
        "['kiwi', 'lime'] (only in the store: [], only in the dataset: ['kiwi'])" in message
    )
    classes(["lime"], ["lemon"])
    with pytest.raises(UserInputError, match=r"base classes \['lemon'\] but .* are \['lime'\]"):
        store.check_dataset(name, [])


def test_unfinished_store_is_refused(tmp_path):
    write_image_regions(str(tmp_path), 1, **_regions(2))
    with pytest.raises(UserInputError, match="manifest.json: not found"):
        FeatureStore(str(tmp_path))
    assert not [f for f in os.listdir(tmp_path / "regions") if f.startswith(".tmp")]


def test_dataset_fingerprint_binds_ids_files_and_boxes_not_the_data_root():
    from detectron2.data import MetadataCatalog
    from detectron2.structures import BoxMode

    from ezsd.data.feature_store import dataset_fingerprint

    def records(root, files=("a.jpg", "b.jpg"), x=1.0):
        return [
            {
                "file_name": f"{root}/{f}",
                "image_id": i + 1,
                "annotations": [
                    {"bbox": [x, 2.0, 10.0, 12.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
                ],
            }
            for i, f in enumerate(files)
        ]

    for name, root in (("ezsd_test_fp_a", "/data/a/train"), ("ezsd_test_fp_b", "/moved/train")):
        MetadataCatalog.get(name).set(image_root=root, thing_classes=["lemon"])
    a = dataset_fingerprint("ezsd_test_fp_a", records("/data/a/train"))
    moved = dataset_fingerprint("ezsd_test_fp_b", records("/moved/train")[::-1])
    assert a["num_images"] == 2 and a["name"] == "ezsd_test_fp_a"
    assert (moved["images_digest"], moved["boxes_digest"]) == (
        a["images_digest"],
        a["boxes_digest"],
    )
    other_file = dataset_fingerprint("ezsd_test_fp_a", records("/data/a/train", ("a.jpg", "c.jpg")))
    assert other_file["images_digest"] != a["images_digest"]
    other_box = dataset_fingerprint("ezsd_test_fp_a", records("/data/a/train", x=1.5))
    assert (
        other_box["images_digest"] == a["images_digest"]
        and other_box["boxes_digest"] != a["boxes_digest"]
    )


def test_proposal_store_round_trip_and_missing_image(tmp_path):
    import json

    import torch

    from ezsd.data.proposal_store import ProposalStore

    store = ProposalStore(str(tmp_path / "proposals"))
    boxes = torch.tensor([[1.5, 2.0, 30.25, 40.0], [0.0, 0.0, 8.0, 8.0]])
    proposals = dict(
        boxes=boxes,
        objectness=torch.tensor([2.0, 1.0]),
        confidence=torch.tensor([0.9, 0.4]),
        clip_class=torch.tensor([3, 0]),
        num_encodings=17,
    )
    store.write("5", proposals)
    assert "5" in store and "6" not in store
    assert store.counts("5") == (2, 17)
    arrays = store.arrays("5")
    assert arrays["confidence"].dtype == np.float16 and arrays["clip_class"].dtype == np.int16
    loaded = store.load("5")
    assert torch.equal(loaded["boxes"], boxes) and loaded["clip_class"].tolist() == [3, 0]
    assert loaded["num_encodings"] == 17 and loaded["objectness"].tolist() == [2.0, 1.0]
    with pytest.raises(UserInputError, match=r"6\.npz: no proposals for image 6"):
        store.load("6")
    store.write_manifest({"top_k": 2}, [], None, {"5": store.counts("5")})
    manifest = json.loads(open(store.manifest_file).read())
    assert manifest["images"] == {"5": {"proposals": 2, "encodings": 17}}
    assert manifest["mean_encodings_per_image"] == 17.0
