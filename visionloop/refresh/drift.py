"""Distribution drift between a reference snapshot and the incoming items.

Three levels of test, one row each in the drift table (``DRIFT_COLUMNS`` of COLUMNS.md, plus
``EXTRA_COLUMNS``):

- **feature**: each image statistic (brightness, contrast, blur, colour, size, aspect...) and
  each metadata slice (camera, day/night, time of day) over all items;
- **slice**: each numeric statistic and the embedding *within* one slice value
  (``brightness[camera=Acme A100]``), where both sides hold at least ``slice_min_items``;
- **image**: the whole embedding (``embed.py`` vector + statistics + curate's metrics) by
  maximum mean discrepancy (RBF kernel, median bandwidth, unbiased MMD^2) with a permutation
  p-value;
- **dataset**: one row, drifted when at least ``dataset_share`` of the feature-level rows
  drifted (Evidently's convention).

The test follows the sample size (the smaller side, ``n = min(n_ref, n_cur)``):

============  ===============================  ===========================================
              n <= large_sample                n > large_sample
============  ===============================  ===========================================
numeric       Kolmogorov-Smirnov (statistic,   Wasserstein-1 distance / reference std
              p-value)                         (no p-value: at that size every p is tiny)
categorical   total-variation distance,        Jensen-Shannon distance (base 2)
              chi-square p-value
============  ===============================  ===========================================

A row with a p-value drifts when its effect size exceeds its threshold AND its p-value,
adjusted over every test of the report (Holm's step-down, ``p_value_adjusted``), is below
``alpha``: the effect size alone flags noise on tiny samples, the raw p-value alone flags
trivial shifts and, over dozens of tests, false alarms (Holm keeps the chance of any false
alarm in a no-shift batch at most ``alpha``). Distance-only rows drift when the distance
exceeds its threshold.

The MMD p-value comes from ``mmd_permutations`` permutations, continued up to
``mmd_max_permutations`` when at most one permutation reached the observed value: a family
of ~40 tests at ``alpha`` = 0.01 needs p-values below 0.00025 to be resolvable, which a calm
batch never pays for. On bench/bench_refresh.py (1,000 reference images, batches of 100, 20
seeds) the defaults flag every planted shift in every batch and raise no alarm on no-shift
batches; read naively (raw p < 0.05 per test) the same tests alarm on 60% of them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# Test names as written in the ``test`` column.
KS = "ks_2samp"
WASSERSTEIN = "wasserstein_norm"
TV = "total_variation"
JS = "jensen_shannon"
MMD = "mmd_rbf"
SHARE = "drifted_share"
NUMERIC_TEST = KS  # (kept for callers of the first version)
CATEGORICAL_TEST = TV

MISSING_CATEGORY = "<missing>"
EMBEDDING = "embedding"
OUTCOME = "outcome"
DATASET = "dataset"
LEVELS = ("feature", "slice", "image", "dataset")
DRIFT_COLUMNS = [
    "feature",
    "test",
    "statistic",
    "p_value",
    "threshold",
    "drifted",
    "n_reference",
    "n_current",
]
EXTRA_COLUMNS = ["base_feature", "slice", "level", "kind", "p_value_adjusted", "alpha"]
ALL_COLUMNS = DRIFT_COLUMNS + EXTRA_COLUMNS


@dataclass(frozen=True)
class DriftConfig:
    """Every threshold of the drift tests (``params.refresh``)."""

    ks_threshold: float = 0.2  # KS statistic (0..1)
    categorical_threshold: float = 0.1  # total-variation distance (0..1)
    wasserstein_threshold: float = 0.1  # Wasserstein-1 in reference standard deviations
    js_threshold: float = 0.1  # Jensen-Shannon distance, base 2 (0..1)
    large_sample: int = 1000  # min(n_ref, n_cur) above this: distance tests
    alpha: float = 0.01  # family-wise, over all tests of a report (Holm)
    dataset_share: float = 0.5
    slice_min_items: int = 20
    mmd_min_items: int = 10
    mmd_permutations: int = 500
    mmd_max_permutations: int = 5000  # when the first ones leave the p-value unresolved
    mmd_max_items: int = 300  # per side, sampled (the kernel matrix is O(n^2))
    mmd_dims: int = 16  # principal components of the reference kept for the kernel
    seed: int = 0

    @classmethod
    def from_params(cls, rp: Any) -> DriftConfig:
        return cls(
            ks_threshold=rp.drift_threshold,
            categorical_threshold=rp.categorical_threshold,
            wasserstein_threshold=rp.wasserstein_threshold,
            js_threshold=rp.jensen_shannon_threshold,
            large_sample=rp.large_sample,
            alpha=rp.drift_alpha,
            dataset_share=rp.dataset_drift_share,
            slice_min_items=rp.slice_min_items,
            mmd_min_items=rp.mmd_min_items,
            mmd_permutations=rp.mmd_permutations,
            mmd_max_permutations=rp.mmd_max_permutations,
            mmd_max_items=rp.mmd_max_items,
            mmd_dims=rp.mmd_dims,
            seed=rp.seed,
        )


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p_value: float  # nan for distance-only tests
    threshold: float
    n_reference: int
    n_current: int
    kind: str  # numeric | categorical | embedding | share


def empty_drift(reason: str) -> pd.DataFrame:
    """The drift table with no rows; ``attrs["reason"]`` says why nothing was compared."""
    df = pd.DataFrame({c: pd.Series(dtype=_DTYPES.get(c, object)) for c in ALL_COLUMNS})
    df.attrs["reason"] = reason
    return df


_DTYPES = {
    "statistic": float,
    "p_value": float,
    "threshold": float,
    "drifted": bool,
    "n_reference": "int64",
    "n_current": "int64",
    "p_value_adjusted": float,
    "alpha": float,
}


# ------------------------------------------------------------------------------------------
# Single tests
# ------------------------------------------------------------------------------------------


def _numbers(s: pd.Series | np.ndarray) -> np.ndarray:
    v = pd.to_numeric(pd.Series(np.asarray(s)), errors="coerce").to_numpy(float)
    return v[np.isfinite(v)]


def numeric_test(reference: Any, current: Any, cfg: DriftConfig) -> TestResult:
    """KS on small samples, normalised Wasserstein-1 on large ones (non-finite values dropped)."""
    from scipy.stats import ks_2samp, wasserstein_distance

    r, c = _numbers(reference), _numbers(current)
    if len(r) == 0 or len(c) == 0:
        return TestResult(KS, math.nan, math.nan, cfg.ks_threshold, len(r), len(c), "numeric")
    if min(len(r), len(c)) > cfg.large_sample:
        scale = float(np.std(r))
        if scale <= 0:
            scale = max(float(np.mean(np.abs(r))), 1e-12)
        stat = float(wasserstein_distance(r, c)) / scale
        return TestResult(
            WASSERSTEIN, stat, math.nan, cfg.wasserstein_threshold, len(r), len(c), "numeric"
        )
    res = ks_2samp(r, c)
    return TestResult(
        KS, float(res.statistic), float(res.pvalue), cfg.ks_threshold, len(r), len(c), "numeric"
    )


def _categories(s: Any) -> pd.Series:
    s = pd.Series(np.asarray(s, dtype=object))
    return s.where(s.notna(), MISSING_CATEGORY).astype(str)


def categorical_test(reference: Any, current: Any, cfg: DriftConfig) -> TestResult:
    """Total variation + chi-square on small samples, Jensen-Shannon distance on large ones.

    Nulls are a category of their own ("<missing>"): a camera that stops writing its model
    into EXIF is itself a change worth seeing.
    """
    from scipy.stats import chi2_contingency

    r, c = _categories(reference), _categories(current)
    if len(r) == 0 or len(c) == 0:
        return TestResult(
            TV, math.nan, math.nan, cfg.categorical_threshold, len(r), len(c), "categorical"
        )
    cats = sorted(set(r) | set(c))
    rc = r.value_counts().reindex(cats, fill_value=0).to_numpy(float)
    cc = c.value_counts().reindex(cats, fill_value=0).to_numpy(float)
    pr, pc = rc / rc.sum(), cc / cc.sum()
    if min(len(r), len(c)) > cfg.large_sample:
        m = 0.5 * (pr + pc)
        js = 0.5 * _kl2(pr, m) + 0.5 * _kl2(pc, m)
        stat = math.sqrt(max(js, 0.0))
        return TestResult(JS, stat, math.nan, cfg.js_threshold, len(r), len(c), "categorical")
    tv = 0.5 * float(np.abs(pr - pc).sum())
    p = (
        1.0
        if len(cats) < 2
        else float(chi2_contingency(np.vstack([rc, cc]), correction=False).pvalue)
    )
    return TestResult(TV, tv, p, cfg.categorical_threshold, len(r), len(c), "categorical")


def _kl2(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / q[mask])))


def _stable_rng(seed: int, name: str) -> np.random.Generator:
    """A generator per (seed, test name): results do not depend on the order of the tests."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def _project(ref: np.ndarray, cur: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardise on the reference, keep its first ``dims`` principal components."""
    mean = ref.mean(axis=0)
    std = ref.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    r, c = (ref - mean) / std, (cur - mean) / std
    k = min(dims, r.shape[1], max(1, r.shape[0] - 1))
    if k < r.shape[1]:
        _, _, vt = np.linalg.svd(r, full_matrices=False)
        r, c = r @ vt[:k].T, c @ vt[:k].T
    return r, c


def mmd_permutation(
    x: np.ndarray,
    y: np.ndarray,
    permutations: int,
    rng: np.random.Generator,
    max_permutations: int | None = None,
) -> tuple[float, float]:
    """Unbiased MMD^2 (RBF kernel, median-heuristic bandwidth) and its permutation p-value
    ``(1 + #{permuted >= observed}) / (1 + permutations)``.

    All permutations are scored at once: with ``a`` the 0/1 membership of the first sample,
    the within/between kernel sums are quadratic forms ``a'Ka`` and ``a'K1``, so one matrix
    product ``K @ A`` (A: one permuted membership per column) prices them all. When at most
    one of the first ``permutations`` reaches the observed value, the p-value is only known to
    be small: the test goes on to ``max_permutations`` so that a multiple-testing correction
    over many tests can still resolve it (a calm batch stops after the first ones).
    """
    z = np.vstack([x, y]).astype(np.float64)
    n, m = len(x), len(y)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    off = d2[~np.eye(len(z), dtype=bool)]
    med = float(np.median(off)) if off.size else 1.0
    k = np.exp(-d2 / (med if med > 0 else 1.0))
    rows = k.sum(axis=1)
    total = float(rows.sum())

    def stat(a: np.ndarray) -> np.ndarray:
        # a: (N, P) memberships of the first sample; K's diagonal is 1 for every point
        ka = k @ a
        sxx = np.einsum("ip,ip->p", a, ka) - n
        sx1 = rows @ a
        syy = total - 2.0 * sx1 + np.einsum("ip,ip->p", a, ka) - m
        sxy = sx1 - (sxx + n)
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)

    observed = float(stat(np.r_[np.ones(n), np.zeros(m)][:, None])[0])
    beats = 0
    done = 0
    chunk = 250
    target = permutations
    while done < target:
        p = min(chunk, target - done)
        a = np.zeros((n + m, p))
        for j in range(p):
            a[rng.permutation(n + m)[:n], j] = 1.0
        beats += int(np.sum(stat(a) >= observed - 1e-12))
        done += p
        if done == permutations and beats <= 1 and max_permutations:
            target = max(permutations, max_permutations)
    return max(observed, 0.0), (1 + beats) / (1 + done)


def mmd_test(
    reference: np.ndarray,
    current: np.ndarray,
    cfg: DriftConfig,
    name: str = EMBEDDING,
    *,
    project: bool = True,
) -> TestResult:
    """MMD between two embedding matrices (rows with a non-finite value are left out).

    ``project=False`` when the caller already projected both (``embedding_space``)."""
    r = reference[np.isfinite(reference).all(axis=1)] if len(reference) else reference
    c = current[np.isfinite(current).all(axis=1)] if len(current) else current
    if min(len(r), len(c)) < max(cfg.mmd_min_items, 2):
        return TestResult(MMD, math.nan, math.nan, 0.0, len(r), len(c), "embedding")
    rng = _stable_rng(cfg.seed, name)
    if len(r) > cfg.mmd_max_items:
        r = r[np.sort(rng.choice(len(r), cfg.mmd_max_items, replace=False))]
    if len(c) > cfg.mmd_max_items:
        c = c[np.sort(rng.choice(len(c), cfg.mmd_max_items, replace=False))]
    if project:
        r, c = _project(r, c, cfg.mmd_dims)
    stat, p = mmd_permutation(r, c, cfg.mmd_permutations, rng, cfg.mmd_max_permutations)
    return TestResult(MMD, stat, p, 0.0, len(r), len(c), "embedding")


def embedding_space(
    reference: np.ndarray, current: np.ndarray, cfg: DriftConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Both matrices in the reference's standardised principal components (fitted once on up
    to 4 x ``mmd_max_items`` reference rows); non-finite rows stay non-finite."""
    ok = np.isfinite(reference).all(axis=1)
    fit = reference[ok]
    if len(fit) == 0:
        return reference, current
    cap = 4 * cfg.mmd_max_items
    if len(fit) > cap:
        rng = _stable_rng(cfg.seed, "pca")
        fit = fit[np.sort(rng.choice(len(fit), cap, replace=False))]
    mean = fit.mean(axis=0)
    std = fit.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    k = min(cfg.mmd_dims, fit.shape[1], max(1, fit.shape[0] - 1))
    basis = np.eye(fit.shape[1])[:, :k] if k >= fit.shape[1] else None
    if basis is None:
        _, _, vt = np.linalg.svd((fit - mean) / std, full_matrices=False)
        basis = vt[:k].T

    def proj(m: np.ndarray) -> np.ndarray:
        out = np.full((len(m), basis.shape[1]), np.nan)
        good = np.isfinite(m).all(axis=1)
        out[good] = ((m[good] - mean) / std) @ basis
        return out

    return proj(reference), proj(current)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (nan stays nan; only finite ones form the family)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    if len(idx) == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out


# ------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------


@dataclass
class DriftData:
    """One side of the comparison: named features per item and the embedding matrix.

    ``features`` holds numeric columns, categorical columns and the slice columns; ``embedding``
    has one row per row of ``features`` (non-finite rows are left out of the MMD)."""

    features: pd.DataFrame
    embedding: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.features)


def _row(name: str, base: str, slice_: str | None, level: str, t: TestResult) -> dict[str, Any]:
    return {
        "feature": name,
        "test": t.test,
        "statistic": t.statistic,
        "p_value": t.p_value,
        "threshold": float(t.threshold),
        "drifted": False,
        "n_reference": int(t.n_reference),
        "n_current": int(t.n_current),
        "base_feature": base,
        "slice": slice_,
        "level": level,
        "kind": t.kind,
    }


def slice_name(dim: str, value: str) -> str:
    return f"{dim}={value}"


def drift_report(
    reference: DriftData,
    current: DriftData,
    cfg: DriftConfig,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    slices: Sequence[str] = (),
    outcome: tuple[pd.Series, pd.Series] | None = None,
) -> pd.DataFrame:
    """Every test of the report, Holm-adjusted, with the dataset-level row last.

    ``outcome``: (reference, current) accepted-or-quarantine-reason labels over *every* row of
    each side (the features above cover accepted items only), tested as a categorical feature.

    Feature names missing from either side are a caller error (KeyError): the caller decides
    what to compare. An empty side gives an empty table whose ``attrs["reason"]`` says why.
    """
    if len(reference) == 0:
        return empty_drift("no reference data: nothing to compare against (first snapshot?)")
    if len(current) == 0:
        return empty_drift("no incoming items: nothing new was accepted since the reference")
    for side, data in (("reference", reference), ("current", current)):
        missing = [f for f in [*numeric, *categorical, *slices] if f not in data.features]
        if missing:
            raise KeyError(f"{side} lacks feature column(s) {missing}")
    rf, cf = reference.features, current.features
    rows: list[dict[str, Any]] = []
    for f in numeric:
        rows.append(_row(f, f, None, "feature", numeric_test(rf[f], cf[f], cfg)))
    for f in categorical:
        rows.append(_row(f, f, None, "feature", categorical_test(rf[f], cf[f], cfg)))
    if outcome is not None:
        t = categorical_test(outcome[0], outcome[1], cfg)
        rows.append(_row(OUTCOME, OUTCOME, None, "feature", t))
    has_embedding = reference.embedding is not None and current.embedding is not None
    if has_embedding:
        remb, cemb = embedding_space(reference.embedding, current.embedding, cfg)  # type: ignore[arg-type]
        t = mmd_test(remb, cemb, cfg, project=False)
        rows.append(_row(EMBEDDING, EMBEDDING, None, "image", t))
    for dim in slices:
        rvals, cvals = _categories(rf[dim]), _categories(cf[dim])
        rcount, ccount = rvals.value_counts(), cvals.value_counts()
        for value in sorted(set(rcount.index) & set(ccount.index)):
            if min(rcount[value], ccount[value]) < cfg.slice_min_items:
                continue
            rmask, cmask = (rvals == value).to_numpy(), (cvals == value).to_numpy()
            sl = slice_name(dim, value)
            for f in numeric:
                t = numeric_test(rf.loc[rmask, f], cf.loc[cmask, f], cfg)
                rows.append(_row(f"{f}[{sl}]", f, sl, "slice", t))
            if has_embedding:
                name = f"{EMBEDDING}[{sl}]"
                t = mmd_test(remb[rmask], cemb[cmask], cfg, name, project=False)
                rows.append(_row(name, EMBEDDING, sl, "slice", t))
    table = pd.DataFrame(rows)
    table["p_value_adjusted"] = holm(table["p_value"].to_numpy(float))
    table["alpha"] = float(cfg.alpha)
    stat = table["statistic"].to_numpy(float)
    padj = table["p_value_adjusted"].to_numpy(float)
    has_p = np.isfinite(table["p_value"].to_numpy(float))
    effect = np.isfinite(stat) & (stat > table["threshold"].to_numpy(float))
    table["drifted"] = effect & (~has_p | (padj < cfg.alpha))
    feature_rows = table[(table["level"] == "feature") & table["statistic"].notna()]
    share = float(feature_rows["drifted"].mean()) if len(feature_rows) else math.nan
    dataset = {
        "feature": DATASET,
        "test": SHARE,
        "statistic": share,
        "p_value": math.nan,
        "threshold": float(cfg.dataset_share),
        "drifted": bool(len(feature_rows) and share >= cfg.dataset_share),
        "n_reference": len(reference),
        "n_current": len(current),
        "base_feature": DATASET,
        "slice": None,
        "level": "dataset",
        "kind": "share",
        "p_value_adjusted": math.nan,
        "alpha": float(cfg.alpha),
    }
    table = pd.concat([table, pd.DataFrame([dataset])], ignore_index=True)
    return _typed(table)


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    table = table[ALL_COLUMNS].copy()
    for col, dtype in _DTYPES.items():
        table[col] = table[col].astype(dtype)
    for col in ("slice",):
        table[col] = table[col].astype(object).where(table[col].notna(), None)
    return table.reset_index(drop=True)


def dataset_drift(table: pd.DataFrame, share: float | None = None) -> bool:
    """The dataset-level verdict: the ``dataset`` row when present, else the drifted share of
    the tested rows against ``share`` (tables written by the first version)."""
    if len(table) and "feature" in table and (table["feature"] == DATASET).any():
        return bool(table.loc[table["feature"] == DATASET, "drifted"].iloc[0])
    if share is None or not len(table):
        return False
    tested = table["statistic"].notna()
    return bool(tested.any() and table.loc[tested, "drifted"].mean() >= share)


def drifted_rows(table: pd.DataFrame, levels: Iterable[str] = LEVELS) -> pd.DataFrame:
    """The rows that drifted, at the given levels."""
    if not len(table):
        return table
    level = table["level"] if "level" in table else pd.Series("feature", index=table.index)
    return table[table["drifted"].astype(bool) & level.isin(list(levels))]


def summary(table: pd.DataFrame) -> dict[str, Any]:
    """Counts for the stage summary and the artifacts."""
    drifted = drifted_rows(table)
    by_level: Mapping[str, list[str]] = (
        {lv: drifted.loc[drifted["level"] == lv, "feature"].tolist() for lv in LEVELS}
        if len(drifted) and "level" in drifted
        else {lv: [] for lv in LEVELS}
    )
    return {
        "tests": int(table["statistic"].notna().sum()) if len(table) else 0,
        "drifted": len(drifted) - (1 if by_level.get("dataset") else 0),
        "drifted_features": list(by_level.get("feature", [])),
        "drifted_slices": list(by_level.get("slice", [])),
        "image_drift": bool(by_level.get("image")),
        "dataset_drift": dataset_drift(table),
    }


__all__ = [
    "ALL_COLUMNS",
    "DRIFT_COLUMNS",
    "EXTRA_COLUMNS",
    "DriftConfig",
    "DriftData",
    "TestResult",
    "categorical_test",
    "dataset_drift",
    "drift_report",
    "drifted_rows",
    "embedding_space",
    "empty_drift",
    "holm",
    "mmd_permutation",
    "mmd_test",
    "numeric_test",
    "summary",
]
