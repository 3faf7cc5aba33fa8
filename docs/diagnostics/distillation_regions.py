"""Analysis script (docs/SHAPES_RESULTS.md section 8; not a tested tool): what the distilled CLIP
proposals of a ShapesOVD feature store hold. The training images are re-rendered from their seed
to recover every object, the unannotated novel ones included (for this analysis only; training
never sees them). Each of the first N stored proposals of an image (the ones the trainer distills,
N = MODEL.EZSD.DISTILL.NUM_PROPOSALS) is counted as background (IoU < 0.1 to every object), part
of an object (0.1-0.5) or a whole object (>= 0.5), base or novel, with the median CLIP confidence
(max softmax) of each kind; plus the share of the novel objects that some proposal covers at
IoU >= 0.5. Given TEXT_EMBEDDINGS (the .npy of all classes), it also prints the 10th / 50th / 90th
percentiles of each kind's stored objectness and of its region embedding's highest cosine to a
class name.

  python docs/diagnostics/distillation_regions.py FEATURE_STORE DATASET_DIR SEED N [TEXT_EMBEDDINGS]
"""
import collections, glob, json, os, sys
import numpy as np, torch
from torchvision.ops import box_iou
from ezsd.data.shapes_ovd.categories import CATEGORY_NAMES
from ezsd.data.shapes_ovd.generator import _SPLIT_SEED
from ezsd.data.shapes_ovd.scenes import render_scene

store, dataset_dir, seed, first = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
novel = set(json.load(open(os.path.join(dataset_dir, "split.json")))["novel"])
kinds, covered, novel_objects = collections.Counter(), 0, 0
text = np.load(sys.argv[5]) if len(sys.argv) > 5 else None
if text is not None:
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
confidence, objectness, max_cosine = (collections.defaultdict(list) for _ in range(3))
for path in sorted(glob.glob(os.path.join(store, "regions", "*.npz"))):
    image_id = int(os.path.basename(path)[:-4])
    _, objects = render_scene(np.random.default_rng([seed, _SPLIT_SEED["train"], image_id - 1]))
    boxes = []
    for _, mask in objects:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    is_novel = torch.tensor([CATEGORY_NAMES[c] in novel for c, _ in objects])
    regions = np.load(path)
    stored = {k: regions[k][~regions["is_gt"]][:first] for k in regions.files}
    proposals = torch.as_tensor(stored["boxes"]).float()
    embeddings = stored["embeddings"].astype(np.float32)
    cosine = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)) @ text.T if text is not None else None
    novel_objects += int(is_novel.sum())
    if not len(proposals) or not len(boxes):
        continue
    iou = box_iou(proposals, torch.tensor(boxes, dtype=torch.float32))
    best, which = iou.max(dim=1)
    for i, (b, w) in enumerate(zip(best.tolist(), which.tolist())):
        group = "novel" if is_novel[w] else "base"
        kind = "background" if b < 0.1 else f"{group} part" if b < 0.5 else f"{group} whole"
        kinds[kind] += 1
        confidence[kind].append(float(stored["confidence"][i]))
        objectness[kind].append(float(stored["objectness"][i]))
        if cosine is not None:
            max_cosine[kind].append(float(cosine[i].max()))
    covered += int((iou[:, is_novel] >= 0.5).any(dim=0).sum())
total = sum(kinds.values())
print({k: f"{v} ({100 * v / total:.1f}%)" for k, v in sorted(kinds.items())},
      {k: round(float(np.median(v)), 2) for k, v in sorted(confidence.items())},
      f"novel objects covered: {covered}/{novel_objects} ({covered / max(novel_objects, 1):.3f})")
percentiles = lambda values: {k: np.percentile(v, [10, 50, 90]).round(2).tolist() for k, v in sorted(values.items())}
print("objectness", percentiles(objectness))
if text is not None:
    print("highest cosine to a class name", percentiles(max_cosine))
