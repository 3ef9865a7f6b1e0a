"""Conformance: real third-party exports (Datumaro's test assets, see each SOURCE.txt) import
with exact counts and their quirks handled deliberately. Read in place, never copied here."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from visionloop.annotations.formats import FormatDetectionError, detect_format, get_reader
from visionloop.annotations.match import build_report, match_annotations
from visionloop.annotations.table import ImportResult

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = next(
    (
        p
        for p in (
            ROOT.parent / "shared/samples/annotations",
            Path("/work/shared/samples/annotations"),
        )
        if p.is_dir()
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    SAMPLES is None, reason="third-party samples (../shared/samples/annotations) are not present"
)


def load(rel: str) -> tuple[ImportResult, str]:
    assert SAMPLES is not None
    path = str(SAMPLES / rel)
    name, _why = detect_format(path)
    return get_reader(name).load(path), path


def boxes(result: ImportResult) -> list[tuple[float, ...]]:
    cols = ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]
    return [tuple(round(float(v), 4) for v in r) for r in result.annotations[cols].to_numpy()]


def codes(result: ImportResult) -> list[tuple[str, str, str]]:
    return [(i.level, i.code, i.pointer) for i in result.issues]


def test_coco_instances_rle_crowd() -> None:
    result, path = load("coco/instances_rle_crowd")
    df = result.annotations
    assert len(df) == 3 and len(result.images) == 2
    assert df["subset"].tolist() == ["train", "val", "val"]
    assert df["image_ref"].tolist() == ["a.jpg", "b.jpg", "b.jpg"]
    # non-contiguous ids 1, 2, 4 -> canonical 0, 1, 2, the same map for both files
    assert result.categories.names() == ["a", "b", "c"]
    for file in ("instances_train.json", "instances_val.json"):
        assert result.categories.source_maps[f"{path}/annotations/{file}"] == {
            "1": 0,
            "2": 1,
            "4": 2,
        }
    assert df["category_id"].tolist() == [1, 0, 1]
    assert df["source_category_id"].tolist() == ["2", "1", "2"]
    # bbox-only with segmentation: [], a polygon with its attributes dict, an RLE crowd mask
    assert boxes(result) == [(2, 2, 3, 1), (0, 0, 1, 2), (0, 0, 2, 10)]
    assert pd.isna(df["segmentation"].iloc[0])
    assert json.loads(df["segmentation"].iloc[1]) == [[0, 0, 1, 0, 1, 2, 0, 2]]
    assert json.loads(df["segmentation"].iloc[2]) == {"counts": "0d0n0", "size": [10, 5]}
    assert df["iscrowd"].tolist() == [False, False, True]
    assert json.loads(df["attributes"].iloc[1]) == {"x": 1, "y": "hello"}
    # the off-by-one declared RLE bbox: mask wins, declared kept, warning with its pointer
    assert json.loads(df["attributes"].iloc[2]) == {"declared_bbox": [0.0, 0.0, 1.0, 9.0]}
    assert codes(result) == [("warning", "bbox_mismatch", "/annotations/1/bbox")]
    assert result.issues[0].file == f"{path}/annotations/instances_val.json"
    assert (df["image_width"].tolist(), df["image_height"].tolist()) == ([10, 5, 5], [5, 10, 10])


def test_coco_roboflow_export_with_annotation_id_zero() -> None:
    result, path = load("coco/roboflow_export")
    df = result.annotations
    assert len(df) == 4 and len(result.images) == 3
    assert df["source_annotation_id"].tolist() == ["0", "1", "1", "2"]  # id 0 is an id
    assert df["annotation_id"].iloc[0] == f"{path}/train/_annotations.coco.json#/annotations/0"
    assert df["subset"].tolist() == ["train", "train", "val", "val"]  # from the split folder
    assert df["category"].tolist() == ["label_0", "label_1", "label_0", "label_1"]
    assert df["category_id"].tolist() == [0, 1, 0, 1]
    assert df["iscrowd"].tolist() == [False, False, False, True]
    assert boxes(result) == [(2, 1, 3, 1), (0, 0, 2, 4), (0, 0, 1, 2), (0, 0, 9, 1)]
    assert result.issues == []

    # matched against a manifest of the export's own images (rel paths with split folders)
    manifest = pd.DataFrame(
        {
            "item_id": [f"{i:064x}" for i in range(3)],
            "source_uri": ["s/1", "s/2", "s/3"],
            "rel_path": ["train/train_001.jpg", "train/train_002.jpg", "val/val_001.jpg"],
            "status": ["accepted", "accepted", "quarantined"],
            "reason": [None, None, "blurry"],
            "width": [10, 10, 10],
            "height": [5, 5, 5],
        }
    )
    matched, detail = match_annotations(df, manifest)
    assert matched["match_status"].tolist() == [
        "matched",
        "matched",
        "quarantined_item",
        "quarantined_item",
    ]
    assert set(matched["match_method"]) == {"file_name"}
    report = build_report(matched, detail, result.images, manifest, result.issues)
    assert (report["matched"], report["quarantined_item"], report["unmatched"]) == (2, 2, 0)
    assert report["size_mismatches"]["count"] == 0


def test_coco_panoptic_imports_segments_as_boxes_with_a_warning() -> None:
    result, _ = load("coco/panoptic")
    df = result.annotations
    assert len(df) == 3
    assert boxes(result) == [(2, 0, 4, 4), (0, 0, 1, 9), (2, 0, 1, 9)]
    assert df["source_pointer"].tolist() == [
        "/annotations/0/segments_info/0",
        "/annotations/0/segments_info/0",
        "/annotations/0/segments_info/1",
    ]
    assert df["source_annotation_id"].tolist() == ["460551", "7", "20"]
    assert df["iscrowd"].tolist() == [False, False, True]
    assert json.loads(df["attributes"].iloc[0]) == {
        "isthing": 0,
        "panoptic_png": "a.png",
        "segment_id": 460551,
    }
    assert codes(result) == [("warning", "panoptic_boxes_only", "")] * 2


# Every YOLO sample holds one 15x10 image with the same two objects (classes 2 and 4 of 10).
DETECT_BOXES = [(0.0, 2.0, 4.0, 2.0), (3.0, 3.0, 2.0, 3.0)]


@pytest.mark.parametrize(
    ("folder", "image_ref"),
    [
        ("yolo/ultralytics_detect", "images/train/1.jpg"),  # names as a dict, split as a dir
        ("yolo/ultralytics_detect_names_list", "images/train/1.jpg"),  # names as a list
        ("yolo/ultralytics_detect_subset_txt", "images/train/1.jpg"),  # train.txt, data/ prefix
        ("yolo/ultralytics_detect_img_list", "images/train/1.jpg"),  # YAML list of images
        ("yolo/darknet_strict", "obj_train_data/1.jpg"),  # obj.data with data/ prefixes
    ],
)
def test_yolo_detect_layouts(folder: str, image_ref: str) -> None:
    result, _ = load(folder)
    df = result.annotations
    assert len(df) == 2
    assert len(result.categories) == 10
    assert df["category"].tolist() == ["label_2", "label_4"]
    assert df["category_id"].tolist() == [2, 4]
    assert df["image_ref"].tolist() == [image_ref] * 2
    assert df["subset"].tolist() == ["train"] * 2
    assert (df["image_width"].tolist(), df["image_height"].tolist()) == ([15] * 2, [10] * 2)
    assert [tuple(round(v, 4) for v in b) for b in boxes(result)] == DETECT_BOXES
    assert df["source_pointer"].tolist() == ["line 1", "line 2"]
    # x0 = (0.133333 - 0.266667 / 2) * 15 = -7.5e-6 px: float noise, clipped without a warning
    assert result.issues == []


def test_yolo_obb_with_a_negative_coordinate() -> None:
    result, path = load("yolo/ultralytics_obb")
    df = result.annotations
    assert len(df) == 2
    assert [json.loads(a) for a in df["attributes"]] == [{"yolo_shape": "obb"}] * 2
    assert boxes(result) == [(0.201, 1.518, 4.5981, 4.9641), (3.634, 0.0, 4.7321, 6.0981)]
    assert json.loads(df["segmentation"].iloc[1])[0][-1] == -0.0981  # polygon kept as written
    [warning] = result.issues
    assert (warning.level, warning.code, warning.pointer) == ("warning", "clipped", "line 2")
    assert warning.file == f"{path}/labels/train/1.txt"


def test_yolo_segment_polygons_with_3_and_5_points() -> None:
    result, _ = load("yolo/ultralytics_segment")
    df = result.annotations
    assert [len(json.loads(s)[0]) // 2 for s in df["segmentation"]] == [3, 5]
    assert json.loads(df["segmentation"].iloc[0]) == [[1.5, 1.0, 6.0, 1.0, 6.0, 5.0]]
    assert boxes(result) == [(1.5, 1.0, 4.5, 4.0), (3.0, 1.5, 3.0, 6.0)]
    assert df["attributes"].isna().all()
    assert result.issues == []


@pytest.mark.parametrize(
    "folder",
    [
        "cvat_images/project_multisubset",
        "cvat_images/task_typed_attrs",
        "cvat_video/tracks_framefilter",
        "label_studio/converter_yolo_tests",
        "mot/mot17_gt",
        "sam/compressed_rle",
        "voc/full_parts_actions_masks",
        "voc/imageset_comments",
    ],
)
def test_other_formats_are_not_mistaken_for_coco_or_yolo(folder: str) -> None:
    assert SAMPLES is not None
    try:
        name, _ = detect_format(str(SAMPLES / folder))
    except FormatDetectionError:
        return
    assert name not in ("coco", "yolo")
