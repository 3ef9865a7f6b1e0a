"""The Great Expectations gates as Prefect artifacts: a table and a markdown summary per gate,
and the label-QA findings of the import_annotations gate as a table of their own.

- ``gate_task`` runs the gate after a stage (collect, anonymize, curate, refresh), publishes
  it and raises ``GateFailed`` when an error-level expectation failed;
- ``publish_validation_task`` publishes what the validate stage decided (the
  import_annotations gate with its QA companion table, the QA findings and scorecards) from
  ``<data>/validate/report.json``; the flow calls it after validate whether or not validate
  raised, so a blocked run shows why in the UI. It returns the suite versions that passed, for
  the snapshot's commit message.

Artifact keys: ``gate-<gate>`` (table), ``gate-<gate>-summary`` (markdown), ``qa-findings``,
``qa-scorecards`` (tables) and ``qa-summary`` (markdown).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from visionloop import storage
from visionloop.config import Params
from visionloop.stages.base import Workspace

MAX_FINDING_ROWS = 500  # a Prefect table artifact is for reading, the Parquet file for tools
MAX_LISTED = 20  # failed expectations / checks listed in a markdown summary


def _key(gate: str) -> str:
    return f"gate-{gate.replace('_', '-')}"


def gate_rows(result: Any) -> list[dict[str, Any]]:
    return [
        {
            "expectation": r.get("key") or r.get("expectation"),
            "type": r.get("expectation"),
            "table": r.get("table") or "",
            "column": r.get("column") or "",
            "severity": r.get("severity"),
            "success": r.get("success"),
            "unexpected": r.get("unexpected_count"),
            "of": r.get("element_count"),
        }
        for r in asdict(result)["results"]
    ]


def gate_markdown(result: Any, qa: dict[str, Any] | None = None) -> str:
    """The summary of one gate: verdict, suite version, what failed, where the docs are."""
    state = "passed" if result.success else "**FAILED** (blocks the pipeline)"
    lines = [
        f"# Gate `{result.gate}`: {state}",
        "",
        f"Suite `{result.suite_name}` version `{result.suite_hash}` on `{result.table_uri}` "
        f"({result.row_count} rows); {len(result.results)} expectations, "
        f"{len(result.errors)} error-level and {len(result.warnings)} warning-level failed.",
    ]
    for table, info in sorted((getattr(result, "companions", None) or {}).items()):
        lines.append(
            f"Companion table `{table}`: suite `{info.get('suite_name')}`, "
            f"{info.get('row_count')} rows."
        )
    for title, items in (("Errors (blocking)", result.errors), ("Warnings", result.warnings)):
        if not items:
            continue
        lines += ["", f"## {title}", ""]
        lines += [f"- {e.describe()}" for e in items[:MAX_LISTED]]
        if len(items) > MAX_LISTED:
            lines.append(f"- ... and {len(items) - MAX_LISTED} more")
    if qa:
        lines += ["", *qa_markdown_lines(qa)]
    docs = result.docs_path or result.docs_index
    lines += ["", f"Data Docs: `{docs}`" if docs else "Data Docs: not built"]
    return "\n".join(lines)


def qa_markdown_lines(qa: dict[str, Any]) -> list[str]:
    """Label QA in a few lines: tally, checks with findings, agreement and gold figures."""
    if not qa.get("enabled", True):
        return ["## Label QA", "", "Disabled (validate.qa.enabled is false)."]
    sev = qa.get("by_severity") or {}
    lines = [
        "## Label QA",
        "",
        f"{qa.get('annotations', 0)} annotation(s) on {qa.get('items', 0)} item(s): "
        f"**{sev.get('error', 0)} error(s)** (blocking), {sev.get('warning', 0)} warning(s), "
        f"{sev.get('info', 0)} info. Label set: {(qa.get('label_set') or {}).get('source')}.",
    ]
    by_check = qa.get("by_check") or {}
    if by_check:
        lines += ["", "| check | error | warning | info |", "|---|---:|---:|---:|"]
        ranked = sorted(
            by_check.items(),
            key=lambda kv: (-kv[1].get("error", 0), -kv[1].get("warning", 0), kv[0]),
        )
        for check, n in ranked[:MAX_LISTED]:
            lines.append(
                f"| {check} | {n.get('error', 0)} | {n.get('warning', 0)} | {n.get('info', 0)} |"
            )
    agree = qa.get("agreement") or {}
    if agree.get("items_compared"):
        alpha = (agree.get("alpha") or {}).get("alpha")
        lines += [
            "",
            f"Agreement on {agree['items_compared']} item(s) labelled by several annotators: "
            f"F1 {_fmt(agree.get('f1'))}, mean IoU {_fmt(agree.get('mean_iou'))}, "
            f"Krippendorff's alpha (1 - IoU) {_fmt(alpha)}.",
        ]
    gold = agree.get("gold") or {}
    if gold.get("items"):
        lines.append(
            f"Gold: {gold['items']} item(s), accuracy {_fmt(gold.get('accuracy'))} "
            f"(target {gold.get('target')}, CVAT's definition)."
        )
    outputs = qa.get("outputs") or {}
    if outputs.get("findings"):
        lines.append(f"Every finding: `{outputs['findings']}`.")
    return lines


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.3f}"


def publish_gate(result: Any, qa: dict[str, Any] | None = None) -> None:
    """A table (one row per expectation) and a markdown summary of one gate result."""
    state = "passed" if result.success else "FAILED"
    create_table_artifact(
        key=_key(result.gate),
        table=gate_rows(result),
        description=f"Gate {result.gate} {state}. Data Docs: {result.docs_path}",
    )
    create_markdown_artifact(
        key=f"{_key(result.gate)}-summary",
        markdown=gate_markdown(result, qa),
        description=f"Gate {result.gate} {state}",
    )


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and v != v) else str(v)


def finding_rows(findings: Any, limit: int = MAX_FINDING_ROWS) -> list[dict[str, Any]]:
    """The findings table as artifact rows (errors first, as the table is sorted)."""
    rows = []
    for r in findings.head(limit).itertuples(index=False):
        ids = [str(a) for a in r.annotation_ids]
        more = f" (+{len(ids) - 5})" if len(ids) > 5 else ""
        rows.append(
            {
                "severity": r.severity,
                "check": r.check,
                "item": _text(r.item),
                "annotations": ", ".join(ids[:5]) + more,
                "category": _text(r.category),
                "annotator": _text(r.annotator),
                "reason": r.reason,
            }
        )
    return rows


def publish_qa(qa: dict[str, Any]) -> None:
    """The QA findings (and annotator scorecards, when there are several annotators)."""
    from visionloop.qa.run import read_findings

    outputs = qa.get("outputs") or {}
    uri = outputs.get("findings")
    if uri and storage.exists(uri):
        findings = read_findings(uri)
        shown = min(len(findings), MAX_FINDING_ROWS)
        sev = qa.get("by_severity") or {}
        create_table_artifact(
            key="qa-findings",
            table=finding_rows(findings),
            description=(
                f"Label QA: {sev.get('error', 0)} error(s), {sev.get('warning', 0)} warning(s), "
                f"{sev.get('info', 0)} info; showing {shown} of {len(findings)} (all in {uri})"
            ),
        )
    cards = outputs.get("scorecards")
    if cards and storage.exists(cards):
        table = storage.read_table(cards)
        if len(table):
            create_table_artifact(
                key="qa-scorecards",
                table=table.astype(object).where(table.notna(), None).to_dict("records"),
                description="Per-annotator agreement and gold scores (CVAT's definitions)",
            )
    create_markdown_artifact(key="qa-summary", markdown="\n".join(qa_markdown_lines(qa)))


@task(name="gate", cache_policy=NO_CACHE, persist_result=False, task_run_name="gate-{gate}")
def gate_task(gate: str, params: Params, context_root: str = ".") -> bool:
    """Run the suite; publish its table; raise GateFailed (failing the flow) when it blocks."""
    from visionloop.expectations.gate import enforce, run_gate

    result = run_gate(gate, Workspace.from_params(params), params, context_root=context_root)
    publish_gate(result)
    enforce(result)
    return bool(result.success)


def publish_validation(params: Params, context_root: str = ".") -> dict[str, Any] | None:
    """Publish validate's gate, QA findings and summaries; return the suite versions (None
    when validate wrote no report)."""
    import json

    from visionloop.expectations.gate import GateResult
    from visionloop.stages.validate import OWN_GATE, suite_versions

    ws = Workspace.from_params(params)
    uri = ws.uri("validate", "report.json")
    if not storage.exists(uri):
        return None
    report = json.loads(storage.read_text(uri))
    qa = report.get("qa")
    own = report.get("gates", {}).get(OWN_GATE)
    if own is not None:
        result = GateResult.from_dict(own)
        index = os.path.join(context_root, "gx", "uncommitted", "data_docs", "local_site")
        index = os.path.join(index, "index.html")
        if result.docs_index is None and os.path.exists(index):
            result.docs_index = os.path.abspath(index)  # report.json leaves paths out
        publish_gate(result, qa)
    if qa:
        publish_qa(qa)
    return suite_versions(report)


@task(name="publish-validation", cache_policy=NO_CACHE, persist_result=False)
def publish_validation_task(params: Params, context_root: str = ".") -> dict[str, Any] | None:
    return publish_validation(params, context_root)
