"""Refresh stage: new items since the reference snapshot, feature drift, what to label next.

Reads the curate manifest (the current dataset), the imported annotations (absent file = no
labels yet) and the reference: the curate manifest of snapshot ``refresh.reference`` (a tag,
``latest`` or ``none``), loaded through ``visionloop.snapshots.load_reference``. Writes
``new_items.parquet``, ``drift.parquet`` and ``to_annotate.parquet`` (COLUMNS.md).

Refresh decides nothing about items: it writes no manifest, and its summary counts mirror
curate's. There is no per-image work (every input is a table), so ``plan`` returns no shards
and ``finalize`` does it all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

from visionloop import manifest, storage
from visionloop.config import Params
from visionloop.refresh.drift import compare, dataset_drift
from visionloop.refresh.select import select_for_annotation
from visionloop.schema import Status
from visionloop.stages.base import Shard, StageSummary, Workspace, clear_work

log = logging.getLogger(__name__)

STAGE = "refresh"
# drift feature name -> curate manifest column ("aspect" is derived from width / height)
NUMERIC_FEATURES = {
    "blur": "curate_blur_score",
    "brightness": "curate_brightness",
    "entropy": "curate_entropy",
    "width": "width",
    "height": "height",
    "aspect": None,
}
CATEGORICAL_FEATURES = {"camera_model": "camera_model", "curate_day_night": "curate_day_night"}

ReferenceLoader = Callable[[str, Params], "pd.DataFrame | None"]
_UNSET: Any = object()


def load_snapshot_reference(ref: str, params: Params) -> pd.DataFrame | None:
    """The curate manifest of snapshot ``ref`` (imported lazily: it shells out to git/DVC)."""
    from visionloop import snapshots

    return snapshots.load_reference(ref, ".", data_dir=params.run.data_dir)


class RefreshStage:
    """New items, drift against the reference snapshot, and the labelling shortlist.

    ``reference`` injects the reference manifest directly (None = no reference); otherwise
    ``reference_loader(params.refresh.reference, params)`` provides it (default: the snapshot).
    """

    name = STAGE

    def __init__(
        self,
        reference: pd.DataFrame | None = _UNSET,
        reference_loader: ReferenceLoader | None = None,
    ) -> None:
        self._reference = reference
        self._loader = reference_loader or load_snapshot_reference

    def plan(self, ws: Workspace, params: Params) -> list[Shard]:
        clear_work(ws, STAGE)
        return []

    def process(self, ws: Workspace, params: Params, shard: Shard) -> str:
        raise RuntimeError("refresh has no per-image work: plan() yields no shards")

    def finalize(self, ws: Workspace, params: Params, parts: list[str]) -> StageSummary:
        rp = params.refresh
        current = storage.read_table(ws.manifest_uri("curate"))
        manifest.require_columns(current, ["item_id", "source_uri", "status"], STAGE)
        ann_uri = ws.uri("import_annotations", "annotations.parquet")
        annotations = storage.read_table(ann_uri) if storage.exists(ann_uri) else None
        if self._reference is _UNSET:
            reference = self._loader(rp.reference, params)
        else:
            reference = self._reference

        cur = _accepted(current)
        ref = _accepted(reference) if reference is not None else None
        ref_ids = set(ref["item_id"]) if ref is not None else set()
        new = cur[~cur["item_id"].isin(ref_ids)]
        new_items = new[["item_id", "source_uri"]].drop_duplicates("item_id")
        new_items = new_items.sort_values("source_uri").reset_index(drop=True)

        cur_f = feature_frame(cur)
        skipped: list[str] = []
        if ref is None:
            drift = compare(None, cur_f, [], rp.drift_threshold, alpha=rp.drift_alpha)
            drift.attrs["reason"] = (
                f"no reference snapshot (refresh.reference={rp.reference!r}): nothing to compare"
            )
        else:
            ref_f = feature_frame(ref)
            usable = [f for f in cur_f.columns if f in ref_f.columns]
            skipped = [f for f in cur_f.columns if f not in ref_f.columns]
            drift = compare(
                ref_f,
                cur_f,
                usable,
                rp.drift_threshold,
                alpha=rp.drift_alpha,
                categorical=[f for f in usable if f in CATEGORICAL_FEATURES],
            )
        reason = drift.attrs.get("reason")
        to_annotate = select_for_annotation(
            current, annotations, set(new_items["item_id"]), rp.annotate_budget
        )

        outputs = {
            "new_items": ws.uri(STAGE, "new_items.parquet"),
            "drift": ws.uri(STAGE, "drift.parquet"),
            "to_annotate": ws.uri(STAGE, "to_annotate.parquet"),
        }
        storage.write_table(outputs["new_items"], new_items)
        storage.write_table(outputs["drift"], drift)
        storage.write_table(outputs["to_annotate"], to_annotate)
        clear_work(ws, STAGE)

        n_drifted = int(drift["drifted"].sum()) if len(drift) else 0
        labelled = _labelled(annotations)
        counts = manifest.status_counts(current)
        details: dict[str, Any] = {
            "reference": rp.reference,
            "reference_items": len(ref) if ref is not None else 0,
            "n_new": len(new_items),
            "n_drifted": n_drifted,
            "drifted_features": drift.loc[drift["drifted"], "feature"].tolist()
            if n_drifted
            else [],
            "dataset_drift": dataset_drift(drift, rp.dataset_drift_share),
            "n_to_annotate": len(to_annotate),
            "n_labelled": int(cur["item_id"].isin(labelled).sum()),
            "n_unlabelled": int((~cur["item_id"].isin(labelled)).sum()),
        }
        if reason:
            details["drift_skipped_reason"] = reason
        if skipped:
            details["features_missing_in_reference"] = skipped
        log.info(
            "refresh: %d new, %d drifted feature(s), %d proposed for labelling",
            details["n_new"],
            n_drifted,
            details["n_to_annotate"],
        )
        return StageSummary(
            stage=STAGE,
            input=counts["input"],
            accepted=counts["accepted"],
            quarantined=counts["quarantined"],
            reasons=counts["reasons"],
            outputs=list(outputs.values()),
            details=details,
        )


def feature_frame(manifest_df: pd.DataFrame) -> pd.DataFrame:
    """The drift features of a curate manifest under their short names (present ones only)."""
    out = pd.DataFrame(index=manifest_df.index)
    for name, col in NUMERIC_FEATURES.items():
        if col is not None and col in manifest_df.columns:
            out[name] = pd.to_numeric(manifest_df[col], errors="coerce").astype(float)
    if {"width", "height"} <= set(out.columns):
        h = out["height"].where(out["height"] > 0)
        out["aspect"] = out["width"] / h
    for name, col in CATEGORICAL_FEATURES.items():
        if col in manifest_df.columns:
            out[name] = manifest_df[col].astype(object)
    order = [f for f in [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES] if f in out.columns]
    return out[order].reset_index(drop=True)


def _accepted(df: pd.DataFrame) -> pd.DataFrame:
    if "status" not in df.columns:
        return df
    return df[df["status"] == Status.ACCEPTED]


def _labelled(annotations: pd.DataFrame | None) -> set[str]:
    if annotations is None or annotations.empty:
        return set()
    matched = annotations[annotations["match_status"] == "matched"]
    return set(matched["item_id"].dropna())


__all__ = ["RefreshStage", "feature_frame", "load_snapshot_reference"]
