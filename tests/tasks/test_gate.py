"""The gate artifacts (tables and markdown summaries), captured instead of sent to Prefect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tasks.gate as tg
from tests.qa.builders import ann, table
from visionloop.config import Params
from visionloop.expectations.gate import ExpectationOutcome, GateResult
from visionloop.qa.run import run_qa


def outcome(key: str, severity: str, success: bool, table: str | None = None) -> ExpectationOutcome:
    return ExpectationOutcome(
        key=key,
        expectation="expect_column_values_to_not_be_in_set",
        column="check" if table else "match_status",
        severity=severity,
        success=success,
        unexpected_count=0 if success else 2,
        element_count=40,
        table=table,
    )


def result(success: bool) -> GateResult:
    return GateResult(
        gate="import_annotations",
        suite_name="visionloop_import_annotations",
        suite_hash="abc123def456",
        success=success,
        table_uri="data/import_annotations/annotations.parquet",
        table_sha256="0" * 64,
        row_count=40,
        results=[
            outcome("unmatched_fraction", "error", True),
            outcome("on_quarantined_items", "warning", False),
            outcome("qa_undefined_label", "error", success, table="qa"),
        ],
        docs_path="/gx/docs/page.html",
        companions={"qa": {"suite_name": "visionloop_import_annotations_qa", "row_count": 12}},
    )


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(tg, "create_table_artifact", lambda **kw: calls.append(("table", kw)))
    monkeypatch.setattr(tg, "create_markdown_artifact", lambda **kw: calls.append(("md", kw)))
    return calls


def test_a_table_and_a_summary_per_gate(made: list[tuple[str, dict[str, Any]]]) -> None:
    tg.publish_gate(result(success=False))
    (kind1, table_kw), (kind2, md_kw) = made
    assert (kind1, table_kw["key"]) == ("table", "gate-import-annotations")
    assert [r["expectation"] for r in table_kw["table"]] == [
        "unmatched_fraction",
        "on_quarantined_items",
        "qa_undefined_label",
    ]
    assert [r["table"] for r in table_kw["table"]] == ["", "", "qa"]
    assert table_kw["description"].startswith("Gate import_annotations FAILED")
    assert (kind2, md_kw["key"]) == ("md", "gate-import-annotations-summary")
    md = md_kw["markdown"]
    assert md.startswith("# Gate `import_annotations`: **FAILED** (blocks the pipeline)")
    assert "Suite `visionloop_import_annotations` version `abc123def456`" in md
    assert (
        "## Errors (blocking)\n\n- qa_undefined_label: expect_column_values_to_not_be_in_set" in md
    )
    assert "## Warnings\n\n- on_quarantined_items:" in md
    assert "Companion table `qa`: suite `visionloop_import_annotations_qa`, 12 rows." in md
    assert md.endswith("Data Docs: `/gx/docs/page.html`")


def test_a_passing_gate_with_warnings_says_so(made: list[tuple[str, dict[str, Any]]]) -> None:
    md = tg.gate_markdown(result(success=True))
    assert md.startswith("# Gate `import_annotations`: passed")
    assert "## Errors" not in md and "## Warnings" in md


def test_qa_findings_and_summary(made: list[tuple[str, dict[str, Any]]], tmp_path: Path) -> None:
    rows = [ann(0, box=(1.0, 1.0, 0.5, 5.0)), ann(1), ann(2, box=(10.5, 10.0, 50.0, 40.0))]
    rows += [ann(10 + i, item=f"i{i}", annotator="bob") for i in range(3)]
    from visionloop.qa.run import write_qa

    res = run_qa(table(rows), Params())
    qa = {**res.summary, "outputs": write_qa(res, str(tmp_path))}
    tg.publish_qa(qa)
    keys = [kw["key"] for _, kw in made]
    assert keys == ["qa-findings", "qa-scorecards", "qa-summary"]
    findings = made[0][1]
    assert findings["table"][0] == {
        "severity": "error",
        "check": "box_too_small",
        "item": "img_a",
        "annotations": "a0",
        "category": "car",
        "annotator": "alice",
        "reason": "box is 0.5 x 5 px (a side below 1 px)",
    }
    assert "1 error(s), 1 warning(s)" in findings["description"]
    assert f"showing {len(res.findings)} of {len(res.findings)}" in findings["description"]
    assert [c["annotator"] for c in made[1][1]["table"]] == ["alice", "bob"]
    md = made[2][1]["markdown"]
    assert "**1 error(s)** (blocking), 1 warning(s)" in md
    assert md.splitlines()[6] == "| box_too_small | 1 | 0 | 0 |"  # errors ranked first


def test_long_findings_are_cut_for_the_ui() -> None:
    rows = [ann(i, item=f"img_{i}", box=(1.0, 1.0, 0.5, 5.0)) for i in range(12)]
    findings = run_qa(table(rows), Params()).findings
    assert len(tg.finding_rows(findings, limit=5)) == 5
    many = findings.copy()
    many.at[0, "annotation_ids"] = [f"a{i}" for i in range(8)]
    assert tg.finding_rows(many, limit=1)[0]["annotations"] == "a0, a1, a2, a3, a4 (+3)"


def test_no_validate_report_publishes_nothing(
    made: list[tuple[str, dict[str, Any]]], tmp_path: Path
) -> None:
    params = Params().with_overrides({"run.data_dir": str(tmp_path / "data")})
    assert tg.publish_validation(params) is None
    assert made == []
