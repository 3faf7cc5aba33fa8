"""Zero-shot classification accuracy of CLIP on ground-truth box crops (the paper's domain-gap
measure: re-normalization is judged by it before and after, on base and on novel classes)."""

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode
from tqdm import tqdm

from .regions import CropSettings, encode_regions
from .text import DEFAULT_PROMPTS, text_embeddings

__all__ = ["crop_classification_accuracy"]


@torch.no_grad()
def crop_classification_accuracy(
    model,
    dataset_dicts,
    class_names,
    base_names,
    novel_names,
    prompts=DEFAULT_PROMPTS,
    crop=CropSettings(),
    batch_size=64,
):
    """Classify every non-crowd GT box crop by argmax cosine over ALL `class_names`.

    Args:
        dataset_dicts (list[dict]): detectron2 dataset dicts ("file_name", "annotations" with
            "bbox", "bbox_mode" and a contiguous "category_id" indexing `class_names`).
        base_names, novel_names (list[str]): the two groups, subsets of `class_names`.
        prompts, crop, batch_size: as `text_embeddings` and `encode_regions`.

    Returns:
        dict: "base-among-all" / "novel-among-all" / "all" accuracies in [0, 1] (None where a group
        has no box), "num_base" / "num_novel" / "num_all" box counts, "per_class" accuracy by
        name (None without boxes), "class_names", and "confusion" (C x C counts, rows = true,
        columns = predicted class).
    """
    class_names = list(class_names)
    index = {n: i for i, n in enumerate(class_names)}
    unknown = [n for n in list(base_names) + list(novel_names) if n not in index]
    if unknown:
        raise ValueError(f"base/novel names not among the class names: {unknown}")
    text = text_embeddings(model, class_names, prompts)
    confusion = np.zeros((len(class_names),) * 2, dtype=np.int64)
    for record in tqdm(dataset_dicts, desc="CLIP crop accuracy", unit="img"):
        annos = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        if not annos:
            continue
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
        image = read_image(record["file_name"], format="RGB")
        emb = encode_regions(model, image, boxes, crop, batch_size)
        pred = (F.normalize(emb, dim=-1) @ text.T).argmax(dim=1).cpu().numpy()
        np.add.at(confusion, ([a["category_id"] for a in annos], pred), 1)
    correct, total = np.diag(confusion), confusion.sum(axis=1)

    def accuracy(names):
        ids = [index[n] for n in names]
        n = int(total[ids].sum())
        return (float(correct[ids].sum()) / n if n else None), n

    base_acc, num_base = accuracy(base_names)
    novel_acc, num_novel = accuracy(novel_names)
    all_acc, num_all = accuracy(class_names)
    per_class = {n: float(c) / t if t else None for n, c, t in zip(class_names, correct, total)}
    return {
        "base-among-all": base_acc,
        "novel-among-all": novel_acc,
        "all": all_acc,
        "num_base": num_base,
        "num_novel": num_novel,
        "num_all": num_all,
        "per_class": per_class,
        "class_names": class_names,
        "confusion": confusion.tolist(),
    }
