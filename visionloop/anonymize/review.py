"""Review queue: what a human should check after redaction, and its Label Studio export.

A detector's threshold is a guess about a boundary; the regions close to it are where the
stage is least sure. ``data/anonymize/review.parquet`` lists, one row per region (or per image
when there is no region):

- ``near_threshold``: a region scoring within ``review_band`` of its detector's threshold,
  above (redacted, perhaps needlessly) or below (NOT redacted: perhaps a missed face);
- ``small_face``: a redacted face smaller than ``review_small_face`` px (the detectors are
  least reliable there, and the box may be too tight);
- ``residual``: a face the verification pass still found (the image was quarantined);
- ``failed``: an image whose anonymization raised (quarantined, no region).

:func:`label_studio_tasks` turns it into Label Studio tasks, one per image, with every region
pre-drawn as a prediction (``rectanglelabels``, coordinates in percent of the image), so a
reviewer corrects boxes instead of drawing them. ``python -m visionloop.anonymize.review``
writes them (and the matching labelling config) from a review.parquet.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa

REVIEW_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string()),
        pa.field("rel_path", pa.string()),
        pa.field("image_uri", pa.string()),  # data-root-relative: published image, else original
        pa.field("image_published", pa.bool_()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("reason", pa.string()),  # near_threshold | small_face | residual | failed
        pa.field("kind", pa.string()),
        pa.field("x0", pa.float64()),
        pa.field("y0", pa.float64()),
        pa.field("x1", pa.float64()),
        pa.field("y1", pa.float64()),
        pa.field("score", pa.float64()),
        pa.field("threshold", pa.float64()),
        pa.field("detector", pa.string()),
        pa.field("redacted", pa.bool_()),
        pa.field("status", pa.string()),
        pa.field("detail", pa.string()),
    ]
)
REASONS = ("near_threshold", "small_face", "residual", "failed")
LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <RectangleLabels name="label" toName="image">
    <Label value="face" background="red"/>
    <Label value="plate" background="blue"/>
  </RectangleLabels>
</View>
"""


def review_rows(
    item: dict[str, Any], entries: list[dict[str, Any]], outcome: str | None, detail: str | None
) -> list[dict[str, Any]]:
    """Review rows of one image: ``item`` holds its identity and size, ``entries`` the JSON list
    the per-image function returned; a failed image gets one row without a box."""
    published = item.get("anonymize_object_uri")
    base = {
        "item_id": item["item_id"],
        "source_uri": item.get("source_uri"),
        "rel_path": item.get("rel_path"),
        "image_uri": published if isinstance(published, str) else item.get("object_uri"),
        "image_published": isinstance(published, str),
        "width": item.get("width"),
        "height": item.get("height"),
        "status": item.get("status"),
    }
    rows = []
    for e in entries:
        x0, y0, x1, y1 = e.get("box") or (None, None, None, None)
        size = {}
        if pd.isna(base["width"]) or pd.isna(base["height"]):  # the per-image size, if known
            size = {"width": e.get("image_width"), "height": e.get("image_height")}
        rows.append(
            {
                **base,
                **size,
                "reason": e["reason"],
                "kind": e.get("kind"),
                "x0": x0,
                "y0": y0,
                "x1": x1,
                "y1": y1,
                "score": e.get("score"),
                "threshold": e.get("threshold"),
                "detector": e.get("detector"),
                "redacted": e.get("redacted"),
                "detail": detail if e["reason"] == "residual" else None,
            }
        )
    if outcome == "failed":
        rows.append({**base, "reason": "failed", "detail": detail})
    return rows


def review_table(rows: pd.DataFrame, results: pd.DataFrame) -> pa.Table:
    """The review queue for the stage: manifest ``rows`` and per-item ``results`` (same index)."""
    out: list[dict[str, Any]] = []
    results = results.loc[rows.index]
    # Most images have nothing to review: only those with entries or a failure are visited
    # (row-wise access over a 10k-image manifest otherwise costs seconds per run).
    review = results["review"] if "review" in results else pd.Series(None, index=results.index)
    outcome = results["outcome"] if "outcome" in results else pd.Series(None, index=results.index)
    listed = review.map(lambda t: isinstance(t, str) and t not in ("", "[]")) | (
        outcome == "failed"
    )
    for idx in results.index[listed.to_numpy(bool)]:
        res = results.loc[idx]
        text = res.get("review")
        entries = json.loads(text) if isinstance(text, str) else []
        out += review_rows(rows.loc[idx].to_dict(), entries, res.get("outcome"), res.get("detail"))
    return to_table(out)


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    df = pd.DataFrame(rows, columns=REVIEW_SCHEMA.names)
    arrays = []
    for f in REVIEW_SCHEMA:
        col = df[f.name].astype(object).where(df[f.name].notna(), None)
        arrays.append(pa.array(col.tolist(), type=f.type))
    return pa.Table.from_arrays(arrays, schema=REVIEW_SCHEMA)


def _percent(v: float, total: float) -> float:
    return round(100.0 * float(v) / float(total), 4)


def label_studio_tasks(
    review: pd.DataFrame, image_url: Callable[[str], str], model_version: str = "visionloop"
) -> list[dict[str, Any]]:
    """Label Studio tasks (one per image) with the review regions as predictions.

    ``image_url`` maps a review row's data-root-relative ``image_uri`` to what Label Studio
    can open (a URL, ``/data/local-files/?d=...``, ``s3://...``). Regions are
    ``rectanglelabels`` results in percent of the image; each carries its score and, in
    ``meta.text``, why it is listed and whether it was redacted.
    """
    tasks = []
    for item_id, group in review.groupby("item_id", sort=False):
        first = group.iloc[0]
        width, height = first["width"], first["height"]
        results = []
        for i, row in enumerate(group.itertuples()):
            if pd.isna(row.x0) or pd.isna(width) or pd.isna(height) or not width or not height:
                continue
            note = f"{row.reason}, {'redacted' if row.redacted else 'NOT redacted'}"
            results.append(
                {
                    "id": f"{str(item_id)[:8]}-{i}",
                    "type": "rectanglelabels",
                    "from_name": "label",
                    "to_name": "image",
                    "original_width": int(width),
                    "original_height": int(height),
                    "image_rotation": 0,
                    "value": {
                        "x": _percent(row.x0, width),
                        "y": _percent(row.y0, height),
                        "width": _percent(row.x1 - row.x0, width),
                        "height": _percent(row.y1 - row.y0, height),
                        "rotation": 0,
                        "rectanglelabels": [str(row.kind or "face")],
                    },
                    "score": None if pd.isna(row.score) else float(row.score),
                    "meta": {"text": [note]},
                }
            )
        scores = [r["score"] for r in results if r["score"] is not None]
        reasons = sorted(set(group["reason"]))
        tasks.append(
            {
                "data": {
                    "image": image_url(str(first["image_uri"])),
                    "item_id": str(item_id),
                    "source_uri": first["source_uri"],
                    "reasons": ", ".join(reasons),
                    "published": bool(first["image_published"]),
                    "detail": "; ".join(str(d) for d in group["detail"].dropna().unique()),
                },
                "predictions": [
                    {
                        "model_version": model_version,
                        "score": min(scores) if scores else None,
                        "result": results,
                    }
                ],
            }
        )
    return tasks


def export_label_studio(
    review_uri: str, out_uri: str, data_dir: str, url_prefix: str | None = None
) -> int:
    """Write Label Studio tasks (JSON) for a review.parquet, and the labelling config beside
    it (``<out>.label_config.xml``); returns the number of tasks."""
    from visionloop import storage

    review = storage.read_table(review_uri)

    def image_url(rel: str) -> str:
        if url_prefix is not None:
            return url_prefix + rel
        return storage.join(data_dir, rel)

    tasks = label_studio_tasks(review, image_url)
    storage.write_bytes_atomic(out_uri, json.dumps(tasks, indent=2, default=str).encode())
    storage.write_bytes_atomic(f"{out_uri}.label_config.xml", LABEL_CONFIG.encode())
    return len(tasks)


def main(argv: list[str] | None = None) -> int:
    """``python -m visionloop.anonymize.review REVIEW.parquet TASKS.json [--data-dir D]``."""
    import argparse

    ap = argparse.ArgumentParser(description="Export the anonymize review queue to Label Studio")
    ap.add_argument("review", help="review.parquet (data/anonymize/review.parquet)")
    ap.add_argument("out", help="tasks JSON to write")
    ap.add_argument("--data-dir", default="data", help="data root the image paths are under")
    ap.add_argument("--url-prefix", default=None, help="prefix for image paths instead")
    args = ap.parse_args(argv)
    n = export_label_studio(args.review, args.out, args.data_dir, args.url_prefix)
    print(f"{n} task(s) written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
