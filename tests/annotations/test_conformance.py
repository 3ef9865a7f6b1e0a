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
    assert df["shape"].tolist() == ["obb"] * 2 and df["attributes"].isna().all()
    assert [round(json.loads(o)[4], 1) for o in df["obb"]] == [30.0, 120.0]
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


def test_label_studio_two_annotators_rotation_case_mismatch_and_polygons() -> None:
    result, path = load("label_studio/converter_yolo_tests")
    df = result.annotations
    files = df["source_file"].str.rsplit("/", n=1).str[1]
    assert files.value_counts().to_dict() == {
        "data_obb.json": 25,
        "data.json": 6,
        "data_polygons.json": 1,
    }
    # data.json: task 1 labelled by users 2 and 1 (usable for agreement), task 2 by user 1
    boxes_ = df[files == "data.json"]
    assert boxes_["annotator"].tolist() == ["2", "2", "1", "1", "1", "1"]
    assert boxes_["image_ref"].tolist() == ["image1"] * 4 + ["image2"] * 2
    assert (
        boxes_["category"].tolist() == ["parasites", "white", "parasites", "white"] + ["white"] * 2
    )
    assert set(boxes_["shape"]) == {"box"} and boxes_["image_width"].eq(2800).all()
    # percent -> pixels: x = 37.158469945% of 2800 px
    assert boxes(result)[0] == (1040.4372, 1978.8707, 117.3042, 132.6047)
    # data_obb.json: rotation in degrees; "Butterfly" (24 results) vs the config's "butterfly"
    obb = df[files == "data_obb.json"]
    assert set(obb["shape"]) == {"obb"} and set(obb["category"]) == {"butterfly"}
    assert obb["source_category_id"].value_counts().to_dict() == {"Butterfly": 24, "butterfly": 1}
    [warning] = result.issues
    assert (warning.code, warning.pointer) == ("label_case_mismatch", "/0/annotations/0/result/0")
    assert warning.file == f"{path}/data_obb.json" and "(24 times; first here)" in warning.message
    # corners agree with label-studio-converter's own YOLO-OBB expectations (its tests,
    # test_convert_annotation_to_yolo_obb_format, annotations 2 and 3), normalised
    expected = [
        [0.32940009098188566, 0.7738909168266751, 0.4078648636432219, 0.7579911558782483,
         0.43217208011269465, 0.830475727539231, 0.35370730745135837, 0.8463754884876579],
        [0.16814074232397513, 0.5743596079245723, 0.29990750552628187, 0.6721650332758418,
         0.24395249444460837, 0.7177171056620688, 0.11218573124230163, 0.6199116803107994],
    ]  # fmt: skip
    for row, want in zip(obb.iloc[1:3].itertuples(), expected, strict=True):
        corners = json.loads(row.segmentation)[0]
        got = [v / (597 if k % 2 == 0 else 768) for k, v in enumerate(corners)]
        assert got == pytest.approx(want, abs=1e-5)
    # data_polygons.json: the README says it lacks original sizes, but this copy has them
    # (640x426); the no-size case is covered in test_label_studio.py
    poly = df[files == "data_polygons.json"].iloc[0]
    assert (poly["shape"], poly["category"], poly["image_width"]) == ("polygon", "Airplane", 640)
    assert len(json.loads(poly["segmentation"])[0]) == 74  # 37 points
    assert result.categories.names() == ["parasites", "white", "butterfly", "Airplane", "Car"]


def test_cvat_project_with_subsets_whose_file_names_collide() -> None:
    result, _ = load("cvat_images/project_multisubset")
    df = result.annotations
    assert len(df) == 12 and len(result.images) == 6 and result.issues == []
    assert df.groupby("subset").size().to_dict() == {"Test": 4, "Train": 4, "Validation": 4}
    assert df["shape"].tolist()[:4] == ["box", "polyline", "polygon", "points"]
    assert json.loads(df["attributes"].iloc[0]) == {
        "a1": True, "a2": "v3", "a3": "0003", "a4": 2.4, "occluded": True, "z_order": 1,
    }  # fmt: skip
    assert boxes(result)[:4] == [(0, 2, 4, 2), (1, 2, 6, 6), (1, 2, 5, 3), (1, 2, 4, 4)]
    # img0.jpg exists in all three subsets: matching takes the subset's folder
    manifest = pd.DataFrame(
        {
            "item_id": [f"{i:064x}" for i in range(6)],
            "source_uri": [f"s/{i}" for i in range(6)],
            "rel_path": [
                f"images/{s}/img{i}.jpg" for s in ("Test", "Train", "Validation") for i in (0, 1)
            ],
            "status": ["accepted"] * 6,
            "reason": [None] * 6,
        }
    )
    matched, _ = match_annotations(df, manifest)
    assert set(matched["match_method"]) == {"subset_folder"}
    assert matched["item_id"].nunique() == 6


def test_cvat_typed_attributes_and_empty_labels() -> None:
    result, path = load("cvat_images/task_typed_attrs")
    df = result.annotations
    assert df["category"].tolist() == ["label1", "label2"] and df["subset"].unique() == ["train"]
    assert [(e.code, e.pointer) for e in result.errors] == [
        ("missing_label", "line 50, column 5"),  # the polyline with label=""
        ("missing_label", "line 53, column 5"),  # the polygon with label=""
    ]
    assert result.errors[0].file == f"{path}/train.xml"


def test_cvat_video_tracks_with_frame_step_and_outside() -> None:
    result, _ = load("cvat_video/tracks_framefilter")
    df = result.annotations
    # 3 tracks; every keyframe after the first is outside="1": one row each
    assert df["track_id"].tolist() == [0, 1, 2] and df["frame"].tolist() == [10, 10, 13]
    assert df["category"].tolist() == ["II", "klhg", "II"]
    assert df["shape"].tolist() == ["box", "points", "polyline"]
    assert df["image_ref"].tolist() == ["images/frame_000010.png"] * 2 + ["images/frame_000013.png"]
    assert boxes(result)[0] == (3, 4, 7, 1)
    assert json.loads(df["attributes"].iloc[1]) == {"hgl": "hgkf", "keyframe": True}
    assert (df["image_width"].unique().tolist(), df["image_height"].unique().tolist()) == (
        [25],
        [20],
    )
    assert result.categories.names() == ["klhg", "z U k", "II"]  # the label with spaces kept
    assert result.issues == []  # frames 10, 13, 16 sit on start_frame 10 + k * step 3


def test_mot_sequences_with_and_without_seqinfo() -> None:
    result, _ = load("mot/mot17_gt")
    df = result.annotations
    assert df["image_ref"].tolist() == [
        "mot_seq/img1/000001.jpg",
        "mot_seq_with_seqinfo/img1/000001.jpg",
    ]
    assert df["category"].tolist() == ["label_2"] * 2  # class 3, 1-based into labels.txt
    assert df["track_id"].isna().all() and df["frame"].tolist() == [1, 1]  # track id -1: none
    assert boxes(result) == [(0, 4, 4, 8)] * 2
    assert [json.loads(a) for a in df["attributes"]] == [{"visibility": 1.0}] * 2
    assert (df["image_width"].tolist(), df["image_height"].tolist()) == ([16, 16], [16, 16])
    assert result.issues == []


def test_sam_compressed_rle_and_the_empty_mask() -> None:
    result, path = load("sam/compressed_rle")
    df = result.annotations
    assert len(df) == 1 and df["category"].tolist() == ["object"] and df["shape"].iloc[0] == "mask"
    assert boxes(result) == [(3, 1, 1, 4)]
    assert json.loads(df["segmentation"].iloc[0]) == {"counts": "`04n0", "size": [5, 10]}
    attrs = json.loads(df["attributes"].iloc[0])
    assert set(attrs) == {"crop_box", "point_coords", "predicted_iou", "stability_score"}
    [err] = result.errors
    assert (err.code, err.file, err.pointer) == (
        "empty_mask",
        f"{path}/b.json",
        "/annotations/0/segmentation",
    )
    assert "empty (area 0)" in err.message and "disagrees with the 5x10 image" in err.message


def test_voc_parts_actions_masks_and_image_sets() -> None:
    result, _ = load("voc/full_parts_actions_masks")
    df = result.annotations
    assert df["category"].tolist() == ["cat", "person", "head"]
    assert boxes(result) == [(1, 2, 2, 2), (4, 5, 2, 2), (5.5, 6, 2, 2)]  # float 5.5 kept
    assert df["subset"].tolist() == ["train"] * 3
    assert json.loads(df["attributes"].iloc[0]) == {
        "difficult": False, "pose": "Unspecified", "truncated": True,
    }  # fmt: skip
    assert json.loads(df["attributes"].iloc[1])["actions"]["jumping"] is False
    assert json.loads(df["attributes"].iloc[2])["part_of"]["category"] == "person"
    assert sorted(w.code for w in result.warnings) == [
        "class_list_mismatch",  # cat_train.txt says -1, the XML has a cat
        "listed_without_xml",  # 2007_000002 is in test.txt but has no XML
        "masks_not_imported",  # SegmentationClass/Object PNGs
    ]
    comments, _ = load("voc/imageset_comments")  # blank line and "# comment" in train.txt
    assert comments.annotations["subset"].tolist() == ["train"] and comments.issues == []


def _sample_folders() -> list[str]:
    if SAMPLES is None:
        return []
    return sorted(
        f"{top.name}/{sub.name}"
        for top in SAMPLES.iterdir()
        if top.is_dir()
        for sub in top.iterdir()
        if sub.is_dir()
    )


EXPECTED_FORMAT = {
    "coco": "coco",
    "cvat_images": "cvat",
    "cvat_video": "cvat",
    "label_studio": "label_studio",
    "mot": "mot",
    "sam": "sam",
    "voc": "voc",
    "yolo": "yolo",
}


@pytest.mark.parametrize("folder", _sample_folders())
def test_every_sample_folder_is_detected_and_imports_without_a_crash(folder: str) -> None:
    result, _ = load(folder)
    assert result.format == EXPECTED_FORMAT[folder.split("/")[0]]
    assert len(result.annotations) > 0
    # every issue names its file, and a pointer unless it is about the whole file
    assert all(i.file for i in result.issues)


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
