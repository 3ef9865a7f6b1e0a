"""Workspaces of measured synthetic images for the refresh tests (no collect/anonymize run).

``measured_items`` renders a ``synthetic.Batch``, writes each image as a published object
(``anonymize/objects/<id[:2]>/<id>.jpg``) and returns curate-manifest rows measured the way
the pipeline measures them (``synthetic.measured_row``) plus the true boxes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from visionloop import storage
from visionloop.refresh import synthetic as syn
from visionloop.stages.base import Workspace

EMBED_KEYS = ("contrast", "saturation", "colour_a", "colour_b", "colourfulness", "vector")


def measured_items(
    ws: Workspace, batch: syn.Batch, seed: int, prefix: str = "img", split: str | None = None
) -> tuple[pd.DataFrame, dict[str, list[dict[str, Any]]]]:
    """(curate manifest rows, item id -> true boxes) of a rendered batch."""
    rng = np.random.default_rng(seed)
    rows, boxes = [], {}
    for i, shot in enumerate(syn.shots(batch, rng)):
        scene = syn.render(shot, rng, batch.width, batch.height)
        cap = syn.capture_time(rng, shot.night)
        rel = f"{shot.camera}/{prefix}_{seed:04d}_{i:05d}.jpg"
        data = syn.encode(scene.pixels, shot.camera, cap)
        row = syn.measured_row(data, rel, shot.camera, cap)
        for k in EMBED_KEYS:
            row.pop(k)
        iid = row["item_id"]
        obj = f"anonymize/objects/{iid[:2]}/{iid}.jpg"
        storage.write_bytes_atomic(ws.resolve(obj), data)
        row.update(
            source_uri=f"data/source/images/{rel}",
            reason=None,
            quarantined_by=None,
            anonymize_object_uri=obj,
            anonymize_sha256=iid,
            curate_split=split,
        )
        rows.append(row)
        boxes[iid] = scene.boxes
    return pd.DataFrame(rows), boxes


def annotations_for(
    items: pd.DataFrame, boxes: dict[str, list[dict[str, Any]]], annotator: str = "alice"
) -> pd.DataFrame:
    """Matched canonical annotation rows for the true boxes of ``items``."""
    from visionloop.annotations.table import with_all_columns

    ids = {"vehicle": 0, "sign": 1}
    rows = []
    for r in items.itertuples(index=False):
        for j, b in enumerate(boxes.get(r.item_id, [])):
            x, y, w, h = b["bbox"]
            rows.append(
                {
                    "annotation_id": f"test:{r.item_id[:12]}#{j}:{annotator}",
                    "item_id": r.item_id,
                    "image_ref": r.rel_path,
                    "category": b["category"],
                    "category_id": ids[b["category"]],
                    "bbox_x": float(x),
                    "bbox_y": float(y),
                    "bbox_w": float(w),
                    "bbox_h": float(h),
                    "iscrowd": False,
                    "image_width": int(r.width),
                    "image_height": int(r.height),
                    "annotator": annotator,
                    "attributes": "{}",
                    "source_format": "coco",
                    "source_file": "test.json",
                    "source_pointer": f"/{r.item_id[:12]}/{j}",
                    "match_status": "matched",
                    "shape": "box",
                }
            )
    df = with_all_columns(pd.DataFrame(rows))
    for col in ("image_width", "image_height"):
        df[col] = df[col].astype("Int32")
    return df


def categories_json() -> dict[str, Any]:
    return {"categories": [{"id": 0, "name": "vehicle"}, {"id": 1, "name": "sign"}]}


def write_inputs(
    ws: Workspace,
    curate: pd.DataFrame,
    annotations: pd.DataFrame | None = None,
    gaps: pd.DataFrame | None = None,
) -> None:
    storage.write_table(ws.manifest_uri("curate"), curate)
    if annotations is not None:
        storage.write_table(ws.uri("import_annotations", "annotations.parquet"), annotations)
        storage.write_text_atomic(
            ws.uri("import_annotations", "categories.json"), json.dumps(categories_json())
        )
    if gaps is not None:
        storage.write_table(ws.uri("curate", "gaps.parquet"), gaps)
