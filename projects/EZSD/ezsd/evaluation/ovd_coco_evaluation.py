"""COCO-style evaluation that also reports AP on the base and on the novel classes."""

import json
import logging
import os

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.logger import create_small_table

from ezsd.data.feature_store import check_made_from, dataset_fingerprint
from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import atomic_write_json

__all__ = [
    "OVDCOCOEvaluator",
    "subset_average_precision",
    "ovd_class_groups",
    "results_dataset_file",
    "check_results_dataset",
]

OVD_METRICS_FILE = "ovd_metrics.json"
OVD_METRICS = tuple(f"{m}_{g}" for m in ("AP50", "AP") for g in ("base", "novel", "all"))
RESULTS_FILE = "coco_instances_results.json"  # the detections detectron2's COCOEvaluator writes

logger = logging.getLogger(__name__)


def subset_average_precision(coco_eval, class_names, iou=None):
    """Mean per-class AP (0-100) over the classes named `class_names`, from a run COCOeval.

    Equal to evaluating with `params.catIds` restricted to those classes, since COCO evaluates
    each category independently. `iou=None` averages IoU 0.5:0.95; otherwise a single threshold.
    Classes without ground truth are left out, as COCO does; NaN if none is left.
    """
    precision = coco_eval.eval["precision"]  # (iou, recall, class, area, max dets)
    if iou is not None:
        precision = precision[np.isclose(coco_eval.params.iouThrs, iou)]
    cat_names = [c["name"] for c in coco_eval.cocoGt.loadCats(coco_eval.params.catIds)]
    wanted = set(class_names)
    per_class = []
    for k, name in enumerate(cat_names):
        if name in wanted:
            p = precision[:, :, k, 0, -1]  # all areas, the largest max-dets setting
            p = p[p > -1]
            if p.size:
                per_class.append(np.mean(p))
    return float(np.mean(per_class) * 100) if per_class else float("nan")


def ovd_class_groups(metadata, category_names, source):
    """{"base": names, "novel": names, "all": names} from the dataset's metadata, every name
    checked against `category_names` (those of the ground truth `source`): a name that is not
    there is a one-line UserInputError (dropping it would change the figure silently). A split
    without novel boxes (metadata novel_annotated False) has no "novel" group, and "all" = base."""
    base, novel = list(metadata.base_classes), list(metadata.novel_classes)
    if metadata.get("novel_annotated") is False:
        novel = []
    known = set(category_names)
    for group, names in (("base", base), ("novel", novel)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserInputError(
                f"{source}: has no category named {unknown[:5]} ({len(unknown)} of the {group} "
                f"classes of dataset '{metadata.name}'); the evaluation would leave them out"
            )
    groups = {"base": base, "novel": novel, "all": base + novel}
    return {k: v for k, v in groups.items() if v}


def results_dataset_file(results_file):
    """The file beside a COCO results file that records the data its image ids belong to."""
    return os.path.splitext(results_file)[0] + ".dataset.json"


def check_results_dataset(results_file, dataset_name, records, option):
    """Refuse the COCO results `results_file` (given with the command-line `option`) when the
    file beside it records other data than `dataset_name` (whose dicts are `records`): image ids
    alone do not tell, every ShapesOVD split numbers its images from 1. Results without that
    file (of another tool or an older version) are used with a warning."""
    path = results_dataset_file(results_file)
    if not os.path.isfile(path):
        logger.warning(
            f"{option} {results_file}: no {os.path.basename(path)} beside it, so its images are "
            f"checked against '{dataset_name}' by their ids only"
        )
        return
    with open(path) as f:
        made = json.load(f)
    check_made_from(
        path, made, dataset_name, records, f"{option} is evaluated on", "evaluate it on that one"
    )


class OVDCOCOEvaluator(COCOEvaluator):
    """A COCOEvaluator whose results also hold AP50_{base,novel,all} and AP_{base,novel,all}.

    Base and novel class names come from the dataset's MetadataCatalog entry. The figures are
    returned in each task's results and written to `output_dir/ovd_metrics.json`; beside the
    detections (coco_instances_results.json) it writes the dataset's fingerprint
    (`results_dataset_file`), so that the tools reading them can refuse those of other data.
    """

    def __init__(self, dataset_name, *args, **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        if self._do_evaluation:
            # pycocotools >= 2.0.9 fails on ground truth without "info", which COCO-format
            # files written by other tools often lack.
            self._coco_api.dataset.setdefault("info", {})
            if not hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
                # The dataset was not loaded in this process (e.g. evaluating saved predictions):
                # derive detectron2's id mapping (category ids in sorted order) from the json.
                cat_ids = sorted(self._coco_api.getCatIds())
                self._metadata.thing_dataset_id_to_contiguous_id = {
                    c: i for i, c in enumerate(cat_ids)
                }
            # refuse base/novel names missing from the ground truth now, not after inference
            cat_names = [c["name"] for c in self._coco_api.loadCats(self._coco_api.getCatIds())]
            ovd_class_groups(self._metadata, cat_names, self._metadata.json_file)

    def evaluate(self, img_ids=None):
        results = super().evaluate(img_ids)
        ovd = {
            task: {k: v for k, v in metrics.items() if k in OVD_METRICS}
            for task, metrics in results.items()
            if task != "box_proposals"
        }
        if self._output_dir and ovd:  # results are empty off the main process
            atomic_write_json(os.path.join(self._output_dir, OVD_METRICS_FILE), ovd, indent=1)
            detections = os.path.join(self._output_dir, RESULTS_FILE)
            if os.path.isfile(detections):
                name = self._metadata.name
                atomic_write_json(
                    results_dataset_file(detections),
                    dataset_fingerprint(name, DatasetCatalog.get(name)),
                    indent=1,
                )
        return results

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if iou_type == "keypoints":
            return results
        cat_names = [c["name"] for c in self._coco_api.loadCats(self._coco_api.getCatIds())]
        groups = ovd_class_groups(self._metadata, cat_names, self._metadata.json_file)
        ovd = {}
        for group, names in groups.items():
            for metric, iou in (("AP50", 0.5), ("AP", None)):
                ovd[f"{metric}_{group}"] = (
                    float("nan")
                    if coco_eval is None
                    else subset_average_precision(coco_eval, names, iou)
                )
        self._logger.info(f"Open-vocabulary {iou_type} results:\n" + create_small_table(ovd))
        results.update(ovd)
        return results
