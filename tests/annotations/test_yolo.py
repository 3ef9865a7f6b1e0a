"""YOLO converter (pure, over strings) and the Ultralytics / Darknet / labels-only layouts."""

from __future__ import annotations

import json
import math
from contextlib import ExitStack as DoesNotRaise
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from visionloop.annotations.formats.yolo import (
    image_size,
    load_yolo,
    names_to_map,
    read_layout,
    yolo_to_annotations,
)
from visionloop.annotations.table import AnnotationImportError

NAMES = ["face", "vehicle", "sign"]
W, H = 200, 100


def bbox(row: Any) -> tuple[float, ...]:
    return tuple(round(float(v), 6) for v in row[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]])


@pytest.mark.parametrize(
    ("text", "expected", "exception"),
    [
        (
            "1 0.5 0.5 0.2 0.4",
            {"bbox": (80, 30, 40, 40), "category": "vehicle", "shape": "box"},
            DoesNotRaise(),
        ),
        ("2.0 0.5 0.5 0.2 0.4", {"category": "sign", "source_category_id": "2"}, DoesNotRaise()),
        (  # 3-point segment polygon
            "0 0.1 0.1 0.4 0.1 0.4 0.5",
            {"bbox": (20, 10, 60, 40), "segmentation": "[[20.0,10.0,80.0,10.0,80.0,50.0]]"},
            DoesNotRaise(),
        ),
        (  # 4 corners of a rotated rectangle: the YOLO-OBB layout
            "0 0.5 0.1 0.7 0.5 0.5 0.9 0.3 0.5",
            {"bbox": (60, 10, 80, 80), "shape": "obb", "attributes": None},
            DoesNotRaise(),
        ),
        (  # 4 points that are no rectangle: a plain polygon
            "0 0.1 0.1 0.9 0.1 0.5 0.5 0.1 0.9",
            {"bbox": (20, 10, 160, 80), "shape": "polygon", "obb": None},
            DoesNotRaise(),
        ),
        ("\n\n1 0.5 0.5 0.2 0.4\n", {"source_pointer": "line 3"}, DoesNotRaise()),
        ("1 0.1 0.5 0.2000001 0.4", {"bbox": (0, 30, 40.00001, 40)}, DoesNotRaise()),
        ("x 0.5 0.5 0.2 0.4", ("invalid_class", "line 1", "not an integer"), None),
        ("3 0.5 0.5 0.2 0.4", ("unknown_category", "line 1", "3 classes declared"), None),
        ("1 0.5 0.5 0.2", ("invalid_line", "line 1", "got 3"), None),
        ("1 0.5 0.5 0.2 0.4 0.9", ("invalid_line", "line 1", "got 5"), None),
        ("1 0.5 abc 0.2 0.4", ("invalid_value", "line 1", "'abc'"), None),
        ("1 0.5 nan 0.2 0.4", ("invalid_value", "line 1", "NaN"), None),
        ("1 0.5 0.5 inf 0.4", ("invalid_value", "line 1", "infinite"), None),
        ("1 0.5 0.5 -0.2 0.4", ("invalid_geometry", "line 1", "negative"), None),
        ("1 0.5 0.5 0 0.4", ("invalid_geometry", "line 1", "zero area"), None),
        ("1 1.5 0.5 0.2 0.4", ("invalid_geometry", "line 1", "outside the 200x100 image"), None),
        ("0 0.1 0.1 0.1 0.1 0.1 0.1", ("invalid_geometry", "line 1", "zero area"), None),
    ],
)
def test_yolo_to_annotations(text: str, expected: Any, exception: Any) -> None:
    result = yolo_to_annotations(text, NAMES, "cam_b/x.jpg", W, H, source_file="labels/x.txt")
    if exception is None:
        code, pointer, message = expected
        assert len(result.annotations) == 0
        [err] = result.errors
        assert (err.code, err.file, err.pointer) == (code, "labels/x.txt", pointer)
        assert message in err.message
        return
    with exception:
        assert not result.errors and len(result.annotations) == 1
        row = result.annotations.iloc[0]
        assert (row["image_ref"], row["image_width"], row["image_height"]) == ("cam_b/x.jpg", W, H)
        for key, value in expected.items():
            if key == "bbox":
                assert bbox(row) == value
            elif value is None:
                assert pd.isna(row[key])
            else:
                assert row[key] == value


def test_overhang_within_tolerance_is_clipped_with_a_warning() -> None:
    # the OBB sample's corner at y = -0.009808: about a pixel outside a 100 px high image
    result = yolo_to_annotations("0 0.5 -0.009808 0.7 0.5 0.5 0.9 0.3 0.5", NAMES, "a.jpg", W, H)
    row = result.annotations.iloc[0]
    assert bbox(row)[1] == 0.0
    assert json.loads(row["segmentation"])[0][1] == -0.9808  # the polygon is kept as written
    [warning] = result.warnings
    assert (warning.code, warning.pointer) == ("clipped", "line 1")


def test_keypoints_go_to_the_keypoints_column_when_data_yaml_declares_kpt_shape() -> None:
    result = yolo_to_annotations(
        "0 0.5 0.5 0.2 0.4 0.5 0.5 2 0.25 0.25 1", NAMES, "a.jpg", W, H, kpt_shape=[2, 3]
    )
    row = result.annotations.iloc[0]
    assert bbox(row) == (80, 30, 40, 40)
    assert row["shape"] == "keypoints"
    assert json.loads(row["keypoints"]) == [[100.0, 50.0, 2], [50.0, 25.0, 1]]
    assert pd.isna(row["attributes"])
    # 2-d keypoints: (0, 0) means "not labelled" (v = 0)
    two_d = yolo_to_annotations(
        "0 0.5 0.5 0.2 0.4 0 0 0.5 0.5", NAMES, "a.jpg", W, H, kpt_shape=[2, 2]
    )
    assert json.loads(two_d.annotations["keypoints"].iloc[0]) == [[0.0, 0.0, 0], [100.0, 50.0, 2]]
    bad = yolo_to_annotations("0 0.5 0.5 0.2 0.4 0.5", NAMES, "a.jpg", W, H, kpt_shape=[2, 3])
    assert [e.code for e in bad.errors] == ["invalid_line"]


def test_obb_corners_give_centre_size_and_angle() -> None:
    row = yolo_to_annotations("0 0.5 0.1 0.7 0.5 0.5 0.9 0.3 0.5", NAMES, "a.jpg", W, H)
    cx, cy, w, h, angle = json.loads(row.annotations["obb"].iloc[0])
    side = math.hypot(40, 40)
    assert (cx, cy, angle) == (100.0, 50.0, 45.0)
    assert (round(w, 9), round(h, 9)) == (round(side, 9), round(side, 9))


@pytest.mark.parametrize(
    ("names", "expected", "exception"),
    [
        (["a", "b"], {0: "a", 1: "b"}, DoesNotRaise()),
        ({1: "b", 0: "a"}, {0: "a", 1: "b"}, DoesNotRaise()),
        ({"0": "a", "2": "c"}, {0: "a", 2: "c"}, DoesNotRaise()),
        ({"x": "a"}, None, pytest.raises(AnnotationImportError, match="class index")),
        ("a b", None, pytest.raises(AnnotationImportError, match="list or a dict")),
    ],
)
def test_names_to_map(names: Any, expected: dict | None, exception: Any) -> None:
    with exception:
        assert names_to_map(names) == expected


# ------------------------------------------------------------------------------------------
# Layouts on disk


def image(path: Path, w: int = 40, h: int = 20, orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (w, h), (120, 60, 30))
    if orientation is None:
        img.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(path, exif=exif)


def text(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def ultralytics(root: Path, yaml_text: str) -> None:
    text(root / "data.yaml", yaml_text)
    image(root / "images/train/a.jpg")
    image(root / "images/train/b.jpg")  # no label file: a background image
    image(root / "images/val/c.png", 80, 40)
    text(root / "labels/train/a.txt", "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.5 0.5\n")
    text(root / "labels/val/c.txt", "2 0.5 0.5 0.25 0.5\n")


@pytest.mark.parametrize(
    "yaml_text",
    [
        "path: .\ntrain: images/train\nval: images/val\nnames: [face, vehicle, sign]\n",
        "train: train.txt\nval: [images/val/c.png]\nnames: {0: face, 1: vehicle, 2: sign}\n",
        "path: /nonexistent/elsewhere\ntrain: images/train\nval: images/val\n"
        "names: {0: face, 1: vehicle, 2: sign}\n",
    ],
    ids=["dirs+list", "txt+yaml-list+dict", "absolute-path-missing"],
)
def test_ultralytics_layouts(tmp_path: Path, yaml_text: str) -> None:
    ultralytics(tmp_path, yaml_text)
    text(tmp_path / "train.txt", "./images/train/a.jpg\nimages/train/b.jpg\n\n")
    result = load_yolo(str(tmp_path))
    df = result.annotations
    assert df["image_ref"].tolist() == ["images/train/a.jpg"] * 2 + ["images/val/c.png"]
    assert df["subset"].tolist() == ["train", "train", "val"]
    assert df["category"].tolist() == ["face", "vehicle", "sign"]
    assert [bbox(r) for _, r in df.iterrows()] == [
        (10, 5, 20, 10),
        (0, 0, 20, 10),
        (30, 10, 20, 20),
    ]
    assert df["source_file"].tolist() == [
        f"{tmp_path}/labels/train/a.txt",
        f"{tmp_path}/labels/train/a.txt",
        f"{tmp_path}/labels/val/c.txt",
    ]
    assert result.categories.source_maps == {f"{tmp_path}/data.yaml": {"0": 0, "1": 1, "2": 2}}
    images = result.images.set_index("image_ref")
    assert images.loc["images/train/b.jpg", "subset"] == "train"  # background image declared
    assert len(result.images) == 3
    warnings = [w.code for w in result.warnings]
    assert warnings == (["missing_path"] if "nonexistent" in yaml_text else [])
    assert not result.errors


def test_darknet_layout_with_data_prefix(tmp_path: Path) -> None:
    text(tmp_path / "obj.data", "classes = 3\ntrain = data/train.txt\nnames = data/obj.names\n")
    text(tmp_path / "obj.names", "face\nvehicle\n\nsign\n")
    text(tmp_path / "train.txt", "data/obj_train_data/1.jpg\n")
    image(tmp_path / "obj_train_data/1.jpg", 30, 10)
    text(tmp_path / "obj_train_data/1.txt", "2 0.5 0.5 0.2 0.4\n")
    result = load_yolo(str(tmp_path))
    row = result.annotations.iloc[0]
    assert (row["image_ref"], row["subset"], row["category"]) == (
        "obj_train_data/1.jpg",
        "train",
        "sign",
    )
    assert bbox(row) == (12, 3, 6, 4)
    assert result.categories.source_maps == {f"{tmp_path}/obj.names": {"0": 0, "1": 1, "2": 2}}


def test_labels_only_layout_takes_sizes_from_the_manifest(tmp_path: Path) -> None:
    """The pipeline's sample: labels/cam_b/<stem>.txt for images collected elsewhere."""
    root = tmp_path / "yolo"
    text(root / "data.yaml", "path: .\ntrain: images/cam_b\nnames: [face, vehicle, sign]\n")
    text(root / "labels/cam_b/img_0001.txt", "1 0.5 0.5 0.5 0.5\n")
    text(root / "labels/cam_b/img_0002.txt", "0 0.5 0.5 0.5 0.5\n")
    text(root / "labels/cam_b/img_0003.txt", "0 0.5 0.5 0.5 0.5\n")
    text(root / "labels/cam_b/img_0004.txt", "0 0.5 0.5 0.5 0.5\n")
    known = {
        "cam_b/img_0001.jpg": (640, 480),
        "cam_a/img_0001.jpg": (10, 10),
        "cam_b/img_0003.jpg": (None, None),  # unreadable: no size
        "cam_b/img_0004.jpg": (640, 480),
        "cam_b/img_0004.png": (640, 480),
    }
    result = load_yolo(str(root), images=known)
    assert result.annotations["image_ref"].tolist() == ["cam_b/img_0001.jpg"]
    assert bbox(result.annotations.iloc[0]) == (160, 120, 320, 240)
    errors = {(e.code, e.file.rsplit("/", 1)[1]) for e in result.errors}
    assert errors == {
        ("unknown_image", "img_0002.txt"),  # in neither the export nor the manifest
        ("unknown_image_size", "img_0003.txt"),
        ("unknown_image", "img_0004.txt"),  # .jpg and .png both fit: ambiguous
    }
    [w] = result.warnings
    assert w.code == "missing_split_entry" and "manifest" in w.message


def test_label_file_of_an_unknown_image_is_reported_with_its_file(tmp_path: Path) -> None:
    text(tmp_path / "data.yaml", "names: [a]\n")
    text(tmp_path / "labels/x/y.txt", "0 0.5 0.5 0.1 0.1\n")
    result = load_yolo(str(tmp_path))
    [err] = result.errors
    assert (err.code, err.file) == ("unknown_image", f"{tmp_path}/labels/x/y.txt")
    assert "x/y.*" in err.message


def test_errors_name_the_label_file_and_line(tmp_path: Path) -> None:
    ultralytics(tmp_path, "train: images/train\nval: images/val\nnames: [face, vehicle, sign]\n")
    text(tmp_path / "labels/train/a.txt", "0 0.5 0.5 0.5 0.5\n\n7 0.5 0.5 0.5 0.5\n")
    result = load_yolo(str(tmp_path))
    [err] = result.errors
    assert (
        str(err)
        == f"{tmp_path}/labels/train/a.txt:line 3: class 7 is not in names (3 classes declared)"
    )


def test_image_header_size_applies_exif_orientation(tmp_path: Path) -> None:
    image(tmp_path / "r.jpg", 40, 20, orientation=6)  # rotated 90 degrees on display
    assert image_size(str(tmp_path / "r.jpg")) == (20, 40)


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(AnnotationImportError, match="does not exist"):
        read_layout(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationImportError, match="class names"):
        read_layout(str(tmp_path / "empty"))
    text(tmp_path / "bad/data.yaml", "train: images\n")
    with pytest.raises(AnnotationImportError, match="'names'"):
        read_layout(str(tmp_path / "bad"))
    text(tmp_path / "broken/data.yaml", "names: [a\n")
    with pytest.raises(AnnotationImportError, match="malformed YAML"):
        read_layout(str(tmp_path / "broken"))


def test_data_yaml_file_path_and_nc_mismatch(tmp_path: Path) -> None:
    ultralytics(tmp_path, "train: images/train\nnc: 4\nnames: [face, vehicle, sign]\n")
    result = load_yolo(str(tmp_path / "data.yaml"))
    assert len(result.annotations) == 3  # labels/val/c.txt found by walking labels/
    assert [w.code for w in result.warnings] == ["names_count"]


def test_memory_filesystem(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/yolo_mem/data.yaml", b"train: images/train\nnames: [a, b]\n")
    fs.pipe("/yolo_mem/labels/train/p.txt", b"1 0.5 0.5 0.5 0.5\n")
    image(tmp_path / "p.png", 10, 20)
    fs.pipe("/yolo_mem/images/train/p.png", (tmp_path / "p.png").read_bytes())
    result = load_yolo("memory://yolo_mem")
    row = result.annotations.iloc[0]
    assert (row["image_ref"], row["image_width"], row["image_height"]) == (
        "images/train/p.png",
        10,
        20,
    )
    assert row["source_file"] == "memory://yolo_mem/labels/train/p.txt"
    fs.rm("/yolo_mem", recursive=True)
