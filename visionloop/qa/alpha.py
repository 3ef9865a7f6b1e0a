"""Krippendorff's alpha for any distance (nominal, interval, or 1 - IoU between boxes).

With ``n`` pairable values (values in units that hold at least two), ``m_u`` values in unit
``u`` and a distance ``d`` (Krippendorff's ``delta``; for the interval metric the squared
difference):

    D_o = 1/n * sum_u 1/(m_u - 1) * sum_{i != j in u} d(v_i, v_j)      observed disagreement
    D_e = 1/(n (n - 1)) * sum_{i != j over all n values} d(v_i, v_j)   expected disagreement
    alpha = 1 - D_o / D_e

(Krippendorff, "Computing Krippendorff's Alpha-Reliability", 2011: the coincidence-matrix form
with every value its own category, which is what a continuous distance such as 1 - IoU needs.)
Units with a single value carry no information about agreement and drop out; alpha is
undefined (NaN) when there is no pairable value or no expected disagreement.

``D_e`` sums over all pairs of values: exact below ``max_exact`` values (chunked, so memory
stays at ``chunk * n`` distances), and above it a fixed-seed Monte Carlo estimate from
``samples`` random pairs (its standard error is reported), so a dataset of 10^5 boxes costs a
second, not 10^10 IoUs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Pairwise = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (a, b) -> (len(a), len(b))

MAX_EXACT = 4000
SAMPLES = 400_000
CHUNK = 512


def nominal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.asarray(a)[:, None] != np.asarray(b)[None, :]).astype(float)


def interval(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.asarray(a, dtype=float)[:, None] - np.asarray(b, dtype=float)[None, :]
    return d * d


METRICS: dict[str, Pairwise] = {"nominal": nominal, "interval": interval}
# The same distances between a[k] and b[k] (for the sampled estimate of D_e).
PAIRED: dict[str, Pairwise] = {
    "nominal": lambda a, b: (np.asarray(a) != np.asarray(b)).astype(float),
    "interval": lambda a, b: (np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) ** 2,
}


@dataclass(frozen=True)
class AlphaResult:
    alpha: float  # NaN when undefined
    observed: float  # D_o
    expected: float  # D_e
    values: int  # pairable values n
    units: int  # units with >= 2 values
    exact: bool  # D_e summed over all pairs (else estimated)
    expected_se: float = 0.0  # standard error of the D_e estimate (0 when exact)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> None)."""
        return {
            k: (None if isinstance(v, float) and np.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def alpha(
    values: np.ndarray,
    units: Sequence[Any] | np.ndarray,
    distance: Pairwise | str,
    *,
    max_exact: int = MAX_EXACT,
    samples: int = SAMPLES,
    seed: int = 0,
    paired: Pairwise | None = None,
) -> AlphaResult:
    """Krippendorff's alpha of ``values`` (one per row; any shape per value, e.g. boxes (n, 4))
    grouped into ``units`` (a unit label per row) under ``distance`` (a metric name or a
    function of two arrays returning their distance matrix). ``paired``, the same distance
    element-wise, makes the sampled estimate of D_e fast for a custom distance."""
    dist = METRICS[distance] if isinstance(distance, str) else distance
    if paired is None and isinstance(distance, str):
        paired = PAIRED[distance]
    values = np.asarray(values)
    labels = np.asarray(units)
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} values but {len(labels)} unit labels")
    _uniq, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    keep = sizes[inverse] >= 2
    values, inverse = values[keep], inverse[keep]
    n = len(values)
    if n < 2:
        return AlphaResult(float("nan"), float("nan"), float("nan"), n, 0, True)
    order = np.argsort(inverse, kind="stable")
    values, inverse = values[order], inverse[order]
    starts = np.flatnonzero(np.r_[True, inverse[1:] != inverse[:-1]])
    ends = np.r_[starts[1:], n]
    observed = _observed(values, starts, ends, dist, paired) / n
    exact = n <= max_exact
    se = 0.0
    if exact:
        total = 0.0
        for s in range(0, n, CHUNK):
            d = dist(values[s : s + CHUNK], values)
            total += d.sum() - np.trace(d[:, s : s + CHUNK])
        expected = total / (n * (n - 1))
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=samples)
        j = rng.integers(0, n - 1, size=samples)
        j = j + (j >= i)  # uniform over j != i
        if paired is not None:
            d = np.asarray(paired(values[i], values[j]), dtype=float)
        else:  # the diagonal of small blocks
            d = np.concatenate(
                [
                    np.diagonal(dist(values[i[k : k + 64]], values[j[k : k + 64]]))
                    for k in range(0, samples, 64)
                ]
            )
        expected = float(d.mean())
        se = float(d.std(ddof=1) / np.sqrt(samples))
    value = float("nan") if expected <= 0 else float(1.0 - observed / expected)
    return AlphaResult(value, float(observed), float(expected), n, len(starts), exact, se)


def _observed(
    values: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    dist: Pairwise,
    paired: Pairwise | None,
) -> float:
    """sum_u 1/(m_u - 1) * sum_{i != j in u} d(v_i, v_j), the numerator of D_o.

    With an element-wise distance, the ordered pairs of all units of one size are evaluated in
    one call (10^4 units of two boxes: one call, not 10^4).
    """
    sizes = ends - starts
    if paired is None:
        total = 0.0
        for s, e in zip(starts, ends, strict=True):
            d = dist(values[s:e], values[s:e])
            total += (d.sum() - np.trace(d)) / (e - s - 1)
        return float(total)
    total = 0.0
    for m in np.unique(sizes):
        first = starts[sizes == m]
        a, b = np.nonzero(~np.eye(m, dtype=bool))  # ordered pairs i != j within a unit
        i = (first[:, None] + a[None, :]).ravel()
        j = (first[:, None] + b[None, :]).ravel()
        total += float(np.asarray(paired(values[i], values[j]), dtype=float).sum()) / (m - 1)
    return total


def krippendorff_alpha(
    reliability_data: Sequence[Sequence[float]] | np.ndarray,
    metric: Pairwise | str = "interval",
    **kwargs: Any,
) -> float:
    """Alpha of a coders x units matrix with NaN for missing values (the textbook layout)."""
    data = np.asarray(reliability_data, dtype=float)
    coders, units = np.nonzero(~np.isnan(data))
    return alpha(data[coders, units], units, metric, **kwargs).alpha
