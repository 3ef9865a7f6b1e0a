"""Drift tests: exact KS figures against scipy, categorical total variation, empty inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency, ks_2samp

from visionloop.refresh.drift import DRIFT_COLUMNS, compare, dataset_drift


def _frame(rng: np.random.Generator, n: int, brightness_shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "blur": rng.uniform(0.3, 0.7, n),
            "brightness": np.clip(rng.normal(0.45 + brightness_shift, 0.1, n), 0, 1),
            "camera_model": rng.choice(["A", "B"], n),
        }
    )


def test_identical_distributions_do_not_drift() -> None:
    rng = np.random.default_rng(0)
    ref, cur = _frame(rng, 400), _frame(rng, 300)
    out = compare(ref, cur, ["blur", "brightness", "camera_model"], threshold=0.2)
    assert list(out.columns) == DRIFT_COLUMNS
    assert out["feature"].tolist() == ["blur", "brightness", "camera_model"]
    assert out["test"].tolist() == ["ks_2samp", "ks_2samp", "total_variation"]
    assert not out["drifted"].any()
    assert (out["n_reference"] == 400).all() and (out["n_current"] == 300).all()
    assert (out["threshold"] == 0.2).all()


def test_shifted_brightness_drifts_with_the_exact_ks_statistic() -> None:
    rng = np.random.default_rng(1)
    ref, cur = _frame(rng, 400), _frame(rng, 300, brightness_shift=-0.15)
    out = compare(ref, cur, ["blur", "brightness"], threshold=0.2).set_index("feature")
    expected = ks_2samp(ref["brightness"], cur["brightness"])
    assert out.at["brightness", "statistic"] == expected.statistic
    assert out.at["brightness", "p_value"] == expected.pvalue
    assert bool(out.at["brightness", "drifted"]) and not bool(out.at["blur", "drifted"])
    assert out.at["brightness", "statistic"] > 0.4


def test_categorical_total_variation_and_chi_square() -> None:
    ref = pd.DataFrame({"cam": ["A"] * 60 + ["B"] * 40})
    cur = pd.DataFrame({"cam": ["A"] * 20 + ["B"] * 50 + [None] * 30})
    out = compare(ref, cur, ["cam"], threshold=0.2).iloc[0]
    # A: .6 -> .2, B: .4 -> .5, <missing>: 0 -> .3  => TV = (.4 + .1 + .3) / 2
    assert out["statistic"] == pytest.approx(0.4)
    table = np.array([[60, 40, 0], [20, 50, 30]])  # columns sorted: <missing>, A, B
    table = table[:, [2, 0, 1]]
    assert out["p_value"] == pytest.approx(chi2_contingency(table, correction=False).pvalue)
    assert bool(out["drifted"])


def test_large_effect_on_tiny_sample_is_not_drift() -> None:
    ref = pd.DataFrame({"x": [0.1, 0.2, 0.3]})
    cur = pd.DataFrame({"x": [0.25, 0.35, 0.45]})
    row = compare(ref, cur, ["x"], threshold=0.2, alpha=0.05).iloc[0]
    assert row["statistic"] > 0.2 and row["p_value"] > 0.05
    assert not bool(row["drifted"])


@pytest.mark.parametrize("reference", [None, pd.DataFrame({"x": pd.Series(dtype=float)})])
def test_empty_reference_gives_empty_table_with_reason(reference) -> None:
    out = compare(reference, pd.DataFrame({"x": [1.0, 2.0]}), ["x"], threshold=0.2)
    assert out.empty and list(out.columns) == DRIFT_COLUMNS
    assert "no reference" in out.attrs["reason"]
    assert dataset_drift(out, 0.5) is False


def test_missing_feature_is_a_caller_error() -> None:
    with pytest.raises(KeyError, match="reference lacks"):
        compare(pd.DataFrame({"x": [1.0]}), pd.DataFrame({"y": [1.0]}), ["y"], threshold=0.2)


def test_all_null_feature_is_reported_not_tested() -> None:
    ref = pd.DataFrame({"x": [np.nan, np.nan]})
    cur = pd.DataFrame({"x": [1.0, 2.0]})
    row = compare(ref, cur, ["x"], threshold=0.2).iloc[0]
    assert np.isnan(row["statistic"]) and not bool(row["drifted"]) and row["n_reference"] == 0


def test_dataset_drift_share() -> None:
    t = pd.DataFrame({"statistic": [0.5, 0.1, 0.6, 0.1], "drifted": [True, False, True, False]})
    assert dataset_drift(t, 0.5) is True
    assert dataset_drift(t, 0.75) is False
