"""Geometry checks: planted defects trigger them, their near misses do not."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.qa.builders import ann, checks_of, params, table
from visionloop.annotations.formats.coco import mask_to_rle
from visionloop.qa.run import run_qa
from visionloop.qa.shapes import box_iou, hungarian, ring_area, ring_self_intersection


def qa(rows: list[dict[str, Any]], **kw: Any) -> pd.DataFrame:
    return run_qa(table(rows), kw.pop("p", None) or params(), **kw).findings


def ids(found: pd.DataFrame) -> list[list[str]]:
    return found["annotation_ids"].map(list).tolist()


def poly(*rings: list[float]) -> str:
    return json.dumps([list(r) for r in rings])


def rle(mask: np.ndarray) -> str:
    return json.dumps(mask_to_rle(mask))


def test_box_iou_and_hungarian() -> None:
    a = np.array([[0, 0, 10, 10], [20, 0, 10, 10]], dtype=float)
    b = np.array([[25, 0, 10, 10], [0, 0, 10, 5]], dtype=float)
    iou = box_iou(a, b)
    assert iou.tolist() == [[0.0, 0.5], [1 / 3, 0.0]]
    assert hungarian(iou, 0.3) == [(0, 1, 0.5), (1, 0, 1 / 3)]
    assert hungarian(iou, 0.4) == [(0, 1, 0.5)]
    # Hungarian beats greedy: greedy takes the 0.6 pair and strands the other box.
    iou = np.array([[0.6, 0.55], [0.5, 0.0]])
    assert [(i, j) for i, j, _ in hungarian(iou, 0.4)] == [(0, 1), (1, 0)]


def test_box_outside_image_respects_tolerance_and_unknown_size() -> None:
    rows = [
        ann(0, box=(600.0, 10.0, 100.0, 20.0)),  # 60 px past the right edge of 640
        ann(1, box=(540.5, 10.0, 100.0, 20.0)),  # 0.5 px past: inside the 1 px tolerance
        ann(2, box=(-3.0, 10.0, 10.0, 20.0)),  # 3 px left of the image
        ann(3, box=(5000.0, 10.0, 10.0, 20.0), image_width=None, image_height=None),
    ]
    found = checks_of(qa(rows), "box_outside_image")
    assert ids(found) == [["a0"], ["a2"]]
    assert found["value"].tolist() == [60.0, 3.0]
    assert "right edge by 60 px" in found["reason"].iloc[0]
    wide = params()
    wide = wide.with_overrides({"validate.bbox_tolerance_px": 5.0})
    assert ids(checks_of(qa(rows, p=wide), "box_outside_image")) == [["a0"]]


def test_shape_outside_image_for_polygons_and_points() -> None:
    inside = [10, 10, 60, 10, 60, 50]
    rows = [
        ann(0, segmentation=poly([10, 10, 700, 10, 60, 50]), shape="polygon"),
        ann(1, segmentation=poly(inside), shape="polygon", box=(10.0, 10.0, 50.0, 40.0)),
        ann(2, box=None, shape="points", keypoints="[[-5.0, 4.0, 2], [7.0, 8.0, 2]]"),
        ann(3, box=None, shape="points", keypoints="[[-5.0, 4.0, 0], [7.0, 8.0, 2]]"),
    ]
    found = checks_of(qa(rows), "shape_outside_image")
    assert ids(found) == [["a0"], ["a2"]]
    assert found["value"].tolist() == [60.0, 5.0]


def test_mask_size_mismatch() -> None:
    mask = np.zeros((480, 640), bool)
    mask[10:20, 30:50] = True
    small = np.zeros((10, 20), bool)
    small[2:5, 2:5] = True
    rows = [
        ann(0, segmentation=rle(mask), box=(30.0, 10.0, 20.0, 10.0)),
        ann(1, segmentation=rle(small), box=(2.0, 2.0, 3.0, 3.0)),
    ]
    found = checks_of(qa(rows), "mask_size_mismatch")
    assert ids(found) == [["a1"]]
    assert found["reason"].iloc[0] == "mask is 20x10 but the image is 640x480"


def test_degenerate_polygons() -> None:
    rows = [
        ann(0, segmentation=poly([0, 0, 10, 10]), box=(0.0, 0.0, 10.0, 10.0)),  # 2 points
        ann(1, segmentation=poly([0, 0, 5, 5, 10, 10]), box=(0.0, 0.0, 10.0, 10.0)),  # collinear
        ann(2, segmentation=poly([0, 0, 10, 0, 10, 10, 4]), box=(0.0, 0.0, 10.0, 10.0)),  # odd
        ann(3, segmentation=poly([0, 0, 10, 0, 10, 10]), box=(0.0, 0.0, 10.0, 10.0)),  # fine
    ]
    found = checks_of(qa(rows), "degenerate_polygon")
    assert ids(found) == [["a0"], ["a1"], ["a2"]]
    assert found["reason"].tolist() == [
        "ring 0 has 2 point(s) (< 3)",
        "ring 0 has zero area (its 3 points are collinear)",
        "ring 0 has an odd number of coordinates (7)",
    ]


def test_self_intersecting_polygon() -> None:
    bowtie = [0, 0, 10, 10, 10, 0, 0, 10]
    square = [0, 0, 10, 0, 10, 10, 0, 10]
    closed = [*square, 0, 0]  # explicitly closed: still simple
    rows = [
        ann(0, segmentation=poly(bowtie), box=(0.0, 0.0, 10.0, 10.0)),
        ann(1, segmentation=poly(square), box=(0.0, 0.0, 10.0, 10.0)),
        ann(2, segmentation=poly(closed), box=(0.0, 0.0, 10.0, 10.0)),
        ann(3, segmentation=poly(square, bowtie), box=(0.0, 0.0, 10.0, 10.0)),
    ]
    found = checks_of(qa(rows), "self_intersecting_polygon")
    assert ids(found) == [["a0"], ["a3"]]
    assert set(found["severity"]) == {"warning"}
    assert found["reason"].tolist() == [
        "ring 0: Self-intersection[5 5]",
        "ring 1: Self-intersection[5 5]",
    ]
    assert ring_area(np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)) == 100.0
    assert ring_self_intersection(np.array([[0, 0], [10, 0], [10, 10]], float)) is None


def test_mask_bbox_mismatch() -> None:
    square = poly([10, 10, 50, 10, 50, 50, 10, 50])
    mask = np.zeros((480, 640), bool)
    mask[100:110, 200:230] = True  # extent [200, 100, 30, 10]
    rows = [
        ann(0, segmentation=square, box=(10.0, 10.0, 40.0, 40.0)),
        ann(1, segmentation=square, box=(10.0, 10.0, 41.0, 40.0)),  # 1 px: tolerated
        ann(2, segmentation=square, box=(10.0, 10.0, 45.0, 40.0)),  # 5 px
        ann(3, segmentation=rle(mask), box=(200.0, 100.0, 30.0, 10.0)),
        # COCO's importer keeps the mask's extent and stores what the export declared:
        ann(4, segmentation=rle(mask), box=(200.0, 100.0, 30.0, 10.0),
            attrs={"declared_bbox": [200, 100, 29, 9]}),  # off by one: tolerated
        ann(5, segmentation=rle(mask), box=(200.0, 100.0, 30.0, 10.0),
            attrs={"declared_bbox": [200, 100, 27, 10]}),
        ann(6, segmentation=rle(mask), box=(190.0, 100.0, 40.0, 10.0)),
        # an ellipse's stored outline is a 32-gon: its extent is not compared
        ann(7, segmentation=square, box=(8.0, 8.0, 44.0, 44.0), shape="ellipse"),
    ]  # fmt: skip
    found = checks_of(qa(rows), "mask_bbox_mismatch")
    assert ids(found) == [["a2"], ["a5"], ["a6"]]
    assert found["value"].tolist() == [5.0, 3.0, 10.0]
    assert "declared box" in found["reason"].iloc[1]


def test_empty_mask_and_invalid_geometry() -> None:
    empty = np.zeros((480, 640), bool)
    bad_rle = json.dumps({"size": [480, 640], "counts": [10, 5]})
    rows = [
        ann(0, segmentation=rle(empty), box=(0.0, 0.0, 5.0, 5.0)),
        ann(1, segmentation="[]", shape="polygon", box=(0.0, 0.0, 5.0, 5.0)),
        ann(2, segmentation="{not json", box=(0.0, 0.0, 5.0, 5.0)),
        ann(3, segmentation=bad_rle, box=(0.0, 0.0, 5.0, 5.0)),
        ann(4, box=None, shape="points", keypoints="[[1, 2]]"),
        ann(5, segmentation=poly([0, 0, 5, 0, 5, 5]), box=(0.0, 0.0, 5.0, 5.0)),
    ]
    found = qa(rows)
    assert ids(checks_of(found, "empty_mask")) == [["a0"], ["a1"]]
    invalid = checks_of(found, "invalid_geometry")
    assert ids(invalid) == [["a2"], ["a3"], ["a4"]]
    assert "RLE runs cover 15 pixels" in invalid["reason"].iloc[1]


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (ann(1, box=(10.5, 10.0, 50.0, 40.0)), [["a0", "a1"]]),  # IoU 0.98, same annotator
        (ann(1, box=(10.5, 10.0, 50.0, 40.0), annotator="bob"), []),  # agreement, not a dup
        (ann(1, box=(10.5, 10.0, 50.0, 40.0), category="person"), []),  # another label
        (ann(1, box=(13.0, 10.0, 50.0, 40.0)), []),  # IoU 0.887
        (ann(1, box=(10.5, 10.0, 50.0, 40.0), image_ref="img_b"), []),  # another item
    ],
)
def test_duplicates(second: dict[str, Any], expected: list[list[str]]) -> None:
    found = checks_of(qa([ann(0), second]), "duplicate_annotation")
    assert ids(found) == expected
    if expected:
        assert found["value"].iloc[0] == pytest.approx(49.5 * 40 / (50.5 * 40))
        assert found["severity"].iloc[0] == "warning"


def test_unattributed_exports_count_as_one_annotator() -> None:
    rows = [ann(0, annotator=None), ann(1, annotator=None)]
    assert ids(checks_of(qa(rows), "duplicate_annotation")) == [["a0", "a1"]]
