"""Snapshot diff on tables with known changes: items, labels, classes, slices, drift."""

from __future__ import annotations

import pandas as pd

from tests.helpers import item_id, mock_annotations, mock_drift, mock_manifest
from visionloop.refresh.diff import diff_tables


def _tables() -> dict:
    a = mock_manifest("curate", n=6, quarantine={5: ("blurry", "curate")})
    a["camera_make"], a["camera_model"] = "Acme", "A100"
    b = mock_manifest("curate", n=9, quarantine={2: ("blurry", "curate")})  # 2: quarantined now
    b["camera_make"], b["camera_model"] = "Acme", "A100"
    b.loc[6:, "camera_make"], b.loc[6:, "camera_model"] = "Corvid", "C3"
    b.loc[6:, "curate_day_night"] = "night"
    b = b[b["item_id"] != item_id(4)]  # 4: gone from the source
    ann_a = mock_annotations([item_id(0), item_id(1), item_id(3)])
    ann_b = mock_annotations([item_id(0), item_id(1), item_id(6)])
    ann_b.loc[ann_b["item_id"] == item_id(1), "category"] = "car"  # relabelled: person -> car
    ann_b.loc[ann_b["item_id"] == item_id(1), "category_id"] = 2
    drift = mock_drift(drifted=("curate_brightness",))
    drift["level"] = "feature"
    drift["p_value_adjusted"] = drift["p_value"]
    return {"a": a, "b": b, "ann_a": ann_a, "ann_b": ann_b, "drift": drift}


def test_items_labels_classes_slices_and_drift() -> None:
    t = _tables()
    d = diff_tables(
        "dataset-v1", "dataset-v2", t["a"], t["b"], t["ann_a"], t["ann_b"], t["drift"],
        None, pd.DataFrame({"item_id": ["x", "y"]}), reference_of_b="dataset-v1",
    )  # fmt: skip
    it = d.items
    assert (it["accepted_a"], it["accepted_b"]) == (5, 7)  # a: 0-4; b: 0,1,3,5,6,7,8
    assert it["added_ids"] == sorted([item_id(5), item_id(6), item_id(7), item_id(8)])
    assert it["removed_ids"] == sorted([item_id(2), item_id(4)])
    assert (it["removed_quarantined"], it["removed_gone"]) == (1, 1)
    lb = d.labels
    # in both: 0 (same), 1 (person box -> car box), 3 (labelled in a, none in b)
    assert (lb["relabelled"], lb["unlabelled_since"], lb["newly_labelled"]) == (1, 1, 0)
    assert (lb["boxes_added"], lb["boxes_removed"]) == (1, 1)
    assert lb["relabelled_examples"] == [
        {"item_id": item_id(1), "before": "1 car, 1 person", "after": "2 car"}
    ]
    assert lb["added_items_labelled"] == 1  # item 6
    classes = d.classes.set_index("category")
    assert classes.loc["car"].tolist() == [3, 4, 1] and classes.loc["person"].tolist() == [3, 2, -1]
    slices = d.slices.set_index(["dimension", "value"])
    assert slices.loc[("camera", "Corvid C3"), ["a", "b"]].tolist() == [0, 3]
    assert slices.loc[("day_night", "night"), "share_b"] == 3 / 7
    assert d.drift["available"] and d.drift["dataset_drift"] is False
    assert [r["feature"] for r in d.drift["drifted"]] == ["curate_brightness"]
    assert d.augmented == {"a": 0, "b": 2}
    md = d.markdown()
    assert "# Snapshot diff `dataset-v1` -> `dataset-v2`" in md
    assert "(**+4** added, **-2** removed: 1 quarantined since, 1 gone from the source)" in md
    assert "| camera | Corvid C3 | 0 | 3 | 0.0% | 42.9% |" in md
    assert "| curate_brightness | ks | 0.500 |" in md
    assert d.to_dict()["items"]["added"] == 4


def test_no_drift_report_and_no_labels() -> None:
    t = _tables()
    d = diff_tables("v1", "v2", t["a"], t["a"])
    assert d.items["added"] == 0 and d.items["removed"] == 0
    assert d.labels["annotations_a"] == 0 and d.classes.empty
    assert d.drift == {"available": False}
    assert "No drift report in `v2`." in d.markdown()
