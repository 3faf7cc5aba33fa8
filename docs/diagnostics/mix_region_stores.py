"""Analysis script (docs/SHAPES_RESULTS.md section 11; not a tested tool): a feature store whose
distilled proposals are a mix of two stores' (e.g. fast CLIP proposals and random regions), made
with the same CLIP for the same images. Per image it keeps store A's GT rows and the first
N_A proposals of A followed by the first N_B of B, so a trainer with
MODEL.EZSD.DISTILL.NUM_PROPOSALS = N_A + N_B (32 in the ShapesOVD config) samples from both. The
manifest is A's, with the mix recorded under settings.mixed_from.

  python docs/diagnostics/mix_region_stores.py OUT STORE_A N_A STORE_B N_B
"""
import json, os, sys
import numpy as np
from ezsd.data.feature_store import REGION_FIELDS, FeatureStore, write_image_regions, write_manifest

out, store_a, first_a, store_b, first_b = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
a, b = FeatureStore(store_a), FeatureStore(store_b)
b.check_compatible(clip_hash=a.manifest["clip_hash"], class_names=a.manifest["class_names"])
counts = {}
for image_id in map(int, a.manifest["images"]):
    regions_a, regions_b = a.load(image_id), b.load(image_id)
    gt_a, gt_b = regions_a["is_gt"].astype(bool), regions_b["is_gt"].astype(bool)
    rows_a = np.concatenate([np.flatnonzero(gt_a), np.flatnonzero(~gt_a)[:first_a]])
    rows_b = np.flatnonzero(~gt_b)[:first_b]
    mixed = {k: np.concatenate([regions_a[k][rows_a], regions_b[k][rows_b]]) for k in REGION_FIELDS}
    write_image_regions(out, image_id, **mixed)
    counts[image_id] = len(mixed["boxes"])
settings = dict(a.manifest["settings"], mixed_from=[[store_a, first_a], [store_b, first_b]])
extra = {k: v for k, v in a.manifest.items() if k in ("skipped_images", "images_without_gt")}
write_manifest(out, a.manifest["clip_hash"], a.manifest["class_names"], a.manifest["base_classes"],
               settings, counts, extra=extra)
print(json.dumps({"images": len(counts), "regions_per_image": float(np.mean(list(counts.values())))}))
