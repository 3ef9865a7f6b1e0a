"""run_qa as a whole: one findings table (contract, order, severities from params), the
pipeline's view of a workspace, and the files it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tests.helpers import mock_manifest, write_stage_table
from tests.qa.builders import ann, checks_of, params, table
from visionloop import storage
from visionloop.qa.checks import FINDINGS_SCHEMA, error_checks
from visionloop.qa.run import read_findings, run_qa, workspace_qa, write_qa
from visionloop.stages.base import Workspace


def mixed() -> list[dict]:
    return [
        ann(0, box=(10.0, 10.0, 0.5, 20.0)),  # box_too_small: error
        ann(1, box=(100.0, 10.0, 50.0, 40.0)),
        ann(2, box=(100.5, 10.0, 50.0, 40.0)),  # duplicate of a1: warning
        ann(3, item="img_b", category="person"),  # few samples: info
    ]


def test_one_table_errors_first_with_the_contract_columns() -> None:
    res = run_qa(table(mixed()), params())
    f = res.findings
    assert list(f.columns) == FINDINGS_SCHEMA.names
    assert f["severity"].tolist() == sorted(f["severity"], key=["error", "warning", "info"].index)
    assert f["check"].iloc[0] == "box_too_small" and f["severity"].iloc[0] == "error"
    assert len(res.errors) == 1 and checks_of(res.warnings, "duplicate_annotation").shape[0] == 1
    s = res.summary
    assert s["by_severity"]["error"] == 1 and s["findings"] == len(f)
    assert s["by_check"]["box_too_small"] == {"error": 1}
    assert (s["annotations"], s["items"], s["annotators"]) == (4, 2, ["alice"])


def test_severity_overrides_and_turning_checks_off() -> None:
    p = params(severity={"box_too_small": "warning", "duplicate_annotation": "off"})
    f = run_qa(table(mixed()), p).findings
    assert checks_of(f, "box_too_small")["severity"].tolist() == ["warning"]
    assert checks_of(f, "duplicate_annotation").empty
    assert "box_too_small" not in error_checks(p.validate_.qa.severity)
    with pytest.raises(ValidationError, match="unknown QA checks"):
        params(severity={"no_such_check": "error"})
    with pytest.raises(ValidationError, match="severities must be"):
        params(severity={"box_too_small": "fatal"})


def test_disabled_qa_finds_nothing() -> None:
    res = run_qa(table(mixed()), params(enabled=False))
    assert res.findings.empty and list(res.findings.columns) == FINDINGS_SCHEMA.names
    assert res.summary == {"enabled": False}


def test_files_round_trip(tmp_path: Path) -> None:
    res = run_qa(table([*mixed(), ann(9, annotator="bob")]), params())
    uris = write_qa(res, str(tmp_path))
    assert sorted(Path(u).name for u in uris.values()) == [
        "qa_agreement.parquet",
        "qa_findings.parquet",
        "qa_gold.parquet",
        "qa_scorecards.parquet",
    ]
    assert pq.read_schema(uris["findings"]).equals(FINDINGS_SCHEMA, check_metadata=False)
    back = read_findings(uris["findings"])
    assert back["annotation_ids"].tolist() == res.findings["annotation_ids"].map(list).tolist()
    assert back["reason"].tolist() == res.findings["reason"].tolist()
    assert len(storage.read_table(uris["scorecards"])) == 2  # alice and bob


def test_workspace_qa_sees_what_the_snapshot_publishes(tmp_path: Path) -> None:
    ws = Workspace(str(tmp_path / "data"))
    curate = mock_manifest("curate", n=3)
    write_stage_table(ws, "curate", "manifest.parquet", curate)
    ids = curate["item_id"].tolist()
    rows = [
        ann(0, item_id=ids[0], category="car"),
        ann(1, item_id=ids[0], category="dog"),  # not in categories.json: error
        ann(2, item_id=ids[1], box=(1.0, 1.0, 0.2, 0.2), match_status="quarantined_item"),
        ann(3, item="gone.jpg", box=(1.0, 1.0, 0.2, 0.2), match_status="unmatched"),
    ]
    write_stage_table(ws, "import_annotations", "annotations.parquet", table(rows))
    cats = {"categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}]}
    storage.write_text_atomic(ws.uri("import_annotations", "categories.json"), json.dumps(cats))
    res = workspace_qa(ws, params())
    f = res.findings
    assert checks_of(f, "undefined_label")["annotation_ids"].map(list).tolist() == [["a1"]]
    assert checks_of(f, "label_defined_but_unused")["category"].tolist() == ["person"]
    # items 1 and 2 are accepted but have no published annotation
    assert checks_of(f, "missing_annotation")["item"].tolist() == sorted([ids[1], ids[2]])
    assert checks_of(f, "box_too_small").empty  # only on rows that are not published
    assert res.summary["rows_not_published"] == 2
    assert res.summary["label_set"]["source"] == "categories.json"


def test_empty_and_minimal_tables() -> None:
    from visionloop.schema import ANNOTATION_SCHEMA

    empty = ANNOTATION_SCHEMA.empty_table().to_pandas()
    res = run_qa(empty, params(), items=["x", "y"])
    assert res.findings[["check", "item"]].values.tolist() == [
        ["missing_annotation", "x"],
        ["missing_annotation", "y"],
    ]
    assert res.agreement.empty and res.scorecards.empty and res.gold.empty
    # a hand-made table with only a label and a box is enough
    minimal = pd.DataFrame({"category": ["car"], "bbox_x": [1.0], "bbox_y": [1.0]})
    minimal["bbox_w"] = minimal["bbox_h"] = 5.0
    assert sorted(run_qa(minimal, params()).findings["check"]) == [
        "few_samples_in_label",
        "only_one_label",
    ]
    with pytest.raises(ValueError, match="lacks required column"):
        run_qa(minimal.drop(columns=["category"]), params())


def test_the_gate_checks_only_published_rows() -> None:
    from visionloop.qa.run import qa_findings_for_gate

    rows = [ann(0), ann(1, box=(1.0, 1.0, 0.2, 0.2), match_status="quarantined_item")]
    found = qa_findings_for_gate(table(rows), params())
    assert sorted(found["check"]) == ["few_samples_in_label", "only_one_label"]  # no box_too_small
