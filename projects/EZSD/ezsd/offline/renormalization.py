"""CLIP re-normalization (EZSD idea 1): tune only CLIP's LayerNorms on base-class GT crops.

The detection images differ from CLIP's training images (camera, style, and the crops themselves:
1.2x context, zero padding). EZSD closes that gap by fine-tuning nothing but the LayerNorm
parameters (every parameter whose name contains `ln_`) of the image tower, optionally also of the
text tower, on crops of the *base* GT boxes of the detection training split:

    logits = 100 * cos(image embedding of the crop, text embedding of each base name)
    loss   = sigmoid binary cross-entropy against the one-hot base label (mean over crops and
             classes, as MMDetection's sigmoid CrossEntropyLoss reduces it)
    AdamW (lr 1e-4, wd 1e-4), gradient-norm clip 0.1, constant lr, 12 epochs (COCO),
    4 images per iteration, every base GT box of those images one sample.

Nothing but LayerNorm parameters can change: all other parameters (and buffers) are snapshotted
before training and checked bit for bit afterwards (`assert_frozen_unchanged`). Novel boxes are
never read here: the training samples come from a split that holds base boxes only, and a
category outside the base names is an error. Novel boxes appear only in the before/after crop
accuracy on the validation split (`ezsd.clip.crop_classification_accuracy`).

Files written by `renormalize_clip` in its output folder (each atomically):
    clip_renormalized.pt   the CLIP state dict: untouched weights in the source file's precision
                           (so they stay bit-identical to it), tuned LayerNorms in fp32
    renorm_state.pt        after every finished epoch: tuned parameters, optimizer state, epoch,
                           losses and the "before" report, for --resume
    renorm_report.json     settings, losses, crop accuracy before/after, the clean-domain guard
A re-run over a finished folder with the same settings is a no-op; a larger --epochs continues.
"""

import dataclasses
import json
import logging
import math
import os
import time
from typing import Sequence

import clip
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode
from tqdm import tqdm

from ezsd.clip import (
    DEFAULT_PROMPTS,
    clean_class_name,
    clip_checkpoint_hash,
    crop_classification_accuracy,
    load_clip,
    text_embeddings,
)
from ezsd.clip.regions import CLIP_MEAN, CLIP_STD, CropSettings, crop_regions, flatten_crop
from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import (
    atomic_write,
    atomic_write_json,
    check_writable_dir,
    remove_stale_temps,
)

__all__ = [
    "RenormSettings",
    "BaseBoxSamples",
    "layernorm_parameter_names",
    "frozen_snapshot",
    "assert_frozen_unchanged",
    "base_box_samples",
    "renormalization_loss",
    "train_layernorms",
    "save_renormalized_checkpoint",
    "clean_domain_accuracy",
    "renormalize_clip",
    "CHECKPOINT_NAME",
    "STATE_NAME",
    "REPORT_NAME",
]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "clip_renormalized.pt"
STATE_NAME = "renorm_state.pt"
REPORT_NAME = "renorm_report.json"
_STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class RenormSettings:
    """How the LayerNorms are tuned (defaults: the official EZSD recipe for COCO)."""

    epochs: int = 12
    images_per_batch: int = 4  # images per iteration; all their base GT boxes are the samples
    lr: float = 1e-4  # AdamW, constant
    weight_decay: float = 1e-4
    grad_clip: float = 0.1  # max L2 norm of the gradient of all tuned parameters
    logit_scale: float = 100.0  # logits = logit_scale * cos(image, text)
    tune_text_ln: bool = False  # also tune the text tower's LayerNorms
    # Also score crops against the novel *names* as negatives (never positives; no novel box is
    # read). Not in the official recipe; counters the drift of base-only negatives (see below).
    novel_negatives: bool = False
    prompts: Sequence[str] = DEFAULT_PROMPTS
    crop: CropSettings = CropSettings()  # recorded as crop_scale, min_crop_size
    seed: int = 0  # the image order of epoch e is a permutation drawn from (seed, e)
    crop_cache_mb: float = 1024.0  # keep crops in memory (made once) when they fit in this

    def __post_init__(self):
        object.__setattr__(self, "prompts", tuple(self.prompts))
        checks = (
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.images_per_batch >= 1, "images per batch must be >= 1"),
            (self.lr > 0, "the learning rate must be > 0"),
            (self.weight_decay >= 0, "weight decay must be >= 0"),
            (self.grad_clip > 0, "the gradient clip must be > 0"),
            (self.crop.scale > 0 and self.crop.min_size >= 0, "bad crop scale / min size"),
            (len(self.prompts) > 0, "at least one prompt template is needed"),
        )
        for ok, message in checks:
            if not ok:
                raise UserInputError(f"re-normalization settings: {message}")

    def fingerprint(self):
        """Everything that shapes the result except `epochs` (a run may be extended) and the
        crop cache (it changes memory use, not numbers)."""
        fields = flatten_crop(dataclasses.asdict(self), min_size_key="min_crop_size")
        fields.pop("epochs")
        fields.pop("crop_cache_mb")
        fields["prompts"] = list(self.prompts)
        return fields


def layernorm_parameter_names(model, tune_text_ln=False):
    """Names of the parameters to tune: every one containing `ln_` of the image tower
    (`visual.*`), and with `tune_text_ln` those of the text tower (`transformer.*`, `ln_final`)."""
    names = [
        n
        for n, _ in model.named_parameters()
        if "ln_" in n and (tune_text_ln or n.startswith("visual."))
    ]
    if not names:
        raise UserInputError("this CLIP has no LayerNorm parameters (names containing 'ln_')")
    return names


def frozen_snapshot(model, trainable_names):
    """Copies of every parameter and buffer that must not change."""
    trainable = set(trainable_names)
    return {
        n: t.detach().clone()
        for n, t in model.state_dict(keep_vars=True).items()
        if n not in trainable
    }


def _bits(tensor):
    """The raw bytes of a tensor (bitwise comparison: NaN equals NaN, -0.0 differs from 0.0)."""
    return tensor.detach().cpu().contiguous().view(-1).view(torch.uint8)


def assert_frozen_unchanged(model, snapshot):
    """Raise AssertionError unless every tensor of `snapshot` is bit-identical in `model`."""
    current = model.state_dict(keep_vars=True)
    changed = [
        n
        for n, before in snapshot.items()
        if n not in current
        or current[n].dtype != before.dtype
        or current[n].shape != before.shape
        or not torch.equal(_bits(current[n]), _bits(before))
    ]
    assert not changed, f"non-LayerNorm tensors changed during re-normalization: {changed[:5]}"


@dataclasses.dataclass
class BaseBoxSamples:
    """The training samples: per image, its file and its base GT boxes with base-class labels."""

    files: list  # str per image
    boxes: list  # float32 (n_i, 4) XYXY per image
    labels: list  # int64 (n_i,) indices into base_names per image
    base_names: list
    skipped_images: int = 0  # images without any base box

    @property
    def num_boxes(self):
        return int(sum(len(b) for b in self.boxes))


def base_box_samples(dataset_dicts, thing_classes, base_names):
    """Collect the base GT boxes of a training split (crowd boxes excluded).

    `category_id` of each annotation indexes `thing_classes`; a category that is not a base
    name is refused: novel boxes must never reach re-normalization.
    """
    base_index = {n: i for i, n in enumerate(base_names)}
    files, boxes, labels, skipped = [], [], [], 0
    for record in dataset_dicts:
        record_boxes, record_labels = [], []
        for anno in record.get("annotations", []):
            if anno.get("iscrowd", 0):
                continue
            name = thing_classes[anno["category_id"]]
            if name not in base_index:
                raise UserInputError(
                    f"{record['file_name']}: a box of '{name}', not a base class; re-normalization "
                    "trains on base boxes only (use the training split)"
                )
            record_boxes.append(
                BoxMode.convert(list(anno["bbox"]), anno["bbox_mode"], BoxMode.XYXY_ABS)
            )
            record_labels.append(base_index[name])
        if not record_boxes:
            skipped += 1
            continue
        files.append(record["file_name"])
        boxes.append(np.asarray(record_boxes, dtype=np.float32).reshape(-1, 4))
        labels.append(np.asarray(record_labels, dtype=np.int64))
    return BaseBoxSamples(files, boxes, labels, list(base_names), skipped)


def renormalization_loss(image_emb, text_emb, labels, logit_scale=100.0):
    """Sigmoid BCE of `logit_scale * cos` against one-hot labels, mean over all elements.

    image_emb (N, D) raw CLIP image embeddings; text_emb (C, D) (normalised or not);
    labels (N,) indices into the C classes.
    """
    logits = (
        logit_scale
        * F.normalize(image_emb.float(), dim=-1)
        @ F.normalize(text_emb.float(), dim=-1).T
    )
    targets = F.one_hot(labels, num_classes=text_emb.shape[0]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, targets)


def _text_tokens(model, names, prompts):
    """(P, C, L) tokens: one row per prompt template and class."""
    try:
        return torch.stack(
            [
                clip.tokenize(
                    [p.format(clean_class_name(n)) for n in names],
                    context_length=model.context_length,
                )
                for p in prompts
            ]
        )
    except RuntimeError as e:  # a prompt longer than this CLIP's context
        raise UserInputError(f"{e} (prompts {list(prompts)})") from None


def _text_features(model, tokens):
    """Differentiable version of `text_embeddings`: prompt-ensembled, L2-normalised (C, D)."""
    total = sum(F.normalize(model.encode_text(t).float(), dim=-1) for t in tokens)
    return F.normalize(total, dim=-1)


class _CropSource:
    """Normalised CLIP crops of an image's base boxes; made once and kept when they fit."""

    def __init__(self, samples, resolution, crop, device, cache_mb):
        self.samples, self.resolution = samples, resolution
        self.crop, self.device = crop, device
        size_mb = samples.num_boxes * 3 * resolution**2 * 4 / 2**20
        self.cache = {} if size_mb <= cache_mb else None
        if self.cache is None:
            logger.info(f"crops ({size_mb:.0f} MB) exceed the crop cache; cropping every epoch")

    def __call__(self, index):
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        image = read_image(self.samples.files[index], format="RGB")
        crops = crop_regions(
            torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).to(self.device),
            torch.from_numpy(self.samples.boxes[index]),
            self.resolution,
            self.crop,
        )
        if self.cache is not None:
            self.cache[index] = crops
        return crops


def epoch_order(num_images, seed, epoch):
    """The image order of `epoch` (0-based): the same for a resumed or an uninterrupted run."""
    return np.random.default_rng([seed, epoch]).permutation(num_images)


def train_layernorms(
    model, samples, settings, state=None, on_epoch_end=None, progress=True, negative_names=()
):
    """Tune the LayerNorms of `model` (in place) on `samples` for `settings.epochs` epochs.

    Args:
        model: a CLIP (fp32) on its device.
        samples (BaseBoxSamples): the training crops' sources.
        settings (RenormSettings)
        negative_names (list[str]): names scored as negatives only, after the base names (the
            novel names with `settings.novel_negatives`).
        state (dict or None): as returned before by this function / passed to `on_epoch_end`, to
            continue after its epoch ("epoch", "trainable", "optimizer", "losses").
        on_epoch_end (callable(state) or None): called after every epoch (to save the state).

    Returns:
        dict: the final state. Raises AssertionError if any non-LayerNorm tensor changed.
    """
    device = model.visual.conv1.weight.device
    names = layernorm_parameter_names(model, settings.tune_text_ln)
    params = dict(model.named_parameters())
    for n, p in params.items():
        p.requires_grad_(n in names)
    trainable = [params[n] for n in names]
    snapshot = frozen_snapshot(model, names)
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    state = dict(state or {"epoch": 0, "losses": []})
    if state.get("trainable") is not None:
        with torch.no_grad():
            for n in names:
                params[n].copy_(state["trainable"][n])
        optimizer.load_state_dict(state["optimizer"])
    start = state["epoch"]

    text_names = list(samples.base_names) + [
        n for n in negative_names if n not in samples.base_names
    ]
    tokens = _text_tokens(model, text_names, settings.prompts).to(device)
    text = None
    if not settings.tune_text_ln:
        with torch.no_grad():
            text = _text_features(model, tokens)
    crops_of = _CropSource(
        samples,
        model.visual.input_resolution,
        settings.crop,
        device,
        settings.crop_cache_mb,
    )
    labels_of = [torch.from_numpy(lab).to(device) for lab in samples.labels]
    num_images = len(samples.files)
    iters_per_epoch = math.ceil(num_images / settings.images_per_batch)
    for epoch in range(start, settings.epochs):
        order = epoch_order(num_images, settings.seed, epoch)
        total, count = 0.0, 0
        bar = tqdm(
            range(iters_per_epoch),
            desc=f"renorm epoch {epoch + 1}/{settings.epochs}",
            unit="it",
            disable=not progress,
        )
        for it in bar:
            batch = order[it * settings.images_per_batch : (it + 1) * settings.images_per_batch]
            crops = torch.cat([crops_of(int(i)) for i in batch])
            labels = torch.cat([labels_of[int(i)] for i in batch])
            image_emb = model.encode_image(crops)
            text_emb = text if text is not None else _text_features(model, tokens)
            loss = renormalization_loss(image_emb, text_emb, labels, settings.logit_scale)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"re-normalization loss is {loss.item()} (epoch "
                    f"{epoch + 1}, iteration {it + 1})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
            optimizer.step()
            total += loss.item() * len(labels)
            count += len(labels)
            bar.set_postfix(loss=f"{loss.item():.4f}", avg=f"{total / count:.4f}")
        bar.close()
        state = {
            "epoch": epoch + 1,
            "losses": list(state["losses"]) + [total / max(count, 1)],
            "trainable": {n: params[n].detach().cpu().clone() for n in names},
            "optimizer": optimizer.state_dict(),
        }
        if on_epoch_end is not None:
            on_epoch_end(state)
        # After on_epoch_end: the line says the epoch is done (saved), never to be redone.
        logger.info(
            f"re-normalization epoch {epoch + 1}/{settings.epochs}: mean loss "
            f"{state['losses'][-1]:.4f}"
        )
    for p in params.values():
        p.requires_grad_(False)
    assert_frozen_unchanged(model, snapshot)
    return state


def save_renormalized_checkpoint(model, path, tuned_names, fp16=True):
    """Write a CLIP state dict `load_clip` reads: tuned tensors in fp32 (fp16 would round a
    LayerNorm weight near 1 to steps of 1e-3, coarser than many lr-1e-4 updates), the others in
    fp16 when `fp16` (as `save_clip_checkpoint`), so that they stay bit-identical to an fp16
    source file. `load_clip` reads mixed precisions exactly."""
    tuned = set(tuned_names)
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if fp16 and value.is_floating_point() and key not in tuned:
            value = value.half()
        state[key] = value.clone()
    with atomic_write(path) as f:
        torch.save(state, f)


def _source_is_fp16(clip_path):
    """Whether a local CLIP file stores fp16 weights (OpenAI names download fp16 archives)."""
    if not os.path.isfile(clip_path):
        return True
    try:
        state = torch.load(clip_path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (TorchScript archive: OpenAI's, fp16)
        return True
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    weight = state.get("visual.conv1.weight") if isinstance(state, dict) else None
    return weight is None or weight.dtype == torch.float16


@torch.no_grad()
def clean_domain_accuracy(
    model,
    images,
    labels,
    class_names,
    base_names,
    novel_names,
    prompts=DEFAULT_PROMPTS,
    batch_size=128,
):
    """Zero-shot accuracy of CLIP on whole images of its own (clean) domain, base and novel.

    A guard against re-normalization drift: tuning on base names only must not break what CLIP
    knew. images: uint8 (N, H, W, 3) RGB; labels: (N,) indices into `class_names`.
    """
    device = model.visual.conv1.weight.device
    text = text_embeddings(model, class_names, prompts)
    resolution = model.visual.input_resolution
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
    preds = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).to(device)
        x = x.permute(0, 3, 1, 2).float() / 255
        if x.shape[-1] != resolution or x.shape[-2] != resolution:
            x = F.interpolate(
                x, size=(resolution, resolution), mode="bicubic", align_corners=False
            ).clamp(0, 1)
        emb = model.encode_image(((x - mean) / std).to(model.dtype)).float()
        preds.append((F.normalize(emb, dim=-1) @ text.T).argmax(dim=1).cpu())
    pred = torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)
    labels = np.asarray(labels)
    result = {}
    for key, names in (("base", base_names), ("novel", novel_names), ("all", class_names)):
        ids = [class_names.index(n) for n in names]
        mask = np.isin(labels, ids)
        result[key] = float((pred[mask] == labels[mask]).mean()) if mask.any() else None
        result[f"num_{key}"] = int(mask.sum())
    return result


def _drift(report, base_names, novel_names):
    """Fractions of base crops predicted as a novel name and of novel crops predicted as base
    (the drift DESIGN.md warns about: base-only tuning never sees novel names as negatives)."""
    names, confusion = report["class_names"], np.asarray(report["confusion"])
    base_ids = [names.index(n) for n in base_names]
    novel_ids = [names.index(n) for n in novel_names]
    out = {}
    for key, rows, cols in (
        ("base_predicted_novel", base_ids, novel_ids),
        ("novel_predicted_base", novel_ids, base_ids),
    ):
        n = confusion[rows].sum() if rows else 0
        out[key] = float(confusion[np.ix_(rows, cols)].sum() / n) if n else None
    return out


def renormalize_clip(
    clip_path,
    output_dir,
    train_samples,
    val_dicts,
    val_classes,
    base_names,
    novel_names,
    settings=RenormSettings(),
    resume=True,
    device="cpu",
    clean_domain=None,
    progress=True,
    info=None,
):
    """The whole re-normalization run: evaluate, train (resumably), save, evaluate, report.

    Args:
        clip_path (str): the CLIP to re-normalize (file or OpenAI name).
        output_dir (str): where CHECKPOINT_NAME, STATE_NAME and REPORT_NAME go.
        train_samples (BaseBoxSamples): from `base_box_samples` of the training split.
        val_dicts (list[dict]): validation dataset dicts (all boxes; ids index `val_classes`).
        base_names, novel_names (list[str]): the split, subsets of `val_classes`.
        clean_domain (tuple or None): (uint8 images (N,H,W,3), labels into val_classes) for the
            clean-domain guard, or None to skip it.
        info (dict or None): extra entries for the report (dataset names, ...); they also enter
            the resume fingerprint.

    Returns:
        dict: the report (also written to output_dir/REPORT_NAME).
    """
    start_time, start_cpu = time.time(), time.process_time()
    ckpt_path = os.path.join(output_dir, CHECKPOINT_NAME)
    state_path = os.path.join(output_dir, STATE_NAME)
    report_path = os.path.join(output_dir, REPORT_NAME)
    if train_samples.num_boxes == 0:
        raise UserInputError("the training split has no base boxes to re-normalize on")
    check_writable_dir(output_dir, "--output-dir")  # before the slow "before" evaluation
    # Temp files of a run killed while writing (atomic_write), never to be renamed now.
    remove_stale_temps(output_dir, [CHECKPOINT_NAME, STATE_NAME, REPORT_NAME])
    fingerprint = {
        "clip_hash": clip_checkpoint_hash(clip_path),
        "settings": settings.fingerprint(),
        "num_train_images": len(train_samples.files),
        "num_train_boxes": train_samples.num_boxes,
        "base_names": list(base_names),
        **(info or {}),
    }
    state = None
    if resume and os.path.isfile(state_path):
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("version") != _STATE_VERSION or state.get("fingerprint") != fingerprint:
            raise UserInputError(
                f"{state_path} was made with other settings, CLIP or data; use another "
                "--output-dir or --no-resume to start over"
            )
        if state["epoch"] > settings.epochs:
            raise UserInputError(
                f"{state_path} has already {state['epoch']} epochs, more than --epochs "
                f"{settings.epochs}; use another --output-dir or --no-resume"
            )
        if (
            state["epoch"] == settings.epochs
            and os.path.isfile(report_path)
            and os.path.isfile(ckpt_path)
        ):
            with open(report_path) as f:
                report = json.load(f)
            if report.get("epochs_done") == settings.epochs and report.get(
                "checkpoint_hash"
            ) == clip_checkpoint_hash(ckpt_path):
                logger.info(f"{output_dir}: re-normalization already finished; nothing to do")
                return report
        logger.info(f"resuming re-normalization after epoch {state['epoch']} from {state_path}")

    model = load_clip(clip_path, device=device)  # fp32 for training

    def evaluate(clip_model):
        """GT-crop accuracy on the val split and clean-domain accuracy (None without images)."""
        crops = crop_classification_accuracy(
            clip_model,
            val_dicts,
            val_classes,
            base_names,
            novel_names,
            prompts=settings.prompts,
            crop=settings.crop,
        )
        if clean_domain is None:
            return crops, None
        return crops, clean_domain_accuracy(
            clip_model, *clean_domain, val_classes, base_names, novel_names, settings.prompts
        )

    if state is None:
        before, clean_before = evaluate(model)
        # Plain JSON types (the report holds NumPy floats), so the state file loads weights-only.
        before, clean_before = json.loads(json.dumps([before, clean_before]))
        state = {"epoch": 0, "losses": [], "before": before, "clean_before": clean_before}
    before, clean_before = state["before"], state["clean_before"]

    def save_state(s):
        full = dict(
            s,
            version=_STATE_VERSION,
            fingerprint=fingerprint,
            before=before,
            clean_before=clean_before,
        )
        with atomic_write(state_path) as f:
            torch.save(full, f)

    if state["epoch"] == 0:
        save_state(state)  # the "before" evaluation is not redone after a kill
    train_start, train_cpu = time.time(), time.process_time()
    negatives = list(novel_names) if settings.novel_negatives else []
    state = train_layernorms(
        model,
        train_samples,
        settings,
        state=state,
        on_epoch_end=save_state,
        progress=progress,
        negative_names=negatives,
    )
    train_seconds, train_cpu = time.time() - train_start, time.process_time() - train_cpu
    names = layernorm_parameter_names(model, settings.tune_text_ln)
    save_renormalized_checkpoint(model, ckpt_path, names, fp16=_source_is_fp16(clip_path))

    tuned = load_clip(ckpt_path, device=device)  # evaluate what downstream tools will load
    after, clean_after = evaluate(tuned)
    headline = ("base-among-all", "novel-among-all", "all", "num_base", "num_novel", "num_all")
    report = {
        "clip": os.fspath(clip_path),
        "clip_hash": fingerprint["clip_hash"],
        "checkpoint": ckpt_path,
        "checkpoint_hash": clip_checkpoint_hash(ckpt_path),
        **(info or {}),
        "settings": dict(settings.fingerprint(), epochs=settings.epochs),
        "epochs_done": state["epoch"],
        "num_train_images": len(train_samples.files),
        "num_train_boxes": train_samples.num_boxes,
        "skipped_train_images_without_base_boxes": train_samples.skipped_images,
        "tuned_parameters": names,
        "num_tuned_values": int(sum(model.state_dict()[n].numel() for n in names)),
        "loss_per_epoch": state["losses"],
        "num_val_images": len(val_dicts),
        "base_names": list(base_names),
        "novel_names": list(novel_names),
        "before": {k: before[k] for k in headline},
        "after": {k: after[k] for k in headline},
        "drift_before": _drift(before, base_names, novel_names),
        "drift_after": _drift(after, base_names, novel_names),
        "clean_domain_before": clean_before,
        "clean_domain_after": clean_after,
        "per_class_before": before["per_class"],
        "per_class_after": after["per_class"],
        "class_names": list(val_classes),
        "confusion_before": before["confusion"],
        "confusion_after": after["confusion"],
        # Wall and CPU (all threads) seconds: on a shared machine the CPU time is the steadier.
        "train_seconds_this_run": round(train_seconds, 1),
        "train_cpu_seconds_this_run": round(train_cpu, 1),
        "seconds_this_run": round(time.time() - start_time, 1),
        "cpu_seconds_this_run": round(time.process_time() - start_cpu, 1),
    }
    atomic_write_json(report_path, report, indent=1)
    return report
