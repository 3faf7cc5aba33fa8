"""The open-vocabulary proportions of a COCO-format split, to set beside COCO's
(datasets/README.md)."""

import json
from collections import Counter

__all__ = ["split_statistics", "format_statistics"]

# COCO's object-size classes (by visible area, in pixels of its ~640x480 images), rescaled to an
# image of `image_size` pixels so that "small" means the same fraction of the image.
_COCO_IMAGE_SIDE = (640 * 480) ** 0.5
_COCO_SMALL, _COCO_LARGE = 32**2, 96**2


def split_statistics(json_file, novel_classes):
    """Category counts, novel share of instances, objects per image and size fractions of a
    split."""
    with open(json_file) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    counts = Counter(names[a["category_id"]] for a in coco["annotations"])
    total = sum(counts.values())
    side = max(max(im["height"], im["width"]) for im in coco["images"])
    scale = (side / _COCO_IMAGE_SIDE) ** 2
    areas = [a["area"] for a in coco["annotations"]]
    small = sum(a < _COCO_SMALL * scale for a in areas)
    large = sum(a > _COCO_LARGE * scale for a in areas)
    novel = set(novel_classes)
    return {
        "images": len(coco["images"]),
        "instances": total,
        "objects_per_image": total / max(1, len(coco["images"])),
        "novel_share": sum(n for c, n in counts.items() if c in novel) / max(1, total),
        "small_medium_large": [
            small / max(1, total),
            (total - small - large) / max(1, total),
            large / max(1, total),
        ],
        "instances_per_category": dict(counts.most_common()),
    }


def format_statistics(stats, novel_classes):
    """A few lines for a terminal: the proportions, then each category's count (novel starred)."""
    small, medium, large = (round(100 * x) for x in stats["small_medium_large"])
    per_category = ", ".join(
        f"{c}{'*' if c in novel_classes else ''} {n}"
        for c, n in stats["instances_per_category"].items()
    )
    return (
        f"{stats['images']} images, {stats['instances']} objects "
        f"({stats['objects_per_image']:.1f} per image), novel share "
        f"{100 * stats['novel_share']:.1f}%, small/medium/large {small}/{medium}/{large}%\n"
        f"  objects per category (* novel): {per_category}"
    )
