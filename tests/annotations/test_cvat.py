"""CVAT for images / video 1.1: every shape kind, typed attributes, tracks, frames, subsets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from visionloop.annotations.formats.coco import rle_to_mask
from visionloop.annotations.formats.cvat import cvat_mask_to_rle, load_cvat, typed

META = """<meta><task><mode>annotation</mode>{subset}<labels>
  <label><name>car</name><attributes>
    <attribute><name>n</name><input_type>number</input_type><values>0 10 1</values></attribute>
    <attribute><name>ok</name><input_type>checkbox</input_type><values>false</values></attribute>
    <attribute><name>t</name><input_type>text</input_type><values></values></attribute>
  </attributes></label>
  <label><name>person</name><type>skeleton</type>
    <svg>&lt;line data-type="edge" data-node-from="1" data-node-to="2"&gt;&lt;/line&gt;</svg>
  </label>
  <label><name>nose</name><type>points</type><parent>person</parent></label>
  <label><name>tail</name><type>points</type><parent>person</parent></label>
</labels></task></meta>"""


def doc(body: str, subset: str = "") -> str:
    head = '<?xml version="1.0"?>\n<annotations><version>1.1</version>'
    return f"{head}{META.format(subset=subset)}\n{body}\n</annotations>\n"


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_every_image_shape(tmp_path: Path) -> None:
    body = """<image id="0" name="a.jpg" width="100" height="50">
  <box label="car" occluded="1" xtl="10" ytl="5" xbr="30" ybr="25" z_order="2">
    <attribute name="n">3</attribute><attribute name="ok">true</attribute>
    <attribute name="t">007</attribute>
  </box>
  <box label="car" xtl="40" ytl="10" xbr="60" ybr="20" rotation="90"/>
  <polygon label="car" points="1,1;20,1;20,20"/>
  <polyline label="car" points="1,1;20,5"/>
  <points label="car" points="5,5"/>
  <ellipse label="car" cx="50" cy="25" rx="10" ry="5"/>
  <mask label="car" rle="2, 3, 1" left="10" top="10" width="3" height="2"/>
  <tag label="car"/>
  <skeleton label="person">
    <points label="nose" points="30,10" outside="0" occluded="1"/>
    <points label="tail" points="40,30" outside="0" occluded="0"/>
  </skeleton>
  <cuboid label="car" xtl1="1" ytl1="1" xbl1="1" ybl1="2"/>
</image>"""
    result = load_cvat(write(tmp_path / "annotations.xml", doc(body)))
    df = result.annotations
    assert df["shape"].tolist() == [
        "box", "obb", "polygon", "polyline", "points", "ellipse", "mask", "tag", "keypoints",
    ]  # fmt: skip
    assert json.loads(df["attributes"].iloc[0]) == {
        "n": 3, "ok": True, "t": "007", "occluded": True, "z_order": 2,
    }  # fmt: skip
    # rotation 90 about the centre (50, 15): a 20x10 box stands upright
    assert df.iloc[1][["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].tolist() == pytest.approx(
        [45, 5, 10, 20]
    )
    assert json.loads(df["obb"].iloc[1]) == [50.0, 15.0, 20.0, 10.0, 90.0]
    assert json.loads(df["keypoints"].iloc[4]) == [[5.0, 5.0, 2]]
    assert np.isnan(df["bbox_x"].iloc[4])  # one point: no box
    assert df.iloc[5][["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].tolist() == [40, 20, 20, 10]
    mask = rle_to_mask(json.loads(df["segmentation"].iloc[6]))
    assert mask.shape == (50, 100) and mask.sum() == 3
    assert mask[10, 12] and mask[11, 10] and mask[11, 11] and not mask[10, 10]
    assert json.loads(df["keypoints"].iloc[8]) == [[30.0, 10.0, 1], [40.0, 30.0, 2]]
    assert result.categories.meta["person"] == {"keypoints": ["nose", "tail"], "skeleton": [[1, 2]]}
    assert result.categories.names() == ["car", "person"]  # sub-labels are not categories
    [err] = result.errors
    assert err.code == "unsupported_shape" and "cuboid" in err.message


def test_cvat_mask_rle_validation() -> None:
    with pytest.raises(ValueError, match="rectangle has 6"):
        cvat_mask_to_rle("1, 2", 0, 0, 3, 2, 10, 10)
    with pytest.raises(ValueError, match="outside"):
        cvat_mask_to_rle("0, 6", 8, 9, 3, 2, 10, 10)


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [("2.4", "number", 2.4), ("3", "number", 3), ("true", "checkbox", True),
     ("False", "checkbox", False), ("007", "text", "007"), ("x", "number", "x")],
)  # fmt: skip
def test_typed_attributes(text: str, kind: str, expected: object) -> None:
    assert typed(text, kind) == expected and type(typed(text, kind)) is type(expected)


def test_bad_geometry_and_empty_label_are_reported(tmp_path: Path) -> None:
    body = """<image id="0" name="a.jpg" width="100" height="50">
  <box label="car" xtl="nan" ytl="5" xbr="30" ybr="25"/>
  <box label="car" xtl="10" ytl="5" xbr="3000" ybr="25"/>
  <polygon label="car" points="1,1;2;3"/>
  <polygon label="" points="1,1;20,1;20,20"/>
</image>"""
    result = load_cvat(write(tmp_path / "a.xml", doc(body)))
    assert len(result.annotations) == 0
    assert [(e.code, e.pointer) for e in result.errors] == [
        ("invalid_geometry", "line 15, column 3"),
        ("invalid_geometry", "line 16, column 3"),
        ("invalid_geometry", "line 17, column 3"),
        ("missing_label", "line 18, column 3"),
    ]


def test_subsets_image_attribute_then_task_then_file_stem(tmp_path: Path) -> None:
    img = '<image id="0" name="x.jpg" width="10" height="10"{}><tag label="car"/></image>'
    write(tmp_path / "a/train.xml", doc(img.format("")))
    write(tmp_path / "b/annotations.xml", doc(img.format(' subset="Test"')))
    write(tmp_path / "c/annotations.xml", doc(img.format(""), "<subset>val</subset>"))
    write(tmp_path / "d/other.xml", doc(img.format(""), "<subset>default</subset>"))
    subsets = [load_cvat(str(tmp_path / f)).annotations["subset"].iloc[0] for f in "abcd"]
    assert subsets[:3] == ["train", "Test", "val"] and pd.isna(subsets[3])


def test_video_tracks_outside_keyframes_and_frame_grid(tmp_path: Path) -> None:
    meta = """<meta><task><mode>interpolation</mode><start_frame>5</start_frame>
<stop_frame>20</stop_frame><frame_filter>step=5</frame_filter><labels>
<label><name>car</name></label></labels>
<original_size><width>64</width><height>48</height></original_size></task></meta>"""
    body = """<track id="3" label="car" source="auto">
  <box frame="5" outside="0" keyframe="1" xtl="1" ytl="1" xbr="5" ybr="5"/>
  <box frame="10" outside="0" keyframe="0" xtl="2" ytl="1" xbr="6" ybr="5"/>
  <box frame="15" outside="1" keyframe="1" xtl="2" ytl="1" xbr="6" ybr="5"/>
  <box frame="17" outside="0" keyframe="1" xtl="2" ytl="1" xbr="6" ybr="5"/>
</track>"""
    text = f'<?xml version="1.0"?><annotations><version>1.1</version>{meta}{body}</annotations>'
    (tmp_path / "images").mkdir()
    (tmp_path / "images/frame_000005.png").write_bytes(b"")
    result = load_cvat(write(tmp_path / "annotations.xml", text))
    df = result.annotations
    assert df["frame"].tolist() == [5, 10, 17]  # frame 15 is outside: no row
    assert df["track_id"].tolist() == [3, 3, 3]
    assert df["image_ref"].tolist() == ["images/frame_000005.png", "frame_000010", "frame_000017"]
    assert [json.loads(a) for a in df["attributes"]] == [
        {"keyframe": True, "source": "auto"},
        {"keyframe": False, "source": "auto"},
        {"keyframe": True, "source": "auto"},
    ]
    assert (df["image_width"].tolist(), df["image_height"].tolist()) == ([64] * 3, [48] * 3)
    [w] = result.warnings
    assert w.code == "frame_off_grid" and "frame 17" in w.message


def test_malformed_and_entity_xml(tmp_path: Path) -> None:
    write(tmp_path / "a/annotations.xml", doc('<image id="0" name="a.jpg"'))
    [err] = load_cvat(str(tmp_path / "a/annotations.xml")).errors
    assert err.code == "malformed_xml" and err.pointer.startswith("line ")
    bomb = '<?xml version="1.0"?><!DOCTYPE annotations [<!ENTITY a "aaaa">]>'
    bomb += "<annotations><version>1.1</version><meta/></annotations>"
    [err] = load_cvat(write(tmp_path / "b/annotations.xml", bomb)).errors
    assert err.code == "xml_entities_refused"


def test_escaping_image_name_is_rejected(tmp_path: Path) -> None:
    body = '<image id="0" name="/etc/passwd" width="10" height="10"><tag label="car"/></image>'
    result = load_cvat(write(tmp_path / "a.xml", doc(body)))
    assert [e.code for e in result.errors] == ["path_escape"] and not len(result.annotations)
