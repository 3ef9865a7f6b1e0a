"""The import_annotations gate validates the label-QA findings (its "qa" companion table):
error-level QA checks are GX expectations that block, warnings are not GX failures."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import mock_annotations, write_stage_table
from visionloop.config import Params
from visionloop.expectations.gate import GateFailed, GateResult, check_table, run_gate
from visionloop.expectations.suites import (
    GATES,
    build_suite,
    companion_checks,
    gate_checks,
    gate_suite_hash,
)
from visionloop.qa.checks import GX_COVERED, error_checks
from visionloop.stages.base import Workspace

PARAMS = Params().with_overrides({"validate.keep_validations": 2})


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("gxroot"))


def _qa_keys(params: Params = PARAMS) -> list[str]:
    return [c.key for c in companion_checks("import_annotations", params)["qa"]]


def test_one_blocking_expectation_per_error_level_check() -> None:
    keys = _qa_keys()
    assert keys[:3] == ["qa_findings_columns", "qa_severity_in_set", "qa_check_known"]
    expected = [f"qa_{c}" for c in error_checks() if c not in GX_COVERED]
    assert keys[3:] == expected
    assert "qa_box_too_small" in keys and "qa_undefined_label" in keys
    assert "qa_box_outside_image" not in keys and "qa_box_nonpositive" not in keys
    assert all(c.severity == "error" for c in companion_checks("import_annotations", PARAMS)["qa"])
    assert {g: bool(companion_checks(g, PARAMS)) for g in GATES} == {
        g: g == "import_annotations" for g in GATES
    }
    # the annotation suite expresses the covered checks itself
    own = {c.key for c in gate_checks("import_annotations", PARAMS)}
    assert all(set(keys) <= own for keys in GX_COVERED.values())


def test_qa_params_version_the_gate() -> None:
    demoted = PARAMS.with_overrides({"validate.qa.severity": {"box_too_small": "warning"}})
    assert "qa_box_too_small" not in _qa_keys(demoted)
    promoted = PARAMS.with_overrides({"validate.qa.severity": {"track_gap": "error"}})
    assert "qa_track_gap" in _qa_keys(promoted)
    assert _qa_keys(PARAMS.with_overrides({"validate.qa.enabled": False})) == _qa_keys()[:3]
    before = {g: gate_suite_hash(g, PARAMS) for g in GATES}
    after = {g: gate_suite_hash(g, demoted) for g in GATES}
    assert [g for g in GATES if after[g] != before[g]] == ["import_annotations"]
    # a threshold that changes findings but not the suite keeps its version
    assert (
        gate_suite_hash(
            "import_annotations", PARAMS.with_overrides({"validate.qa.duplicate_iou": 0.9})
        )
        == before["import_annotations"]
    )


def test_companion_suite_is_stable_and_named_after_its_asset() -> None:
    suite = build_suite("import_annotations", PARAMS, table="qa")
    again = build_suite("import_annotations", PARAMS, table="qa")
    assert suite.name == "visionloop_import_annotations_qa"
    assert suite.to_json_dict() == again.to_json_dict()
    assert [e.meta["key"] for e in suite.expectations] == _qa_keys()
    assert suite.meta["visionloop_suite_hash"] == gate_suite_hash("import_annotations", PARAMS)
    with pytest.raises(KeyError, match="no companion table"):
        build_suite("curate", PARAMS, table="qa")


def _tiny_box() -> pd.DataFrame:
    df = mock_annotations(per_item=2)
    df.loc[3, "bbox_w"] = 0.5  # positive (the annotation suite is fine) but below 1 px
    return df


def test_an_error_level_finding_blocks_the_gate(gx_root: str) -> None:
    result = check_table("import_annotations", _tiny_box(), PARAMS, context_root=gx_root)
    assert not result.success
    assert [e.key for e in result.errors] == ["qa_box_too_small"]
    failed = result.outcome("qa_box_too_small")
    assert failed.table == "qa" and failed.severity == "error"
    assert failed.unexpected_count == 1
    assert failed.partial_unexpected == ["box_too_small"]
    info = result.companions["qa"]
    assert info["suite_name"] == "visionloop_import_annotations_qa"
    assert info["row_count"] == failed.element_count
    assert os.path.isfile(info["docs_path"])
    message = str(GateFailed(result))
    assert "qa_box_too_small" in message and "1 of" in message
    assert f"Data Docs (qa table): {info['docs_path']}" in message
    assert "visionloop labels qa" in message
    # gate.json keeps no docs path of the companion either (byte-stable DVC output)
    stored = GateResult.from_json(result.to_json())
    assert stored.companions == {
        "qa": {"suite_name": info["suite_name"], "row_count": info["row_count"]}
    }


def test_qa_warnings_do_not_fail_the_gate(gx_root: str) -> None:
    df = mock_annotations(per_item=2)
    df.loc[1, ["bbox_x", "bbox_y"]] = df.loc[0, ["bbox_x", "bbox_y"]].to_numpy()
    df.loc[1, "category"] = df.loc[0, "category"]  # an exact duplicate box: a QA warning
    df.loc[1, "category_id"] = df.loc[0, "category_id"]
    result = check_table("import_annotations", df, PARAMS, context_root=gx_root)
    assert result.success and result.errors == [] and result.warnings == []
    assert all(o.success for o in result.results if o.table == "qa")


def test_run_gate_builds_qa_from_the_workspace(gx_root: str, tmp_path: Path) -> None:
    ws = Workspace(str(tmp_path / "data"))
    df = mock_annotations(per_item=1)
    df.loc[2, ["category", "category_id"]] = ["dog", 7]
    write_stage_table(ws, "import_annotations", "annotations.parquet", df)
    assert run_gate("import_annotations", ws, PARAMS, context_root=gx_root).success
    cats = '{"categories": [{"id": 1, "name": "person"}], "source_maps": {}}'
    from visionloop import storage

    storage.write_text_atomic(ws.uri("import_annotations", "categories.json"), cats)
    result = run_gate("import_annotations", ws, PARAMS, context_root=gx_root)
    assert [e.key for e in result.errors] == ["qa_undefined_label"]
