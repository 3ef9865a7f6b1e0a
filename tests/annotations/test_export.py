"""Export to COCO, YOLO, Label Studio and CVAT: round trips on generated tables that cover every
geometry type, and loss reports that name exactly what a format cannot carry."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from visionloop.annotations.export import (
    CONTENT_COLUMNS,
    export_table,
    read_annotation_table,
    write_annotation_table,
)
from visionloop.annotations.formats import get_reader
from visionloop.annotations.formats.coco import mask_to_rle, rle_bbox_area, rle_counts
from visionloop.annotations.table import (
    AnnotationImportError,
    AnnotationRecord,
    CategoryMap,
    TableBuilder,
    dumps,
    ellipse_extent,
    ellipse_outline,
    keypoints_json,
    obb_corners,
    obb_json,
    polygons_json,
)

SIZES = {"imgs/a.jpg": (200, 100), "imgs/b.jpg": (160, 120)}
SUBSETS = {"imgs/a.jpg": "train", "imgs/b.jpg": "val"}


def _extent(flat: list[float]) -> tuple[float, float, float, float]:
    xs, ys = flat[0::2], flat[1::2]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def every_geometry(
    annotators: bool = True, pose: bool = True, tracks: bool = False
) -> tuple[pd.DataFrame, CategoryMap]:
    """A canonical table with one row per geometry type (and the annotator / score /
    attribute columns set on a few rows)."""
    cmap = CategoryMap()
    for name in ("car", "person", "lane", "sunny"):
        cmap.register("gen", name, name)
    cmap.set_meta("person", keypoints=["nose", "tail"], skeleton=[[1, 2]])
    builder = TableBuilder()
    n = 0

    def add(ref: str, category: str, shape: str, box: Any = None, **kw: Any) -> None:
        nonlocal n
        w, h = SIZES[ref]
        builder.add(
            AnnotationRecord(
                annotation_id=f"gen#{n}",
                image_ref=ref,
                category=category,
                category_id=cmap.id_of(category),
                source_format="gen",
                source_file="gen",
                source_pointer=str(n),
                bbox_x=None if box is None else float(box[0]),
                bbox_y=None if box is None else float(box[1]),
                bbox_w=None if box is None else float(box[2]),
                bbox_h=None if box is None else float(box[3]),
                image_width=w,
                image_height=h,
                subset=SUBSETS[ref],
                shape=shape,
                **kw,
            )
        )
        n += 1

    a, b = "imgs/a.jpg", "imgs/b.jpg"
    add(
        a,
        "car",
        "box",
        (10.5, 20.25, 30, 40),
        attributes=dumps({"occluded": True}),
        annotator="7" if annotators else None,
    )
    ring = [20.0, 10.0, 100.0, 10.0, 100.0, 60.0]
    add(a, "car", "polygon", _extent(ring), segmentation=polygons_json([ring]))
    rings = [[0.0, 0.0, 10.0, 0.0, 10.0, 10.0], [50.0, 50.0, 90.0, 50.0, 90.0, 90.0]]
    add(b, "car", "polygon", (0, 0, 90, 90), segmentation=polygons_json(rings))
    mask = np.zeros((120, 160), dtype=bool)
    mask[30:50, 40:100] = True
    rle = mask_to_rle(mask)
    box, _ = rle_bbox_area(rle_counts(rle)[2], 120)
    add(b, "person", "mask", box, segmentation=dumps(rle))
    exact = obb_corners(100, 50, 40, 20, 30)
    corners = [round(v, 4) for v in exact]
    add(
        a,
        "car",
        "obb",
        _extent(exact),
        obb=obb_json(100, 50, 40, 20, 30),
        segmentation=polygons_json([corners]),
    )
    add(
        a,
        "person",
        "ellipse",
        ellipse_extent(60, 50, 40, 20, 0),
        obb=obb_json(60, 50, 40, 20, 0),
        segmentation=polygons_json([ellipse_outline(60, 50, 40, 20, 0)]),
    )
    add(
        a,
        "lane",
        "polyline",
        (5, 5, 50, 45),
        keypoints=keypoints_json([[5, 5, 2], [30, 20, 2], [55, 50, 2]]),
    )
    add(b, "person", "points", None, keypoints=keypoints_json([[80, 60, 2]]))
    add(
        b,
        "person",
        "points",
        (10, 10, 10, 10),
        keypoints=keypoints_json([[10, 10, 2], [20, 20, 2]]),
    )
    if pose:
        add(
            b,
            "person",
            "keypoints",
            (60, 20, 40, 60),
            keypoints=keypoints_json([[70, 30, 2], [90, 70, 1]]),
        )
    add(a, "sunny", "tag", None, annotator="7" if annotators else None)
    add(a, "car", "box", (12, 22, 28, 38), annotator="prediction:m1", score=0.75)
    df = builder.build()
    if tracks:
        df["track_id"] = pd.array([i % 3 for i in range(len(df))], dtype="Int64")
        df["frame"] = pd.array([10 + 3 * (i % 2) for i in range(len(df))], dtype="Int64")
    return df, cmap


def canon(df: pd.DataFrame, drop: tuple[str, ...] = ()) -> list[tuple]:
    """Content columns as comparable, order-free tuples (floats to 1/100 px: the sort key;
    ``same`` then compares to 1/1000 px)."""
    cols = [c for c in CONTENT_COLUMNS if c not in drop]
    out = []
    for row in df[cols].itertuples(index=False):
        vals: list[Any] = []
        for c, v in zip(cols, row, strict=True):
            if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
                vals.append(None)
            elif c in ("segmentation", "obb", "keypoints", "attributes"):
                vals.append(json.loads(v))
            elif isinstance(v, (np.integer, np.bool_, np.floating)):
                vals.append(v.item())
            else:
                vals.append(v)
        out.append(tuple(vals))
    return sorted(out, key=lambda t: repr(_round(list(t), 1)))


def _round(v: Any, digits: int = 3) -> Any:
    if isinstance(v, float):
        return round(v, digits) + 0.0
    if isinstance(v, list):
        return [_round(x, digits) for x in v]
    if isinstance(v, tuple):
        return tuple(_round(x, digits) for x in v)
    if isinstance(v, dict):
        return {k: _round(x, digits) for k, x in v.items()}
    return v


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return (not isinstance(a, bool) and abs(a - b) <= 1e-3) or a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def same(got: pd.DataFrame, expected: pd.DataFrame, drop: tuple[str, ...] = ()) -> None:
    """The two tables hold the same rows (content columns, floats to 1/1000 px)."""
    a, b = canon(got, drop), canon(expected, drop)
    assert len(a) == len(b), (len(a), len(b))
    for x, y in zip(a, b, strict=True):
        assert _close(x, y), f"\n got      {x}\n expected {y}"


def losses(report: Any) -> tuple[dict[str, int], dict[str, int]]:
    d = report.to_dict()
    return (
        {k: v["count"] for k, v in d["not_written_by_reason"].items()},
        {k: v["count"] for k, v in d["lost_by_feature"].items()},
    )


def reimport(fmt: str, out: Path) -> Any:
    return get_reader(fmt).load(str(out), images=SIZES)


def rows(df: pd.DataFrame, ids: list[int]) -> pd.DataFrame:
    return df[df["annotation_id"].isin([f"gen#{i}" for i in ids])]


# Row numbers of every_geometry(): 0 box, 1 polygon, 2 two-ring polygon, 3 mask, 4 obb,
# 5 ellipse, 6 polyline, 7 point, 8 two points, 9 pose, 10 tag, 11 prediction box.


def test_coco_round_trip_and_losses(tmp_path: Path) -> None:
    df, cmap = every_geometry()
    report = export_table(df, cmap, "coco", str(tmp_path / "coco"))
    assert losses(report) == (
        {"shape_points": 2, "shape_polyline": 1, "shape_tag": 1},
        {"annotator": 2, "shape_ellipse": 1, "shape_obb": 1},
    )
    assert (report.written, report.rows) == (8, 12)
    assert sorted(Path(f).name for f in report.files) == [
        "coco.loss.json",
        "instances_train.json",
        "instances_val.json",
    ]
    back = reimport("coco", tmp_path / "coco")
    assert not back.issues
    # what the report says changed: the oriented box and the ellipse are now their outlines
    expected = rows(df, [0, 1, 2, 3, 4, 5, 9, 11]).copy()
    expected.loc[expected["shape"].isin(["obb", "ellipse"]), ["shape", "obb"]] = ["polygon", None]
    same(back.annotations, expected, drop=("annotator",))
    assert back.categories.meta["person"] == {"keypoints": ["nose", "tail"], "skeleton": [[1, 2]]}
    assert back.categories.names() == cmap.names()


def test_yolo_round_trip_and_losses(tmp_path: Path) -> None:
    df, cmap = every_geometry(pose=False)
    report = export_table(df, cmap, "yolo", str(tmp_path / "yolo"))
    assert losses(report) == (
        {"shape_points": 2, "shape_polyline": 1, "shape_tag": 1},
        {
            "annotator": 2,
            "attributes": 1,
            "polygon_rings": 1,
            "score": 1,
            "shape_ellipse": 1,
            "shape_mask": 1,
        },
    )
    back = reimport("yolo", tmp_path / "yolo")
    assert not back.errors
    got = back.annotations
    # the mask comes back as its outline polygon (a rectangle here, which YOLO reads as an
    # oriented box): same extent, to a pixel edge
    outline = got[(got["category"] == "person") & (got["image_ref"] == "imgs/b.jpg")]
    assert tuple(outline.iloc[0][["bbox_x", "bbox_y", "bbox_w", "bbox_h"]]) == (40, 30, 59, 19)
    assert outline.iloc[0]["shape"] == "obb"
    expected = rows(df, [0, 1, 2, 4, 5, 10]).copy()  # (no pose row: the prediction is 10)
    two_rings = expected["image_ref"].eq("imgs/b.jpg") & expected["shape"].eq("polygon")
    expected.loc[two_rings, "segmentation"] = polygons_json([[50.0, 50.0, 90.0, 50.0, 90.0, 90.0]])
    expected.loc[two_rings, ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]] = [50.0, 50.0, 40.0, 40.0]
    expected.loc[expected["shape"] == "ellipse", ["shape", "obb"]] = ["polygon", None]
    drop = ("annotator", "score", "attributes")
    same(got.drop(outline.index), expected, drop)
    doc = (tmp_path / "yolo/data.yaml").read_text()
    assert "names:" in doc and "kpt_shape" not in doc


def test_yolo_pose_set(tmp_path: Path) -> None:
    df, cmap = every_geometry()
    pose = df[df["shape"] == "keypoints"]
    report = export_table(pose, cmap, "yolo", str(tmp_path / "pose"))
    assert report.lossless
    back = get_reader("yolo").load(str(tmp_path / "pose"), images=SIZES)
    same(back.annotations, pose)
    # in a pose set, rows without keypoints cannot be written, and say so
    mixed = export_table(df, cmap, "yolo", str(tmp_path / "mixed"))
    assert losses(mixed)[0]["not_a_pose"] == 7


def test_label_studio_round_trip_and_losses(tmp_path: Path) -> None:
    df, cmap = every_geometry()
    out = tmp_path / "tasks.json"
    report = export_table(df, cmap, "label_studio", str(out))
    # Label Studio keeps label names, not ids: first use on re-import differs from the
    # canonical order for 5 rows (sunny before person and lane), and the report says so
    assert losses(report) == (
        {"shape_keypoints": 1, "shape_polyline": 1},
        {"attributes": 1, "category_id": 5, "point_set": 1, "polygon_rings": 1},
    )
    back = reimport("label_studio", out)
    assert not back.issues
    tasks = json.loads(out.read_text())
    assert [t["data"] for t in tasks] == [
        {"image": "imgs/a.jpg", "subset": "train"},
        {"image": "imgs/b.jpg", "subset": "val"},
    ]
    assert [p["model_version"] for p in tasks[0]["predictions"]] == ["m1"]
    assert [a.get("completed_by") for a in tasks[0]["annotations"]] == [7, None]
    expected = rows(df, [0, 1, 2, 3, 4, 5, 7, 8, 10, 11]).copy()
    expected.loc[expected["attributes"].notna(), "attributes"] = None
    first_ring = polygons_json([[0.0, 0.0, 10.0, 0.0, 10.0, 10.0]])
    two_rings = expected["image_ref"].eq("imgs/b.jpg") & expected["shape"].eq("polygon")
    expected.loc[two_rings, "segmentation"] = first_ring
    expected.loc[two_rings, ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]] = [0.0, 0.0, 10.0, 10.0]
    two_points = expected["keypoints"].eq(keypoints_json([[10, 10, 2], [20, 20, 2]]))
    expected.loc[two_points, "keypoints"] = keypoints_json([[10, 10, 2]])
    expected.loc[two_points, ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]] = None
    drop = ("category_id",)
    same(back.annotations, expected, drop)


def test_label_studio_as_predictions(tmp_path: Path) -> None:
    df, cmap = every_geometry()
    out = tmp_path / "pre.json"
    report = export_table(
        df[df["shape"] == "box"],
        cmap,
        "label_studio",
        str(out),
        as_predictions=True,
        model_version="yolo-v9",
    )
    tasks = json.loads(out.read_text())
    assert tasks[0]["annotations"] == []
    assert sorted(p["model_version"] for p in tasks[0]["predictions"]) == ["m1", "yolo-v9"]
    assert losses(report)[1] == {"annotator": 1, "attributes": 1}
    back = get_reader("label_studio").load(str(out))
    assert back.annotations["annotator"].str.startswith("prediction:").all()


def test_cvat_images_round_trip_and_losses(tmp_path: Path) -> None:
    df, cmap = every_geometry()
    out = tmp_path / "annotations.xml"
    report = export_table(df, cmap, "cvat", str(out))
    assert losses(report) == ({"polygon_rings": 1}, {"annotator": 3, "bbox": 1, "score": 1})
    back = reimport("cvat", out)
    assert not back.issues
    keep = [i for i in range(12) if i != 2]
    expected = rows(df, keep).copy()
    pose = expected["shape"] == "keypoints"  # a skeleton has no box: its points' extent
    expected.loc[pose, ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]] = [70.0, 30.0, 20.0, 40.0]
    same(back.annotations, expected, drop=("annotator", "score"))


def test_cvat_video_round_trip_with_tracks_and_gaps(tmp_path: Path) -> None:
    df, cmap = every_geometry(annotators=False, tracks=True)
    df = df[
        df["shape"].isin(["box", "polygon", "points", "polyline"])
        & ~df["segmentation"].str.contains("50.0,50.0", na=False)
    ].copy()
    # a track seen at frames 10 and 16 (not 13): it leaves, and comes back
    df["track_id"] = pd.array([0, 0, 1, 2, 2, 3], dtype="Int64")
    df["frame"] = pd.array([10, 16, 10, 10, 13, 19], dtype="Int64")
    df["category"] = ["car", "car", "lane", "person", "person", "car"]
    df["category_id"] = df["category"].map(cmap.id_of).astype("int32")
    df["image_ref"] = [f"frame_{f:06d}" for f in df["frame"]]
    df["subset"] = None
    df["annotator"], df["score"] = None, None
    df["image_width"], df["image_height"] = 200, 100
    out = tmp_path / "video.xml"
    report = export_table(df, cmap, "cvat", str(out))
    assert report.lossless, report.lines()
    text = out.read_text()
    assert "<frame_filter>step=3</frame_filter>" in text
    assert text.count('outside="1"') == 4  # after 10 (track 0), 10 (1), 13 (2); 16 not at the end
    back = get_reader("cvat").load(str(out))
    assert not back.issues
    attrs = [
        {**json.loads(a), "keyframe": True} if isinstance(a, str) else {"keyframe": True}
        for a in df["attributes"]
    ]
    expected = df.assign(attributes=[dumps(a) for a in attrs])
    same(back.annotations, expected)


def test_escaping_image_refs_are_never_written(tmp_path: Path) -> None:
    df, cmap = every_geometry()
    df.loc[0, "image_ref"] = "../../etc/x.jpg"
    df.loc[1, "image_ref"] = "/abs/y.jpg"
    for fmt, out in (("yolo", tmp_path / "y"), ("coco", tmp_path / "c.json")):
        report = export_table(df, cmap, fmt, str(out))
        assert losses(report)[0]["path_escape"] == 2
    assert not any(".." in str(p) for p in (tmp_path / "y").rglob("*"))


def test_table_and_categories_round_trip_on_disk(tmp_path: Path) -> None:
    df, cmap = every_geometry()
    path = str(tmp_path / "t.parquet")
    write_annotation_table(df, cmap, path)
    back, back_cmap = read_annotation_table(path)
    same(back, df)
    assert back_cmap.to_json() == cmap.to_json()


def test_mismatched_category_map_is_refused(tmp_path: Path) -> None:
    df, cmap = every_geometry()
    df.loc[0, "category_id"] = 3
    with pytest.raises(AnnotationImportError, match="not in the category map"):
        export_table(df, cmap, "coco", str(tmp_path / "x.json"))


SAMPLES = Path("/work/shared/samples/annotations")


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="third-party samples are not present")
@pytest.mark.parametrize(
    ("fmt", "folder", "out"),
    [
        ("label_studio", "label_studio/converter_yolo_tests", "tasks.json"),
        ("cvat", "cvat_images/project_multisubset", "annotations.xml"),
        ("cvat", "cvat_video/tracks_framefilter", "annotations.xml"),
        ("coco", "coco/instances_rle_crowd", "coco"),
        ("yolo", "yolo/ultralytics_obb", "yolo"),
        ("yolo", "yolo/ultralytics_segment", "yolo"),
    ],
)
def test_real_exports_round_trip_in_their_own_format(
    tmp_path: Path, fmt: str, folder: str, out: str
) -> None:
    """Import, export, import again: the same table (content columns)."""
    first = get_reader(fmt).load(str(SAMPLES / folder))
    report = export_table(first.annotations, first.categories, fmt, str(tmp_path / out))
    assert report.lossless, report.lines()
    sizes = {
        r: (w, h)
        for r, w, h in first.annotations[["image_ref", "image_width", "image_height"]]
        .drop_duplicates()
        .itertuples(index=False)
    }
    second = get_reader(fmt).load(str(tmp_path / out), images=sizes)
    assert not second.errors
    same(second.annotations, first.annotations)


def test_a_one_pixel_wide_mask_becomes_its_pixel_edges_in_yolo(tmp_path: Path) -> None:
    df, cmap = every_geometry()
    mask = np.zeros((120, 160), dtype=bool)
    mask[10:14, 20] = True  # a vertical line of pixels: no contour area
    row = df[df["shape"] == "mask"].copy()
    row["segmentation"] = dumps(mask_to_rle(mask))
    row[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]] = [20.0, 10.0, 1.0, 4.0]
    export_table(row, cmap, "yolo", str(tmp_path / "y"))
    line = (tmp_path / "y/labels/val/imgs/b.txt").read_text().split()
    assert [float(v) for v in line[1:]] == pytest.approx(
        [20 / 160, 10 / 120, 21 / 160, 10 / 120, 21 / 160, 14 / 120, 20 / 160, 14 / 120]
    )
