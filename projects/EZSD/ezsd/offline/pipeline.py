"""The pre-computation run behind tools/precompute_clip_features.py: resumable, sharded, atomic.

Files (OUT = --output, the feature store root; PROP = --proposals, default OUT/proposals):
    PROP/settings.json                 how the proposals are made (checked on every resume)
    PROP/<image_id>.npz                boxes (K,4) float32, objectness (K,) float32, confidence
                                       (K,) float16, clip_class (K,) int16, num_encodings ()
    PROP/shards/<i>-of-<K>.json        per-shard counts; PROP/manifest.json once all are in
    OUT/shards/settings.json           how the features are made (checked on every resume)
    OUT/regions/<image_id>.npz         ezsd.data.feature_store records
    OUT/shards/<i>-of-<K>.json         per-shard counts; OUT/manifest.json once all are in

Every file is written to a temp name and renamed. A shard skips the images whose file exists
(--resume, the default), and removes temp files a killed run of the same images left behind.
Whichever shard finishes last (or rank 0 under torch.distributed, after a barrier) merges the
shard files into the manifest, which marks the store finished.
"""

import dataclasses
import glob
import json
import logging
import os
import time
from typing import Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode
from tqdm import tqdm

from ezsd.clip import DEFAULT_PROMPTS, clip_checkpoint_hash, load_clip, text_embeddings
from ezsd.config import config_digest
from ezsd.data.feature_store import (
    dataset_fingerprint,
    region_file,
    write_image_regions,
    write_manifest,
)
from ezsd.data.proposal_store import ProposalStore
from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import (
    atomic_write_json,
    check_writable_dir,
    file_sha256,
    remove_stale_temps,
)
from ezsd.utils.names import names_difference

from .proposals import CropScorer, ProposalSettings, compute_proposals
from .region_features import FeatureSettings, image_regions
from .rpn_candidates import RPNCandidates
from .sharding import distributed_shard, finish_distributed, image_order_key, shard_records

__all__ = [
    "PrecomputeConfig",
    "run_precompute",
    "measure_ceiling",
]

logger = logging.getLogger(__name__)

STAGES = ("proposals", "features", "all")


@dataclasses.dataclass
class PrecomputeConfig:
    dataset: str
    output: str
    stage: str = "all"
    clip: Optional[str] = None  # the (re-normalized) CLIP that makes the targets
    proposal_clip: Optional[str] = None  # scores proposals; default: `clip`
    proposals_dir: Optional[str] = None  # default: output/proposals
    prompts: Sequence[str] = DEFAULT_PROMPTS
    proposal: ProposalSettings = ProposalSettings()
    rpn_config: Optional[str] = None  # rpn proposal mode: the RPN-only model's config ...
    rpn_weights: Optional[str] = None  # ... and checkpoint
    features: FeatureSettings = FeatureSettings()
    num_shards: int = 1
    shard_id: int = 0
    resume: bool = True
    strict: bool = False  # fail on an unreadable image instead of skipping it
    max_images: Optional[int] = None  # the first N images (by id) only
    device: str = "cpu"
    fp16: bool = False
    batch_size: int = 256
    progress: bool = True


def _dataset(cfg):
    if cfg.dataset not in DatasetCatalog.list():
        raise UserInputError(
            f"--dataset '{cfg.dataset}' is not a registered dataset "
            "(register your own with ezsd.data.register_ovd_dataset)"
        )
    meta = MetadataCatalog.get(cfg.dataset)
    base, novel = list(meta.get("base_classes", [])), list(meta.get("novel_classes", []))
    if not base:
        raise UserInputError(
            f"dataset '{cfg.dataset}' has no base_classes in its metadata: "
            "not an open-vocabulary dataset (see register_ovd_dataset)"
        )
    if cfg.stage != "proposals" and meta.get("novel_annotated", True):
        raise UserInputError(
            f"dataset '{cfg.dataset}' is not a training split (its metadata says novel_annotated="
            f"{meta.get('novel_annotated')}); "
            "region features read base boxes of a training split only"
        )
    return meta, base, novel


def _check_settings(path, settings, resume, what):
    """Refuse to resume into files made another way; record the settings of a new run."""
    if os.path.exists(path) and resume:
        with open(path) as f:
            old = json.load(f)
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            names = ""  # where the class lists first differ, when they do
            if "class_names" in diff and "class_names" in settings:
                theirs = old.get("class_names") or []
                names = f"; class names: {names_difference(theirs, settings['class_names'])}"
            raise UserInputError(
                f"{path}: {what} there were made with other settings "
                f"({', '.join(diff)} differ){names}; "
                "choose another output folder, or pass --no-resume to recompute them all"
            )
    else:
        atomic_write_json(path, settings, indent=1)


def _base_gt(record, meta, class_index, base_set):
    """(G,4) XYXY base boxes of a training image and their indices into the class names."""
    boxes, classes = [], []
    for anno in record.get("annotations", []):
        name = meta.thing_classes[anno["category_id"]]
        if name not in base_set:  # the dataset loaders refuse this already; never trust it
            raise UserInputError(
                f"image {record['image_id']} of '{record.get('file_name')}' has a "
                f"box of the non-base class '{name}'; training splits hold base boxes only"
            )
        boxes.append(BoxMode.convert(list(anno["bbox"]), anno["bbox_mode"], BoxMode.XYXY_ABS))
        classes.append(class_index[name])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), np.asarray(classes, np.int64)


class _Models:
    """CLIP models and text embeddings, loaded at first use (a fully resumed shard loads none)."""

    def __init__(self, cfg, class_names, device):
        self.cfg, self.class_names, self.device = cfg, class_names, device
        self._scorer = self._feature_model = self._candidates = None

    @property
    def scorer(self):
        if self._scorer is None:
            model = load_clip(self.cfg.proposal_clip, self.device, self.cfg.fp16)
            text = text_embeddings(model, self.class_names, self.cfg.prompts)
            self._scorer = CropScorer(model, text, self.cfg.proposal, self.cfg.batch_size)
        return self._scorer

    @property
    def candidates(self):
        if self._candidates is None and self.cfg.proposal.mode == "rpn":
            self._candidates = RPNCandidates(
                self.cfg.rpn_config,
                self.cfg.rpn_weights,
                self.cfg.proposal.rpn_candidates,
                self.device,
            )
        return self._candidates

    @property
    def feature_model(self):
        if self._feature_model is None:
            if self.cfg.clip == self.cfg.proposal_clip and self._scorer is not None:
                self._feature_model = self._scorer.model
            else:
                self._feature_model = load_clip(self.cfg.clip, self.device, self.cfg.fp16)
        return self._feature_model

    @property
    def logit_scale(self):
        return self._scorer.logit_scale if self._scorer is not None else None

    @property
    def proposal_encodings(self):
        return self._scorer.num_encodings if self._scorer is not None else 0


def _read_image(record, cfg, skipped):
    try:
        image = read_image(record["file_name"], format="RGB")
    except (OSError, ValueError, SyntaxError) as e:  # missing, truncated or not an image
        if cfg.strict:
            raise UserInputError(f"{record['file_name']}: cannot read image ({e})") from None
        logger.warning(f"{record['file_name']}: cannot read image ({e}); skipped")
        skipped.append(
            {"image_id": record["image_id"], "file_name": record["file_name"], "error": str(e)}
        )
        return None
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def _stored_count(path):
    with np.load(path) as data:
        return int(data["boxes"].shape[0])


def run_precompute(cfg):
    """Run this process's shard of the pre-computation; return a summary dict (see the end)."""
    if cfg.stage not in STAGES:
        raise UserInputError(f"--stage must be one of {STAGES}, not '{cfg.stage}'")
    meta, base, novel = _dataset(cfg)
    class_names = base + novel
    class_index = {n: i for i, n in enumerate(class_names)}
    need_features = cfg.stage in ("features", "all")
    need_proposals = cfg.stage in ("proposals", "all")
    cfg.proposal_clip = cfg.proposal_clip or cfg.clip
    if need_features and not cfg.clip:
        raise UserInputError(
            "--clip is required for the features stage (the CLIP that makes the targets)"
        )
    if not cfg.proposal_clip:
        raise UserInputError("--clip (or --proposal-clip) is required to score proposals")
    proposals_dir = cfg.proposals_dir or os.path.join(cfg.output, "proposals")
    store = ProposalStore(proposals_dir)
    # Before any work, and before settings.json or anything else there is touched.
    if need_features:
        check_writable_dir(cfg.output, "--output")
    if need_proposals:
        check_writable_dir(proposals_dir, "--proposals" if cfg.proposals_dir else "--output")
    # Hashes first: a missing CLIP file is a one-line error before any work.
    proposal_hash = clip_checkpoint_hash(cfg.proposal_clip)
    feature_hash = clip_checkpoint_hash(cfg.clip) if need_features else None
    if cfg.proposal.mode == "rpn":
        if not (cfg.rpn_config and cfg.rpn_weights):
            raise UserInputError(
                "--proposal-mode rpn needs --rpn-config and --rpn-weights "
                "(an RPN-only model trained on the base boxes)"
            )
        if not os.path.isfile(cfg.rpn_weights):
            raise UserInputError(f"--rpn-weights: checkpoint not found: {cfg.rpn_weights}")
        cfg.proposal = dataclasses.replace(
            cfg.proposal,
            rpn_weights_hash=file_sha256(cfg.rpn_weights),
            rpn_config_hash=config_digest(cfg.rpn_config, opts_name="--rpn-config"),
        )

    records = sorted(DatasetCatalog.get(cfg.dataset), key=image_order_key)
    data = dataset_fingerprint(cfg.dataset, records)  # all of them, before --max-images
    if cfg.max_images is not None:
        records = records[: cfg.max_images]
    if not records:
        raise UserInputError(f"dataset '{cfg.dataset}' has no images")
    if need_features and not any(r.get("annotations") for r in records):
        raise UserInputError(
            f"dataset '{cfg.dataset}' has no base boxes at all: nothing to distill"
        )
    spec, device = distributed_shard(cfg.num_shards, cfg.shard_id, cfg.device)
    mine = shard_records(records, spec.num_shards, spec.shard_id)
    logger.info(f"{spec}: {len(mine)} of {len(records)} images of {cfg.dataset}")

    proposal_settings = dict(
        dataset=cfg.dataset,
        data=data,
        class_names=class_names,
        prompts=list(cfg.prompts),
        clip_hash=proposal_hash,
        **cfg.proposal.to_dict(),
    )
    _check_settings(
        store.settings_file,
        proposal_settings,
        cfg.resume or cfg.stage == "features",
        "proposals",
    )
    if need_features:
        feature_settings = dict(
            dataset=cfg.dataset,
            clip=os.path.basename(cfg.clip),
            clip_hash=feature_hash,
            prompts=list(cfg.prompts),
            proposals={k: v for k, v in proposal_settings.items() if k not in ("dataset", "data")},
            **cfg.features.to_dict(),
        )
        _check_settings(
            os.path.join(cfg.output, "shards", "settings.json"),
            feature_settings,
            cfg.resume,
            "region features",
        )
    ids = [str(r["image_id"]) for r in mine]
    store.remove_stale_temps(ids)  # a killed run's, of our images
    remove_stale_temps(os.path.join(cfg.output, "regions"), [f"{i}.npz" for i in ids])

    models = _Models(cfg, class_names, device)
    skipped, proposal_counts, region_counts = [], {}, {}
    feature_encodings = resumed = no_gt = 0
    start = time.perf_counter()
    total_regions = done = 0
    desc = f"CLIP {cfg.stage} [{spec.name}]"
    bar = tqdm(
        mine,
        desc=desc,
        unit="img",
        dynamic_ncols=True,
        disable=not cfg.progress,
    )
    # Without the bar (logs of the pipeline runner), a line per tenth of the images instead.
    log_every = max(1, len(mine) // 10)
    for position, record in enumerate(bar, 1):
        image_id = str(record["image_id"])
        rfile = region_file(cfg.output, image_id)
        have_p = cfg.resume and image_id in store or cfg.stage == "features"
        if need_features and cfg.resume and os.path.exists(rfile):
            region_counts[image_id] = _stored_count(rfile)
            if image_id in store:
                proposal_counts[image_id] = store.counts(image_id)
            resumed += 1
            continue
        if not need_features and have_p:
            proposal_counts[image_id] = store.counts(image_id)
            resumed += 1
            continue
        image = _read_image(record, cfg, skipped)
        if image is None:
            continue
        image = image.to(device)
        if have_p:
            if image_id not in store:
                raise UserInputError(
                    f"{store.file(image_id)}: no proposals for image {image_id}; run --stage "
                    "proposals (or --stage all) first"
                )
            props = store.load(image_id)
        else:
            props = compute_proposals(models.scorer, image, cfg.proposal, models.candidates)
            store.write(image_id, props)
        proposal_counts[image_id] = (int(props["boxes"].shape[0]), int(props["num_encodings"]))
        num = int(props["boxes"].shape[0])
        if need_features:
            gt_boxes, gt_classes = _base_gt(record, meta, class_index, set(base))
            no_gt += gt_boxes.shape[0] == 0
            arrays = image_regions(
                models.feature_model,
                image,
                gt_boxes,
                gt_classes,
                props,
                len(class_names),
                len(base),
                cfg.features,
                cfg.batch_size,
            )
            write_image_regions(cfg.output, image_id, **arrays)
            num = len(arrays["boxes"])
            region_counts[image_id] = num
            feature_encodings += num
        total_regions += num
        done += 1
        elapsed = max(time.perf_counter() - start, 1e-6)
        bar.set_postfix_str(
            f"{done / elapsed:.2f} img/s, {total_regions / elapsed:.0f} regions/s", refresh=False
        )
        if not cfg.progress and (position % log_every == 0 or position == len(mine)):
            logger.info(f"{desc}: {position} of {len(mine)} images, {done / elapsed:.2f} img/s")
    bar.close()
    elapsed = time.perf_counter() - start

    # Per-shard records, then the merge by whoever completes the set.
    shard_info = dict(
        shard=spec.shard_id,
        num_shards=spec.num_shards,
        skipped=skipped,
        logit_scale=models.logit_scale,
        proposals={k: list(v) for k, v in proposal_counts.items()},
    )
    if need_proposals:
        atomic_write_json(os.path.join(proposals_dir, "shards", f"{spec.name}.json"), shard_info)
    if need_features:
        atomic_write_json(
            os.path.join(cfg.output, "shards", f"{spec.name}.json"),
            dict(shard_info, regions=region_counts, images_without_gt=no_gt),
        )
    merge = finish_distributed(spec)
    merged = False
    if merge:
        if need_proposals:
            merged = _merge_proposals(store, spec.num_shards, proposal_settings)
        if need_features:
            merged = _merge_features(
                cfg.output, spec.num_shards, feature_hash, class_names, base, feature_settings, data
            )
    return dict(
        shard=spec.name,
        images=len(mine),
        resumed=resumed,
        skipped=len(skipped),
        proposal_encodings=models.proposal_encodings,
        feature_encodings=feature_encodings,
        regions=total_regions,
        seconds=elapsed,
        merged=merged,
        proposals_dir=proposals_dir,
        output=cfg.output,
    )


def _shard_files(folder, num_shards):
    files = sorted(glob.glob(os.path.join(folder, "shards", f"*-of-{num_shards:05d}.json")))
    if len(files) != num_shards:
        return None
    out = []
    for path in files:
        with open(path) as f:
            out.append(json.load(f))
    return out


def _merge_proposals(store, num_shards, settings):
    shards = _shard_files(store.root, num_shards)
    if shards is None:
        return False
    store.write_manifest(
        settings,
        skipped_images=[x for s in shards for x in s["skipped"]],
        logit_scale=next((s["logit_scale"] for s in shards if s.get("logit_scale")), None),
        images={k: v for s in shards for k, v in s["proposals"].items()},
    )
    return True


def _merge_features(output, num_shards, clip_hash, class_names, base, settings, data):
    shards = _shard_files(output, num_shards)
    if shards is None:
        return False
    counts = dict(sorted((k, v) for s in shards for k, v in s["regions"].items()))
    extra = dict(
        skipped_images=[x for s in shards for x in s["skipped"]],
        images_without_gt=sum(s["images_without_gt"] for s in shards),
    )
    write_manifest(
        output, clip_hash, class_names, base, settings, counts, extra=extra, dataset=data
    )
    return True


@torch.no_grad()
def measure_ceiling(model, batch_size, num_batches=8):
    """Regions/s of the CLIP image encoder alone on pre-cropped tensors of `batch_size`."""
    device = model.visual.conv1.weight.device
    res = model.visual.input_resolution
    x = torch.randn(batch_size, 3, res, res, device=device, dtype=model.dtype)
    model.encode_image(x)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(num_batches):
        model.encode_image(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size * num_batches / (time.perf_counter() - start)
