"""The on-disk store of CLIP proposals: one small `.npz` per image + a manifest.

The pre-computation (ezsd.offline.pipeline) writes it; the region features, the proposal recall
(ezsd.offline.recall) and CLIP-as-detector evaluation (ezsd.clip.region_detections) read it.

Layout (ROOT: --proposals of tools/precompute_clip_features.py, default OUT/proposals):
    ROOT/settings.json            how the proposals are made (checked on every resume)
    ROOT/<image_id>.npz           keys: boxes (K,4) float32 XYXY in original image pixels,
                                  objectness (K,) float32, confidence (K,) float16, clip_class
                                  (K,) int16, num_encodings () int64 (CLIP crop encodings spent).
                                  Rows are sorted by objectness, best first.
    ROOT/shards/<i>-of-<K>.json   per-shard counts
    ROOT/manifest.json            once all shards are in: settings, skipped images, logit scale,
                                  mean encodings per image, per-image counts
"""

import json
import os

import numpy as np
import torch

from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import atomic_write, atomic_write_json, remove_stale_temps

from .feature_store import check_made_from

__all__ = ["ProposalStore", "PROPOSAL_FIELDS"]

# dtype of each per-proposal array on disk (num_encodings is one int64 per image).
PROPOSAL_FIELDS = {
    "boxes": np.float32,
    "objectness": np.float32,
    "confidence": np.float16,
    "clip_class": np.int16,
}
SETTINGS = "settings.json"
MANIFEST = "manifest.json"


class ProposalStore:
    """Read and write access to a proposals folder (finished or not)."""

    def __init__(self, root):
        self.root = root

    @property
    def settings_file(self):
        return os.path.join(self.root, SETTINGS)

    @property
    def manifest_file(self):
        return os.path.join(self.root, MANIFEST)

    def check_dataset(self, dataset_name, records):
        """Refuse proposals made for other data than the dataset `dataset_name` whose dicts are
        `records` (all of them), as recorded in settings.json (`check_made_from`): the files are
        found by image id, and ids repeat across datasets (ShapesOVD numbers each split 1..N)."""
        try:
            with open(self.settings_file) as f:
                made = json.load(f).get("data")
        except FileNotFoundError:
            raise UserInputError(
                f"{self.settings_file}: not found; not a proposals folder of "
                "tools/precompute_clip_features.py"
            ) from None
        except (json.JSONDecodeError, AttributeError) as e:
            raise UserInputError(f"{self.settings_file}: not a settings file ({e})") from None
        check_made_from(
            self.settings_file,
            made,
            dataset_name,
            records,
            "it is read for",
            "pass the proposals of this dataset (tools/precompute_clip_features.py --dataset "
            f"{dataset_name} --stage proposals)",
        )

    def file(self, image_id):
        return os.path.join(self.root, f"{image_id}.npz")

    def __contains__(self, image_id):
        return os.path.exists(self.file(image_id))

    def write(self, image_id, proposals):
        """Write one image's proposals (dict of tensors + num_encodings) atomically (a killed job
        leaves no partial file)."""
        with atomic_write(self.file(image_id)) as f:
            np.savez(
                f,
                **{k: proposals[k].numpy().astype(t) for k, t in PROPOSAL_FIELDS.items()},
                num_encodings=np.int64(proposals["num_encodings"]),
            )

    def arrays(self, image_id, keys=(*PROPOSAL_FIELDS, "num_encodings")):
        """The stored NumPy arrays `keys` of one image (num_encodings as an int). Readers that need
        the boxes only ask for them alone: another tool's proposals (an RPN's) may hold no more."""
        path = self.file(image_id)
        try:
            with np.load(path) as data:
                out = {k: int(data[k]) if k == "num_encodings" else data[k] for k in keys}
        except FileNotFoundError:
            raise UserInputError(f"{path}: no proposals for image {image_id}") from None
        return out

    def load(self, image_id):
        """dict of torch tensors (boxes, objectness, confidence as float32, clip_class as int64) +
        num_encodings (int)."""
        arrays = self.arrays(image_id)
        out = {
            k: torch.from_numpy(arrays[k].astype(np.float32 if k != "clip_class" else np.int64))
            for k in PROPOSAL_FIELDS
        }
        out["num_encodings"] = arrays["num_encodings"]
        return out

    def counts(self, image_id):
        """(number of proposals, CLIP encodings spent) of one stored image."""
        with np.load(self.file(image_id)) as data:
            return int(data["boxes"].shape[0]), int(data["num_encodings"])

    def remove_stale_temps(self, image_ids):
        """Remove the temp files a killed run left for these images' files."""
        return remove_stale_temps(self.root, [f"{i}.npz" for i in image_ids])

    def write_manifest(self, settings, skipped_images, logit_scale, images):
        """Write the manifest (it marks the store finished). `images`: {image_id: (number of
        proposals, encodings)}."""
        encodings = [v[1] for v in images.values()]
        atomic_write_json(
            self.manifest_file,
            dict(
                settings=settings,
                skipped_images=skipped_images,
                logit_scale=logit_scale,
                mean_encodings_per_image=float(np.mean(encodings)) if encodings else 0.0,
                images={k: dict(proposals=v[0], encodings=v[1]) for k, v in sorted(images.items())},
            ),
            indent=1,
        )
