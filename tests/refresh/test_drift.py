"""Drift tests: exact figures against scipy, test choice by sample size, Holm, MMD, the report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

from visionloop.refresh import synthetic as syn
from visionloop.refresh.drift import (
    ALL_COLUMNS,
    DRIFT_COLUMNS,
    DriftConfig,
    DriftData,
    categorical_test,
    dataset_drift,
    drift_report,
    holm,
    mmd_permutation,
    numeric_test,
    summary,
)
from visionloop.refresh.features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    embedding_matrix,
    feature_frame,
)

CFG = DriftConfig(mmd_permutations=200, mmd_max_permutations=1000)


def test_small_numeric_samples_get_ks_with_scipy_figures() -> None:
    rng = np.random.default_rng(1)
    r, c = rng.normal(0.45, 0.1, 400), rng.normal(0.30, 0.1, 300)
    t = numeric_test(r, c, CFG)
    expected = ks_2samp(r, c)
    assert (t.test, t.statistic, t.p_value) == ("ks_2samp", expected.statistic, expected.pvalue)
    assert (t.n_reference, t.n_current, t.threshold) == (400, 300, 0.2)


def test_large_numeric_samples_get_normalised_wasserstein_without_p() -> None:
    rng = np.random.default_rng(2)
    r, c = rng.normal(0.0, 2.0, 1500), rng.normal(0.5, 2.0, 1200)
    t = numeric_test(r, c, CFG)
    assert t.test == "wasserstein_norm" and math.isnan(t.p_value)
    assert t.statistic == pytest.approx(wasserstein_distance(r, c) / np.std(r), rel=1e-12)
    assert t.threshold == 0.1


def test_categorical_total_variation_and_chi_square_exact() -> None:
    r = pd.Series(["A"] * 60 + ["B"] * 40)
    c = pd.Series(["A"] * 20 + ["B"] * 50 + [None] * 30)
    t = categorical_test(r, c, CFG)
    # A: .6 -> .2, B: .4 -> .5, <missing>: 0 -> .3  => TV = (.4 + .1 + .3) / 2
    assert t.test == "total_variation" and t.statistic == pytest.approx(0.4)
    table = np.array([[0, 60, 40], [30, 20, 50]])  # columns sorted: <missing>, A, B
    assert t.p_value == pytest.approx(chi2_contingency(table, correction=False).pvalue)


def test_large_categorical_samples_get_jensen_shannon() -> None:
    r = pd.Series(["day"] * 1800 + ["night"] * 200)
    c = pd.Series(["day"] * 1200 + ["night"] * 800)
    t = categorical_test(r, c, CFG)
    assert t.test == "jensen_shannon" and math.isnan(t.p_value)
    assert t.statistic == pytest.approx(jensenshannon([0.9, 0.1], [0.6, 0.4], base=2))


def test_holm_adjustment_exact() -> None:
    p = [0.01, 0.04, np.nan, 0.03, 0.5]
    # sorted 0.01, 0.03, 0.04, 0.5 (m = 4): 0.04, 0.09, 0.09 (monotone), 0.5
    out = holm(p)
    assert out[0] == pytest.approx(0.04) and out[3] == pytest.approx(0.09)
    assert out[1] == pytest.approx(0.09) and out[4] == pytest.approx(0.5) and np.isnan(out[2])


def _brute_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    z = np.vstack([x, y])
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    med = np.median(d2[~np.eye(len(z), dtype=bool)])
    k = np.exp(-d2 / med)
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * kxy.mean())


def test_mmd_statistic_is_the_unbiased_estimate_and_the_p_value_separates() -> None:
    rng = np.random.default_rng(3)
    x, y_same, y_shift = (
        rng.normal(size=(60, 4)),
        rng.normal(size=(40, 4)),
        rng.normal(size=(40, 4)),
    )
    y_shift[:, 0] += 1.0
    stat, p = mmd_permutation(x, y_shift, 300, np.random.default_rng(0))
    assert stat == pytest.approx(_brute_mmd2(x, y_shift), rel=1e-9)
    assert p == 1 / 301  # no permutation beats a one-sigma shift
    stat_same, p_same = mmd_permutation(x, y_same, 300, np.random.default_rng(0))
    assert stat_same == pytest.approx(max(_brute_mmd2(x, y_same), 0.0), abs=1e-12)
    assert p_same > 0.2


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return syn.measured_batch(syn.no_shift(240), seed=500, prefix="ref")


def _data(df: pd.DataFrame) -> DriftData:
    return DriftData(feature_frame(df, slices=["camera", "day_night"]), embedding_matrix(df))


def _report(ref: pd.DataFrame, cur: pd.DataFrame) -> pd.DataFrame:
    return drift_report(
        _data(ref),
        _data(cur),
        CFG,
        numeric=NUMERIC_FEATURES,
        categorical=CATEGORICAL_FEATURES,
        slices=["camera", "day_night"],
    )


def test_report_structure_and_no_alarm_on_a_no_shift_batch(reference: pd.DataFrame) -> None:
    cur = syn.measured_batch(syn.no_shift(80), seed=7, prefix="cur")
    table = _report(reference, cur)
    assert list(table.columns) == ALL_COLUMNS and ALL_COLUMNS[:8] == DRIFT_COLUMNS
    feats = table.loc[table["level"] == "feature", "feature"].tolist()
    assert feats == [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]
    assert table["feature"].iloc[-1] == "dataset" and table["level"].iloc[-1] == "dataset"
    assert (table["level"] == "image").sum() == 1
    # slices with >= 20 items on both sides: both cameras, day (night has ~8 and ~24)
    slices = set(table.loc[table["level"] == "slice", "slice"])
    assert slices == {"camera=Acme A100", "camera=Birch B7", "day_night=day"}
    assert table[["feature", "test"]].duplicated().sum() == 0
    assert not table["drifted"].any()
    assert summary(table)["dataset_drift"] is False


@pytest.mark.parametrize(
    ("shift", "features"),
    [
        ("night_share", {"day_night", "brightness"}),
        ("new_camera_cast", {"camera", "colour_b"}),
        ("more_blur", {"blur"}),
    ],
)
def test_planted_shifts_are_flagged_on_their_features(
    reference: pd.DataFrame, shift: str, features: set[str]
) -> None:
    cur = syn.measured_batch(syn.SHIFTS[shift](80), seed=11, prefix=shift)
    table = _report(reference, cur)
    flagged = set(table.loc[table["drifted"] & (table["level"] == "feature"), "feature"])
    assert features <= flagged, flagged


def test_blur_is_flagged_inside_the_slices_too(reference: pd.DataFrame) -> None:
    cur = syn.measured_batch(syn.blur_shift(80), seed=11, prefix="blur")
    table = _report(reference, cur)
    assert bool(table.set_index("feature").at["blur[day_night=day]", "drifted"])


def test_empty_sides_and_missing_features() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    empty = drift_report(
        DriftData(frame.iloc[:0]), DriftData(frame), CFG, numeric=["x"], categorical=[]
    )
    assert empty.empty and "no reference" in empty.attrs["reason"]
    assert dataset_drift(empty) is False
    none_new = drift_report(
        DriftData(frame), DriftData(frame.iloc[:0]), CFG, numeric=["x"], categorical=[]
    )
    assert "no incoming items" in none_new.attrs["reason"]
    with pytest.raises(KeyError, match="current lacks"):
        drift_report(
            DriftData(frame),
            DriftData(frame.rename(columns={"x": "y"})),
            CFG,
            numeric=["x"],
            categorical=[],
        )


def test_tiny_samples_do_not_drift_on_effect_size_alone() -> None:
    ref, cur = pd.DataFrame({"x": [0.1, 0.2, 0.3]}), pd.DataFrame({"x": [0.25, 0.35, 0.45]})
    table = drift_report(DriftData(ref), DriftData(cur), CFG, numeric=["x"], categorical=[])
    row = table.iloc[0]
    assert row["statistic"] > 0.2 and row["p_value_adjusted"] > 0.05 and not bool(row["drifted"])


def test_dataset_drift_when_the_share_of_features_drifts() -> None:
    rng = np.random.default_rng(5)
    ref = pd.DataFrame(
        {"a": rng.normal(0, 1, 300), "b": rng.normal(0, 1, 300), "c": rng.normal(0, 1, 300)}
    )
    cur = pd.DataFrame(
        {"a": rng.normal(2, 1, 200), "b": rng.normal(2, 1, 200), "c": rng.normal(0, 1, 200)}
    )
    table = drift_report(
        DriftData(ref), DriftData(cur), CFG, numeric=["a", "b", "c"], categorical=[]
    )
    row = table.set_index("feature").loc["dataset"]
    assert row["statistic"] == pytest.approx(2 / 3) and bool(row["drifted"])
    strict = DriftConfig(dataset_share=0.8)
    table = drift_report(
        DriftData(ref), DriftData(cur), strict, numeric=["a", "b", "c"], categorical=[]
    )
    assert dataset_drift(table) is False
