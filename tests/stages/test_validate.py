"""validate: runs the last gate, refreshes stale earlier gates, reports all, blocks on errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import mock_annotations, mock_manifest, write_pipeline, write_stage_table
from visionloop import manifest, storage
from visionloop.config import Params
from visionloop.expectations.gate import GateFailed, read_gate_result, run_gate
from visionloop.expectations.suites import gate_suite_hash
from visionloop.stages.base import (
    STAGE_REGISTRY,
    Workspace,
    get_stage,
    read_summary,
    run_stage,
)
from visionloop.stages.validate import ValidateStage, stale_reason

PARAMS = Params().with_overrides({"validate.keep_validations": 2})  # fast Data Docs
QUARANTINE = {
    2: ("corrupt", "collect"),
    4: ("residual_detection", "anonymize"),
    6: ("blurry", "curate"),
}
REPORTED = ["collect", "anonymize", "curate", "import_annotations"]


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("gxroot"))


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace(str(tmp_path / "data"))
    write_pipeline(ws, n=10, quarantine=QUARANTINE)
    return ws


def _report(ws: Workspace) -> dict[str, Any]:
    return json.loads(storage.read_text(ws.uri("validate", "report.json")))


def _gate_bytes(ws: Workspace, gate: str) -> bytes:
    return storage.read_bytes(ws.uri(gate, "gate.json"))


def test_registry_builds_the_stage() -> None:
    assert STAGE_REGISTRY["validate"] == "visionloop.stages.validate:ValidateStage"
    stage = get_stage("validate")
    assert isinstance(stage, ValidateStage) and stage.name == "validate"
    assert stage.context_root == "."


def test_validate_reports_every_gate_and_mirrors_curate_counts(gx_root: str, ws: Workspace) -> None:
    summary = run_stage(ValidateStage(context_root=gx_root), ws, PARAMS)
    report = _report(ws)
    assert report["success"] is True
    assert sorted(report["gates"]) == sorted(REPORTED)
    assert report["rerun"] == REPORTED  # no earlier gate.json existed
    assert report["suites"] == {
        f"visionloop_{g}": {"gate": g, "hash": gate_suite_hash(g, PARAMS), "success": True}
        for g in REPORTED
    }
    assert report["failures"] == [] and report["warnings"] == []
    # Validate writes only into its own folder (its DVC out): its gate.json is the last gate.
    own = read_gate_result(ws, "validate")
    assert own.gate == "import_annotations" and own.success
    assert own.to_dict() == report["gates"]["import_annotations"]
    assert all(read_gate_result(ws, g) is None for g in REPORTED)

    counts = manifest.status_counts(storage.read_table(ws.manifest_uri("curate")))
    assert (summary.input, summary.accepted, summary.quarantined) == (10, 7, 3)
    assert (
        summary.reasons == counts["reasons"] == {"blurry": 1, "corrupt": 1, "residual_detection": 1}
    )
    assert read_summary(ws, "validate") == summary
    assert summary.details["success"] is True
    assert summary.outputs == [ws.uri("validate", "report.json"), ws.uri("validate", "gate.json")]
    assert not storage.exists(ws.uri("validate", "_work"))


def test_fresh_earlier_gates_are_reused_and_stale_ones_rerun(gx_root: str, ws: Workspace) -> None:
    earlier = ("collect", "anonymize", "curate")
    for gate in earlier:  # what the drivers do after each stage
        run_gate(gate, ws, PARAMS, context_root=gx_root)
    kept = {g: _gate_bytes(ws, g) for g in earlier}
    assert all(stale_reason(ws, PARAMS, g) is None for g in earlier)

    stage = ValidateStage(context_root=gx_root)
    run_stage(stage, ws, PARAMS)
    assert _report(ws)["rerun"] == ["import_annotations"]

    # New curate output: only that gate is stale, and validate leaves curate's folder alone.
    curate = storage.read_table(ws.manifest_uri("curate"))
    curate.loc[0, "curate_entropy"] = 5.5
    write_stage_table(ws, "curate", "manifest.parquet", curate)
    assert stale_reason(ws, PARAMS, "curate") == "table changed since the gate ran"
    run_stage(stage, ws, PARAMS)
    report = _report(ws)
    assert report["rerun"] == ["curate", "import_annotations"]
    assert report["gates"]["curate"]["table_sha256"] != json.loads(kept["curate"])["table_sha256"]
    assert {g: _gate_bytes(ws, g) for g in earlier} == kept

    # A new threshold makes every manifest gate's suite stale.
    changed = PARAMS.with_overrides({"validate.max_quarantine_fraction": 0.4})
    assert stale_reason(ws, changed, "collect").startswith("suite changed")
    run_stage(stage, ws, changed)
    assert _report(ws)["rerun"] == REPORTED
    assert _report(ws)["suites"]["visionloop_collect"]["hash"] == gate_suite_hash(
        "collect", changed
    )


def test_an_annotation_error_blocks_after_writing_the_report(gx_root: str, tmp_path: Path) -> None:
    ws = Workspace(str(tmp_path / "data"))
    out = write_pipeline(ws, n=10, quarantine=QUARANTINE, annotations=mock_annotations())
    ann = out["import_annotations"]
    ann.loc[[0, 1], "match_status"] = "unmatched"
    ann.loc[9, "match_status"] = "quarantined_item"
    write_stage_table(ws, "import_annotations", "annotations.parquet", ann)

    with pytest.raises(GateFailed) as info:
        run_stage(ValidateStage(context_root=gx_root), ws, PARAMS)
    report = _report(ws)
    assert report["success"] is False
    assert report["suites"]["visionloop_import_annotations"]["success"] is False
    assert report["suites"]["visionloop_curate"]["success"] is True
    assert [
        (f["gate"], f["key"], f["unexpected_count"], f["element_count"]) for f in report["failures"]
    ] == [("import_annotations", "unmatched_fraction", 2, 10)]
    assert [(w["gate"], w["key"], w["unexpected_count"]) for w in report["warnings"]] == [
        ("import_annotations", "on_quarantined_items", 1)
    ]
    message = str(info.value)
    assert "unmatched_fraction" in message and "2 of 10 rows failed" in message
    assert "docs_path" not in report["gates"]["import_annotations"]  # stable, DVC-tracked
    docs = re.search(r"(/\S+\.html)", message).group(1)
    assert os.path.isfile(docs)
    summary = read_summary(ws, "validate")  # written before raising
    assert summary is not None and summary.details["success"] is False
    assert summary.details["gates"]["import_annotations"] == {
        "success": False,
        "suite_hash": gate_suite_hash("import_annotations", PARAMS),
        "errors": 1,
        "warnings": 1,
    }


def test_a_failed_earlier_gate_blocks_validate(gx_root: str, tmp_path: Path) -> None:
    ws = Workspace(str(tmp_path / "data"))
    write_pipeline(ws, n=10, quarantine=QUARANTINE)
    curate = mock_manifest("curate", n=10, quarantine=QUARANTINE)
    curate.loc[[0, 1], "curate_brightness"] = -0.1
    write_stage_table(ws, "curate", "manifest.parquet", curate)
    assert not run_gate("curate", ws, PARAMS, context_root=gx_root).success

    with pytest.raises(GateFailed) as info:
        run_stage(ValidateStage(context_root=gx_root), ws, PARAMS)
    report = _report(ws)
    assert "curate" not in report["rerun"]  # its fresh (failed) gate.json was reused
    assert [(f["gate"], f["key"], f["unexpected_count"]) for f in report["failures"]] == [
        ("curate", "curate_brightness_range", 2)
    ]
    assert [r.gate for r in info.value.results] == ["curate"]
    assert "2 of 10 rows failed" in str(info.value)
