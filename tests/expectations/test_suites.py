"""Suites are built from params (no threshold hard-coded), versioned by hash, stable in GX."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.helpers import mock_annotations
from visionloop.config import Params
from visionloop.expectations.suites import (
    BBOX_BOTTOM_OVERFLOW,
    BBOX_RIGHT_OVERFLOW,
    GATES,
    build_suite,
    gate_checks,
    gate_suite_hash,
    prepare_table,
    suite_hash,
)

PARAMS = Params()


def _check(gate: str, key: str, params: Params = PARAMS) -> Any:
    return next(c for c in gate_checks(gate, params) if c.key == key)


@pytest.mark.parametrize("gate", GATES)
def test_every_gate_has_blocking_and_reported_checks(gate: str) -> None:
    checks = gate_checks(gate, PARAMS)
    keys = [c.key for c in checks]
    assert len(keys) == len(set(keys))
    assert {c.severity for c in checks} == {"error", "warning"}
    assert all(c.type.startswith("expect_") and c.why for c in checks)


def test_unknown_gate_is_rejected() -> None:
    with pytest.raises(KeyError, match="unknown gate 'validate'"):
        gate_checks("validate", PARAMS)


@pytest.mark.parametrize(
    ("override", "gate", "key", "kwarg", "expected"),
    [
        (
            {"validate.max_quarantine_fraction": 0.3},
            "collect",
            "quarantine_fraction",
            "mostly",
            0.7,
        ),
        ({"validate.max_quarantine_fraction": 0.3}, "curate", "quarantine_fraction", "mostly", 0.7),
        ({"validate.min_accepted": 7}, "anonymize", "min_accepted", "min_value", 7),
        (
            {"validate.max_unmatched_annotation_fraction": 0.2},
            "import_annotations",
            "unmatched_fraction",
            "mostly",
            0.8,
        ),
        (
            {"validate.bbox_tolerance_px": 2.5},
            "import_annotations",
            "bbox_x_inside",
            "min_value",
            -2.5,
        ),
        (
            {"validate.bbox_tolerance_px": 2.5},
            "import_annotations",
            "bbox_right_inside",
            "max_value",
            2.5,
        ),
        ({"refresh.dataset_drift_share": 0.25}, "refresh", "drifted_share", "mostly", 0.75),
    ],
)
def test_thresholds_come_from_params(
    override: dict[str, Any], gate: str, key: str, kwarg: str, expected: float
) -> None:
    params = PARAMS.with_overrides(override)
    assert _check(gate, key, params).kwargs[kwarg] == expected
    assert _check(gate, key).kwargs[kwarg] != expected  # the default differs: it was read


def test_quarantine_fraction_counts_only_rows_the_stage_saw() -> None:
    assert "row_condition" not in _check("collect", "quarantine_fraction").kwargs
    cond = _check("anonymize", "quarantine_fraction").kwargs["row_condition"]
    assert cond["type"] == "or"
    assert [(c["column"]["name"], c["parameter"]) for c in cond["conditions"]] == [
        ("status", "accepted"),
        ("quarantined_by", "anonymize"),
    ]


def test_severities_of_the_named_checks() -> None:
    assert _check("import_annotations", "unmatched_fraction").severity == "error"
    assert _check("import_annotations", "on_quarantined_items").severity == "warning"
    assert _check("refresh", "drifted_share").severity == "warning"
    for key in (
        "anonymize_audit_complete_true",
        "anonymize_residual_zero",
        "anonymize_metadata_stripped_true",
        "anonymize_object_uri_not_null",
    ):
        assert _check("anonymize", key).severity == "error"


def test_suite_hash_is_stable_and_tracks_only_the_suites_params() -> None:
    before = {g: gate_suite_hash(g, PARAMS) for g in GATES}
    assert before == {g: gate_suite_hash(g, Params()) for g in GATES}
    assert all(len(h) == 12 for h in before.values())
    assert len(set(before.values())) == len(GATES)
    changed = PARAMS.with_overrides({"validate.max_unmatched_annotation_fraction": 0.1})
    after = {g: gate_suite_hash(g, changed) for g in GATES}
    assert [g for g in GATES if after[g] != before[g]] == ["import_annotations"]
    assert suite_hash(gate_checks("curate", PARAMS)) == before["curate"]


def test_prepare_table_derives_box_overflow() -> None:
    df = mock_annotations(items=["a" * 64], per_item=3, width=640, height=480)
    df.loc[0, ["bbox_x", "bbox_w"]] = [600.0, 100.0]
    df.loc[1, ["bbox_y", "bbox_h"]] = [470.0, 11.5]
    df.loc[2, "image_width"] = pd.NA
    original = df.copy()
    out = prepare_table("import_annotations", df)
    pd.testing.assert_frame_equal(df, original)  # the input is not modified
    assert out[BBOX_RIGHT_OVERFLOW].tolist()[:2] == [60.0, -520.0]
    assert np.isnan(out[BBOX_RIGHT_OVERFLOW].iloc[2])
    assert out[BBOX_BOTTOM_OVERFLOW].tolist() == [-410.0, 1.5, -410.0]
    manifest = pd.DataFrame({"item_id": ["x"]})
    assert prepare_table("collect", manifest) is manifest


@pytest.fixture(scope="module")
def suites() -> dict[str, Any]:
    """Every gate's GX suite, built once (this imports GX)."""
    return {g: build_suite(g, PARAMS) for g in GATES}


def test_gx_suites_have_content_derived_ids(suites: dict[str, Any]) -> None:
    for gate, suite in suites.items():
        again = build_suite(gate, PARAMS)
        assert json.dumps(again.to_json_dict(), sort_keys=True) == json.dumps(
            suite.to_json_dict(), sort_keys=True
        )
        ids = [e.id for e in suite.expectations]
        assert all(ids) and len(set(ids)) == len(ids)
        assert suite.meta["visionloop_suite_hash"] == gate_suite_hash(gate, PARAMS)
    changed = build_suite("collect", PARAMS.with_overrides({"validate.min_accepted": 3}))
    assert changed.id != suites["collect"].id


def test_gx_expectations_carry_severity_key_and_condition(suites: dict[str, Any]) -> None:
    from great_expectations.expectations.metadata_types import FailureSeverity
    from great_expectations.expectations.row_conditions import Condition

    for gate, suite in suites.items():
        checks = gate_checks(gate, PARAMS)
        assert [e.meta["key"] for e in suite.expectations] == [c.key for c in checks]
        for e, c in zip(suite.expectations, checks, strict=True):
            assert e.expectation_type == c.type
            assert e.meta["severity"] == c.severity
            want = FailureSeverity.CRITICAL if c.severity == "error" else FailureSeverity.WARNING
            assert e.severity == want
            if "row_condition" in c.kwargs:
                assert isinstance(e.row_condition, Condition)
    residual = next(
        e for e in suites["anonymize"].expectations if e.meta["key"] == "anonymize_residual_zero"
    )
    assert repr(residual.row_condition) == "status == accepted"
