"""LVIS evaluation (AP, APr, APc, APf) that runs with NumPy 2, plus base/novel AP like COCO's."""

import contextlib
import itertools
import json
import os

import numpy as np
from detectron2.evaluation import LVISEvaluator
from detectron2.utils.logger import create_small_table

from ezsd.utils.file_io import atomic_write_json

from .ovd_coco_evaluation import OVD_METRICS, OVD_METRICS_FILE, ovd_class_groups

__all__ = ["OVDLVISEvaluator", "lvis_subset_average_precision"]

LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


@contextlib.contextmanager
def _numpy_float_alias():
    """lvis==0.5.3 calls `np.float`, which NumPy 1.24 removed; alias it to `float` meanwhile."""
    missing = "float" not in np.__dict__
    if missing:
        np.float = float
    try:
        yield
    finally:
        if missing:
            del np.float


def lvis_subset_average_precision(lvis_eval, category_ids, iou=None):
    """Mean AP (0-100) over the LVIS categories `category_ids` of a run LVISEval, as LVIS averages
    (every valid precision entry of those categories, all areas); `iou=None`: IoU 0.5:0.95,
    otherwise that threshold. NaN when none of them has ground truth."""
    precision = lvis_eval.eval["precision"]  # (iou, recall, category, area)
    if iou is not None:
        precision = precision[np.isclose(lvis_eval.params.iou_thrs, iou)]
    wanted = set(category_ids)
    index = [k for k, c in enumerate(lvis_eval.params.cat_ids) if c in wanted]
    p = precision[:, :, index, 0]
    p = p[p > -1]
    return float(np.mean(p) * 100) if p.size else float("nan")


class OVDLVISEvaluator(LVISEvaluator):
    """detectron2's LVISEvaluator, usable with NumPy 2, whose results also hold
    AP50_{base,novel,all} and AP_{base,novel,all} (base = frequent + common, novel = rare, from the
    dataset's metadata) and which writes them, with APr/APc/APf, to `output_dir/ovd_metrics.json`.
    On LVIS, AP_novel is APr."""

    def __init__(self, dataset_name, *args, **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        self._lvis_ids = {}
        if self._do_evaluation:
            # LVIS category id of each name (the metadata's names are in contiguous-id order)
            contiguous_to_lvis = {v: k for k, v in self._id_mapping().items()}
            self._lvis_ids = {
                n: contiguous_to_lvis[i]
                for i, n in enumerate(self._metadata.thing_classes)
                if i in contiguous_to_lvis
            }
            known = [n for n, c in self._lvis_ids.items() if c in self._lvis_api.cats]
            self._groups = ovd_class_groups(self._metadata, known, self._metadata.json_file)

    def _id_mapping(self):
        """LVIS category id -> contiguous id: the metadata's, or detectron2's LVIS default
        (id - 1)."""
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if mapping is None:
            mapping = {i + 1: i for i in range(len(self._metadata.thing_classes))}
        return mapping

    def evaluate(self):
        with _numpy_float_alias():
            results = super().evaluate()
        if self._output_dir and results:  # empty off the main process
            ovd = {
                task: {k: v for k, v in metrics.items() if k in OVD_METRICS or k in LVIS_METRICS}
                for task, metrics in results.items()
                if task != "box_proposals"
            }
            atomic_write_json(os.path.join(self._output_dir, OVD_METRICS_FILE), ovd, indent=1)
        return results

    def _eval_predictions(self, predictions):
        """detectron2's, with one LVISEval per task whose per-category precision also gives the
        base/novel figures."""
        lvis_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(lvis_results)
        reverse = {v: k for k, v in self._id_mapping().items()}
        for result in lvis_results:
            result["category_id"] = reverse[result["category_id"]]
        if self._output_dir:
            with open(os.path.join(self._output_dir, "lvis_instances_results.json"), "w") as f:
                json.dump(lvis_results, f)
        if not self._do_evaluation:
            return
        for task in sorted(tasks):
            self._results[task] = self._evaluate_task(lvis_results, task)

    def _evaluate_task(self, lvis_results, task):
        from lvis import LVISEval, LVISResults

        metrics = {m: float("nan") for m in LVIS_METRICS}
        ovd = {f"{m}_{g}": float("nan") for m in ("AP50", "AP") for g in self._groups}
        if lvis_results:
            if task == "segm":  # mask AP uses the mask area for small/medium/large (as detectron2)
                lvis_results = [{k: v for k, v in r.items() if k != "bbox"} for r in lvis_results]
            max_dets = self._max_dets_per_image or 300  # LVIS's standard limit
            lvis_eval = LVISEval(
                self._lvis_api, LVISResults(self._lvis_api, lvis_results, max_dets=max_dets), task
            )
            lvis_eval.run()
            lvis_eval.print_results()
            standard = lvis_eval.get_results()
            metrics = {m: float(standard[m] * 100) for m in LVIS_METRICS}
            for group, names in self._groups.items():
                ids = [self._lvis_ids[n] for n in names]
                ovd[f"AP50_{group}"] = lvis_subset_average_precision(lvis_eval, ids, 0.5)
                ovd[f"AP_{group}"] = lvis_subset_average_precision(lvis_eval, ids)
        self._logger.info(f"Evaluation results for {task}:\n" + create_small_table(metrics))
        self._logger.info(f"Open-vocabulary {task} results:\n" + create_small_table(ovd))
        return dict(metrics, **ovd)
