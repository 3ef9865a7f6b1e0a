"""Krippendorff's alpha: the published reference values, and a case computed by hand."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from visionloop.qa.alpha import alpha, interval, krippendorff_alpha, nominal
from visionloop.qa.shapes import box_iou

N = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
# 12 units, missing values; he reports alpha = 0.743 (nominal) and 0.849 (interval).
RELIABILITY = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
]


def test_published_reference_values() -> None:
    assert round(krippendorff_alpha(RELIABILITY, "nominal"), 3) == 0.743
    assert round(krippendorff_alpha(RELIABILITY, "interval"), 3) == 0.849
    # to the last digit: 113/152 and 951/1120 (40 pairable values in 11 units)
    assert krippendorff_alpha(RELIABILITY, nominal) == pytest.approx(113 / 152, abs=1e-12)
    assert krippendorff_alpha(RELIABILITY, interval) == pytest.approx(951 / 1120, abs=1e-12)


def test_the_estimate_of_expected_disagreement_is_close() -> None:
    data = np.asarray(RELIABILITY, dtype=float)
    coders, units = np.nonzero(~np.isnan(data))
    exact = alpha(data[coders, units], units, "interval")
    sampled = alpha(data[coders, units], units, "interval", max_exact=10, samples=200_000)
    assert exact.exact and not sampled.exact
    assert sampled.alpha == pytest.approx(exact.alpha, abs=0.01)
    assert abs(sampled.expected - exact.expected) < 4 * sampled.expected_se


def test_iou_distance_by_hand() -> None:
    """Two annotators, three objects each, distance 1 - IoU.

    Pairs (annotator A, annotator B):
      unit 1: (0,0,10,10) vs (0,0,10,10)   IoU 1     d = 0
      unit 2: (20,0,10,10) vs (25,0,10,10)  IoU 50/150 = 1/3, d = 2/3
      unit 3: (0,20,10,10) vs (0,20,10,5)   IoU 50/100 = 1/2, d = 1/2
    Boxes of different units do not overlap: d = 1 for all 24 ordered cross-unit pairs.
      D_o = 1/6 * sum_u 1/(2-1) * 2 d_u = (0 + 2/3 + 1/2) / 3 = 7/18
      D_e = (2 * (0 + 2/3 + 1/2) + 24 * 1) / (6 * 5) = (7/3 + 24) / 30 = 79/90
      alpha = 1 - (7/18) / (79/90) = 1 - 35/79 = 44/79
    """
    boxes = np.array(
        [[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 10, 10], [25, 0, 10, 10], [0, 20, 10, 10],
         [0, 20, 10, 5]], dtype=float)  # fmt: skip
    units = [1, 1, 2, 2, 3, 3]
    res = alpha(boxes, units, lambda a, b: 1 - box_iou(a, b))
    assert res.observed == pytest.approx(float(Fraction(7, 18)), abs=1e-12)
    assert res.expected == pytest.approx(float(Fraction(79, 90)), abs=1e-12)
    assert res.alpha == pytest.approx(float(Fraction(44, 79)), abs=1e-12)
    assert (res.values, res.units) == (6, 3)


def test_single_values_drop_out_and_no_variation_is_undefined() -> None:
    res = alpha(np.array([1.0, 2.0, 2.0, 7.0]), ["a", "b", "b", "c"], "interval")
    assert (res.values, res.units) == (2, 1) and np.isnan(res.alpha)  # D_e = 0
    assert np.isnan(alpha(np.array([3.0]), ["a"], "interval").alpha)
    perfect = alpha(np.array([1.0, 1.0, 4.0, 4.0]), [0, 0, 1, 1], "interval")
    assert perfect.alpha == 1.0
