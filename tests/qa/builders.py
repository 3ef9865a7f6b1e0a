"""Builders of small annotation tables for the QA tests: each test spells out only the rows
that plant (or must not plant) the defect it checks."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from visionloop.config import Params
from visionloop.schema import ANNOTATION_SCHEMA

EXTRA = ("shape", "track_id", "frame", "keypoints", "obb", "score")  # issue-5 columns


def ann(
    i: int,
    item: str = "img_a",
    category: str = "car",
    box: tuple[float, float, float, float] | None = (10.0, 10.0, 50.0, 40.0),
    annotator: str | None = "alice",
    **kw: Any,
) -> dict[str, Any]:
    """One annotation row: ``item`` is its image_ref (and item key; item_id stays null)."""
    attrs = kw.pop("attrs", None)
    row: dict[str, Any] = {
        "annotation_id": f"a{i}",
        "item_id": None,
        "image_ref": item,
        "category": category,
        "category_id": {"car": 1, "person": 2, "bus": 3}.get(category, 9),
        "bbox_x": None if box is None else box[0],
        "bbox_y": None if box is None else box[1],
        "bbox_w": None if box is None else box[2],
        "bbox_h": None if box is None else box[3],
        "image_width": 640,
        "image_height": 480,
        "annotator": annotator,
        "attributes": None if attrs is None else json.dumps(attrs),
        "source_format": "coco",
        "source_file": "export.json",
        "source_pointer": f"/annotations/{i}",
        "match_status": "matched",
    }
    row.update(kw)
    return row


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = [*ANNOTATION_SCHEMA.names, *[c for c in EXTRA if c not in ANNOTATION_SCHEMA.names]]
    df = pd.DataFrame(rows)
    for c in columns:
        if c not in df.columns:
            df[c] = None
    return df[columns + [c for c in df.columns if c not in columns]]


def params(**qa: Any) -> Params:
    """Default params with ``validate.qa`` overrides."""
    return Params().with_overrides({f"validate.qa.{k}": v for k, v in qa.items()})


def checks_of(findings: pd.DataFrame, check: str) -> pd.DataFrame:
    return findings[findings["check"] == check]
