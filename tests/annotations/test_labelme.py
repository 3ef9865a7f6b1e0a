"""LabelMe JSON: shape types, image paths relative to the JSON (never outside the root)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from visionloop.annotations.formats import detect_format
from visionloop.annotations.formats.coco import rle_to_mask
from visionloop.annotations.formats.labelme import labelme_to_annotations, load_labelme


def shape(label: str, points: list, shape_type: str | None = "polygon", **kw: Any) -> dict:
    s = {"label": label, "points": points, "group_id": None, "flags": {}, **kw}
    if shape_type is not None:
        s["shape_type"] = shape_type
    return s


def doc(shapes: list, image: str = "a.jpg", w: int = 100, h: int = 50, **kw: Any) -> dict:
    return {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image,
        "imageData": None,
        "imageHeight": h,
        "imageWidth": w,
        **kw,
    }


def png(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_every_shape_type() -> None:
    region = np.zeros((3, 4), dtype=bool)
    region[1, 1:3] = True
    shapes = [
        shape("car", [[10, 10], [30, 10], [30, 30]]),
        shape("car", [[30, 40], [10, 20]], "rectangle", group_id=2),
        shape("ball", [[50, 25], [50, 35]], "circle"),
        shape("lane", [[0, 0], [10, 10], [20, 5]], "linestrip"),
        shape("lane", [[0, 0], [10, 10]], "line"),
        shape("dot", [[5, 5]], "point", description="tip"),
        shape("car", [[60, 20], [63, 22]], "mask", mask=png(region)),
        shape("car", [[1, 1], [5, 5], [9, 1]], None),  # no shape_type: a polygon
    ]
    result = labelme_to_annotations(doc(shapes, flags={"night": True, "blurry": False}), "a.json")
    df = result.annotations
    assert df["shape"].tolist() == [
        "polygon", "box", "ellipse", "polyline", "polyline", "points", "mask", "polygon", "tag",
    ]  # fmt: skip
    box = df.iloc[1][["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].tolist()
    assert box == [10, 20, 20, 20]  # corners in any order
    assert json.loads(df["attributes"].iloc[1]) == {"group_id": 2}
    assert json.loads(df["obb"].iloc[2]) == [50.0, 25.0, 20.0, 20.0, 0.0]
    assert json.loads(df["keypoints"].iloc[3]) == [[0, 0, 2], [10, 10, 2], [20, 5, 2]]
    assert json.loads(df["attributes"].iloc[5]) == {"description": "tip"}
    mask = rle_to_mask(json.loads(df["segmentation"].iloc[6]))
    assert mask.sum() == 2 and mask[21, 61] and mask[21, 62]
    assert df["category"].iloc[8] == "night"  # image-level flags that are true: tags
    assert df["source_pointer"].tolist()[:2] == ["/shapes/0", "/shapes/1"]
    assert result.issues == []


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (shape("car", [[float("nan"), 1], [2, 2], [3, 1]]), "invalid_geometry"),
        (shape("car", [[1, 1], [2, 2]], "rectangle_3d"), "unsupported_shape"),
        (shape("", [[1, 1], [2, 2], [3, 1]]), "missing_label"),
        (shape("car", [[1e9, 1], [2, 2], [3, 1]]), "invalid_geometry"),
        (shape("car", "x"), "invalid_geometry"),
        (shape("car", [[1, 1]], "rectangle"), "invalid_geometry"),
    ],
)
def test_bad_shapes_are_reported_with_their_pointer(bad: dict, code: str) -> None:
    result = labelme_to_annotations(doc([bad]), "a.json")
    assert len(result.annotations) == 0
    [err] = result.errors
    assert err.code == code and err.pointer.startswith("/shapes/0")


def write(path: Path, d: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))


def test_image_paths_are_relative_to_the_json_and_kept_inside_the_root(tmp_path: Path) -> None:
    write(tmp_path / "ann/x.json", doc([shape("car", [[1, 1], [5, 1], [5, 5]])], "../img/x.jpg"))
    write(tmp_path / "ann/y.json", doc([shape("car", [[1, 1], [5, 1], [5, 5]])], "..\\..\\y.jpg"))
    write(tmp_path / "ann/z.json", doc([shape("car", [[1, 1], [5, 1], [5, 5]])], "/etc/z.jpg"))
    assert detect_format(str(tmp_path))[0] == "labelme"
    result = load_labelme(str(tmp_path))
    assert result.annotations["image_ref"].tolist() == ["img/x.jpg"]
    assert sorted((e.code, Path(e.file).name) for e in result.errors) == [
        ("path_escape", "y.json"),
        ("path_escape", "z.json"),
    ]


def test_malformed_file_and_missing_sizes(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"shapes": [, "imagePath": "a.jpg"}')
    d = doc([shape("car", [[1, 1], [500, 1], [500, 5]])], w=None, h=None)
    write(tmp_path / "ok.json", d)
    result = load_labelme(str(tmp_path), images={"a.jpg": (640, 480)})
    assert result.annotations["image_width"].tolist() == [640]
    [err] = result.errors
    assert err.code == "malformed_json" and err.pointer == "line 1, column 13"
