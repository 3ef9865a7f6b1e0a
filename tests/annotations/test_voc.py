"""Pascal VOC XML: boxes, parts, actions, subsets, and XML read with entities refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionloop.annotations.formats import detect_format
from visionloop.annotations.formats.voc import load_voc
from visionloop.annotations.table import AnnotationImportError

XML = """<?xml version="1.0"?>
<annotation>
  <filename>{name}</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>
"""


def obj(name: str, box: tuple, extra: str = "") -> str:
    x0, y0, x1, y1 = box
    return (
        f"<object><name>{name}</name>{extra}<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def voc(root: Path, name: str, objects: list[str], w: int = 100, h: int = 50) -> Path:
    return write(
        root / "Annotations" / f"{Path(name).stem}.xml",
        XML.format(name=name, w=w, h=h, objects="\n".join(objects)),
    )


def test_boxes_are_pixel_edges_with_flags_parts_and_subsets(tmp_path: Path) -> None:
    part = "<part><name>head</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax>"
    part += "<ymax>9.5</ymax></bndbox></part>"
    voc(
        tmp_path,
        "a.jpg",
        [
            obj("cat", (1, 2, 3.5, 4), "<truncated>1</truncated><difficult>0</difficult>"),
            obj("person", (4, 4, 20, 30), part + "<actions><jumping>1</jumping></actions>"),
        ],
    )
    write(tmp_path / "ImageSets/Main/train.txt", "# split\n\na\n")
    result = load_voc(str(tmp_path))
    df = result.annotations
    assert df["category"].tolist() == ["cat", "person", "head"]
    boxes = df[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].values.tolist()
    assert boxes == [[1, 2, 2.5, 2], [4, 4, 16, 26], [5, 5, 4, 4.5]]
    assert df["subset"].tolist() == ["train"] * 3
    assert df["image_ref"].tolist() == ["a.jpg"] * 3
    assert json.loads(df["attributes"].iloc[0]) == {"difficult": False, "truncated": True}
    assert json.loads(df["attributes"].iloc[1]) == {"actions": {"jumping": True}}
    assert json.loads(df["attributes"].iloc[2])["part_of"]["category"] == "person"
    assert df["source_pointer"].str.startswith("line ").all()
    assert result.issues == []


def test_billion_laughs_is_refused_with_its_line(tmp_path: Path) -> None:
    entities = '<!ENTITY a "ha">' + "".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8)
    )
    bomb = f'<?xml version="1.0"?>\n<!DOCTYPE annotation [{entities}]>\n<annotation>'
    bomb += "<filename>&i;</filename></annotation>"
    path = write(tmp_path / "Annotations/bomb.xml", bomb)
    result = load_voc(str(tmp_path))
    assert len(result.annotations) == 0
    [err] = result.errors
    assert err.code == "xml_entities_refused" and err.pointer.startswith("line 2")
    assert err.file == f"{tmp_path}/Annotations/bomb.xml"
    assert path.stat().st_size < 1000  # nothing was expanded anywhere


def test_external_entity_xxe_is_refused(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret.txt", "TOP-SECRET")
    xxe = (
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE annotation [<!ENTITY x SYSTEM "file://{secret}">]>\n'
        "<annotation><filename>&x;</filename>" + obj("cat", (1, 1, 5, 5)) + "</annotation>"
    )
    write(tmp_path / "voc/Annotations/x.xml", xxe)
    result = load_voc(str(tmp_path / "voc"))
    assert len(result.annotations) == 0
    assert [e.code for e in result.errors] == ["xml_entities_refused"]
    assert "TOP-SECRET" not in json.dumps([str(i) for i in result.issues])


def test_malformed_xml_names_line_and_column(tmp_path: Path) -> None:
    write(tmp_path / "Annotations/bad.xml", "<annotation>\n<object><name>a</nme></object>")
    [err] = load_voc(str(tmp_path)).errors
    assert (err.code, err.pointer) == ("malformed_xml", "line 2, column 18")  # the bad name


@pytest.mark.parametrize(
    ("box", "code", "why"),
    [
        (("nan", 1, 5, 5), "invalid_bbox", "NaN"),
        ((1, 1, "inf", 5), "invalid_bbox", "infinite"),
        ((5, 1, 1, 5), "invalid_bbox", "negative"),
        ((1, 1, 1e9, 5), "invalid_bbox", "absurd"),
        ((1, 1, 500, 5), "invalid_bbox", "outside"),
        (("a", 1, 5, 5), "invalid_bbox", "not a number"),
    ],
)
def test_bad_boxes_are_reported_not_imported(
    tmp_path: Path, box: tuple, code: str, why: str
) -> None:
    voc(tmp_path, "a.jpg", [obj("cat", box)])
    result = load_voc(str(tmp_path))
    assert len(result.annotations) == 0
    [err] = result.errors
    assert err.code == code and why in err.message


def test_escaping_filename_and_missing_name(tmp_path: Path) -> None:
    voc(tmp_path, "../../etc/passwd", [obj("cat", (1, 1, 5, 5))])
    write(
        tmp_path / "Annotations/b.xml",
        XML.format(name="b.jpg", w=10, h=10, objects="<object><bndbox/></object>"),
    )
    result = load_voc(str(tmp_path))
    assert sorted(e.code for e in result.errors) == ["missing_label", "path_escape"]


def test_zero_size_is_unknown_and_taken_from_known_images(tmp_path: Path) -> None:
    voc(tmp_path, "a.jpg", [obj("cat", (1, 1, 500, 5))], w=0, h=0)
    result = load_voc(str(tmp_path), images={"cam/a.jpg": (640, 480)})
    row = result.annotations.iloc[0]
    assert (row["image_width"], row["image_height"]) == (640, 480)
    assert result.issues == []


def test_class_lists_that_contradict_the_xml_are_reported(tmp_path: Path) -> None:
    voc(tmp_path, "a.jpg", [obj("cat", (1, 1, 5, 5))])
    voc(tmp_path, "b.jpg", [obj("dog", (1, 1, 5, 5))])
    write(tmp_path / "ImageSets/Main/cat_train.txt", "a  1\nb  1\n")
    write(tmp_path / "ImageSets/Main/train.txt", "a\nb\nc\n")
    result = load_voc(str(tmp_path))
    codes = sorted(w.code for w in result.warnings)
    assert codes == ["class_list_mismatch", "listed_without_xml"]
    mismatch = next(w for w in result.warnings if w.code == "class_list_mismatch")
    assert "b (listed)" in mismatch.message and mismatch.file.endswith("cat_train.txt")


def test_labelimg_folder_and_detection(tmp_path: Path) -> None:
    write(tmp_path / "x.xml", XML.format(name="x.jpg", w=10, h=10, objects=obj("a", (1, 1, 2, 2))))
    assert detect_format(str(tmp_path))[0] == "voc"
    assert load_voc(str(tmp_path / "x.xml")).annotations["category"].tolist() == ["a"]
    write(tmp_path / "empty/readme.xml", "<other/>")
    with pytest.raises(AnnotationImportError, match="no Pascal VOC"):
        load_voc(str(tmp_path / "empty"))
