from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from visionloop import storage
from visionloop.anonymize.review import (
    LABEL_CONFIG,
    export_label_studio,
    label_studio_tasks,
    review_rows,
    to_table,
)

ITEM = {
    "item_id": "a" * 64,
    "source_uri": "/src/a.jpg",
    "rel_path": "a.jpg",
    "anonymize_object_uri": "anonymize/objects/aa/a.jpg",
    "object_uri": "collect/objects/aa/a.jpg",
    "width": 200,
    "height": 100,
    "status": "accepted",
}
ENTRIES = [
    {
        "reason": "near_threshold",
        "kind": "face",
        "box": [20, 10, 60, 50],
        "score": 0.55,
        "detector": "yunet",
        "threshold": 0.6,
        "redacted": False,
    },
    {
        "reason": "small_face",
        "kind": "face",
        "box": [100, 0, 110, 12],
        "score": 0.9,
        "redacted": True,
    },
]


def test_review_rows_and_label_studio_tasks() -> None:
    rows = review_rows(ITEM, ENTRIES, "published", None)
    failed = {**ITEM, "item_id": "b" * 64, "anonymize_object_uri": None, "status": "quarantined"}
    rows += review_rows(failed, [], "failed", "decode: corrupt")
    df = to_table(rows).to_pandas()
    assert df["reason"].tolist() == ["near_threshold", "small_face", "failed"]
    assert df["image_uri"].tolist() == [
        "anonymize/objects/aa/a.jpg",
        "anonymize/objects/aa/a.jpg",
        "collect/objects/aa/a.jpg",  # nothing published: the reviewer sees the original
    ]
    tasks = label_studio_tasks(df, lambda rel: f"/data/local-files/?d={rel}")
    assert len(tasks) == 2
    first = tasks[0]
    assert first["data"]["image"] == "/data/local-files/?d=anonymize/objects/aa/a.jpg"
    assert first["data"]["reasons"] == "near_threshold, small_face"
    (pred,) = first["predictions"]
    assert pred["score"] == pytest.approx(0.55)
    near, small = pred["result"]
    assert near["type"] == "rectanglelabels" and near["from_name"] == "label"
    assert near["to_name"] == "image"
    assert (near["original_width"], near["original_height"]) == (200, 100)
    assert near["value"] == {
        "x": 10.0,
        "y": 10.0,
        "width": 20.0,
        "height": 40.0,
        "rotation": 0,
        "rectanglelabels": ["face"],
    }
    assert near["meta"] == {"text": ["near_threshold, NOT redacted"]}
    assert small["meta"] == {"text": ["small_face, redacted"]}
    assert tasks[1]["predictions"][0]["result"] == []
    assert tasks[1]["data"]["detail"] == "decode: corrupt"


def test_export_writes_tasks_and_config(tmp_path: Path) -> None:
    review = tmp_path / "review.parquet"
    storage.write_table(str(review), to_table(review_rows(ITEM, ENTRIES, None, None)))
    out = tmp_path / "tasks.json"
    assert export_label_studio(str(review), str(out), "/data/root") == 1
    (task,) = json.loads(out.read_text())
    assert task["data"]["image"] == "/data/root/anonymize/objects/aa/a.jpg"
    assert Path(f"{out}.label_config.xml").read_text() == LABEL_CONFIG
    assert pd.read_parquet(review)["score"].tolist() == [0.55, 0.9]
