"""Curation: image-quality metrics, thresholded flags and near-duplicate grouping.

Three steps, as in cleanvision: raw metrics (``metrics.compute_metrics``, one decode per image,
cached per item), flags (``flag_quality`` here: metric vs a ``params.curate`` threshold, cheap,
so re-thresholding never decodes), and near-duplicate grouping (``dedup``). A new quality issue
is one more ``QualityCheck`` row plus its threshold in ``CurateParams``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from visionloop.config import CurateParams
from visionloop.schema import Reason


@dataclass(frozen=True)
class QualityCheck:
    """One thresholded flag: ``metric <op> params.curate.<param>`` means the issue is present."""

    flag: str  # manifest column suffix: curate_is_<flag>
    reason: Reason
    metric: str  # key in metrics.METRIC_KEYS
    op: Callable[[np.ndarray, float], np.ndarray]
    param: str  # CurateParams field holding the threshold
    describe: str  # for reason_detail: "<metric label> {value} <symbol> <param> {threshold}"

    def mask(self, values: pd.Series, params: CurateParams) -> pd.Series:
        """True where the issue is present; NaN metrics never flag."""
        threshold = float(getattr(params, self.param))
        v = values.astype(float)
        return pd.Series(self.op(v.to_numpy(), threshold) & v.notna().to_numpy(), index=v.index)

    def detail(self, values: pd.Series, params: CurateParams) -> pd.Series:
        threshold = getattr(params, self.param)
        return values.map(lambda x: self.describe.format(value=x, threshold=threshold))


# In quarantine precedence order: when several flags hold, the first one is the reason.
QUALITY_CHECKS: tuple[QualityCheck, ...] = (
    QualityCheck(
        "blurry",
        Reason.BLURRY,
        "blur",
        operator.lt,
        "blur_threshold",
        "blur score {value:.3f} < curate.blur_threshold {threshold}",
    ),
    QualityCheck(
        "dark",
        Reason.TOO_DARK,
        "brightness_high",
        operator.lt,
        "dark_threshold",
        "99th-percentile luminance {value:.3f} < curate.dark_threshold {threshold}",
    ),
    QualityCheck(
        "overexposed",
        Reason.OVEREXPOSED,
        "brightness_low",
        operator.gt,
        "bright_threshold",
        "5th-percentile luminance {value:.3f} > curate.bright_threshold {threshold}",
    ),
    QualityCheck(
        "low_information",
        Reason.LOW_INFORMATION,
        "entropy",
        operator.lt,
        "low_information_threshold",
        "entropy {value:.2f} bits < curate.low_information_threshold {threshold}",
    ),
)


def flag_quality(metrics: pd.DataFrame, params: CurateParams) -> pd.DataFrame:
    """Boolean column ``is_<flag>`` per check for each row of raw ``metrics`` (same index)."""
    return pd.DataFrame(
        {f"is_{c.flag}": c.mask(metrics[c.metric], params) for c in QUALITY_CHECKS},
        index=metrics.index,
    )
