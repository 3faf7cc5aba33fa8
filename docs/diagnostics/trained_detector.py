"""Shared by the analysis scripts here: a trained EZSD detector on the CPU, and the images of
shapes_ovd_val resized as its test input."""
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode

import ezsd  # noqa: F401  (registers the builtin datasets)
from ezsd import add_ezsd_config
from ezsd.evaluation import OVDCOCOEvaluator


def load_detector(config_file, weights, opts=()):
    """(cfg, model in eval mode) of a training run's config.yaml and checkpoint; `opts` override."""
    cfg = get_cfg()
    add_ezsd_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    return cfg, model


def val_inputs(cfg, dataset="shapes_ovd_val"):
    """(record, resize transform, CHW float image at the test size, original (height, width)) for
    every image of `dataset`, as detectron2's DefaultPredictor prepares them."""
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    for record in DatasetCatalog.get(dataset):
        image = read_image(record["file_name"], format=cfg.INPUT.FORMAT)
        transform = resize.get_transform(image)
        tensor = torch.as_tensor(transform.apply_image(image).astype("float32").transpose(2, 0, 1))
        yield record, transform, tensor, image.shape[:2]


def gt_boxes(record, transform):
    """The record's annotated boxes, XYXY at the test size, as a float tensor (N, 4)."""
    boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"]]
    return torch.tensor(transform.apply_box(np.array(boxes).reshape(-1, 4)), dtype=torch.float32)


def backbone_features(model, image):
    """(ImageList, FPN features) of one test-size image."""
    images = model.preprocess_image([{"image": image}])
    return images, model.backbone(images.tensor)


def box_head_outputs(model, features, boxes):
    """(region embeddings, box-regression features) of the ROI box head on `boxes` (R, 4)."""
    heads = model.roi_heads
    pooled = heads.box_pooler([features[f] for f in heads.box_in_features], [Boxes(boxes)])
    return heads.box_head(pooled, num_reg=len(boxes))


def val_ap50(cfg, model):
    """{AP50_base, AP50_novel, AP50_all} (0-100, one decimal) of the model on shapes_ovd_val."""
    evaluator = OVDCOCOEvaluator("shapes_ovd_val", tasks=("bbox",), output_dir=None)
    evaluator.reset()
    with torch.no_grad():
        for record, _, image, (height, width) in val_inputs(cfg):
            evaluator.process([record], [model([{"image": image, "height": height, "width": width}])[0]])
    bbox = evaluator.evaluate()["bbox"]
    return {k: round(bbox[k], 1) for k in ("AP50_base", "AP50_novel", "AP50_all")}
