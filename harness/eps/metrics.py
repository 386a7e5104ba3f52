"""mIoU with the per-class IoU returned, not only printed."""
import math
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional

import numpy as np

from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """mmseg's ``IoUMetric`` whose result also holds ``IoU.<class>`` for every class.

    Values are percentages rounded to 2 decimals, like ``mIoU``; a class absent from both the
    ground truth and the predictions has IoU NaN (``nan_to_num`` replaces it, as in mmseg).
    """

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        totals = [sum(column) for column in zip(*results)]
        per_class = self.total_area_to_metrics(*totals, ['mIoU'], self.nan_to_num, self.beta)
        class_names = self.dataset_meta['classes']
        metrics.update(OrderedDict(
            (f'IoU.{name}', float(np.round(iou * 100, 2)))
            for name, iou in zip(class_names, np.asarray(per_class['IoU']))))
        return metrics


def finite_or_none(metrics: Mapping[str, float]) -> Dict[str, Optional[float]]:
    """``metrics`` with each NaN (the IoU of a class absent from both the ground truth and the
    predictions) as None: ``null`` in a JSON file, which strict JSON readers accept."""
    return {key: value if math.isfinite(value) else None for key, value in metrics.items()}
