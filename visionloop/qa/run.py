"""Run every label-QA check on an annotation table, and the files the validate stage writes.

``run_qa`` is the one entry point (the CLI, the gate and the validate stage all call it):
structure (Datumaro), geometry, tracks and agreement/gold, each over the same normalised
working frame, into one findings table plus the agreement tables and a summary.

``workspace_qa`` is what the pipeline checks: the annotations a snapshot would publish
(``match_status == "matched"``) of ``<data>/import_annotations/annotations.parquet``, against
the label set of its ``categories.json`` and the items the curate manifest accepted (so that an
accepted image nobody labelled is a ``missing_annotation``). The validate stage writes its
result next to ``report.json``: ``qa_findings.parquet`` (``checks.FINDINGS_SCHEMA``),
``qa_agreement.parquet`` (one row per item, label and annotator pair), ``qa_scorecards.parquet``
(one row per annotator) and ``qa_gold.parquet`` (one row per gold item and annotator).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from visionloop import storage
from visionloop.config import Params
from visionloop.qa import checks
from visionloop.qa.agreement import (
    GOLD_COLUMNS,
    PAIR_COLUMNS,
    SCORECARD_COLUMNS,
    agreement,
    public,
)
from visionloop.qa.frame import prepare
from visionloop.qa.geometry import geometry_findings
from visionloop.qa.structure import LabelSpec, structure_findings
from visionloop.qa.tracks import track_findings
from visionloop.stages.base import Workspace

log = logging.getLogger(__name__)

FINDINGS_FILE = "qa_findings.parquet"
TABLE_FILES: dict[str, str] = {
    "agreement": "qa_agreement.parquet",
    "scorecards": "qa_scorecards.parquet",
    "gold": "qa_gold.parquet",
}
MATCHED = "matched"


@dataclass
class QAResult:
    findings: pd.DataFrame  # checks.FINDINGS_SCHEMA
    agreement: pd.DataFrame = field(default_factory=lambda: _empty(PAIR_COLUMNS))
    scorecards: pd.DataFrame = field(default_factory=lambda: _empty(SCORECARD_COLUMNS))
    gold: pd.DataFrame = field(default_factory=lambda: _empty(GOLD_COLUMNS))
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> pd.DataFrame:
        return self.findings[self.findings["severity"] == "error"]

    @property
    def warnings(self) -> pd.DataFrame:
        return self.findings[self.findings["severity"] == "warning"]


def _empty(columns: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def label_spec(params: Params, categories: Mapping[str, Any] | None, w: pd.DataFrame) -> LabelSpec:
    """The label set: ``qa.labels``, else ``categories.json``, else the table's own labels;
    ``qa.attributes`` (when given) replaces any attribute definitions."""
    q = params.validate_.qa
    if q.labels:
        spec = LabelSpec.from_labels(q.labels, source="params")
    elif categories is not None:
        spec = LabelSpec.from_categories(categories)
    else:
        spec = LabelSpec.inferred(w)
    if q.attributes:
        spec = spec.with_attributes(q.attributes)
    return spec


def run_qa(
    annotations: pd.DataFrame,
    params: Params | None = None,
    *,
    categories: Mapping[str, Any] | None = None,
    spec: LabelSpec | None = None,
    items: Iterable[str] | None = None,
) -> QAResult:
    """Every QA check on ``annotations`` (any rows of the canonical table).

    ``categories`` is a ``categories.json`` document (or pass ``spec`` directly); ``items`` the
    dataset's item keys, for ``missing_annotation``.
    """
    params = params or Params()
    q = params.validate_.qa
    started = time.perf_counter()
    if not q.enabled:
        return QAResult(checks.empty_findings(), summary={"enabled": False})
    w = prepare(annotations)
    spec = spec or label_spec(params, categories, w)
    found = structure_findings(w, spec, q, items)
    found += geometry_findings(w, q, tolerance_px=params.validate_.bbox_tolerance_px)
    found += track_findings(w, q)
    agree = agreement(w, q)
    found += agree.findings
    findings = checks.findings_frame(found, q.severity)
    summary = {
        "enabled": True,
        "annotations": len(w),
        "items": int(w["_item"].nunique()),
        "items_expected": None if items is None else len(set(items)),
        "annotators": sorted(w["_annotator"].dropna().unique().tolist()),
        "label_set": {
            "source": spec.source,
            "labels": len(spec.labels),
            "attributes_checked": bool(spec.attributes),
        },
        "tracks": int(
            w.loc[w["_track"].fillna(-1) >= 0, ["_seq", "_track"]].drop_duplicates().shape[0]
        ),
        **checks.counts(findings),
        "agreement": agree.summary,
        "severity_overrides": dict(q.severity),
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    log.info(
        "label QA: %d annotation(s), %d error(s), %d warning(s), %d info in %.2f s",
        len(w),
        summary["by_severity"]["error"],
        summary["by_severity"]["warning"],
        summary["by_severity"]["info"],
        summary["elapsed_s"],
    )
    return QAResult(
        findings=findings,
        agreement=public(agree.pairs),
        scorecards=public(agree.scorecards),
        gold=public(agree.gold),
        summary=summary,
    )


# --- the pipeline's view ----------------------------------------------------------------------


def published_rows(annotations: pd.DataFrame) -> pd.DataFrame:
    """The rows a snapshot publishes (``match_status == "matched"``); all rows when the table
    has no ``match_status``."""
    if "match_status" not in annotations.columns:
        return annotations
    return annotations[annotations["match_status"] == MATCHED]


def workspace_inputs(
    ws: Workspace,
) -> tuple[dict[str, Any] | None, list[str] | None]:
    """(categories.json of import_annotations, accepted item ids of the curate manifest), each
    None when the file does not exist."""
    cat_uri = ws.uri("import_annotations", "categories.json")
    categories = json.loads(storage.read_text(cat_uri)) if storage.exists(cat_uri) else None
    man_uri = ws.manifest_uri("curate")
    items = None
    if storage.exists(man_uri):
        man = storage.read_table(man_uri)
        items = man.loc[man["status"] == "accepted", "item_id"].astype(str).tolist()
    return categories, items


def workspace_qa(
    ws: Workspace, params: Params, annotations: pd.DataFrame | None = None
) -> QAResult:
    """QA of what the pipeline would publish (see the module docstring)."""
    if annotations is None:
        annotations = storage.read_table(ws.uri("import_annotations", "annotations.parquet"))
    categories, items = workspace_inputs(ws)
    rows = published_rows(annotations)
    result = run_qa(rows, params, categories=categories, items=items)
    result.summary["rows_not_published"] = len(annotations) - len(rows)
    return result


def qa_findings_for_gate(
    annotations: pd.DataFrame, params: Params, ws: Workspace | None = None
) -> pd.DataFrame:
    """The findings table the import_annotations gate validates (its "qa" companion table)."""
    if ws is not None:
        return workspace_qa(ws, params, annotations).findings
    return run_qa(published_rows(annotations), params).findings


# --- files ------------------------------------------------------------------------------------


def write_qa(result: QAResult, folder: str) -> dict[str, str]:
    """Write the findings and agreement tables into ``folder``; returns name -> URI."""
    uris = {"findings": storage.join(folder, FINDINGS_FILE)}
    storage.write_table(uris["findings"], checks.findings_to_arrow(result.findings))
    for name, file in TABLE_FILES.items():
        uris[name] = storage.join(folder, file)
        storage.write_table(uris[name], getattr(result, name))
    return uris


def read_findings(uri: str) -> pd.DataFrame:
    df = storage.read_table(uri)
    df["annotation_ids"] = df["annotation_ids"].map(lambda v: [str(a) for a in list(v)])
    return df
