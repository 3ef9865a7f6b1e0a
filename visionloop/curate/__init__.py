"""Curation: image-quality metrics, thresholded flags, tiered duplicates and coverage.

Three steps, as in cleanvision: raw metrics (``metrics.compute_metrics``, one decode per image,
cached per item), flags (``flag_quality`` and ``flag_shape`` here: metric vs a ``params.curate``
threshold, cheap, so re-thresholding never decodes), and duplicate grouping (``dedup``).
Coverage of declared slices is ``coverage``. A new quality issue is one more ``QualityCheck``
row plus its threshold in ``CurateParams`` and its name in ``FLAGS``.

Which flags quarantine is ``params.curate.quarantine``; the others are recorded only (by default
clipping, grayscale and colour cast, which describe an image rather than condemn it).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from visionloop.config import CurateParams
from visionloop.schema import Reason


@dataclass(frozen=True)
class QualityCheck:
    """One thresholded flag: ``metric <op> params.curate.<param>`` means the issue is present.

    ``also`` is an optional second condition (metric, op, param) that must hold too.
    """

    flag: str  # manifest column suffix: curate_is_<flag>
    reason: Reason
    metric: str  # key in metrics.METRIC_KEYS (or a derived one, see ``derived_metrics``)
    op: Callable[[np.ndarray, float], np.ndarray]
    param: str  # CurateParams field holding the threshold
    describe: str  # for reason_detail: "<metric label> {value} <symbol> <param> {threshold}"
    also: tuple[str, Callable[[np.ndarray, float], np.ndarray], str] | None = None

    def mask(self, values: pd.DataFrame | pd.Series, params: CurateParams) -> pd.Series:
        """True where the issue is present; NaN metrics never flag.

        ``values`` is the raw metric frame (or, for single-condition checks, the metric).
        """
        frame = values if isinstance(values, pd.DataFrame) else values.to_frame(self.metric)
        out = self._one(frame[self.metric], self.op, self.param, params)
        if self.also is not None:
            metric, op, param = self.also
            out &= self._one(frame[metric], op, param, params)
        return out

    @staticmethod
    def _one(values: pd.Series, op: Callable, param: str, params: CurateParams) -> pd.Series:
        threshold = float(getattr(params, param))
        v = values.astype(float)
        return pd.Series(op(v.to_numpy(), threshold) & v.notna().to_numpy(), index=v.index)

    def detail(self, values: pd.Series, params: CurateParams) -> pd.Series:
        threshold = getattr(params, self.param)
        return values.map(lambda x: self.describe.format(value=x, threshold=threshold))


# Quality checks on the pixels, in quarantine precedence order among themselves.
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
    QualityCheck(
        "clipped",
        Reason.CLIPPED,
        "clipping",
        operator.gt,
        "clipping_threshold",
        "{value:.1%} of pixels at 0 or 255 > curate.clipping_threshold {threshold}",
    ),
    QualityCheck(
        "grayscale",
        Reason.GRAYSCALE,
        "spread",
        operator.le,
        "grayscale_threshold",
        "99th-percentile channel spread {value:.0f} levels <= curate.grayscale_threshold "
        "{threshold}",
    ),
    QualityCheck(
        "color_cast",
        Reason.COLOR_CAST,
        "cast",
        operator.gt,
        "color_cast_threshold",
        "colour cast {value:.2f} (mean chroma / chroma spread) > curate.color_cast_threshold "
        "{threshold}",
        also=("cast_shift", operator.gt, "color_cast_min_shift"),
    ),
)

# Every flag the stage sets, in quarantine precedence (the first quarantining flag is the
# reason), with its Reason. Shape flags first: a 40x30 thumbnail is "odd size" before it is
# "blurry"; duplicates and leakage last: they are judged among the images that survive.
FLAGS: dict[str, Reason] = {
    "odd_size": Reason.ODD_SIZE,
    "odd_aspect": Reason.ODD_ASPECT,
    **{c.flag: c.reason for c in QUALITY_CHECKS},
    "pixel_duplicate": Reason.DUPLICATE_PIXELS,
    "near_duplicate": Reason.NEAR_DUPLICATE,
    "split_leak": Reason.SPLIT_LEAKAGE,
}
SHAPE_FLAGS = ("odd_size", "odd_aspect")


def derived_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """The raw metrics plus values derived from them (``clipping`` = the larger clipped end)."""
    out = metrics.copy()
    if {"clip_low", "clip_high"} <= set(out.columns):
        out["clipping"] = np.fmax(
            out["clip_low"].astype(float).to_numpy(), out["clip_high"].astype(float).to_numpy()
        )
    return out


def flag_quality(metrics: pd.DataFrame, params: CurateParams) -> pd.DataFrame:
    """Boolean column ``is_<flag>`` per check for each row of raw ``metrics`` (same index).

    Checks whose metrics are absent from ``metrics`` are skipped (older feature caches).
    """
    raw = derived_metrics(metrics)
    cols = {}
    for c in QUALITY_CHECKS:
        needed = [c.metric] + ([c.also[0]] if c.also else [])
        if all(m in raw.columns for m in needed):
            cols[f"is_{c.flag}"] = c.mask(raw, params)
    return pd.DataFrame(cols, index=metrics.index)


def robust_z(values: np.ndarray, min_scale: float) -> np.ndarray:
    """(x - median) / max(1.4826 x MAD, min_scale): a z-score that outliers cannot inflate.

    The MAD of a normal sample times 1.4826 estimates its standard deviation; the floor keeps
    a dataset of identical sizes (MAD = 0) from calling a 1 % difference an outlier.
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return np.full(len(v), np.nan)
    med = float(np.median(v[ok]))
    mad = float(np.median(np.abs(v[ok] - med)))
    return (v - med) / max(1.4826 * mad, min_scale)


def flag_shape(width: pd.Series, height: pd.Series, params: CurateParams) -> pd.DataFrame:
    """Odd size and odd aspect ratio of each image, absolute and/or relative to this dataset.

    Columns: aspect_ratio (longer / shorter side, so portrait and landscape of one camera
    agree), size_z and aspect_z (robust z-scores of log2 sqrt(pixels) and log2 aspect_ratio
    over the given images; NaN when fewer than ``relative_min_items``), is_odd_size,
    is_odd_aspect. Relative checks flag both tails of size (a 50 MP image among VGA frames is
    odd too) and the elongated tail of aspect.
    """
    w = pd.to_numeric(width, errors="coerce").astype(float).to_numpy()
    h = pd.to_numeric(height, errors="coerce").astype(float).to_numpy()
    known = (w > 0) & (h > 0)
    longer, shorter = np.fmax(w, h), np.fmin(w, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(known, longer / shorter, np.nan)
        log_size = np.where(known, 0.5 * np.log2(w * h), np.nan)
        log_aspect = np.log2(aspect)
    enough = int(known.sum()) >= params.relative_min_items
    nan = np.full(len(w), np.nan)
    size_z = robust_z(log_size, params.relative_min_scale) if enough else nan
    aspect_z = robust_z(log_aspect, params.relative_min_scale) if enough else nan
    z = params.relative_z

    def combine(mode: str, absolute: np.ndarray, relative: np.ndarray) -> np.ndarray:
        if mode == "absolute":
            return absolute & known
        if mode == "relative":
            return relative & known
        return (absolute | relative) & known

    with np.errstate(invalid="ignore"):
        odd_size = combine(
            params.odd_size_mode,
            shorter < params.odd_size_min_side,
            np.nan_to_num(np.abs(size_z), nan=0.0) > z,
        )
        odd_aspect = combine(
            params.odd_aspect_mode,
            aspect > params.odd_aspect_max,
            np.nan_to_num(aspect_z, nan=0.0) > z,
        )
    return pd.DataFrame(
        {
            "aspect_ratio": aspect,
            "size_z": size_z,
            "aspect_z": aspect_z,
            "is_odd_size": odd_size,
            "is_odd_aspect": odd_aspect,
        },
        index=width.index,
    )


def shape_detail(
    shape: pd.DataFrame, width: pd.Series, height: pd.Series, flag: str, params: CurateParams
) -> pd.Series:
    """Human-readable reason for the odd_size / odd_aspect flags (absolute or relative)."""
    z = params.relative_z

    def one(i: object) -> str:
        w, h = width.at[i], height.at[i]
        if flag == "odd_size":
            zs = shape.at[i, "size_z"]
            parts = []
            if min(w, h) < params.odd_size_min_side and params.odd_size_mode != "relative":
                parts.append(f"shorter side < curate.odd_size_min_side {params.odd_size_min_side}")
            if not math.isnan(zs) and abs(zs) > z and params.odd_size_mode != "absolute":
                parts.append(f"size robust z {zs:+.1f} beyond curate.relative_z {z}")
            return f"{w}x{h} px: " + "; ".join(parts)
        ratio, za = shape.at[i, "aspect_ratio"], shape.at[i, "aspect_z"]
        parts = []
        if ratio > params.odd_aspect_max and params.odd_aspect_mode != "relative":
            parts.append(f"> curate.odd_aspect_max {params.odd_aspect_max}")
        if not math.isnan(za) and za > z and params.odd_aspect_mode != "absolute":
            parts.append(f"robust z {za:+.1f} > curate.relative_z {z}")
        return f"aspect ratio {ratio:.2f} ({w}x{h}): " + "; ".join(parts)

    return pd.Series([one(i) for i in shape.index], index=shape.index, dtype=object)
