"""Label Studio JSON exports: one row per region per annotator, predictions apart, percent
coordinates, rotation, polygons, keypoints, ellipses, brush masks, label-config spelling."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from visionloop.annotations.formats import detect_format
from visionloop.annotations.formats.coco import rle_to_mask
from visionloop.annotations.formats.label_studio import (
    BrushRleError,
    brush_rle_decode,
    brush_rle_encode,
    image_ref_from,
    label_studio_to_annotations,
    load_label_studio,
    parse_label_config,
    rle_pack_decode,
)
from visionloop.annotations.table import (
    AnnotationImportError,
    is_prediction,
    obb_corners,
    prediction_mask,
)

W, H = 200, 100
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="car"/><Label value="person"/>
  </RectangleLabels>
  <Choices name="weather" toName="image"><Choice value="sunny"/><Choice value="rain"/></Choices>
</View>"""


def rect(
    rid: str, x: float, y: float, w: float, h: float, label: str = "car", **extra: Any
) -> dict[str, Any]:
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": extra.pop("rotation", 0)}
    value["rectanglelabels"] = [label] if isinstance(label, str) else label
    return {
        "id": rid,
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": W,
        "original_height": H,
        "value": value,
        **extra,
    }


def task(*annotations: dict[str, Any], image: str = "/data/upload/3/1a2b3c4d-a.jpg", **kw: Any):
    return {"id": 1, "data": {"image": image}, "annotations": list(annotations), **kw}


def ann(user: Any, *results: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"id": 7, "completed_by": user, "result": list(results), **kw}


def box(row: Any) -> tuple[float, ...]:
    return tuple(round(float(row[c]), 4) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))


def test_two_annotators_give_one_row_per_region_each() -> None:
    tasks = [
        task(
            ann(1, rect("r1", 10, 20, 30, 40), rect("r2", 50, 50, 10, 10, "person")),
            ann({"id": 2, "email": "b@example.org"}, rect("q1", 11, 21, 30, 40)),
        )
    ]
    result = label_studio_to_annotations(tasks, "ls.json")
    df = result.annotations
    assert df["annotator"].tolist() == ["1", "1", "b@example.org"]
    assert df["image_ref"].tolist() == ["a.jpg"] * 3  # upload prefix removed
    assert df["category"].tolist() == ["car", "person", "car"]
    assert [box(r) for _, r in df.iterrows()] == [
        (20.0, 20.0, 60.0, 40.0),
        (100.0, 50.0, 20.0, 10.0),
        (22.0, 21.0, 60.0, 40.0),
    ]
    assert df["shape"].tolist() == ["box"] * 3
    assert df["source_pointer"].tolist() == [
        "/0/annotations/0/result/0",
        "/0/annotations/0/result/1",
        "/0/annotations/1/result/0",
    ]
    assert df["source_annotation_id"].tolist() == ["r1", "r2", "q1"]
    assert df["annotation_id"].iloc[0] == "ls.json#/0/annotations/0/result/0"
    assert (df["image_width"].tolist(), df["image_height"].tolist()) == ([W] * 3, [H] * 3)
    assert df["score"].isna().all() and not prediction_mask(df).any()
    assert result.issues == []
    assert len(result.images) == 1 and result.images["width"].iloc[0] == W


def test_predictions_are_kept_apart_with_their_model_version_and_score() -> None:
    t = task(
        ann(4, rect("h", 10, 10, 10, 10)),
        predictions=[
            {"model_version": "yolo-v8", "score": 0.5, "result": [rect("p", 10, 10, 12, 10)]},
            {"result": [rect("p2", 1, 1, 5, 5, score=0.25)]},
        ],
    )
    df = label_studio_to_annotations([t]).annotations
    assert df["annotator"].tolist() == ["4", "prediction:yolo-v8", "prediction:unknown"]
    assert [is_prediction(a) for a in df["annotator"]] == [False, True, True]
    assert prediction_mask(df).tolist() == [False, True, True]
    assert df["score"].tolist()[1:] == [0.5, 0.25]  # result score wins over the prediction's
    assert math.isnan(df["score"].iloc[0])
    assert df["source_pointer"].iloc[1] == "/0/predictions/0/result/0"


def test_rotation_turns_about_the_top_left_corner() -> None:
    r = rect("o", 25, 40, 20, 10, rotation=30)
    row = label_studio_to_annotations([task(ann(1, r))]).annotations.iloc[0]
    assert row["shape"] == "obb"
    cx, cy, w, h, angle = json.loads(row["obb"])
    assert (round(w, 6), round(h, 6), round(angle, 6)) == (40.0, 10.0, 30.0)
    corners = obb_corners(cx, cy, w, h, angle)
    assert [round(v, 6) for v in corners[:2]] == [50.0, 40.0]  # top-left is (x, y) as written
    # the top-right corner is the top-left + w along the rotated x axis
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    assert [round(v, 6) for v in corners[2:4]] == [round(50 + 40 * c, 6), round(40 + 40 * s, 6)]
    poly = json.loads(row["segmentation"])[0]
    assert len(poly) == 8
    assert box(row)[0] == round(min(poly[0::2]), 4)


def test_rotation_of_a_full_turn_is_a_plain_box() -> None:
    row = label_studio_to_annotations([task(ann(1, rect("o", 10, 10, 5, 5, rotation=360)))])
    assert row.annotations["shape"].tolist() == ["box"]


def test_polygons_keypoints_ellipses_and_brush_masks() -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[10:20, 30:60] = True
    results = [
        {
            "id": "poly",
            "type": "polygonlabels",
            "original_width": W,
            "original_height": H,
            "value": {"points": [[10, 10], [50, 10], [50, 60]], "polygonlabels": ["car"]},
        },
        {
            "id": "kp",
            "type": "keypointlabels",
            "original_width": W,
            "original_height": H,
            "value": {"x": 50, "y": 50, "width": 0.5, "keypointlabels": ["person"]},
        },
        {
            "id": "el",
            "type": "ellipselabels",
            "original_width": W,
            "original_height": H,
            "value": {"x": 50, "y": 50, "radiusX": 10, "radiusY": 20, "ellipselabels": ["car"]},
        },
        {
            "id": "br",
            "type": "brushlabels",
            "original_width": W,
            "original_height": H,
            "value": {"format": "rle", "rle": brush_rle_encode(mask), "brushlabels": ["car"]},
        },
    ]
    df = label_studio_to_annotations([task(ann(1, *results))]).annotations
    assert df["shape"].tolist() == ["polygon", "points", "ellipse", "mask"]
    assert json.loads(df["segmentation"].iloc[0]) == [[20.0, 10.0, 100.0, 10.0, 100.0, 60.0]]
    assert box(df.iloc[0]) == (20.0, 10.0, 80.0, 50.0)
    assert json.loads(df["keypoints"].iloc[1]) == [[100.0, 50.0, 2]]
    assert math.isnan(df["bbox_x"].iloc[1])  # a single point has no box
    assert json.loads(df["attributes"].iloc[1]) == {"ls_point_width": 0.5}
    assert json.loads(df["obb"].iloc[2]) == [100.0, 50.0, 40.0, 40.0, 0.0]
    assert box(df.iloc[2]) == (80.0, 30.0, 40.0, 40.0)
    rle = json.loads(df["segmentation"].iloc[3])
    assert (rle_to_mask(rle) == mask).all()
    assert box(df.iloc[3]) == (30.0, 10.0, 30.0, 10.0)


def test_linked_results_become_attributes_and_loose_choices_tags() -> None:
    results = [
        rect("r1", 10, 10, 10, 10),
        {"id": "r1", "type": "textarea", "from_name": "plate", "value": {"text": ["AB-12"]}},
        {"id": "r1", "type": "choices", "from_name": "occl", "value": {"choices": ["yes"]}},
        {
            "id": "img",
            "type": "choices",
            "from_name": "weather",
            "to_name": "image",
            "value": {"choices": ["sunny", "rain"]},
        },
        {"id": "t", "type": "textarea", "from_name": "note", "value": {"text": ["hi"]}},
    ]
    result = label_studio_to_annotations([task(ann(1, *results))], label_config=CONFIG)
    df = result.annotations
    assert df["shape"].tolist() == ["box", "tag", "tag"]
    assert json.loads(df["attributes"].iloc[0]) == {
        "occl": {"choices": ["yes"]},
        "plate": {"text": ["AB-12"]},
    }
    assert df["category"].tolist() == ["car", "sunny", "rain"]
    assert df["source_pointer"].tolist()[1:] == [
        "/0/annotations/0/result/3",
        "/0/annotations/0/result/3/value/choices/1",
    ]
    assert json.loads(df["attributes"].iloc[1]) == {"ls_from_name": "weather"}
    assert df.loc[1:, "bbox_x"].isna().all()
    # the config's labels come first, in its order
    assert result.categories.names() == ["car", "person", "sunny", "rain"]
    [w] = result.warnings
    assert (w.code, w.pointer) == ("image_level_result", "/0/annotations/0/result/4")


def test_multi_label_region_gives_a_row_per_label_with_distinct_ids() -> None:
    df = label_studio_to_annotations([task(ann(1, rect("r", 1, 1, 5, 5, ["car", "person"])))])
    rows = df.annotations
    assert rows["category"].tolist() == ["car", "person"]
    assert rows["annotation_id"].is_unique
    assert rows["source_pointer"].tolist()[1] == "/0/annotations/0/result/0/value/rectanglelabels/1"


def test_label_case_mismatch_maps_to_the_config_spelling_with_one_warning() -> None:
    config = CONFIG.replace('"car"', '"Car"')
    results = [rect(f"r{i}", 1, 1, 5, 5, "car") for i in range(3)]
    result = label_studio_to_annotations([task(ann(1, *results))], "x.json", label_config=config)
    assert result.annotations["category"].tolist() == ["Car"] * 3
    assert result.annotations["source_category_id"].tolist() == ["car"] * 3
    assert result.categories.source_maps["x.json"]["car"] == result.categories.id_of("Car")
    [w] = result.issues
    assert w.code == "label_case_mismatch" and "(3 times; first here)" in w.message
    assert w.pointer == "/0/annotations/0/result/0"


def test_without_config_case_variants_stay_apart_with_a_warning() -> None:
    results = [rect("a", 1, 1, 5, 5, "Car"), rect("b", 1, 1, 5, 5, "car")]
    result = label_studio_to_annotations([task(ann(1, *results))])
    assert result.categories.names() == ["Car", "car"]
    [w] = result.issues
    assert w.code == "label_case_variants" and "['Car', 'car']" in w.message


def test_unknown_label_against_config_is_imported_as_written_with_a_warning() -> None:
    result = label_studio_to_annotations(
        [task(ann(1, rect("a", 1, 1, 5, 5, "truck")))], label_config=CONFIG
    )
    assert result.annotations["category"].tolist() == ["truck"]
    assert [i.code for i in result.issues] == ["unknown_label"]


def test_missing_original_size_uses_known_images_or_is_an_error() -> None:
    r = rect("a", 10, 10, 10, 10)
    del r["original_width"], r["original_height"]
    tasks = [task(ann(1, r)), task(ann(1, r), image="/data/local-files/?d=cam%201/b.jpg")]
    result = label_studio_to_annotations(tasks, images={"cam_a/a.jpg": (400, 300)})
    df = result.annotations
    assert df["image_ref"].tolist() == ["a.jpg"]
    assert box(df.iloc[0]) == (40.0, 30.0, 40.0, 30.0)
    assert (df["image_width"].iloc[0], df["image_height"].iloc[0]) == (400, 300)
    codes = sorted((i.level, i.code, i.pointer) for i in result.issues)
    assert codes == [
        ("error", "unknown_image_size", "/1/annotations/0/result/0"),
        ("warning", "size_from_manifest", "/0/annotations/0/result/0"),
    ]
    assert "cam 1/b.jpg" in result.errors[0].message


def test_cancelled_annotations_drafts_and_unsupported_types_are_reported() -> None:
    t = task(
        ann(1, rect("a", 1, 1, 5, 5), was_cancelled=True),
        ann(2, rect("b", 1, 1, 5, 5), {"id": "v", "type": "videorectangle", "value": {}}),
        drafts=[{"result": [rect("d", 1, 1, 5, 5)]}],
    )
    result = label_studio_to_annotations([t])
    assert result.annotations["annotator"].tolist() == ["2"]
    assert sorted(i.code for i in result.issues) == [
        "cancelled_annotation",
        "drafts_not_imported",
        "unsupported_result",
    ]


@pytest.mark.parametrize(
    ("value", "bad_key"),
    [
        ({"x": float("nan"), "y": 1, "width": 5, "height": 5}, "x is NaN"),
        ({"x": 1, "y": 1, "width": float("inf"), "height": 5}, "infinite"),
        ({"x": 1, "y": 1, "width": -5, "height": 5}, "negative"),
        ({"x": 1e9, "y": 1, "width": 5, "height": 5}, "absurd"),
        ({"x": 150, "y": 1, "width": 5, "height": 5}, "outside"),
        ({"x": "a", "y": 1, "width": 5, "height": 5}, "not a number"),
    ],
)
def test_bad_coordinates_are_errors_with_their_pointer(value: dict, bad_key: str) -> None:
    r = rect("a", 1, 1, 1, 1)
    r["value"] = {**value, "rectanglelabels": ["car"]}
    result = label_studio_to_annotations([task(ann(1, r))])
    assert len(result.annotations) == 0
    [err] = result.errors
    assert err.code == "invalid_geometry" and err.pointer == "/0/annotations/0/result/0/value"
    assert bad_key in err.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/data/upload/12/3f2a9b1c-cat.jpg", ("cat.jpg", None)),
        ("/data/local-files/?d=imgs/a%20b.png", ("imgs/a b.png", None)),
        ("s3://bucket/x/y.jpg", ("s3://bucket/x/y.jpg", None)),
        ("/image1", ("image1", None)),
        ("cam_a/x.jpg", ("cam_a/x.jpg", None)),
        ("/data/local-files/?d=../../etc/passwd", (None, "climbs above")),
        ("", (None, "not a non-empty string")),
    ],
)
def test_image_ref_from(value: str, expected: tuple[str | None, str | None]) -> None:
    ref, why = image_ref_from(value)
    assert ref == expected[0]
    assert (why is None) if expected[1] is None else (expected[1] in why)


def test_escaping_image_ref_is_a_path_escape_error() -> None:
    t = task(ann(1, rect("a", 1, 1, 5, 5)), image="/data/local-files/?d=../secret.jpg")
    result = label_studio_to_annotations([t])
    assert len(result.annotations) == 0
    assert [(e.code, e.pointer) for e in result.errors] == [("path_escape", "/0/data/image")]


def test_brush_rle_matches_label_studio_reference_vector() -> None:
    # label-studio-converter's tests/test_brush.py: encode_rle of this array
    packed = [0, 0, 0, 18, 57, 27, 252, 96, 32, 1, 0, 6, 0, 40, 0, 192, 3, 128, 17, 56, 32]
    assert rle_pack_decode(packed).tolist() == [1, 1, 1, 1, 2, 3, 5, 6, 7, 8] + [4] * 8


def test_brush_rle_roundtrip_and_validation() -> None:
    mask = np.random.default_rng(0).random((23, 41)) > 0.6
    encoded = brush_rle_encode(mask)
    assert (brush_rle_decode(encoded, 23, 41) == mask).all()
    with pytest.raises(BrushRleError, match="expected"):
        brush_rle_decode(encoded, 41, 24)
    with pytest.raises(BrushRleError, match="truncated"):
        brush_rle_decode(encoded[: len(encoded) // 2], 23, 41)
    with pytest.raises(BrushRleError, match="bytes"):
        rle_pack_decode([300, 1])


def test_label_config_refuses_entities() -> None:
    bomb = '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaa">]><View>&a;</View>'
    with pytest.raises(AnnotationImportError, match="entities are refused"):
        parse_label_config(bomb)
    cfg = parse_label_config(CONFIG)
    assert cfg.images == {"image": "image"}
    assert cfg.labels_of("label") == ["car", "person"]


def write(path: Path, doc: Any) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return str(path)


def test_file_streaming_equals_the_in_memory_converter(tmp_path: Path) -> None:
    tasks = [task(ann(1, rect("a", 1, 2, 3, 4)), id=i) for i in range(5)]
    path = write(tmp_path / "export.json", tasks)
    loaded = load_label_studio(path)
    memory = label_studio_to_annotations(tasks, path)
    assert loaded.annotations.equals(memory.annotations)
    assert detect_format(path)[0] == "label_studio"


def test_folder_pairs_each_export_with_its_label_config(tmp_path: Path) -> None:
    write(tmp_path / "data_a.json", [task(ann(1, rect("a", 1, 2, 3, 4, "Car")))])
    write(tmp_path / "data_b.json", [task(ann(1, rect("b", 1, 2, 3, 4, "Car")))])
    (tmp_path / "label_config_a.xml").write_text(CONFIG)
    (tmp_path / "label_config_b.xml").write_text(CONFIG.replace('"car"', '"Car"'))
    result = load_label_studio(str(tmp_path))
    assert result.annotations["category"].tolist() == ["car", "Car"]
    assert [(i.code, i.file.rsplit("/", 1)[1]) for i in result.issues] == [
        ("label_case_mismatch", "data_a.json")
    ]


def test_malformed_file_names_line_and_column_and_keeps_no_rows(tmp_path: Path) -> None:
    good = json.dumps([task(ann(1, rect("a", 1, 2, 3, 4)))], indent=1)
    path = tmp_path / "bad.json"
    path.write_text(good[:-40] + "}}}]")
    result = load_label_studio(str(path))
    assert len(result.annotations) == 0
    [err] = result.errors
    assert err.code == "malformed_json" and err.pointer.startswith("line ")
    assert err.file == str(path)


def test_json_min_and_foreign_json_are_explained(tmp_path: Path) -> None:
    path = write(tmp_path / "min.json", [{"image": "a.jpg", "annotation_id": 3, "label": []}])
    [err] = load_label_studio(path).errors
    assert err.code == "unsupported_file" and "JSON-MIN" in err.message
    write(tmp_path / "folder/other.json", {"hello": 1})
    with pytest.raises(AnnotationImportError, match="no Label Studio JSON export"):
        load_label_studio(str(tmp_path / "folder"))
