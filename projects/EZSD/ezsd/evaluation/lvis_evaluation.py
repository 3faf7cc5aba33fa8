"""LVIS evaluation (AP, APr, APc, APf) that runs with NumPy 2."""
import contextlib

import numpy as np
from detectron2.evaluation import LVISEvaluator

__all__ = ["OVDLVISEvaluator"]


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


class OVDLVISEvaluator(LVISEvaluator):
    """detectron2's LVISEvaluator, usable with NumPy 2. On LVIS, novel AP is APr."""

    def evaluate(self):
        with _numpy_float_alias():
            return super().evaluate()
