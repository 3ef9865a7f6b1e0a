"""validate runs label QA before the import_annotations gate: an error-level finding blocks
the snapshot (after every output is written), a warning passes and shows in the artifacts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import write_pipeline, write_stage_table
from visionloop import storage
from visionloop.config import Params
from visionloop.expectations.gate import GateFailed
from visionloop.expectations.suites import gate_suite_hash
from visionloop.qa.run import read_findings
from visionloop.stages.base import Workspace, read_summary, run_stage
from visionloop.stages.validate import ValidateStage, suite_versions_text

PARAMS = Params().with_overrides({"validate.keep_validations": 2})
QA_FILES = (
    "qa_findings.parquet",
    "qa_agreement.parquet",
    "qa_scorecards.parquet",
    "qa_gold.parquet",
)


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("gxroot"))


def _report(ws: Workspace) -> dict[str, Any]:
    return json.loads(storage.read_text(ws.uri("validate", "report.json")))


def test_an_error_level_finding_blocks_after_writing_every_output(
    gx_root: str, tmp_path: Path
) -> None:
    ws = Workspace(str(tmp_path / "data"))
    ann = write_pipeline(ws, n=6)["import_annotations"]
    ann.loc[3, "bbox_w"] = 0.5  # positive, so only label QA (Datumaro: < 1 px) objects
    write_stage_table(ws, "import_annotations", "annotations.parquet", ann)

    with pytest.raises(GateFailed) as info:
        run_stage(ValidateStage(context_root=gx_root), ws, PARAMS)
    report = _report(ws)
    assert report["success"] is False
    assert report["suites"]["visionloop_import_annotations"] == {
        "gate": "import_annotations",
        "hash": gate_suite_hash("import_annotations", PARAMS),
        "success": False,
    }
    assert [(f["gate"], f["key"], f["unexpected_count"]) for f in report["failures"]] == [
        ("import_annotations", "qa_box_too_small", 1)
    ]
    assert report["qa"]["by_severity"]["error"] == 1
    findings = read_findings(report["qa"]["outputs"]["findings"])
    errors = findings[findings["severity"] == "error"]
    assert errors["annotation_ids"].tolist() == [[ann.loc[3, "annotation_id"]]]
    assert "qa_box_too_small" in str(info.value)
    for name in QA_FILES:
        assert storage.exists(ws.uri("validate", name))
    summary = read_summary(ws, "validate")
    assert summary.details["success"] is False
    assert summary.details["qa"]["by_severity"]["error"] == 1
    assert not storage.exists(ws.uri("validate", "_work"))


def test_warnings_pass_are_reported_and_reach_the_artifacts(
    gx_root: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace(str(tmp_path / "data"))
    ann = write_pipeline(ws, n=6)["import_annotations"]
    ann.loc[1, ["bbox_x", "category", "category_id"]] = ann.loc[
        0, ["bbox_x", "category", "category_id"]
    ].to_numpy()
    write_stage_table(ws, "import_annotations", "annotations.parquet", ann)

    with caplog.at_level(logging.WARNING, logger="visionloop.stages.validate"):
        run_stage(ValidateStage(context_root=gx_root), ws, PARAMS)
    report = _report(ws)
    assert report["success"] is True and report["failures"] == []
    assert report["warnings"] == []  # QA warnings are not GX failures ...
    assert report["qa"]["by_check"]["duplicate_annotation"] == {"warning": 1}  # ... but reported
    assert "label QA warnings (not blocking): duplicate_annotation=1" in caplog.text

    # The outputs are byte-identical on a rerun (they are DVC outputs).
    before = {n: storage.read_bytes(ws.uri("validate", n)) for n in (*QA_FILES, "report.json")}
    run_stage(ValidateStage(context_root=gx_root), ws, PARAMS)
    assert {n: storage.read_bytes(ws.uri("validate", n)) for n in before} == before

    # What the flow publishes after validate (tasks/gate.py), captured instead of sent.
    import tasks.gate as tg

    made: list[tuple[str, str, Any]] = []
    monkeypatch.setattr(
        tg, "create_table_artifact", lambda **kw: made.append(("table", kw["key"], kw))
    )
    monkeypatch.setattr(
        tg, "create_markdown_artifact", lambda **kw: made.append(("markdown", kw["key"], kw))
    )
    params = PARAMS.with_overrides({"run.data_dir": ws.data_dir})
    versions = tg.publish_validation(params, context_root=gx_root)
    assert versions == report["suites"]
    assert [k for _, k, _ in made] == [
        "gate-import-annotations",
        "gate-import-annotations-summary",
        "qa-findings",
        "qa-scorecards",
        "qa-summary",
    ]
    by_key = {k: kw for _, k, kw in made}
    warned = [r for r in by_key["qa-findings"]["table"] if r["severity"] == "warning"]
    assert [r["check"] for r in warned] == ["duplicate_annotation"]
    assert warned[0]["annotations"] == ", ".join(ann.loc[[0, 1], "annotation_id"])
    md = by_key["gate-import-annotations-summary"]["markdown"]
    assert md.startswith("# Gate `import_annotations`: passed")
    assert "| duplicate_annotation | 0 | 1 | 0 |" in md
    assert "Data Docs: `" in md and "index.html" in md

    text = suite_versions_text(ws)
    assert (
        f"visionloop_import_annotations@{gate_suite_hash('import_annotations', PARAMS)}: passed"
        in text
    )
    assert "Label QA: 0 error(s), 1 warning(s)" in text
