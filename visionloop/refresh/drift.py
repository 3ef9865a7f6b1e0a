"""Distribution drift between a reference snapshot and the current curated data.

Numeric features get a two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``): its
statistic is the largest gap between the two empirical CDFs, in 0..1, and needs no binning.
Categorical features (camera model, day/night) get the total-variation distance between the two
category distributions (half the L1 distance, also in 0..1, so one threshold reads the same for
both kinds) with a chi-square test of homogeneity for the p-value.

A feature drifts when its effect size exceeds ``threshold`` AND its p-value is below ``alpha``:
the effect size alone flags noise on tiny samples, the p-value alone flags trivial shifts on
large ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

NUMERIC_TEST = "ks_2samp"
CATEGORICAL_TEST = "total_variation"
MISSING_CATEGORY = "<missing>"
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


def empty_drift(reason: str) -> pd.DataFrame:
    """The drift table with no rows; ``attrs["reason"]`` says why nothing was compared."""
    df = pd.DataFrame(
        {
            "feature": pd.Series(dtype=object),
            "test": pd.Series(dtype=object),
            "statistic": pd.Series(dtype=float),
            "p_value": pd.Series(dtype=float),
            "threshold": pd.Series(dtype=float),
            "drifted": pd.Series(dtype=bool),
            "n_reference": pd.Series(dtype="int64"),
            "n_current": pd.Series(dtype="int64"),
        }
    )
    df.attrs["reason"] = reason
    return df


def is_categorical(series: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def ks_test(reference: pd.Series, current: pd.Series) -> tuple[float, float, int, int]:
    """KS statistic and p-value over the non-null values of two numeric samples."""
    from scipy.stats import ks_2samp

    r = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(float)
    c = pd.to_numeric(current, errors="coerce").dropna().to_numpy(float)
    if len(r) == 0 or len(c) == 0:
        return math.nan, math.nan, len(r), len(c)
    res = ks_2samp(r, c)
    return float(res.statistic), float(res.pvalue), len(r), len(c)


def tv_test(reference: pd.Series, current: pd.Series) -> tuple[float, float, int, int]:
    """Total-variation distance and chi-square p-value of two categorical samples.

    Nulls are a category of their own ("<missing>"): a camera that stops writing its model
    into EXIF is itself a change worth seeing.
    """
    from scipy.stats import chi2_contingency

    r = reference.astype(object).where(reference.notna(), MISSING_CATEGORY).astype(str)
    c = current.astype(object).where(current.notna(), MISSING_CATEGORY).astype(str)
    if len(r) == 0 or len(c) == 0:
        return math.nan, math.nan, len(r), len(c)
    cats = sorted(set(r) | set(c))
    rc = r.value_counts().reindex(cats, fill_value=0).to_numpy(float)
    cc = c.value_counts().reindex(cats, fill_value=0).to_numpy(float)
    tv = 0.5 * float(np.abs(rc / rc.sum() - cc / cc.sum()).sum())
    if len(cats) < 2:
        return tv, 1.0, len(r), len(c)
    p = float(chi2_contingency(np.vstack([rc, cc]), correction=False).pvalue)
    return tv, p, len(r), len(c)


def compare(
    reference: pd.DataFrame | None,
    current: pd.DataFrame,
    features: list[str],
    threshold: float,
    *,
    alpha: float = 0.05,
    categorical: Iterable[str] | None = None,
) -> pd.DataFrame:
    """One row per feature (DRIFT_COLUMNS). Categorical = ``categorical`` if given, else by dtype.

    An empty or missing reference (first run, ``refresh.reference: none``) or an empty current
    table gives an empty table whose ``attrs["reason"]`` says so. A feature missing from
    either table is a caller error (KeyError): the caller decides what to compare.
    """
    if reference is None or len(reference) == 0:
        return empty_drift("no reference data: nothing to compare against (first snapshot?)")
    if len(current) == 0:
        return empty_drift("no current data: nothing was accepted")
    for name, df in (("reference", reference), ("current", current)):
        missing = [f for f in features if f not in df.columns]
        if missing:
            raise KeyError(f"{name} lacks feature column(s) {missing}")
    cat = set(categorical) if categorical is not None else None
    rows = []
    for feature in features:
        ref, cur = reference[feature], current[feature]
        categorical_feature = feature in cat if cat is not None else is_categorical(cur)
        if categorical_feature:
            test, (stat, p, n_r, n_c) = CATEGORICAL_TEST, tv_test(ref, cur)
        else:
            test, (stat, p, n_r, n_c) = NUMERIC_TEST, ks_test(ref, cur)
        drifted = bool(not math.isnan(stat) and stat > threshold and p < alpha)
        rows.append(
            {
                "feature": feature,
                "test": test,
                "statistic": stat,
                "p_value": p,
                "threshold": float(threshold),
                "drifted": drifted,
                "n_reference": n_r,
                "n_current": n_c,
            }
        )
    out = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    out["n_reference"] = out["n_reference"].astype("int64")
    out["n_current"] = out["n_current"].astype("int64")
    out["drifted"] = out["drifted"].astype(bool)
    return out


def dataset_drift(table: pd.DataFrame, share: float) -> bool:
    """True when at least ``share`` of the tested features drifted (Evidently's convention)."""
    tested = table["statistic"].notna() if len(table) else pd.Series(dtype=bool)
    if not tested.any():
        return False
    return bool(table.loc[tested, "drifted"].mean() >= share)
