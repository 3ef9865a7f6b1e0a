"""Curate stage: quality metrics on the published images, flags, near duplicates, quarantine.

plan     accepted rows of the anonymize manifest whose metrics are not cached yet
process  read + decode each published image once, ``compute_metrics`` -> one part file
finalize merge parts into ``features.parquet`` (the per-item metric cache), threshold the
         metrics into flags, group near duplicates across ALL accepted items, quarantine in
         precedence order (unreadable/corrupt, blurry, too dark, overexposed, low information,
         near duplicate) and write ``manifest.parquet``.

The cache key is (item_id, anonymize_sha256, metrics fingerprint): a re-anonymized image gets
new metrics, a threshold change recomputes nothing (thresholds are not in the fingerprint).
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from visionloop import manifest, storage
from visionloop.config import CurateParams, Params
from visionloop.curate import QUALITY_CHECKS, flag_quality, metrics
from visionloop.curate.dedup import find_near_duplicates
from visionloop.schema import Reason, Status
from visionloop.stages.base import (
    Shard,
    StageSummary,
    Workspace,
    clear_work,
    read_parts,
    write_work_list,
)

log = logging.getLogger(__name__)

STAGE = "curate"
PREVIOUS = "anonymize"

# features.parquet: one row per item_id, the raw metric values and what they were computed from.
FEATURES_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("anonymize_sha256", pa.string()),  # the published bytes the metrics describe
        pa.field("fingerprint", pa.string(), nullable=False),  # metrics_fingerprint()
        pa.field("blur", pa.float64()),
        pa.field("brightness", pa.float64()),
        pa.field("brightness_low", pa.float64()),
        pa.field("brightness_high", pa.float64()),
        pa.field("entropy", pa.float64()),
        pa.field("phash", pa.string()),
        pa.field("work_width", pa.int32()),
        pa.field("work_height", pa.int32()),
        pa.field("decode_factor", pa.int8()),
        pa.field("error", pa.string()),  # "corrupt: ..." when the bytes do not decode
    ]
)
FEATURE_COLUMNS = FEATURES_SCHEMA.names

# Columns this stage appends to the manifest (COLUMNS.md), with their Arrow types.
CURATE_FIELDS = [
    pa.field("curate_blur_score", pa.float64()),
    pa.field("curate_brightness", pa.float64()),  # mean luminance 0..1
    pa.field("curate_brightness_low", pa.float64()),  # 5th percentile (overexposure flag)
    pa.field("curate_brightness_high", pa.float64()),  # 99th percentile (darkness flag)
    pa.field("curate_entropy", pa.float64()),
    pa.field("curate_phash", pa.string()),
    pa.field("curate_near_duplicate_of", pa.string()),
    pa.field("curate_near_duplicate_distance", pa.int16()),
    pa.field("curate_day_night", pa.string()),
    pa.field("curate_day_night_source", pa.string()),  # exif | brightness
    pa.field("curate_is_blurry", pa.bool_()),
    pa.field("curate_is_dark", pa.bool_()),
    pa.field("curate_is_overexposed", pa.bool_()),
    pa.field("curate_is_low_information", pa.bool_()),
    pa.field("curate_is_near_duplicate", pa.bool_()),
]
_METRIC_TO_COLUMN = {
    "blur": "curate_blur_score",
    "brightness": "curate_brightness",
    "brightness_low": "curate_brightness_low",
    "brightness_high": "curate_brightness_high",
    "entropy": "curate_entropy",
    "phash": "curate_phash",
}


class CurateStage:
    """Quality metrics, flags and near-duplicate grouping on the anonymized images."""

    name = STAGE

    # -- plan ------------------------------------------------------------------------------

    def plan(self, ws: Workspace, params: Params) -> list[Shard]:
        before = storage.read_table(ws.manifest_uri(PREVIOUS))
        todo = _rows_to_measure(before, _valid_cache(ws, params.curate))
        log.info(
            "curate: %d accepted item(s), %d to measure",
            int((before["status"] == Status.ACCEPTED).sum()),
            len(todo),
        )
        return write_work_list(ws, self.name, todo, params.run.shard_size)

    # -- process ---------------------------------------------------------------------------

    def process(self, ws: Workspace, params: Params, shard: Shard) -> str:
        rows = shard.rows()
        fingerprint = metrics.metrics_fingerprint(params.curate.work_max_side)
        records = [
            _measure(ws, row, params.curate.work_max_side, fingerprint)
            for row in rows.itertuples(index=False)
        ]
        part = pd.DataFrame.from_records(records, columns=[*FEATURE_COLUMNS, "transient"])
        storage.write_table(shard.part_uri, part)
        log.info("curate: shard %d measured %d image(s)", shard.index, len(part))
        return shard.part_uri

    # -- finalize --------------------------------------------------------------------------

    def finalize(self, ws: Workspace, params: Params, parts: list[str]) -> StageSummary:
        cp = params.curate
        before_uri = ws.manifest_uri(PREVIOUS)
        before = storage.read_table(before_uri)
        cached = _valid_cache(ws, cp)
        fresh = read_parts(parts)
        if fresh.empty:
            fresh = pd.DataFrame(columns=[*FEATURE_COLUMNS, "transient"])
        # Transient failures (storage read errors) are reported but never cached.
        fresh["transient"] = fresh["transient"].fillna(False).astype(bool)
        to_cache = fresh.loc[~fresh["transient"], FEATURE_COLUMNS]
        features = pd.concat([cached, to_cache], ignore_index=True)
        features = features.drop_duplicates("item_id", keep="last")
        failures = fresh.loc[fresh["transient"], FEATURE_COLUMNS]
        lookup = pd.concat([features, failures], ignore_index=True).drop_duplicates(
            "item_id", keep="last"
        )

        after, stats = curate_manifest(before, lookup, cp)
        manifest.check_transition(before, after, STAGE)

        live = set(before["item_id"])
        features = features[features["item_id"].isin(live)].reset_index(drop=True)
        storage.write_table(ws.uri(STAGE, "features.parquet"), _typed(features), FEATURES_SCHEMA)
        storage.write_table(ws.manifest_uri(STAGE), after, _manifest_schema(before_uri, after))
        clear_work(ws, STAGE)

        counts = manifest.status_counts(after)
        return StageSummary(
            stage=STAGE,
            input=counts["input"],
            accepted=counts["accepted"],
            quarantined=counts["quarantined"],
            reasons=counts["reasons"],
            outputs=[ws.manifest_uri(STAGE), ws.uri(STAGE, "features.parquet")],
            details={
                **stats,
                "measured": len(fresh),  # decoded in this run
                "cached": stats["metrics_ok"] + stats["decode_failures"] - len(fresh),
                "fingerprint": metrics.metrics_fingerprint(cp.work_max_side),
                "thresholds": cp.model_dump(),
            },
        )


# ------------------------------------------------------------------------------------------
# Pure parts (unit-tested without a workspace)
# ------------------------------------------------------------------------------------------


def curate_manifest(
    before: pd.DataFrame, features: pd.DataFrame, params: CurateParams
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Append the curate columns to ``before`` and quarantine by precedence; returns stats.

    ``features`` holds one row per item_id (FEATURE_COLUMNS). Every accepted row must have a
    feature row whose anonymize_sha256 matches, else the stage lost work: ManifestError.
    """
    manifest.require_columns(before, ["item_id", "source_uri", "status"], STAGE)
    df = before.reset_index(drop=True)
    acc = (df["status"] == Status.ACCEPTED).to_numpy()
    feats = features.set_index("item_id")
    ids = df.loc[acc, "item_id"]
    missing = ~ids.isin(feats.index)
    if "anonymize_sha256" in df.columns and len(feats):
        want = df.loc[acc, "anonymize_sha256"]
        have = ids.map(feats["anonymize_sha256"])
        missing |= want.notna() & (have != want)
    if missing.any():
        raise manifest.ManifestError(
            f"{STAGE}: {int(missing.sum())} accepted item(s) have no metrics (first: "
            f"{df.loc[acc].loc[missing, 'source_uri'].iloc[0]}); rerun the stage"
        )
    got = feats.reindex(df["item_id"]).reset_index(drop=True)
    got.index = df.index
    got.loc[~acc] = np.nan  # rows quarantined earlier carry no curate values
    for metric, col in _METRIC_TO_COLUMN.items():
        df[col] = got[metric].astype(object if metric == "phash" else float)
    df["curate_phash"] = df["curate_phash"].where(df["curate_phash"].notna(), None)

    error = got["error"].where(acc & got["error"].notna())
    measured = pd.Series(acc, index=df.index) & error.isna()
    raw = got.loc[measured, [c.metric for c in QUALITY_CHECKS]]
    flags = flag_quality(raw, params)
    for check in QUALITY_CHECKS:
        col = f"curate_is_{check.flag}"
        df[col] = pd.array([pd.NA] * len(df), dtype="boolean")
        df.loc[measured, col] = flags[f"is_{check.flag}"].to_numpy()

    # Day / night: EXIF capture hour first, brightness estimate otherwise.
    capture = df["capture_time"] if "capture_time" in df.columns else pd.Series(None, df.index)
    dn = [
        metrics.calc_day_night(
            capture.at[i],
            float(df.at[i, "curate_brightness"]),
            day_start_hour=params.day_start_hour,
            night_start_hour=params.night_start_hour,
            night_brightness=params.night_brightness,
        )
        if measured.at[i]
        else (None, None)
        for i in df.index
    ]
    df["curate_day_night"] = [d[0] for d in dn]
    df["curate_day_night_source"] = [d[1] for d in dn]

    # Near duplicates across every measured accepted item; a clean copy wins over a flagged one.
    passes = ~flags.any(axis=1)
    items = pd.DataFrame(
        {
            "source_uri": df.loc[measured, "source_uri"],
            "phash": df.loc[measured, "curate_phash"],
            "entropy": df.loc[measured, "curate_entropy"],
            "blur": df.loc[measured, "curate_blur_score"],
            "width": _size(df, "width", got, "work_width", measured),
            "height": _size(df, "height", got, "work_height", measured),
            "passes_quality": passes,
        }
    )
    dups = find_near_duplicates(items, params.phash_radius, params.phash_min_entropy)
    df["curate_near_duplicate_of"] = pd.Series(None, index=df.index, dtype=object)
    df.loc[measured, "curate_near_duplicate_of"] = dups["near_duplicate_of"].to_numpy()
    dist = pd.array([pd.NA] * len(df), dtype="Int16")
    df["curate_near_duplicate_distance"] = dist
    is_dup = dups["near_duplicate_of"].notna()
    df.loc[is_dup[is_dup].index, "curate_near_duplicate_distance"] = dups.loc[
        is_dup, "near_duplicate_distance"
    ].to_numpy()
    df["curate_is_near_duplicate"] = pd.array([pd.NA] * len(df), dtype="boolean")
    df.loc[measured, "curate_is_near_duplicate"] = is_dup.to_numpy()

    # Quarantine in precedence order; manifest.quarantine only ever touches accepted rows.
    failed = pd.Series(acc, index=df.index) & error.notna()
    transient = failed & error.fillna("").str.startswith("unreadable")
    df = manifest.quarantine(df, transient, Reason.UNREADABLE, error, STAGE)
    df = manifest.quarantine(df, failed & ~transient, Reason.CORRUPT, error, STAGE)
    for check in QUALITY_CHECKS:
        col = f"curate_is_{check.flag}"
        mask = df[col].fillna(False).astype(bool)
        metric_col = _METRIC_TO_COLUMN[check.metric]
        detail = pd.Series("", index=df.index, dtype=object)
        detail[mask] = check.detail(df.loc[mask, metric_col], params)
        df = manifest.quarantine(df, mask, check.reason, detail, STAGE)
    dup_mask = df["curate_is_near_duplicate"].fillna(False).astype(bool)
    dup_detail = (
        "pHash distance "
        + df["curate_near_duplicate_distance"].astype(str)
        + f" <= curate.phash_radius {params.phash_radius} to kept copy "
        + df["curate_near_duplicate_of"].astype(str)
    )
    df = manifest.quarantine(df, dup_mask, Reason.NEAR_DUPLICATE, dup_detail, STAGE)

    flagged = {
        col: int(df[col].fillna(False).astype(bool).sum())
        for col in [f"curate_is_{c.flag}" for c in QUALITY_CHECKS] + ["curate_is_near_duplicate"]
    }
    stats = {
        "metrics_ok": int(measured.sum()),
        "decode_failures": int(failed.sum()),
        "flags": flagged,  # a row can carry several flags; reasons count the first only
        "near_duplicate_groups": int(df.loc[dup_mask, "curate_near_duplicate_of"].nunique()),
        "day_night": {
            str(k): int(v) for k, v in df["curate_day_night"].value_counts().sort_index().items()
        },
    }
    return df, stats


def _size(
    df: pd.DataFrame, col: str, got: pd.DataFrame, work_col: str, rows: pd.Series
) -> pd.Series:
    """Manifest pixel size where known, else the working copy's (only used to rank copies)."""
    work = got.loc[rows, work_col].astype(float)
    if col not in df.columns:
        return work
    return pd.to_numeric(df.loc[rows, col], errors="coerce").fillna(work).astype(float)


def _rows_to_measure(before: pd.DataFrame, cached: pd.DataFrame) -> pd.DataFrame:
    """Accepted rows whose (item_id, anonymize_sha256) has no valid cached metrics."""
    manifest.require_columns(
        before, ["item_id", "source_uri", "status", "anonymize_object_uri"], STAGE
    )
    acc = before[before["status"] == Status.ACCEPTED]
    no_image = acc["anonymize_object_uri"].isna()
    if no_image.any():
        raise manifest.ManifestError(
            f"{STAGE}: {int(no_image.sum())} accepted row(s) have no published image "
            f"(first: {acc.loc[no_image, 'source_uri'].iloc[0]}); the anonymize output is "
            "incomplete"
        )
    sha = acc["anonymize_sha256"] if "anonymize_sha256" in acc.columns else None
    if len(cached):
        by_id = cached.set_index("item_id")["anonymize_sha256"]
        have = acc["item_id"].map(by_id)
        hit = acc["item_id"].isin(by_id.index)
        if sha is not None:
            hit &= sha.isna() | (have == sha)
        acc = acc[~hit]
    cols = ["item_id", "source_uri", "anonymize_object_uri"]
    for extra in ("anonymize_sha256", "width", "height"):
        if extra in acc.columns:
            cols.append(extra)
    return acc[cols].drop_duplicates("item_id").reset_index(drop=True)


def _valid_cache(ws: Workspace, params: CurateParams) -> pd.DataFrame:
    """Cached feature rows computed by the current metric code and working size."""
    uri = ws.uri(STAGE, "features.parquet")
    if not storage.exists(uri):
        return pd.DataFrame(columns=FEATURE_COLUMNS)
    cached = storage.read_table(uri)
    if not set(FEATURE_COLUMNS) <= set(cached.columns):
        return pd.DataFrame(columns=FEATURE_COLUMNS)
    fp = metrics.metrics_fingerprint(params.work_max_side)
    return cached.loc[cached["fingerprint"] == fp, FEATURE_COLUMNS].reset_index(drop=True)


def _measure(ws: Workspace, row: Any, work_max_side: int, fingerprint: str) -> dict[str, Any]:
    """Read and decode one published image once and compute every metric."""
    sha = getattr(row, "anonymize_sha256", None)
    rec: dict[str, Any] = {
        "item_id": row.item_id,
        "anonymize_sha256": sha,
        "fingerprint": fingerprint,
        "error": None,
        "transient": False,
    }
    try:
        data = storage.read_bytes(ws.resolve(row.anonymize_object_uri))
    except OSError as exc:  # missing object, permissions: retry on the next run
        if storage.is_transient(exc):
            raise  # storage outage: fail the shard so the task is retried
        log.warning("curate: cannot read %s: %s", row.anonymize_object_uri, exc)
        rec.update(error=f"unreadable: {type(exc).__name__}: {exc}", transient=True)
        return rec
    width = _int_or_none(getattr(row, "width", None))
    height = _int_or_none(getattr(row, "height", None))
    try:
        image, factor = metrics.decode_for_metrics(data, width, height, work_max_side=work_max_side)
    except (ValueError, cv2.error) as exc:
        rec["error"] = f"corrupt: published image does not decode ({exc})"
        return rec
    rec.update(metrics.compute_metrics(image, work_max_side, "gray"))
    rec["decode_factor"] = factor
    return rec


def _int_or_none(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return int(value)


def _typed(features: pd.DataFrame) -> pd.DataFrame:
    out = features.copy()
    for col in ("work_width", "work_height", "decode_factor"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("Int64")
    for col in ("blur", "brightness", "brightness_low", "brightness_high", "entropy"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    return out


def _manifest_schema(before_uri: str, after: pd.DataFrame) -> pa.Schema | None:
    """The input manifest's Arrow types plus ours, so int32/int8 columns stay as they were."""
    fs, path = storage.filesystem(before_uri)
    with fs.open(path, "rb") as fh:
        base = pq.read_schema(fh).remove_metadata()
    fields = [f for f in base if f.name in after.columns]
    ours = {f.name: f for f in CURATE_FIELDS}
    names = {f.name for f in fields}
    for col in after.columns:
        if col in names:
            continue
        if col not in ours:
            return None  # an unexpected column: let Arrow infer rather than fail
        fields.append(ours[col])
    return pa.schema(fields)
