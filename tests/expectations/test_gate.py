"""The gates run real GX suites: a valid table passes, a planted defect blocks with its count."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import (
    mock_annotations,
    mock_drift,
    mock_manifest,
    tree_digest,
    write_stage_table,
)
from visionloop.config import Params
from visionloop.expectations import gate as gate_mod
from visionloop.expectations.gate import (
    GateFailed,
    GateResult,
    enforce,
    read_gate_result,
    run_gate,
)
from visionloop.expectations.suites import GATE_TABLES, gate_suite_hash, suite_name
from visionloop.stages.base import Workspace

PARAMS = Params().with_overrides({"validate.keep_validations": 2})  # fast Data Docs


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One GX file context for the whole module (GX import + context creation happen once)."""
    return str(tmp_path_factory.mktemp("gxroot"))


def _run(
    gx_root: str, tmp_path: Path, gate: str, df: pd.DataFrame, params: Params = PARAMS
) -> GateResult:
    ws = Workspace(str(tmp_path / "data"))
    write_stage_table(ws, gate, GATE_TABLES[gate], df)
    return run_gate(gate, ws, params, context_root=gx_root)


# --- builders of valid tables and of planted defects ----------------------------------------


def _collect() -> pd.DataFrame:
    return mock_manifest("collect", n=10, quarantine={3: ("corrupt", "collect")})


def _anonymize() -> pd.DataFrame:
    return mock_manifest(
        "anonymize",
        n=10,
        quarantine={3: ("corrupt", "collect"), 7: ("residual_detection", "anonymize")},
    )


def _curate() -> pd.DataFrame:
    return mock_manifest(
        "curate", n=10, quarantine={3: ("corrupt", "collect"), 5: ("blurry", "curate")}
    )


def _annotations() -> pd.DataFrame:
    return mock_annotations(per_item=2)  # 5 images x 2 boxes = 10 rows


VALID: dict[str, Callable[[], pd.DataFrame]] = {
    "collect": _collect,
    "anonymize": _anonymize,
    "curate": _curate,
    "import_annotations": _annotations,
    "refresh": mock_drift,
}


def _set(df: pd.DataFrame, rows: list[int], col: str, value: object) -> pd.DataFrame:
    df = df.copy()
    if df[col].dtype == bool and not isinstance(value, bool):
        df[col] = df[col].astype(object)
    for r in rows:
        df.at[r, col] = value
    return df


def _bad_item_ids() -> pd.DataFrame:
    df = _collect()
    df.loc[0, "item_id"] = df.loc[0, "item_id"].upper()
    df.loc[1, "item_id"] = "abc"
    return df


def _too_many_quarantined() -> pd.DataFrame:
    return mock_manifest("collect", n=10, quarantine={i: ("corrupt", "collect") for i in range(6)})


def _residual_face() -> pd.DataFrame:
    return _set(_anonymize(), [0, 1], "anonymize_residual", 1)


def _audit_incomplete() -> pd.DataFrame:
    return _set(_anonymize(), [2], "anonymize_audit_complete", False)


def _blur_out_of_range() -> pd.DataFrame:
    return _set(_curate(), [0], "curate_blur_score", 1.5)


def _bad_phash() -> pd.DataFrame:
    return _set(_curate(), [1, 2, 4], "curate_phash", "XYZ")


def _box_past_right_edge() -> pd.DataFrame:
    df = _annotations()
    df.loc[0, "bbox_x"] = 600.0  # 600 + 100 > 640 + 1
    df.loc[1, "bbox_x"] = 540.5  # 540.5 + 100 = 640.5: inside the 1 px tolerance
    df.loc[2, ["image_width", "image_height"]] = pd.NA  # size unknown: not checked
    df.loc[2, "bbox_x"] = 5000.0
    return df


def _zero_width_box() -> pd.DataFrame:
    return _set(_annotations(), [4], "bbox_w", 0.0)


def _unmatched() -> pd.DataFrame:
    df = _annotations()
    df.loc[[0, 1], "match_status"] = "unmatched"
    df.loc[[0, 1], "item_id"] = None
    return df


def _p_value_out_of_range() -> pd.DataFrame:
    return _set(mock_drift(), [1], "p_value", 1.5)


def _drift_missing_column() -> pd.DataFrame:
    return mock_drift().drop(columns=["threshold"])


# gate, table, failing key, unexpected_count, element_count
ERRORS = [
    ("collect", _bad_item_ids, "item_id_sha256", 2, 10),
    ("collect", _too_many_quarantined, "quarantine_fraction", 6, 10),
    ("anonymize", _residual_face, "anonymize_residual_zero", 2, 8),
    ("anonymize", _audit_incomplete, "anonymize_audit_complete_true", 1, 8),
    ("curate", _blur_out_of_range, "curate_blur_score_range", 1, 10),
    ("curate", _bad_phash, "curate_phash_hex", 3, 10),
    ("import_annotations", _box_past_right_edge, "bbox_right_inside", 1, 9),
    ("import_annotations", _zero_width_box, "bbox_w_positive", 1, 10),
    ("import_annotations", _unmatched, "unmatched_fraction", 2, 10),
    ("refresh", _p_value_out_of_range, "p_value_range", 1, 3),
]


def _quarantine_unreadable() -> pd.DataFrame:
    return mock_manifest(
        "collect", n=10, quarantine={3: ("corrupt", "collect"), 4: ("unreadable", "collect")}
    )


def _anonymize_failed() -> pd.DataFrame:
    return mock_manifest("anonymize", n=10, quarantine={6: ("anonymize_failed", "anonymize")})


def _accepted_but_flagged() -> pd.DataFrame:
    return _set(_curate(), [0, 1], "curate_is_dark", True)


def _on_quarantined_item() -> pd.DataFrame:
    df = _annotations()
    df.loc[9, "match_status"] = "quarantined_item"
    return df


def _most_features_drifted() -> pd.DataFrame:
    return mock_drift(drifted=("curate_entropy", "curate_brightness"))  # 2/3 > 0.5


WARNINGS = [
    ("collect", _quarantine_unreadable, "storage_or_path_problems", 1, 10),
    ("anonymize", _anonymize_failed, "anonymize_failures", 1, 10),
    ("curate", _accepted_but_flagged, "accepted_not_dark", 2, 8),
    ("import_annotations", _on_quarantined_item, "on_quarantined_items", 1, 10),
    ("refresh", _most_features_drifted, "drifted_share", 2, 3),
]


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("gate", list(VALID))
def test_a_valid_table_passes(gx_root: str, tmp_path: Path, gate: str) -> None:
    result = _run(gx_root, tmp_path, gate, VALID[gate]())
    assert result.success, [e.describe() for e in result.errors]
    assert result.errors == [] and result.warnings == []
    assert result.suite_name == suite_name(gate)
    assert result.suite_hash == gate_suite_hash(gate, PARAMS)
    assert {r.severity for r in result.results} <= {"error", "warning"}
    assert enforce(result) is result
    assert result.docs_path is not None and os.path.isfile(result.docs_path)
    assert os.path.isfile(result.docs_index)
    assert result.docs_index == os.path.join(
        gx_root, "gx", "uncommitted", "data_docs", "local_site", "index.html"
    )


@pytest.mark.parametrize(
    ("gate", "table", "key", "unexpected", "elements"),
    ERRORS,
    ids=[f"{g}-{k}" for g, _, k, _, _ in ERRORS],
)
def test_a_planted_defect_blocks_with_its_count(
    gx_root: str,
    tmp_path: Path,
    gate: str,
    table: Callable,
    key: str,
    unexpected: int,
    elements: int,
) -> None:
    result = _run(gx_root, tmp_path, gate, table())
    assert not result.success
    assert [e.key for e in result.errors] == [key]
    failed = result.outcome(key)
    assert failed.severity == "error"
    assert (failed.unexpected_count, failed.element_count) == (unexpected, elements)
    with pytest.raises(GateFailed) as info:
        enforce(result)
    message = str(info.value)
    assert key in message and failed.expectation in message
    assert f"{unexpected} of {elements} rows failed" in message
    assert result.docs_path and result.docs_path in message
    assert os.path.isfile(result.docs_path)


def test_box_overflow_respects_tolerance_and_unknown_size(gx_root: str, tmp_path: Path) -> None:
    result = _run(gx_root, tmp_path, "import_annotations", _box_past_right_edge())
    outcome = result.outcome("bbox_right_inside")
    assert outcome.partial_unexpected == [60.0]  # only the 600 + 100 - 640 box
    assert outcome.row_condition == "(image_width IS NOT NULL AND image_height IS NOT NULL)"


def test_a_drifted_share_within_budget_is_no_warning(gx_root: str, tmp_path: Path) -> None:
    result = _run(gx_root, tmp_path, "refresh", mock_drift(drifted=("curate_entropy",)))
    assert result.warnings == []
    assert result.outcome("drifted_share").unexpected_count == 1


def test_a_missing_drift_column_blocks(gx_root: str, tmp_path: Path) -> None:
    result = _run(gx_root, tmp_path, "refresh", _drift_missing_column())
    assert [e.key for e in result.errors] == ["drift_columns"]
    assert result.outcome("drift_columns").details["mismatched"]["missing"] == ["threshold"]
    assert 'missing ["threshold"]' in str(GateFailed(result))


def test_table_level_count_reports_the_observed_value(gx_root: str, tmp_path: Path) -> None:
    params = PARAMS.with_overrides({"validate.min_accepted": 20})
    result = _run(gx_root, tmp_path, "collect", _collect(), params)
    assert [e.key for e in result.errors] == ["min_accepted"]
    assert result.outcome("min_accepted").observed_value == 9
    assert (
        "min_accepted: expect_table_row_count_to_be_between where status == accepted: "
        'observed 9 (expected {"min_value": 20})' in str(GateFailed(result))
    )


@pytest.mark.parametrize(
    ("gate", "table", "key", "unexpected", "elements"),
    WARNINGS,
    ids=[f"{g}-{k}" for g, _, k, _, _ in WARNINGS],
)
def test_a_warning_is_reported_but_does_not_block(
    gx_root: str,
    tmp_path: Path,
    gate: str,
    table: Callable,
    key: str,
    unexpected: int,
    elements: int,
) -> None:
    result = _run(gx_root, tmp_path, gate, table())
    assert result.success and result.errors == []
    assert [w.key for w in result.warnings] == [key]
    w = result.outcome(key)
    assert w.severity == "warning" and not w.success
    assert (w.unexpected_count, w.element_count) == (unexpected, elements)
    enforce(result)  # does not raise


def test_gate_json_round_trips(gx_root: str, tmp_path: Path) -> None:
    result = _run(gx_root, tmp_path, "curate", _bad_phash())
    ws = Workspace(str(tmp_path / "data"))
    stored = read_gate_result(ws, "curate")
    assert stored.to_dict() == result.to_dict()
    # when and where it ran stays out of the DVC-tracked file, so reruns are byte-identical
    assert (stored.docs_path, stored.run_time) == (None, "")
    assert result.docs_path and result.run_time
    assert stored.table_uri == ws.manifest_uri("curate")
    assert len(stored.table_sha256) == 64
    assert stored.outcome("curate_phash_hex").partial_unexpected == ["XYZ", "XYZ", "XYZ"]
    assert read_gate_result(ws, "collect") is None

    # A driver may file the result under another stage (validate files the last gate's).
    again = run_gate("curate", ws, PARAMS, context_root=gx_root, stage="validate")
    assert read_gate_result(ws, "validate").to_dict() == again.to_dict()
    assert read_gate_result(ws, "curate").to_dict() == result.to_dict()  # untouched


def test_gate_failed_survives_pickling(gx_root: str, tmp_path: Path) -> None:
    result = _run(gx_root, tmp_path, "collect", _bad_item_ids())
    exc = pickle.loads(pickle.dumps(GateFailed(result)))
    assert isinstance(exc, GateFailed)
    assert str(exc) == str(GateFailed(result))
    assert exc.results[0].gate == "collect"


def test_a_missing_table_is_an_error(gx_root: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the stage first"):
        run_gate("curate", Workspace(str(tmp_path / "data")), PARAMS, context_root=gx_root)


def test_data_docs_can_be_turned_off(gx_root: str, tmp_path: Path) -> None:
    params = PARAMS.with_overrides({"validate.data_docs": False})
    result = _run(gx_root, tmp_path, "collect", _bad_item_ids(), params)
    assert result.docs_path is None and result.docs_index is None
    assert "Data Docs: disabled" in str(GateFailed(result))


def test_rerun_leaves_the_gx_project_byte_identical(gx_root: str, tmp_path: Path) -> None:
    gx_dir = os.path.join(gx_root, "gx")
    _run(gx_root, tmp_path, "collect", _collect())
    _run(gx_root, tmp_path, "import_annotations", _annotations())
    before = tree_digest(gx_dir)
    assert "expectations/visionloop_collect.json" in before
    _run(gx_root, tmp_path, "collect", _collect())
    _run(gx_root, tmp_path, "import_annotations", _unmatched())  # other data, same suite
    assert tree_digest(gx_dir) == before

    # A changed threshold is a meaningful diff of that suite only; changing it back restores
    # the exact bytes (ids are derived from the content, not random).
    changed = PARAMS.with_overrides({"validate.max_quarantine_fraction": 0.25})
    result = _run(gx_root, tmp_path, "collect", _collect(), changed)
    assert result.outcome("quarantine_fraction").kwargs["mostly"] == 0.75
    after = tree_digest(gx_dir)
    assert (
        after["expectations/visionloop_collect.json"]
        != before["expectations/visionloop_collect.json"]
    )
    same = [k for k in before if k.startswith("expectations/") and "collect" not in k]
    assert all(after[k] == before[k] for k in same)
    _run(gx_root, tmp_path, "collect", _collect())
    assert tree_digest(gx_dir) == before


def test_the_context_and_its_assets_are_reused(gx_root: str, tmp_path: Path) -> None:
    for _ in range(2):
        _run(gx_root, tmp_path, "refresh", mock_drift())
    roots = [r for r in gate_mod._CONTEXTS if r == os.path.abspath(gx_root)]
    assert len(roots) == 1
    ctx = gate_mod._CONTEXTS[roots[0]]
    assets = [a.name for a in ctx.data_sources.get(gate_mod.DATASOURCE).assets]
    assert len(assets) == len(set(assets))
    assert "refresh" in assets
    yml = Path(gx_root, "gx", "great_expectations.yml").read_text()
    assert yml.count("      refresh:") == 1
    checkpoints = sorted(os.listdir(os.path.join(gx_root, "gx", "checkpoints")))
    assert checkpoints == sorted(f"{suite_name(g)}.json" for g in assets)
