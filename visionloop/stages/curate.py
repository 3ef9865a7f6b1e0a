"""Curate stage: quality metrics on the published images, flags, tiered duplicates, split
leakage, coverage of declared slices, and quarantine.

plan     accepted rows of the anonymize manifest whose metrics are not cached yet (and a check
         that every coverage dimension exists, before any decoding)
process  read + decode each published image once, ``compute_metrics`` -> one part file
finalize merge parts into ``features.parquet`` (the per-item metric cache), threshold the
         metrics into flags (pixels, then size/aspect against absolute thresholds and this
         dataset's own distribution), group duplicates (pixel hash, then pHash radius via an
         incremental index: old pairs are reused, only new items are searched), check
         train/val/test leakage, quarantine the flags named in ``curate.quarantine`` in
         precedence order (``visionloop.curate.FLAGS``), then measure coverage of the accepted
         images and write the tables and the HTML report.

Outputs (data/curate/): manifest.parquet, features.parquet, near_pairs.parquet +
dedup_index.parquet (the pair state a refresh reuses), leakage.parquet, coverage.parquet,
gaps.parquet, balanced.parquet, report.html.

The cache key is (item_id, anonymize_sha256, metrics fingerprint): a re-anonymized image gets
new metrics, a threshold change recomputes nothing (thresholds are not in the fingerprint).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from visionloop import manifest, storage
from visionloop.config import CurateParams, Params
from visionloop.curate import (
    FLAGS,
    QUALITY_CHECKS,
    SHAPE_FLAGS,
    derived_metrics,
    flag_quality,
    flag_shape,
    metrics,
    shape_detail,
)
from visionloop.curate import coverage as cov
from visionloop.curate import leakage as leak
from visionloop.curate.dedup import (
    INDEX_COLUMNS,
    PAIRS_COLUMNS,
    find_near_duplicates,
    incremental_pairs,
    keep_priority,
    pairs_frame,
    pixel_duplicates,
)
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
OUTPUT_FILES = {
    "manifest": "manifest.parquet",
    "features": "features.parquet",
    "pairs": "near_pairs.parquet",
    "index": "dedup_index.parquet",
    "leakage": "leakage.parquet",
    "coverage": "coverage.parquet",
    "gaps": "gaps.parquet",
    "balanced": "balanced.parquet",
    "report": "report.html",
}
RADIUS_KEY = b"visionloop.phash_radius"

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
        pa.field("clip_low", pa.float64()),
        pa.field("clip_high", pa.float64()),
        pa.field("spread", pa.float64()),
        pa.field("cast", pa.float64()),
        pa.field("cast_shift", pa.float64()),
        pa.field("cast_a", pa.float64()),
        pa.field("cast_b", pa.float64()),
        pa.field("phash", pa.string()),
        pa.field("pixel_hash", pa.string()),
        pa.field("work_width", pa.int32()),
        pa.field("work_height", pa.int32()),
        pa.field("decode_factor", pa.int8()),
        pa.field("error", pa.string()),  # "corrupt: ..." when the bytes do not decode
    ]
)
FEATURE_COLUMNS = FEATURES_SCHEMA.names
FLOAT_FEATURES = [f.name for f in FEATURES_SCHEMA if f.type == pa.float64()]

# Columns this stage appends to the manifest (COLUMNS.md), with their Arrow types.
CURATE_FIELDS = [
    pa.field("curate_blur_score", pa.float64()),
    pa.field("curate_brightness", pa.float64()),  # mean luminance 0..1
    pa.field("curate_brightness_low", pa.float64()),  # 5th percentile (overexposure flag)
    pa.field("curate_brightness_high", pa.float64()),  # 99th percentile (darkness flag)
    pa.field("curate_entropy", pa.float64()),
    pa.field("curate_clip_low", pa.float64()),  # share of luminance pixels at 0
    pa.field("curate_clip_high", pa.float64()),  # share at 255
    pa.field("curate_channel_spread", pa.float64()),  # p99 max-min over RGB, levels (gray: ~0)
    pa.field("curate_color_cast", pa.float64()),  # mean chroma / chroma spread (CIELAB)
    pa.field("curate_color_shift", pa.float64()),  # mean chroma offset, a*b* units
    pa.field("curate_aspect_ratio", pa.float64()),  # longer / shorter side
    pa.field("curate_size_z", pa.float64()),  # robust z of log2 sqrt(pixels) in this dataset
    pa.field("curate_aspect_z", pa.float64()),  # robust z of log2 aspect ratio
    pa.field("curate_phash", pa.string()),
    pa.field("curate_pixel_hash", pa.string()),
    pa.field("curate_pixel_duplicate_of", pa.string()),  # source_uri of the kept copy
    pa.field("curate_near_duplicate_of", pa.string()),
    pa.field("curate_near_duplicate_distance", pa.int16()),
    pa.field("curate_split", pa.string()),  # train / val / test ... or null
    pa.field("curate_split_leak_of", pa.string()),  # source_uri of the copy in another split
    pa.field("curate_day_night", pa.string()),
    pa.field("curate_day_night_source", pa.string()),  # exif | brightness
    pa.field("curate_cell", pa.string()),  # joint coverage cell (accepted rows)
    pa.field("curate_cell_count", pa.int32()),  # accepted images in that cell
    pa.field("curate_cell_share", pa.float64()),  # ...as a share of all accepted images
    *[pa.field(f"curate_is_{flag}", pa.bool_()) for flag in FLAGS],
]
_METRIC_TO_COLUMN = {
    "blur": "curate_blur_score",
    "brightness": "curate_brightness",
    "brightness_low": "curate_brightness_low",
    "brightness_high": "curate_brightness_high",
    "entropy": "curate_entropy",
    "clip_low": "curate_clip_low",
    "clip_high": "curate_clip_high",
    "spread": "curate_channel_spread",
    "cast": "curate_color_cast",
    "cast_shift": "curate_color_shift",
    "phash": "curate_phash",
    "pixel_hash": "curate_pixel_hash",
}
_TEXT_METRICS = ("phash", "pixel_hash")


class CurateStage:
    """Quality metrics, flags, duplicates, leakage and coverage on the anonymized images."""

    name = STAGE

    # -- plan ------------------------------------------------------------------------------

    def plan(self, ws: Workspace, params: Params) -> list[Shard]:
        before = storage.read_table(ws.manifest_uri(PREVIOUS))
        check_dimensions(before, params.curate)
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
        features = _concat(cached, to_cache).drop_duplicates("item_id", keep="last")
        failures = fresh.loc[fresh["transient"], FEATURE_COLUMNS]
        lookup = _concat(features, failures).drop_duplicates("item_id", keep="last")

        state = read_pair_state(ws)
        result = curate(before, lookup, cp, state)
        after = result.manifest
        manifest.check_transition(before, after, STAGE)

        live = set(before["item_id"])
        features = features[features["item_id"].isin(live)].reset_index(drop=True)
        out = {k: ws.uri(STAGE, v) for k, v in OUTPUT_FILES.items()}
        storage.write_table(out["features"], _typed(features), FEATURES_SCHEMA)
        write_pair_state(ws, result.pair_index, result.pairs, cp.phash_radius)
        storage.write_table(out["leakage"], result.leakage)
        storage.write_table(out["coverage"], result.coverage)
        storage.write_table(out["gaps"], result.gaps)
        storage.write_table(out["balanced"], result.balanced)
        storage.write_table(out["manifest"], after, _manifest_schema(before_uri, after))
        outputs = [out[k] for k in OUTPUT_FILES if k != "report"]
        if cp.report:
            from visionloop.curate.report import build_curate_report, report_fingerprint

            # Unchanged outputs and params: keep the page (its thumbnails are decodes).
            fingerprint = report_fingerprint(ws, params)
            outputs.append(build_curate_report(ws, params, fingerprint=fingerprint))
        clear_work(ws, STAGE)

        counts = manifest.status_counts(after)
        stats = result.stats
        return StageSummary(
            stage=STAGE,
            input=counts["input"],
            accepted=counts["accepted"],
            quarantined=counts["quarantined"],
            reasons=counts["reasons"],
            outputs=outputs,
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


@dataclass
class PairState:
    """What the previous run's pHash search covered: (item_id, phash) and its pairs."""

    index: pd.DataFrame
    pairs: pd.DataFrame
    radius: int


@dataclass
class CurateResult:
    manifest: pd.DataFrame
    stats: dict[str, Any]
    pair_index: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=INDEX_COLUMNS))
    pairs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAIRS_COLUMNS))
    leakage: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=leak.LEAKAGE_COLUMNS)
    )
    coverage: pd.DataFrame = field(default_factory=pd.DataFrame)
    gaps: pd.DataFrame = field(default_factory=pd.DataFrame)
    balanced: pd.DataFrame = field(default_factory=pd.DataFrame)


def check_dimensions(df: pd.DataFrame, params: CurateParams) -> None:
    """Fail fast (before any decoding) on a coverage dimension or split column that is missing."""
    bad = [
        d
        for d in params.coverage
        if d not in cov.DERIVED and d not in df.columns and not d.startswith("curate_")
    ]
    if bad:
        raise manifest.ManifestError(
            f"{STAGE}: curate.coverage names {bad}: neither derived dimensions "
            f"({', '.join(cov.DERIVED)}) nor manifest columns"
        )
    if params.split_column and params.split_column not in df.columns:
        raise manifest.ManifestError(
            f"{STAGE}: curate.split_column {params.split_column!r} is not a manifest column"
        )


def curate_manifest(
    before: pd.DataFrame, features: pd.DataFrame, params: CurateParams
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``curate`` without a previous pair state: (manifest, stats)."""
    result = curate(before, features, params)
    return result.manifest, result.stats


def curate(
    before: pd.DataFrame,
    features: pd.DataFrame,
    params: CurateParams,
    state: PairState | None = None,
) -> CurateResult:
    """Append the curate columns to ``before``, quarantine by precedence, measure coverage.

    ``features`` holds one row per item_id (FEATURE_COLUMNS). Every accepted row must have a
    feature row whose anonymize_sha256 matches, else the stage lost work: ManifestError.
    ``state`` is the previous run's pHash pair state (pairs among old items are reused).
    """
    manifest.require_columns(before, ["item_id", "source_uri", "status"], STAGE)
    df = before.reset_index(drop=True)
    acc = (df["status"] == Status.ACCEPTED).to_numpy()
    got = _aligned_features(df, features, acc)
    for metric_name, col in _METRIC_TO_COLUMN.items():
        text = metric_name in _TEXT_METRICS
        df[col] = got[metric_name].astype(object if text else float)
        if text:
            df[col] = df[col].where(df[col].notna(), None)

    error = got["error"].where(acc & got["error"].notna())
    measured = pd.Series(acc, index=df.index) & error.isna()
    raw = derived_metrics(got.loc[measured])

    # Pixel flags, then size and aspect (absolute and relative to the measured images).
    flags = flag_quality(raw, params)
    width = _size(df, "width", got, "work_width", measured)
    height = _size(df, "height", got, "work_height", measured)
    shape = flag_shape(width, height, params)
    flags["is_odd_size"] = shape["is_odd_size"]
    flags["is_odd_aspect"] = shape["is_odd_aspect"]
    for name, col in (
        ("aspect_ratio", "curate_aspect_ratio"),
        ("size_z", "curate_size_z"),
        ("aspect_z", "curate_aspect_z"),
    ):
        df[col] = np.nan
        df.loc[measured, col] = shape[name].to_numpy()
    details: dict[str, pd.Series] = {}
    for check in QUALITY_CHECKS:
        if f"is_{check.flag}" in flags:
            hit = flags[f"is_{check.flag}"].astype(bool)
            details[check.flag] = check.detail(raw.loc[hit, check.metric], params)
    for flag in SHAPE_FLAGS:
        mask = shape[f"is_{flag}"]
        details[flag] = pd.Series("", index=shape.index, dtype=object)
        if mask.any():
            details[flag][mask] = shape_detail(
                shape[mask], width[mask].astype(int), height[mask].astype(int), flag, params
            )

    _day_night(df, measured, params)

    # Duplicates: identical pixels first, then pHash neighbours among the rest.
    quarantining = set(params.quarantine)
    gate_flags = [f for f in flags.columns if f[3:] in quarantining]
    passes = ~flags[gate_flags].any(axis=1) if gate_flags else pd.Series(True, index=flags.index)
    items = pd.DataFrame(
        {
            "item_id": df.loc[measured, "item_id"],
            "source_uri": df.loc[measured, "source_uri"],
            "phash": df.loc[measured, "curate_phash"],
            "pixel_hash": df.loc[measured, "curate_pixel_hash"],
            "entropy": df.loc[measured, "curate_entropy"],
            "blur": df.loc[measured, "curate_blur_score"],
            "width": width,
            "height": height,
            "passes_quality": passes,
        }
    )
    pixel_of = pixel_duplicates(items)
    eligible = (
        pixel_of.isna()
        & items["phash"].notna()
        & (items["entropy"].fillna(0.0) >= params.phash_min_entropy)
    )
    near_items = items[eligible]
    search = incremental_pairs(
        near_items["item_id"].to_numpy(),
        near_items["phash"].to_numpy(),
        params.phash_radius,
        previous_index=state.index if state else None,
        previous_pairs=state.pairs if state else None,
        previous_radius=state.radius if state else None,
    )
    dups = find_near_duplicates(
        near_items,
        params.phash_radius,
        params.phash_min_entropy,
        pairs=(search.i, search.j, search.distance),
    )
    df["curate_pixel_duplicate_of"] = pd.Series(None, index=df.index, dtype=object)
    df.loc[pixel_of.index, "curate_pixel_duplicate_of"] = pixel_of.to_numpy()
    df["curate_near_duplicate_of"] = pd.Series(None, index=df.index, dtype=object)
    df.loc[dups.index, "curate_near_duplicate_of"] = dups["near_duplicate_of"].to_numpy()
    df["curate_near_duplicate_distance"] = pd.array([pd.NA] * len(df), dtype="Int16")
    is_dup = dups["near_duplicate_of"].notna()
    df.loc[is_dup[is_dup].index, "curate_near_duplicate_distance"] = dups.loc[
        is_dup, "near_duplicate_distance"
    ].to_numpy()
    flags["is_pixel_duplicate"] = pixel_of.notna()
    flags["is_near_duplicate"] = pd.Series(False, index=flags.index)
    flags.loc[is_dup.index, "is_near_duplicate"] = is_dup.to_numpy()
    details["pixel_duplicate"] = "same decoded pixels as kept copy " + pixel_of.astype(str)
    details["near_duplicate"] = (
        "pHash distance "
        + df["curate_near_duplicate_distance"].astype(str)
        + f" <= curate.phash_radius {params.phash_radius} to kept copy "
        + df["curate_near_duplicate_of"].astype(str)
    )

    # Quarantine in precedence order; manifest.quarantine only ever touches accepted rows.
    failed = pd.Series(acc, index=df.index) & error.notna()
    transient = failed & error.fillna("").str.startswith("unreadable")
    df = manifest.quarantine(df, transient, Reason.UNREADABLE, error, STAGE)
    df = manifest.quarantine(df, failed & ~transient, Reason.CORRUPT, error, STAGE)
    for flag, reason in FLAGS.items():
        col = f"curate_is_{flag}"
        df[col] = pd.array([pd.NA] * len(df), dtype="boolean")
        if f"is_{flag}" in flags:
            df.loc[measured, col] = flags[f"is_{flag}"].astype(bool).to_numpy()
        if flag == "split_leak":
            continue  # decided below, among the images that survive everything else
        if flag in quarantining:
            mask = df[col].fillna(False).astype(bool)
            detail = pd.Series("", index=df.index, dtype=object)
            d = details.get(flag)
            if d is not None:
                detail[d.index] = d.astype(str)
            df = manifest.quarantine(df, mask, reason, detail, STAGE)

    # Leakage between splits, over every duplicate tier.
    split = leak.split_labels(df, params.split_column, params.split_pattern)
    df["curate_split"] = split
    rows = near_items.index.to_numpy()
    near_pairs = leak.as_row_pairs(rows, search.i, search.j, search.distance)
    pixel_pairs = [
        (int(by_uri), int(i), 0)
        for i, by_uri in pixel_of.dropna().map(_row_of(df)).dropna().items()
    ]
    tiers = {"exact": leak.exact_pairs(df), "pixel": pixel_pairs, "near": near_pairs}
    rank = pd.Series(len(df), index=df.index, dtype=np.int64)
    rank.loc[items.index] = _keep_rank(items)
    leak_flag, leak_of = leak.flag_leaks(
        df, split, [p for t in tiers.values() for p in t], params.leakage_keep_order, rank
    )
    df["curate_split_leak_of"] = leak_of
    df.loc[measured, "curate_is_split_leak"] = leak_flag[measured].to_numpy()
    if "split_leak" in quarantining:
        df = manifest.quarantine(
            df,
            leak_flag,
            Reason.SPLIT_LEAKAGE,
            "copy of " + leak_of.astype(str) + " which is kept in another split",
            STAGE,
        )
    leakage = leak.leakage_table(df, split, tiers)

    coverage, gaps, balanced, cover_stats = _coverage(df, params)

    flagged = {
        f"curate_is_{flag}": int(df[f"curate_is_{flag}"].fillna(False).astype(bool).sum())
        for flag in FLAGS
    }
    near_mask = df["curate_is_near_duplicate"].fillna(False).astype(bool)
    stats: dict[str, Any] = {
        "metrics_ok": int(measured.sum()),
        "decode_failures": int(failed.sum()),
        "flags": flagged,  # a row can carry several flags; reasons count the first only
        "quarantining_flags": [f for f in FLAGS if f in quarantining],
        "pixel_duplicate_groups": int(pixel_of.dropna().nunique()),
        "near_duplicate_groups": int(df.loc[near_mask, "curate_near_duplicate_of"].nunique()),
        "dedup": {
            "indexed": search.indexed,  # pHashes in the index (everything eligible)
            "searched": search.queried,  # of which searched for (new since the last run)
            "reused_pairs": search.reused_pairs,
            "pairs": len(search.i),
        },
        "leakage_pairs": len(leakage),
        "leakage_unresolved": int(leakage["resolved_by"].isna().sum()) if len(leakage) else 0,
        "coverage": cover_stats,
        "day_night": {
            str(k): int(v) for k, v in df["curate_day_night"].value_counts().sort_index().items()
        },
    }
    ids = near_items["item_id"].to_numpy()
    return CurateResult(
        manifest=df,
        stats=stats,
        pair_index=pd.DataFrame(
            {"item_id": pd.Series(ids, dtype=object), "phash": near_items["phash"].to_numpy()}
        ),
        pairs=pairs_frame(ids, search),
        leakage=leakage,
        coverage=coverage,
        gaps=gaps,
        balanced=balanced,
    )


def _aligned_features(df: pd.DataFrame, features: pd.DataFrame, acc: np.ndarray) -> pd.DataFrame:
    """Feature rows in manifest order; every accepted row must have current ones."""
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
    for col in FEATURE_COLUMNS:
        if col not in got.columns and col != "item_id":
            got[col] = np.nan
    got = got.astype(object)
    got.loc[~acc] = np.nan  # rows quarantined earlier carry no curate values
    for col in [*FLOAT_FEATURES, "work_width", "work_height", "decode_factor"]:
        got[col] = pd.to_numeric(got[col], errors="coerce").astype(float)
    return got


def _concat(*frames: pd.DataFrame) -> pd.DataFrame:
    """Feature frames stacked (empty ones skipped: they would blur the column types)."""
    kept = [f for f in frames if len(f)]
    if not kept:
        return pd.DataFrame(columns=FEATURE_COLUMNS)
    return pd.concat(kept, ignore_index=True)


def _day_night(df: pd.DataFrame, measured: pd.Series, params: CurateParams) -> None:
    """Day / night: EXIF capture hour first, brightness estimate otherwise.

    Vectorised form of ``metrics.calc_day_night`` (same rules, same answers): a Python call per
    row cost 9 s at 100k images.
    """
    n = len(df)
    capture = (
        df["capture_time"].astype(object)
        if "capture_time" in df.columns
        else pd.Series([None] * n, index=df.index, dtype=object)
    )
    text = capture.map(lambda v: v.strip() if isinstance(v, str) else "")
    shaped = text.str.len().ge(13) & text.str[10].isin(["T", " "]).fillna(False)
    hour = pd.to_numeric(text.str[11:13].where(shaped), errors="coerce")
    has_hour = hour.between(0, 23).fillna(False).to_numpy(bool)
    hour = hour.to_numpy(float)
    brightness = pd.to_numeric(df["curate_brightness"], errors="coerce").to_numpy(float)
    is_day = (hour >= params.day_start_hour) & (hour < params.night_start_hour)
    dark = brightness < params.night_brightness
    label = np.where(has_hour, np.where(is_day, "day", "night"), np.where(dark, "night", "day"))
    source = np.where(
        has_hour, "exif", np.where(np.isnan(brightness), "unknown", "brightness")
    ).astype(object)
    label = label.astype(object)
    m = measured.to_numpy(bool)
    label[~m] = None
    source[~m] = None
    df["curate_day_night"] = pd.Series(label, index=df.index, dtype=object)
    df["curate_day_night_source"] = pd.Series(source, index=df.index, dtype=object)


def _keep_rank(items: pd.DataFrame) -> np.ndarray:
    return keep_priority(
        items["passes_quality"].to_numpy(dtype=bool),
        items["blur"].to_numpy(dtype=float),
        items["width"].to_numpy(dtype=float) * items["height"].to_numpy(dtype=float),
        items["source_uri"],
    )


def _row_of(df: pd.DataFrame) -> pd.Series:
    by_uri = pd.Series(df.index, index=df["source_uri"])
    return by_uri[~by_uri.index.duplicated()]


def _coverage(
    df: pd.DataFrame, params: CurateParams
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Coverage, gaps and the balanced subset of the accepted rows; cell columns in ``df``."""
    accepted = df[df["status"] == Status.ACCEPTED]
    frame, skipped = cov.slice_frame(accepted, params.coverage, cell_deg=params.coverage_cell_deg)
    dims = [d for d in params.coverage if d not in skipped]
    coverage = cov.coverage_table(
        frame,
        dims,
        params.coverage_min_count,
        params.coverage_max_share,
        params.coverage_max_cells,
    )
    gaps = cov.gap_table(coverage)
    counts = frame["cell"].value_counts()
    df["curate_cell"] = pd.Series(None, index=df.index, dtype=object)
    df.loc[frame.index, "curate_cell"] = frame["cell"].to_numpy()
    df["curate_cell_count"] = pd.array([pd.NA] * len(df), dtype="Int32")
    df.loc[frame.index, "curate_cell_count"] = frame["cell"].map(counts).to_numpy()
    df["curate_cell_share"] = np.nan
    if len(frame):
        df.loc[frame.index, "curate_cell_share"] = (frame["cell"].map(counts) / len(frame)).values
    items = pd.DataFrame(
        {
            "item_id": accepted["item_id"],
            "source_uri": accepted["source_uri"],
            "cell": frame["cell"],
            "phash": accepted["curate_phash"],
            "blur": accepted["curate_blur_score"],
        }
    )
    balanced = cov.balanced_subset(
        items, params.balanced_budget, params.coverage_max_share, params.balanced_min_distance
    )
    joint = coverage[coverage["slice"] == coverage["slice"].iloc[-1]] if len(coverage) else coverage
    stats = {
        "dimensions": dims,
        "skipped_dimensions": skipped,
        "cells": len(joint),
        "gaps": int((joint["needed"] > 0).sum()) if len(joint) else 0,
        "images_needed": int(joint["needed"].sum()) if len(joint) else 0,
        "over_max_share": int((joint["surplus"] > 0).sum()) if len(joint) else 0,
        "balanced": len(balanced),
    }
    return coverage, gaps, balanced, stats


def _size(
    df: pd.DataFrame, col: str, got: pd.DataFrame, work_col: str, rows: pd.Series
) -> pd.Series:
    """Manifest pixel size where known, else the working copy's scaled by the decode factor."""
    factor = got.loc[rows, "decode_factor"].astype(float).fillna(1.0)
    work = got.loc[rows, work_col].astype(float) * factor
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


def read_pair_state(ws: Workspace) -> PairState | None:
    """The previous run's pHash pair state, or None (first run, or written by older code)."""
    pairs_uri, index_uri = (
        ws.uri(STAGE, OUTPUT_FILES["pairs"]),
        ws.uri(STAGE, OUTPUT_FILES["index"]),
    )
    if not (storage.exists(pairs_uri) and storage.exists(index_uri)):
        return None
    fs, path = storage.filesystem(pairs_uri)
    with fs.open(path, "rb") as fh:
        table = pq.read_table(fh)
    meta = table.schema.metadata or {}
    if RADIUS_KEY not in meta:
        return None
    pairs = table.to_pandas()
    index = storage.read_table(index_uri)
    if list(pairs.columns) != PAIRS_COLUMNS or list(index.columns) != INDEX_COLUMNS:
        return None
    return PairState(index=index, pairs=pairs, radius=int(meta[RADIUS_KEY]))


def write_pair_state(ws: Workspace, index: pd.DataFrame, pairs: pd.DataFrame, radius: int) -> None:
    """Write the pair list (radius in its schema metadata) and the items it covers."""
    schema = pa.schema(
        [
            pa.field("item_a", pa.string()),
            pa.field("item_b", pa.string()),
            pa.field("distance", pa.int16()),
        ],
        metadata={RADIUS_KEY: str(radius).encode()},
    )
    table = pa.Table.from_pandas(pairs[PAIRS_COLUMNS], schema=schema, preserve_index=False)
    storage.write_table(ws.uri(STAGE, OUTPUT_FILES["pairs"]), table)
    index_schema = pa.schema([pa.field("item_id", pa.string()), pa.field("phash", pa.string())])
    storage.write_table(ws.uri(STAGE, OUTPUT_FILES["index"]), index[INDEX_COLUMNS], index_schema)


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
    except OSError as exc:  # missing object, permissions, network: retry on the next run
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
    rec.update(metrics.compute_metrics(image, work_max_side, "bgr"))
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
    for col in FLOAT_FEATURES:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    return out


def _manifest_schema(before_uri: str, after: pd.DataFrame) -> pa.Schema | None:
    """The input manifest's Arrow types plus ours, so int32/int8 columns stay as they were."""
    fs, path = storage.filesystem(before_uri)
    with fs.open(path, "rb") as fh:
        base = pq.read_schema(fh).remove_metadata()
    # An all-null input column (Arrow type null) may now hold text (reason, detail, ...).
    fields = [
        pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
        for f in base
        if f.name in after.columns
    ]
    ours = {f.name: f for f in CURATE_FIELDS}
    names = {f.name for f in fields}
    for col in after.columns:
        if col in names:
            continue
        if col not in ours:
            return None  # an unexpected column: let Arrow infer rather than fail
        fields.append(ours[col])
    return pa.schema(fields)
