"""The standard COCO open-vocabulary split (OVR-CNN, used by EZSD): 48 base and 17 novel classes.

Both lists are in COCO category-id order, the order of contiguous ids in detectron2.
"""

COCO_OVD_BASE_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "train", "truck", "boat", "bench", "bird", "horse",
    "sheep", "bear", "zebra", "giraffe", "backpack", "handbag", "suitcase", "frisbee", "skis",
    "kite", "surfboard", "bottle", "fork", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "pizza", "donut", "chair", "bed", "toilet", "tv", "laptop",
    "mouse", "remote", "microwave", "oven", "toaster", "refrigerator", "book", "clock", "vase",
    "toothbrush",
)  # fmt: skip

COCO_OVD_NOVEL_CLASSES = (
    "airplane", "bus", "cat", "dog", "cow", "elephant", "umbrella", "tie", "snowboard",
    "skateboard", "cup", "knife", "cake", "couch", "keyboard", "sink", "scissors",
)  # fmt: skip
