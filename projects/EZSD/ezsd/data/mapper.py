"""EZSDDatasetMapper: detectron2's DatasetMapper + each training image's pre-computed CLIP regions.

The dataset dicts carry only paths and ids; the mapper loads the image's regions from the feature
store by `image_id`, moves their boxes with exactly the transforms applied to the image (a
flipped region keeps its CLIP target: CLIP saw the unflipped crop, and the paper does the same),
drops boxes left empty, keeps every base-GT row and samples the CLIP proposals, and yields
`dataset_dict["distill_regions"]`: an Instances with `boxes` (Boxes), `targets` (K, D) float16
CLIP embeddings (not normalised), `weights` (K,) (1 for GT rows, CLIP confidence for proposals)
and `is_gt` (K,).
"""

import logging
import os

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.structures import Boxes, Instances

from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import resolve_data_path

from .feature_store import FeatureStore
from .text_embedding_file import check_same_clip, text_embedding_info
from .training_checks import check_record, check_training_datasets, novel_category_ids

__all__ = ["EZSDDatasetMapper", "transform_regions", "check_store"]

logger = logging.getLogger(__name__)


def transform_regions(regions, transforms, image_shape, num_proposals, rng=np.random):
    """Apply `transforms` to the stored regions of one image, drop empty boxes, keep every GT
    row and sample `num_proposals` proposals with replacement from the first `num_proposals`
    stored ones (those left non-empty). Returns numpy (boxes, targets, weights, is_gt)."""
    is_gt = regions["is_gt"].astype(bool)
    proposal_rows = np.flatnonzero(~is_gt)[:num_proposals]
    rows = np.concatenate([np.flatnonzero(is_gt), proposal_rows])
    boxes = regions["boxes"][rows].astype(np.float32).reshape(-1, 4)
    if len(boxes):
        boxes = transforms.apply_box(boxes).astype(np.float32)
    height, width = image_shape
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 2] - boxes[:, 0] > 1e-5) & (boxes[:, 3] - boxes[:, 1] > 1e-5)
    gt_keep = np.flatnonzero(keep & is_gt[rows])
    proposal_keep = np.flatnonzero(keep & ~is_gt[rows])
    if len(proposal_keep) and num_proposals > 0:
        proposal_keep = proposal_keep[rng.randint(len(proposal_keep), size=num_proposals)]
    else:
        proposal_keep = proposal_keep[:0]
    chosen = np.concatenate([gt_keep, proposal_keep])
    weights = np.where(is_gt[rows], 1.0, regions["confidence"][rows].astype(np.float32))
    return (
        boxes[chosen],
        regions["embeddings"][rows][chosen],
        weights[chosen].astype(np.float32),
        is_gt[rows][chosen],
    )


class EZSDDatasetMapper(DatasetMapper):
    """DatasetMapper that adds `"distill_regions"` to training images (see the module doc).

    Without a feature store (distillation off, or at test time) it is detectron2's DatasetMapper.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        feature_store=None,
        num_distill_proposals: int = 200,
        on_missing: str = "error",
        train_datasets=(),
        **kwargs,
    ):
        """
        Args:
            is_train, kwargs: as DatasetMapper.
            feature_store (FeatureStore or str or None): the pre-computed regions; None = none.
            num_distill_proposals: proposals sampled per image (from the first that many stored).
            on_missing: "error" for an image without stored regions, or "skip": train it without
                distillation (counted and logged).
            train_datasets: names of the training datasets; in training, a record with a box of
                one of their novel categories is refused (see ezsd.data.training_checks).
        """
        super().__init__(is_train, **kwargs)
        if on_missing not in ("error", "skip"):
            raise UserInputError(
                f"MODEL.EZSD.DISTILL.ON_MISSING must be 'error' or 'skip', not {on_missing!r}"
            )
        if isinstance(feature_store, str):
            feature_store = FeatureStore(feature_store)
        self.feature_store = feature_store if is_train else None
        self.num_distill_proposals = int(num_distill_proposals)
        self.on_missing = on_missing
        self._num_missing = 0
        self.train_datasets = list(train_datasets) if is_train else []
        self._novel_ids = None  # known once the datasets are loaded (a COCO json sets its classes)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        distill = cfg.MODEL.EZSD.DISTILL
        store = None
        if is_train:
            check_training_datasets(cfg.DATASETS.TRAIN)
        if is_train and distill.ENABLED:
            if not distill.FEATURES:
                raise UserInputError(
                    "MODEL.EZSD.DISTILL.FEATURES is empty: set it to the folder of "
                    "pre-computed region features, or set MODEL.EZSD.DISTILL.ENABLED False"
                )
            store = FeatureStore(resolve_data_path(distill.FEATURES))
            check_store(store, cfg)
        ret.update(train_datasets=list(cfg.DATASETS.TRAIN) if is_train else [])
        ret.update(
            feature_store=store,
            num_distill_proposals=distill.NUM_PROPOSALS,
            on_missing=distill.ON_MISSING,
        )
        return ret

    def __call__(self, dataset_dict):
        if self.train_datasets and dataset_dict.get("annotations"):
            if self._novel_ids is None:
                self._novel_ids = novel_category_ids(self.train_datasets)
            check_record(dataset_dict, self._novel_ids)
        if self.feature_store is not None and "annotations" not in dataset_dict:
            dataset_dict = dict(dataset_dict, annotations=[])  # so that the hook below runs
        return super().__call__(dataset_dict)

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        super()._transform_annotations(dataset_dict, transforms, image_shape)
        if self.feature_store is not None:
            regions = self._load_regions(dataset_dict, transforms, image_shape)
            if regions is not None:
                dataset_dict["distill_regions"] = regions

    def _load_regions(self, dataset_dict, transforms, image_shape):
        image_id = dataset_dict["image_id"]
        if image_id not in self.feature_store:
            if self.on_missing == "error":
                raise UserInputError(
                    f"{self.feature_store.root}: no regions for image id {image_id} "
                    f"({dataset_dict.get('file_name')}); pre-compute them, or set "
                    "MODEL.EZSD.DISTILL.ON_MISSING 'skip' to train such images without distillation"
                )
            self._num_missing += 1
            if self._num_missing in (1, 10, 100) or self._num_missing % 1000 == 0:
                logger.warning(
                    f"{self._num_missing} images without stored regions so far in this "
                    f"loader worker, trained without distillation (last: {image_id})"
                )
            return None
        regions = self.feature_store.load(image_id)
        boxes, targets, weights, is_gt = transform_regions(
            regions, transforms, image_shape, self.num_distill_proposals
        )
        return Instances(
            image_shape,
            boxes=Boxes(torch.from_numpy(np.ascontiguousarray(boxes))),
            targets=torch.from_numpy(np.ascontiguousarray(targets)),
            weights=torch.from_numpy(weights),
            is_gt=torch.from_numpy(is_gt),
        )


def check_store(store, cfg):
    """Refuse a feature store that does not fit the training run of `cfg`: made with another CLIP
    than the text embeddings (training and test), with targets of another dimension than
    MODEL.EZSD.EMBED_DIM, or for other base / novel classes or other data than DATASETS.TRAIN
    (`FeatureStore.check_dataset`)."""
    ez = cfg.MODEL.EZSD
    manifest = os.path.join(store.root, "manifest.json")
    sources = [(f"MODEL.EZSD.DISTILL.FEATURES {manifest}", store.manifest["clip_hash"])]
    for key in ("TEXT_EMBEDDINGS", "TEST_TEXT_EMBEDDINGS"):
        path = resolve_data_path(getattr(ez, key))
        if path:
            sources.append((f"MODEL.EZSD.{key} {path}", text_embedding_info(path)["clip_hash"]))
    check_same_clip(sources, require_all=True)
    # else the distillation loss fails at the first step with a bare shape error
    path, dim = store.embedding_dim()
    if dim is not None and dim != ez.EMBED_DIM:
        raise UserInputError(
            f"MODEL.EZSD.DISTILL.FEATURES {path}: region targets of dimension {dim}, but "
            f"MODEL.EZSD.EMBED_DIM is {ez.EMBED_DIM}; set it to the embedding dimension of the "
            "CLIP that made the targets"
        )
    names = list(cfg.DATASETS.TRAIN)
    if len(names) != 1:
        made = (store.manifest.get("dataset") or {}).get("name")
        raise UserInputError(
            f"{manifest}: a feature store holds the regions of one dataset ('{made}'), but "
            f"DATASETS.TRAIN is {tuple(names)}; distill one training dataset per run (image ids of "
            "different datasets can collide)"
        )
    store.check_dataset(names[0], DatasetCatalog.get(names[0]))
