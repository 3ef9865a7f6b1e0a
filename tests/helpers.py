"""Shared builders of valid stage tables (``mock_*``), so tests only spell out what they break.

Each builder returns a table that satisfies the COLUMNS.md contract for its stage; a test then
edits a few cells to plant exactly the defect it checks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import pandas as pd

from visionloop import storage
from visionloop.schema import ANNOTATION_SCHEMA, MANIFEST_SCHEMA, STAGES
from visionloop.stages.base import Workspace

MANIFEST_STAGES = ("collect", "anonymize", "curate")


def item_id(i: int) -> str:
    """A deterministic, valid item id (64 lowercase hex digits)."""
    return hashlib.sha256(f"item-{i}".encode()).hexdigest()


def mock_manifest(
    stage: str = "curate",
    n: int = 10,
    quarantine: Mapping[int, tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """A valid manifest as ``stage`` writes it: MANIFEST_SCHEMA + every stage's columns so far.

    ``quarantine`` maps a row index to ``(reason, stage)``. Rows quarantined before a stage
    have nulls in that stage's columns (they were not processed); rows quarantined by curate
    keep their metrics. Accepted rows are 640x480 JPEGs with a clean anonymization audit.
    """
    if stage not in MANIFEST_STAGES:
        raise ValueError(f"manifest stages are {MANIFEST_STAGES}, not {stage!r}")
    quarantine = dict(quarantine or {})
    upto = STAGES.index(stage)
    rows = []
    for i in range(n):
        reason, by = quarantine.get(i, (None, None))
        if by is not None and STAGES.index(by) > upto:
            raise ValueError(f"row {i} is quarantined by {by}, after {stage}")
        iid = item_id(i)
        decoded = by != "collect" or reason == "duplicate_exact"
        row: dict[str, object] = {
            "item_id": iid,
            "source_uri": f"/src/img_{i:03d}.jpg",
            "rel_path": f"img_{i:03d}.jpg",
            "size_bytes": 1000 + i,
            "status": "quarantined" if by else "accepted",
            "reason": reason,
            "reason_detail": f"planted {reason}" if reason else None,
            "quarantined_by": by,
            "duplicate_of": None,
            "format": "JPEG" if decoded else None,
            "width": 640 if decoded else None,
            "height": 480 if decoded else None,
            "channels": 3 if decoded else None,
            "mode": "RGB" if decoded else None,
            "exif_orientation": 1 if decoded else None,
            "capture_time": None,
            "camera_make": None,
            "camera_model": None,
            "has_gps": False if decoded else None,
            "gps_lat": None,
            "gps_lon": None,
            "object_uri": f"collect/objects/{iid[:2]}/{iid}.jpg" if by is None else None,
            "collect_source_stamp": f"{1000 + i}:1700000000",
        }
        processed = {s: by is None or STAGES.index(by) >= STAGES.index(s) for s in MANIFEST_STAGES}
        if upto >= STAGES.index("anonymize"):
            ok = processed["anonymize"] and by != "anonymize"
            done = processed["anonymize"]
            row.update(
                anonymize_object_uri=f"anonymize/objects/{iid[:2]}/{iid}.jpg" if ok else None,
                anonymize_sha256=hashlib.sha256(f"pub-{i}".encode()).hexdigest() if ok else None,
                anonymize_faces=(i % 3) if done else None,
                anonymize_residual=0 if ok else (1 if done else None),
                anonymize_metadata_stripped=True if ok else None,
                anonymize_audit_complete=True if done else None,
            )
        if upto >= STAGES.index("curate"):
            done = processed["curate"]
            row.update(
                curate_blur_score=0.5 + i / (4 * n) if done else None,
                curate_brightness=0.4 + i / (4 * n) if done else None,
                curate_entropy=6.0 + i / n if done else None,
                curate_phash=f"{i:016x}" if done else None,
                curate_near_duplicate_of=None,
                curate_day_night="day" if done else None,
                curate_is_blurry=(reason == "blurry") if done else None,
                curate_is_dark=(reason == "too_dark") if done else None,
                curate_is_overexposed=(reason == "overexposed") if done else None,
                curate_is_low_information=(reason == "low_information") if done else None,
                curate_clip_low=0.0 if done else None,
                curate_clip_high=0.001 * i if done else None,
                curate_channel_spread=120.0 + i if done else None,
                curate_color_cast=0.3 if done else None,
                curate_aspect_ratio=640 / 480 if done else None,
                curate_pixel_hash=f"{i:016x}{i:08x}" if done else None,
                curate_is_near_duplicate=(reason == "near_duplicate") if done else None,
                curate_is_odd_size=(reason == "odd_size") if done else None,
                curate_is_odd_aspect=(reason == "odd_aspect") if done else None,
                curate_is_pixel_duplicate=(reason == "duplicate_pixels") if done else None,
                curate_is_split_leak=(reason == "split_leakage") if done else None,
                curate_is_clipped=False if done else None,
                curate_is_grayscale=False if done else None,
                curate_is_color_cast=False if done else None,
                # Coverage cell of an accepted row, as if these rows were a sample of a larger
                # dataset whose cells meet the default curate.coverage_min_count / max_share.
                curate_cell="day | unknown" if by is None else None,
                curate_cell_count=40 if by is None else None,
                curate_cell_share=0.4 if by is None else None,
            )
        rows.append(row)
    df = pd.DataFrame(rows)
    schema_cols = [f.name for f in MANIFEST_SCHEMA]
    extra = [c for c in df.columns if c not in schema_cols]
    df = df[schema_cols + extra]
    for col in ("width", "height"):
        df[col] = df[col].astype("Int32")
    for col in ("anonymize_faces", "anonymize_residual", "curate_cell_count"):
        if col in df.columns:
            df[col] = df[col].astype("Int32")
    return df


def mock_annotations(
    items: list[str] | None = None, per_item: int = 2, width: int = 640, height: int = 480
) -> pd.DataFrame:
    """A valid ANNOTATION_SCHEMA table: ``per_item`` boxes inside each image, all matched."""
    items = items if items is not None else [item_id(i) for i in range(5)]
    rows = []
    for i, iid in enumerate(items):
        for j in range(per_item):
            rows.append(
                {
                    "annotation_id": f"coco:instances.json#/annotations/{i * per_item + j}",
                    "item_id": iid,
                    "image_ref": f"img_{i:03d}.jpg",
                    "category": "person" if j % 2 == 0 else "car",
                    "category_id": 1 if j % 2 == 0 else 2,
                    "source_category_id": str(1 + j % 2),
                    "bbox_x": 10.0 * (j + 1),
                    "bbox_y": 20.0,
                    "bbox_w": 100.0,
                    "bbox_h": 50.0,
                    "segmentation": None,
                    "iscrowd": False,
                    "image_width": width,
                    "image_height": height,
                    "annotator": "tester",
                    "attributes": "{}",
                    "source_format": "coco",
                    "source_file": "instances.json",
                    "source_pointer": f"/annotations/{i * per_item + j}",
                    "match_status": "matched",
                }
            )
    df = pd.DataFrame(rows, columns=[f.name for f in ANNOTATION_SCHEMA])
    for col in ("image_width", "image_height"):
        df[col] = df[col].astype("Int32")
    return df


def mock_drift(
    features: tuple[str, ...] = ("curate_blur_score", "curate_brightness", "curate_entropy"),
    drifted: tuple[str, ...] = (),
) -> pd.DataFrame:
    """A valid refresh drift table: one KS test per feature; ``drifted`` ones have drifted."""
    rows = []
    for k, f in enumerate(features):
        d = f in drifted
        rows.append(
            {
                "feature": f,
                "test": "ks",
                "statistic": 0.5 if d else 0.05 + 0.01 * k,
                "p_value": 0.001 if d else 0.8,
                "threshold": 0.2,
                "drifted": d,
                "n_reference": 100,
                "n_current": 80,
            }
        )
    return pd.DataFrame(rows)


def write_stage_table(ws: Workspace, stage: str, name: str, df: pd.DataFrame) -> str:
    """Write ``df`` as ``<data>/<stage>/<name>`` and return its URI."""
    uri = ws.uri(stage, name)
    storage.write_table(uri, df)
    return uri


def write_pipeline(
    ws: Workspace,
    n: int = 10,
    quarantine: Mapping[int, tuple[str, str]] | None = None,
    annotations: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Write consistent collect, anonymize and curate manifests plus annotations.parquet."""
    quarantine = dict(quarantine or {})
    out: dict[str, pd.DataFrame] = {}
    for stage in MANIFEST_STAGES:
        upto = STAGES.index(stage)
        q = {i: rb for i, rb in quarantine.items() if STAGES.index(rb[1]) <= upto}
        out[stage] = mock_manifest(stage, n=n, quarantine=q)
        write_stage_table(ws, stage, "manifest.parquet", out[stage])
    if annotations is None:
        accepted = out["curate"].loc[out["curate"]["status"] == "accepted", "item_id"]
        annotations = mock_annotations(list(accepted))
    out["import_annotations"] = annotations
    write_stage_table(ws, "import_annotations", "annotations.parquet", annotations)
    return out


def tree_digest(root: str, skip: tuple[str, ...] = ("uncommitted",)) -> dict[str, str]:
    """sha256 of every file below ``root`` (relative path -> digest), skipping ``skip`` dirs."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                found[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return found


__all__ = [
    "item_id",
    "mock_annotations",
    "mock_drift",
    "mock_manifest",
    "tree_digest",
    "write_pipeline",
    "write_stage_table",
]
