"""validate: the last gate before a snapshot, and one report of every gate that led here.

The stage runs the ``import_annotations`` gate (annotations are checked nowhere else) and
re-reads the ``gate.json`` each earlier stage's gate left in that stage's folder. An earlier
gate is evaluated again only when its ``gate.json`` is missing or stale: written by another
suite version (params or code changed) or for other bytes than the stage's current table.
Gates are the stage's "work": ``plan`` lists them, ``process`` evaluates them (one GX context
per process, see ``gate.py``) and ``finalize`` writes, all inside ``<data>/validate/`` (its
DVC out; it never rewrites another stage's folder):

- ``gate.json``: the import_annotations gate's result (this stage's own gate);
- ``report.json``: every gate's result, overall success, the gates evaluated in this run
  (``rerun``), and which suite versions passed (``suites``: name -> short hash of the
  expectation configs + success);
- ``summary.json``: the counts of the curate manifest (what a snapshot publishes);
- label QA (``visionloop/qa``) of the annotations a snapshot would publish:
  ``qa_findings.parquet`` (every finding: check, severity, items and annotations concerned,
  reason), ``qa_agreement.parquet``, ``qa_scorecards.parquet`` and ``qa_gold.parquet``, with
  their summary under ``qa`` in ``report.json``. The findings are the import_annotations
  gate's companion table: error-level findings fail it; warnings are reported here, in the
  log and in the Prefect artifacts.

If any error-level expectation failed, finalize raises ``GateFailed`` after writing all of them,
so ``dvc repro`` and the Prefect flow stop before a snapshot while the report stays readable.
``suite_versions_text`` formats the suite versions that passed for the snapshot's commit
message.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pandas as pd

from visionloop import manifest, storage
from visionloop.config import Params
from visionloop.expectations.gate import (
    GateFailed,
    GateResult,
    evaluate_gate,
    gate_table_uri,
    read_gate_result,
    table_sha256,
    write_gate_result,
)
from visionloop.expectations.suites import QA_TABLE, gate_suite_hash
from visionloop.stages.base import (
    Shard,
    StageSummary,
    Workspace,
    clear_work,
    read_parts,
    write_summary,
    write_work_list,
)

log = logging.getLogger(__name__)

NAME = "validate"
OWN_GATE = "import_annotations"  # run on every validate: the last gate before a snapshot
EARLIER_GATES: tuple[str, ...] = ("collect", "anonymize", "curate")
REPORT_GATES: tuple[str, ...] = (*EARLIER_GATES, OWN_GATE)
COUNTS_FROM = "curate"  # the manifest whose accepted items a snapshot publishes


def stale_reason(ws: Workspace, params: Params, gate: str) -> str | None:
    """Why an earlier gate's ``gate.json`` cannot be trusted (None when it can)."""
    result = read_gate_result(ws, gate)
    if result is None:
        return "no gate.json"
    current = gate_suite_hash(gate, params)
    if result.suite_hash != current:
        return f"suite changed ({result.suite_hash} -> {current})"
    uri = gate_table_uri(ws, gate)
    if not storage.exists(uri):
        return f"{uri} is missing"
    if result.table_sha256 != table_sha256(uri):
        return "table changed since the gate ran"
    return None


class ValidateStage:
    """Run the last gate, re-evaluate stale earlier ones, and report them all."""

    name = NAME

    def __init__(self, context_root: str = ".") -> None:
        self.context_root = context_root  # where the GX file context lives (<root>/gx/)

    def plan(self, ws: Workspace, params: Params) -> list[Shard]:
        gates: list[str] = []
        for gate in EARLIER_GATES:
            why = stale_reason(ws, params, gate)
            if why is not None:
                log.info("validate: evaluating the %s gate again (%s)", gate, why)
                gates.append(gate)
        gates.append(OWN_GATE)
        # All gates in one shard: GX contexts are per process, and gates are cheap.
        rows = pd.DataFrame({"gate": gates})
        return write_work_list(ws, NAME, rows, shard_size=len(rows))

    def process(self, ws: Workspace, params: Params, shard: Shard) -> str:
        """Evaluate the listed gates; failures are recorded, not raised (finalize decides).

        Label QA runs here, before the import_annotations gate that validates its findings;
        its tables wait in the work folder until finalize publishes them.
        """
        from visionloop.qa.run import workspace_qa, write_qa

        out = []
        for gate in shard.rows()["gate"]:
            companions = None
            if gate == OWN_GATE:
                qa = workspace_qa(ws, params)
                write_qa(qa, ws.work_uri(NAME, QA_WORK))
                stable = {k: v for k, v in qa.summary.items() if k != "elapsed_s"}
                storage.write_text_atomic(
                    ws.work_uri(NAME, QA_WORK, "summary.json"),
                    json.dumps(stable, indent=2, sort_keys=True, default=str) + "\n",
                )
                companions = {QA_TABLE: qa.findings}
            result = evaluate_gate(
                gate, ws, params, context_root=self.context_root, companions=companions
            )
            full = json.dumps(result.to_dict(stable=False), default=str)  # keeps the docs path
            out.append({"gate": gate, "success": result.success, "result": full})
        frame = pd.DataFrame(out, columns=["gate", "success", "result"])
        storage.write_table(shard.part_uri, frame)
        return shard.part_uri

    def finalize(self, ws: Workspace, params: Params, parts: list[str]) -> StageSummary:
        ran = read_parts(parts)
        evaluated = (
            {}
            if ran.empty
            else {
                g: GateResult.from_json(j) for g, j in zip(ran["gate"], ran["result"], strict=True)
            }
        )
        if OWN_GATE not in evaluated:
            raise RuntimeError(f"validate: the {OWN_GATE} gate did not run (parts: {parts})")
        results: dict[str, GateResult] = {}
        for gate in REPORT_GATES:
            result = evaluated.get(gate) or read_gate_result(ws, gate)
            if result is None:  # fresh at plan time, gone now: someone else is writing
                raise FileNotFoundError(f"validate: gate.json of {gate!r} disappeared")
            results[gate] = result
        rerun = [g for g in REPORT_GATES if g in evaluated]
        qa_summary, qa_uris = _publish_qa(ws)
        write_gate_result(ws, NAME, results[OWN_GATE])
        report = build_report(results, rerun)
        report["qa"] = {**qa_summary, "outputs": qa_uris}
        report_uri = ws.uri(NAME, "report.json")
        storage.write_text_atomic(report_uri, json.dumps(report, indent=2, sort_keys=True) + "\n")

        counts = manifest.status_counts(storage.read_table(ws.manifest_uri(COUNTS_FROM)))
        summary = StageSummary(
            stage=NAME,
            input=counts["input"],
            accepted=counts["accepted"],
            quarantined=counts["quarantined"],
            reasons=counts["reasons"],
            outputs=[report_uri, ws.uri(NAME, "gate.json")],
            details={
                "success": report["success"],
                "qa": {
                    "annotations": qa_summary.get("annotations"),
                    "findings": qa_summary.get("findings"),
                    "by_severity": qa_summary.get("by_severity"),
                    "outputs": qa_uris,
                },
                "gates": {
                    g: {
                        "success": r.success,
                        "suite_hash": r.suite_hash,
                        "errors": len(r.errors),
                        "warnings": len(r.warnings),
                    }
                    for g, r in results.items()
                },
                "rerun": rerun,
            },
        )
        write_summary(ws, summary)  # also when failing, before raising
        clear_work(ws, NAME)
        failed = [r for r in results.values() if not r.success]
        if failed:
            raise GateFailed(failed)
        for gate, r in results.items():
            if r.warnings:
                log.warning(
                    "validate: gate %s passed with warnings: %s",
                    gate,
                    "; ".join(w.describe() for w in r.warnings),
                )
        warned = {
            c: n["warning"]
            for c, n in (qa_summary.get("by_check") or {}).items()
            if n.get("warning")
        }
        if warned:
            log.warning(
                "validate: label QA warnings (not blocking): %s; see %s",
                ", ".join(f"{c}={n}" for c, n in sorted(warned.items())),
                qa_uris["findings"],
            )
        return summary


QA_WORK = "qa"  # work sub-folder holding the QA tables between process and finalize


def _publish_qa(ws: Workspace) -> tuple[dict[str, Any], dict[str, str]]:
    """Move the QA tables from the work folder to ``<data>/validate/``; (summary, uris)."""
    from visionloop.qa.run import FINDINGS_FILE, TABLE_FILES

    summary_uri = ws.work_uri(NAME, QA_WORK, "summary.json")
    if not storage.exists(summary_uri):
        raise FileNotFoundError(f"validate: the label-QA outputs are missing ({summary_uri})")
    summary = json.loads(storage.read_text(summary_uri))
    uris: dict[str, str] = {}
    for name, file in {"findings": FINDINGS_FILE, **TABLE_FILES}.items():
        uris[name] = ws.uri(NAME, file)
        data = storage.read_bytes(ws.work_uri(NAME, QA_WORK, file))
        storage.write_bytes_atomic(uris[name], data)
    return summary, uris


def suite_versions(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """suite name -> {gate, hash, success} of a validate ``report.json`` document."""
    return dict(sorted((report.get("suites") or {}).items()))


def suite_versions_text(ws: Workspace) -> str:
    """Lines for a snapshot's commit message: the suite versions validate checked, whether
    each passed, and the label-QA tally (empty when validate has not run)."""
    uri = ws.uri(NAME, "report.json")
    if not storage.exists(uri):
        return ""
    report = json.loads(storage.read_text(uri))
    lines = ["Great Expectations suites (name@version):"]
    for name, s in suite_versions(report).items():
        lines.append(f"  {name}@{s['hash']}: {'passed' if s['success'] else 'FAILED'}")
    qa = report.get("qa") or {}
    sev = qa.get("by_severity")
    if sev:
        lines.append(
            f"Label QA: {sev.get('error', 0)} error(s), {sev.get('warning', 0)} warning(s), "
            f"{sev.get('info', 0)} info on {qa.get('annotations', 0)} annotation(s)"
        )
    return "\n".join(lines)


def build_report(results: dict[str, GateResult], rerun: list[str]) -> dict[str, Any]:
    """report.json: per-gate results, what failed, and the suite versions that passed."""
    failures = [{"gate": g, **_brief(e)} for g, r in results.items() for e in r.errors]
    warnings = [{"gate": g, **_brief(e)} for g, r in results.items() for e in r.warnings]
    return {
        "success": all(r.success for r in results.values()),
        "suites": {
            r.suite_name: {"gate": g, "hash": r.suite_hash, "success": r.success}
            for g, r in results.items()
        },
        "failures": failures,
        "warnings": warnings,
        "rerun": rerun,
        "gates": {g: r.to_dict() for g, r in results.items()},
    }


def _brief(outcome: Any) -> dict[str, Any]:
    return {
        "key": outcome.key,
        "expectation": outcome.expectation,
        "column": outcome.column,
        "unexpected_count": outcome.unexpected_count,
        "element_count": outcome.element_count,
        "message": outcome.describe(),
    }
