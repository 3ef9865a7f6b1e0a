"""import_annotations stage: bring vendor label exports into the canonical annotation table.

plan     fingerprint the inputs (curate manifest bytes, this stage's params, every source file's
         size and mtime/ETag); unchanged since the last run -> no shard. Else one shard: the
         stage reads text, not pixels, so splitting it would only add bookkeeping.
process  read every source with its format's reader (``params.import_annotations.sources``,
         ``format: auto`` detects it), merge them under one canonical category map, match each
         annotation to a manifest row, and write the table and documents into the work folder.
finalize publish ``annotations.parquet``, ``categories.json``, ``report.json`` and the
         manifest (curate rows unchanged + ``import_annotations_count``) atomically.

Images are never quarantined here: an annotation whose image is missing or quarantined is
itself marked (``match_status``), and the validate gate decides whether that blocks a snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from visionloop import manifest, storage
from visionloop.annotations.formats import detect_format, get_reader
from visionloop.annotations.match import annotation_counts, build_report, match_annotations
from visionloop.annotations.table import (
    AnnotationImportError,
    CategoryMap,
    ImportResult,
    KnownImages,
    Limits,
    annotations_to_arrow,
    combine_results,
)
from visionloop.config import AnnotationSource, ImportAnnotationsParams, Params
from visionloop.schema import Status
from visionloop.stages.base import (
    Shard,
    StageSummary,
    Workspace,
    clear_work,
    read_summary,
    write_work_list,
)

log = logging.getLogger(__name__)

STAGE = "import_annotations"
PREVIOUS = "curate"
# Bump when the import logic changes what it writes, so unchanged inputs are re-imported once.
# 2: shape / obb / keypoints / track_id / frame / score columns; VOC, CVAT, Label Studio,
# LabelMe, MOT and SA-1B readers.
IMPORT_VERSION = 2
COUNT_FIELD = pa.field("import_annotations_count", pa.int32())  # matched annotations per item


@dataclass
class ImportOutcome:
    """Everything one import run produces (before it is written anywhere)."""

    annotations: pd.DataFrame
    categories: CategoryMap
    report: dict[str, Any]


def limits_from(params: ImportAnnotationsParams) -> Limits:
    return Limits(
        out_of_bounds_tolerance=params.out_of_bounds_tolerance,
        max_coordinate=params.max_coordinate,
    )


def known_images(df: pd.DataFrame) -> KnownImages:
    """rel_path -> (width, height) from the manifest, for readers that need image sizes."""
    widths = df["width"] if "width" in df.columns else pd.Series(None, index=df.index)
    heights = df["height"] if "height" in df.columns else pd.Series(None, index=df.index)
    out: dict[str, tuple[int | None, int | None]] = {}
    for rel, w, h in zip(df["rel_path"], widths, heights, strict=True):
        out[str(rel)] = (None if pd.isna(w) else int(w), None if pd.isna(h) else int(h))
    return out


def read_source(
    source: AnnotationSource, images: KnownImages, limits: Limits
) -> tuple[ImportResult, str]:
    """One source -> (result, how its format was chosen)."""
    fmt, how = source.format, "configured"
    if fmt == "auto":
        fmt, why = detect_format(source.path)
        how = f"detected: {why}"
    return get_reader(fmt).load(source.path, images=images, limits=limits), how


def import_sources(
    sources: list[AnnotationSource], before: pd.DataFrame, params: ImportAnnotationsParams
) -> ImportOutcome:
    """Read, merge and match every source against the curate manifest ``before``."""
    images = known_images(before)
    limits = limits_from(params)
    results, per_source = [], []
    for source in sources:
        result, how = read_source(source, images, limits)
        results.append(result)
        per_source.append(
            {
                "path": source.path,
                "format": result.format,
                "format_choice": how,
                "annotations": len(result.annotations),
                "images": len(result.images),
                "errors": len(result.errors),
                "warnings": len(result.warnings),
            }
        )
        log.info(
            "%s: %s (%s) -> %d annotation(s), %d error(s)",
            STAGE,
            source.path,
            result.format,
            len(result.annotations),
            len(result.errors),
        )
    combined = combine_results(results)
    annotations, detail = match_annotations(combined.annotations, before)
    report = build_report(annotations, detail, combined.images, before, combined.issues)
    report["categories"] = len(combined.categories)
    report["sources"] = per_source
    return ImportOutcome(annotations, combined.categories, report)


def manifest_with_counts(before: pd.DataFrame, annotations: pd.DataFrame) -> pd.DataFrame:
    """The curate rows unchanged, plus matched annotations per accepted item (null on rows
    quarantined earlier: they are not this stage's to count)."""
    counts = annotation_counts(annotations)
    after = before.copy()
    acc = after["status"] == Status.ACCEPTED
    values = after["item_id"].map(lambda i: counts.get(str(i), 0)).where(acc)
    after[COUNT_FIELD.name] = pd.array(values, dtype="Int32")
    return after


def _source_listing(path: str) -> list[tuple[str, Any, Any]]:
    """(file, size, mtime or ETag) of every file of a source: what the fingerprint hashes."""
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        raise AnnotationImportError(f"{STAGE}: annotation source {path} does not exist")
    found = fs.find(p, withdirs=False, detail=True)
    rows = []
    for name, info in sorted(found.items()):
        stamp = (
            info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("created")
        )
        rows.append((name, info.get("size"), str(stamp)))
    return rows


def fingerprint(ws: Workspace, params: Params) -> str:
    """Hash of everything the stage's output depends on."""
    h = hashlib.sha256()
    h.update(hashlib.sha256(storage.read_bytes(ws.manifest_uri(PREVIOUS))).digest())
    doc = {
        "version": IMPORT_VERSION,
        "params": params.import_annotations.model_dump(),
        "sources": [_source_listing(s.path) for s in params.import_annotations.sources],
    }
    h.update(json.dumps(doc, sort_keys=True, default=str).encode())
    return h.hexdigest()


OUTPUTS = ("annotations.parquet", "categories.json", "report.json", "manifest.parquet")


def _current_fingerprint(ws: Workspace) -> str | None:
    if not all(storage.exists(ws.uri(STAGE, name)) for name in OUTPUTS):
        return None
    try:
        return json.loads(storage.read_text(ws.uri(STAGE, "report.json"))).get("fingerprint")
    except (json.JSONDecodeError, AttributeError):
        return None


def _manifest_schema(before_uri: str, after: pd.DataFrame) -> pa.Schema | None:
    """The curate manifest's Arrow types plus our count column."""
    fs, path = storage.filesystem(before_uri)
    with fs.open(path, "rb") as fh:
        base = pq.read_schema(fh).remove_metadata()
    fields = [f for f in base if f.name in after.columns]
    if len(fields) + 1 != len(after.columns):
        return None
    return pa.schema([*fields, COUNT_FIELD])


class ImportAnnotationsStage:
    """Every reader in ``annotations.formats.READERS`` (COCO, YOLO, Label Studio, VOC, CVAT,
    LabelMe, MOT, SA-1B) -> annotations.parquet, matched to the manifest."""

    name = STAGE

    def plan(self, ws: Workspace, params: Params) -> list[Shard]:
        fp = fingerprint(ws, params)
        if _current_fingerprint(ws) == fp:
            log.info("%s: sources and manifest unchanged: nothing to do", STAGE)
            clear_work(ws, STAGE)
            return []
        job = pd.DataFrame({"fingerprint": [fp]})
        return write_work_list(ws, STAGE, job, shard_size=1)

    def process(self, ws: Workspace, params: Params, shard: Shard) -> str:
        fp = str(shard.rows()["fingerprint"].iloc[0])
        before = storage.read_table(ws.manifest_uri(PREVIOUS))
        outcome = import_sources(
            params.import_annotations.sources, before, params.import_annotations
        )
        outcome.report["fingerprint"] = fp
        storage.write_table(shard.part_uri, annotations_to_arrow(outcome.annotations))
        storage.write_text_atomic(
            ws.work_uri(STAGE, "categories.json"),
            json.dumps(outcome.categories.to_json(), indent=2) + "\n",
        )
        storage.write_text_atomic(
            ws.work_uri(STAGE, "report.json"),
            json.dumps(outcome.report, indent=2, default=str) + "\n",
        )
        return shard.part_uri

    def finalize(self, ws: Workspace, params: Params, parts: list[str]) -> StageSummary:
        before_uri = ws.manifest_uri(PREVIOUS)
        if not parts:
            previous = read_summary(ws, STAGE)
            if previous is None or _current_fingerprint(ws) is None:
                raise AnnotationImportError(
                    f"{STAGE}: nothing was planned but no previous output exists; rerun"
                )
            previous.details["skipped"] = True
            return previous
        before = storage.read_table(before_uri)
        annotations = storage.read_table(parts[0])
        categories = storage.read_text(ws.work_uri(STAGE, "categories.json"))
        report = json.loads(storage.read_text(ws.work_uri(STAGE, "report.json")))

        after = manifest_with_counts(before, annotations)
        manifest.check_transition(before, after, STAGE)

        storage.write_table(ws.uri(STAGE, "annotations.parquet"), annotations_to_arrow(annotations))
        storage.write_text_atomic(ws.uri(STAGE, "categories.json"), categories)
        storage.write_table(ws.manifest_uri(STAGE), after, _manifest_schema(before_uri, after))
        # report.json last: its fingerprint marks the outputs as complete for the next plan.
        storage.write_text_atomic(
            ws.uri(STAGE, "report.json"), json.dumps(report, indent=2, default=str) + "\n"
        )
        clear_work(ws, STAGE)

        counts = manifest.status_counts(after)
        keys = (
            "annotations",
            "matched",
            "quarantined_item",
            "unmatched",
            "unmatched_fraction",
            "matched_via_duplicate",
            "categories",
            "errors",
            "warnings",
            "labelled_accepted",
            "declared_empty_accepted",
            "unlabelled_accepted",
        )
        return StageSummary(
            stage=STAGE,
            input=counts["input"],
            accepted=counts["accepted"],
            quarantined=counts["quarantined"],
            reasons=counts["reasons"],
            outputs=[ws.uri(STAGE, name) for name in OUTPUTS],
            details={
                **{k: report[k] for k in keys},
                "per_category": report["per_category"],
                "sources": report["sources"],
                "skipped": False,
                "fingerprint": report["fingerprint"],
            },
        )
