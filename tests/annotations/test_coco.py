"""COCO converter, RLE helpers, NaN-tolerant streaming and malformed-JSON locations."""

from __future__ import annotations

import io
import json
import math
from contextlib import ExitStack as DoesNotRaise
from typing import Any

import numpy as np
import pandas as pd
import pytest

from visionloop.annotations.formats import coco
from visionloop.annotations.formats.coco import (
    RleError,
    SpecialFloatStream,
    coco_to_annotations,
    load_coco,
    mask_to_rle,
    rle_bbox_area,
    rle_counts,
    rle_decode_counts,
    rle_encode_counts,
    rle_to_mask,
    subset_from_path,
)
from visionloop.annotations.table import AnnotationImportError
from visionloop.schema import ANNOTATION_SCHEMA

CATEGORIES = [{"id": 1, "name": "face"}, {"id": 3, "name": "vehicle"}, {"id": 7, "name": "sign"}]
IMAGES = [
    {"id": 1, "file_name": "cam_a/img_0003.jpg", "width": 100, "height": 50},
    {"id": 40, "file_name": "b.jpg", "width": 5, "height": 10},
]


def doc(*annotations: dict[str, Any], images: list[dict[str, Any]] | None = None) -> dict:
    return {
        "categories": CATEGORIES,
        "images": IMAGES if images is None else images,
        "annotations": list(annotations),
    }


def ann(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": 5, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 10]}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


UNCOMPRESSED = {"counts": [0, 20, 30], "size": [10, 5]}  # columns 0-1 of a 5x10 image


# ------------------------------------------------------------------------------------------
# Converter: (annotation, expected row values or issue, exception)


@pytest.mark.parametrize(
    ("annotation", "expected", "exception"),
    [
        (ann(), {"bbox": (10, 5, 20, 10), "category": "vehicle", "category_id": 1}, DoesNotRaise()),
        (ann(id=0), {"source_annotation_id": "0"}, DoesNotRaise()),  # Roboflow starts at 0
        (ann(segmentation=[]), {"segmentation": None, "bbox": (10, 5, 20, 10)}, DoesNotRaise()),
        (ann(iscrowd=1), {"iscrowd": True}, DoesNotRaise()),
        (
            ann(bbox=..., segmentation=[[10, 10, 30, 10, 30, 20]]),
            {"bbox": (10, 10, 20, 10), "segmentation": "[[10,10,30,10,30,20]]"},
            DoesNotRaise(),
        ),
        (  # multi-polygon: bbox over both parts
            ann(bbox=..., segmentation=[[1, 1, 4, 1, 4, 4], [50, 20, 60, 20, 60, 30]]),
            {"bbox": (1, 1, 59, 29), "segmentation": "[[1,1,4,1,4,4],[50,20,60,20,60,30]]"},
            DoesNotRaise(),
        ),
        (  # a declared bbox wins over the polygon's extent for polygons
            ann(segmentation=[[10, 10, 30, 10, 30, 20]]),
            {"bbox": (10, 5, 20, 10)},
            DoesNotRaise(),
        ),
        (
            ann(image_id=40, bbox=..., segmentation=UNCOMPRESSED),
            {"bbox": (0, 0, 2, 10), "segmentation": '{"counts":"0d0n0","size":[10,5]}'},
            DoesNotRaise(),
        ),
        (
            ann(image_id=40, bbox=..., segmentation={"counts": "0d0n0", "size": [10, 5]}),
            {"bbox": (0, 0, 2, 10), "segmentation": '{"counts":"0d0n0","size":[10,5]}'},
            DoesNotRaise(),
        ),
        (
            ann(attributes={"occluded": True}, score=0.9, reviewer="b"),
            {"attributes": '{"_extra":{"reviewer":"b"},"occluded":true}', "score": 0.9},
            DoesNotRaise(),
        ),
        (ann(bbox=[float("nan"), 5, 20, 10]), ("invalid_bbox", "/annotations/0/bbox", "NaN"), None),
        (
            ann(bbox=[10, 5, math.inf, 10]),
            ("invalid_bbox", "/annotations/0/bbox", "infinite"),
            None,
        ),
        (ann(bbox=[10, 5, -20, 10]), ("invalid_bbox", "/annotations/0/bbox", "negative"), None),
        (ann(bbox=[10, 5, 0, 10]), ("invalid_bbox", "/annotations/0/bbox", "zero area"), None),
        (ann(bbox=[10, 5, 2e6, 10]), ("invalid_bbox", "/annotations/0/bbox", "absurd"), None),
        (ann(bbox=[10, 5, 120, 10]), ("invalid_bbox", "/annotations/0/bbox", "outside"), None),
        (
            ann(bbox=["10", 5, 20, 10]),
            ("invalid_bbox", "/annotations/0/bbox", "not a number"),
            None,
        ),
        (ann(bbox=[10, 5, 20]), ("invalid_bbox", "/annotations/0/bbox", "[x, y, width"), None),
        (ann(category_id=2), ("unknown_category", "/annotations/0/category_id", "2"), None),
        (ann(image_id=99), ("unknown_image", "/annotations/0/image_id", "99"), None),
        (ann(bbox=..., segmentation=[]), ("no_geometry", "/annotations/0", "neither"), None),
        (
            ann(bbox=..., segmentation=[[1, 1, 4, 1]]),
            ("invalid_polygon", "/annotations/0/segmentation", "3 points"),
            None,
        ),
        (
            ann(image_id=40, segmentation={"counts": [0, 20, 25], "size": [10, 5]}),
            ("invalid_rle", "/annotations/0/segmentation", "cover 45 pixels"),
            None,
        ),
        (
            ann(image_id=1, segmentation=UNCOMPRESSED),
            ("rle_size_mismatch", "/annotations/0/segmentation/size", "100x50"),
            None,
        ),
        (
            ann(image_id=40, segmentation={"counts": [50], "size": [10, 5]}),
            ("empty_mask", "/annotations/0/segmentation", "area 0"),
            None,
        ),
        (
            ann(segmentation="x"),
            ("invalid_segmentation", "/annotations/0/segmentation", "str"),
            None,
        ),
    ],
)
def test_coco_to_annotations(annotation: dict, expected: Any, exception: Any) -> None:
    result = coco_to_annotations(doc(annotation), source_file="instances.json")
    df = result.annotations
    if exception is None:  # rejected: reported with file + JSON pointer, not imported
        code, pointer, text = expected
        assert len(df) == 0
        [err] = result.errors
        assert (err.code, err.file, err.pointer) == (code, "instances.json", pointer)
        assert text in err.message
        return
    with exception:
        assert len(df) == 1 and not result.errors
        row = df.iloc[0]
        for key, value in expected.items():
            if key == "bbox":
                assert tuple(row[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]]) == value
            elif value is None:
                assert pd.isna(row[key])
            else:
                assert row[key] == value


def test_row_carries_the_export_context() -> None:
    result = coco_to_annotations(doc(ann()), source_file="ann/instances_val.json", subset="val")
    row = result.annotations.iloc[0]
    assert row["annotation_id"] == "ann/instances_val.json#/annotations/0"
    assert row["image_ref"] == "cam_a/img_0003.jpg"  # subfolders kept as written
    assert (row["image_width"], row["image_height"]) == (100, 50)
    assert (row["source_format"], row["source_pointer"], row["subset"]) == (
        "coco",
        "/annotations/0",
        "val",
    )
    assert (row["source_category_id"], row["match_status"]) == ("3", "unmatched")
    assert list(result.annotations.columns) == ANNOTATION_SCHEMA.names


def test_non_contiguous_category_ids_get_first_seen_canonical_ids() -> None:
    cats = [{"id": 7, "name": "sign"}, {"id": 1, "name": "face"}, {"id": 3, "name": "vehicle"}]
    data = {"categories": cats, "images": IMAGES, "annotations": [ann(category_id=7)]}
    result = coco_to_annotations(data, source_file="x.json")
    # "first seen" within one file is ascending source id, whatever the list order
    assert result.categories.to_json() == {
        "categories": [
            {"id": 0, "name": "face"},
            {"id": 1, "name": "vehicle"},
            {"id": 2, "name": "sign"},
        ],
        "source_maps": {"x.json": {"1": 0, "3": 1, "7": 2}},
    }
    assert result.annotations.iloc[0]["category_id"] == 2


def test_declared_rle_bbox_that_disagrees_with_the_mask_is_replaced_with_a_warning() -> None:
    a = ann(image_id=40, bbox=[0, 0, 1, 9], segmentation=UNCOMPRESSED, iscrowd=1)
    result = coco_to_annotations(doc(a), source_file="v.json")
    row = result.annotations.iloc[0]
    assert tuple(row[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]]) == (0, 0, 2, 10)
    assert json.loads(row["attributes"])["declared_bbox"] == [0, 0, 1, 9]
    [warning] = result.warnings
    assert (warning.code, warning.pointer) == ("bbox_mismatch", "/annotations/0/bbox")


def test_small_overhang_is_clipped_with_a_warning_and_float_noise_silently() -> None:
    result = coco_to_annotations(
        doc(ann(bbox=[-0.5, 5, 20, 10]), ann(bbox=[-0.001, 5, 20, 10])), source_file="c.json"
    )
    assert result.annotations["bbox_x"].tolist() == [0.0, 0.0]
    assert result.annotations["bbox_w"].tolist() == [19.5, 19.999]
    [warning] = result.warnings
    assert (warning.code, warning.pointer) == ("clipped", "/annotations/0/bbox")


def test_duplicate_ids_and_invalid_images_are_reported() -> None:
    data = {
        "categories": [*CATEGORIES, {"id": 3, "name": "bus"}, {"id": 9, "name": "face"}],
        "images": [
            *IMAGES,
            {"id": 1, "file_name": "c.jpg"},
            {"id": 2, "file_name": "d.jpg", "width": "x"},
        ],
        "annotations": [ann(), ann(category_id=9)],
    }
    result = coco_to_annotations(data, source_file="d.json")
    codes = sorted((i.level, i.code, i.pointer) for i in result.issues)
    assert codes == [
        ("error", "duplicate_category", "/categories/3/id"),
        ("error", "duplicate_image", "/images/2/id"),
        ("warning", "duplicate_category_name", "/categories/4/name"),
        ("warning", "invalid_image_size", "/images/3"),
    ]
    assert result.annotations["category"].tolist() == ["vehicle", "face"]  # id 9 merged by name
    assert len(result.categories) == 3


def test_not_a_document_is_an_error_not_an_exception() -> None:
    result = coco_to_annotations([1, 2], source_file="l.json")  # type: ignore[arg-type]
    assert [e.code for e in result.errors] == ["invalid_document"]


# ------------------------------------------------------------------------------------------
# RLE


@pytest.mark.parametrize(
    ("counts", "expected", "exception"),
    [
        ("0d0n0", [0, 20, 30], DoesNotRaise()),
        ("", [], DoesNotRaise()),
        ("0d0n", None, pytest.raises(RleError, match="ends inside")),
        ("0d0 n0", None, pytest.raises(RleError, match="alphabet")),
    ],
)
def test_rle_decode_counts(counts: str, expected: list[int] | None, exception: Any) -> None:
    with exception:
        assert rle_decode_counts(counts).tolist() == expected


@pytest.mark.parametrize(
    ("rle", "exception"),
    [
        ({"counts": [0, 20, 30], "size": [10, 5]}, DoesNotRaise()),
        ({"counts": [0, 20, 30], "size": [10]}, pytest.raises(RleError, match="height, width")),
        ({"counts": [0, -20, 70], "size": [10, 5]}, pytest.raises(RleError, match="negative")),
        ({"counts": [0, 20.5, 29.5], "size": [10, 5]}, pytest.raises(RleError, match="integers")),
        ({"counts": 5, "size": [10, 5]}, pytest.raises(RleError, match="string or a list")),
        ({"size": [10, 5]}, pytest.raises(RleError, match="'size' and 'counts'")),
    ],
)
def test_rle_counts_validation(rle: dict, exception: Any) -> None:
    with exception:
        h, w, counts = rle_counts(rle)
        assert (h, w, counts.sum()) == (10, 5, 50)


def random_masks(n: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    masks = []
    for k in range(n):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        if k % 3 == 0:
            m = rng.random((h, w)) < 0.5
        else:  # blobs: long runs, multi-column spans
            m = np.zeros((h, w), bool)
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            m[y0 : y0 + int(rng.integers(1, h + 1)), x0 : x0 + int(rng.integers(1, w + 1))] = True
        masks.append(m)
    masks.append(np.ones((7, 3), bool))  # starts with a 1-run: counts begin with 0
    masks.append(np.zeros((4, 4), bool))
    return masks


def test_rle_roundtrip_bbox_and_area_agree_with_the_mask() -> None:
    for m in random_masks():
        rle = mask_to_rle(m)
        assert np.array_equal(rle_to_mask(rle), m)
        h, _, counts = rle_counts(rle)
        bbox, area = rle_bbox_area(counts, h)
        assert area == int(m.sum())
        if area:
            ys, xs = np.nonzero(m)
            assert bbox == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert rle_decode_counts(rle_encode_counts(counts.tolist())).tolist() == counts.tolist()


def test_rle_matches_pycocotools_reference() -> None:
    mask_utils = pytest.importorskip("pycocotools.mask")
    for m in random_masks():
        ours = mask_to_rle(m)
        theirs = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert ours["counts"] == theirs["counts"].decode()
        h, _, counts = rle_counts(ours)
        bbox, area = rle_bbox_area(counts, h)
        assert bbox == mask_utils.toBbox(theirs).tolist()
        assert area == int(mask_utils.area(theirs))


# ------------------------------------------------------------------------------------------
# Streaming: NaN tokens, chunk boundaries, malformed JSON


TRICKY = (
    '{"a": NaN, "s": "NaN \\" [NaN, Infinity] \\\\", "b": [-Infinity, Infinity, 1.5],'
    ' "t": "x\\\\\\"NaN", "u": "\\\\", "c": NaN}'
)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 16, 1 << 16])
def test_special_float_stream_rewrites_tokens_only_outside_strings(chunk_size: int) -> None:
    stream = SpecialFloatStream(io.BytesIO(TRICKY.encode()), chunk_size=chunk_size)
    out = b""
    while block := stream.read(chunk_size):
        out += block
    assert len(out) == len(TRICKY)  # same length: error offsets stay exact
    parsed = json.loads(out)
    expected = json.loads(TRICKY)
    assert parsed["s"] == expected["s"] and parsed["t"] == expected["t"]
    assert parsed["u"] == "\\"
    assert (parsed["a"], parsed["b"], parsed["c"]) == ("N", ["-Infini", "Infini", 1.5], "N")
    assert stream.replaced == 4


def test_stream_blanks_a_utf8_bom() -> None:
    stream = SpecialFloatStream(io.BytesIO(b"\xef\xbb\xbf{}"))
    assert stream.read(10) == b"   {}"


def write(tmp_path: Any, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_nan_bbox_in_a_file_is_reported_with_its_json_pointer(tmp_path: Any) -> None:
    data = doc(
        ann(),
        ann(bbox=[float("nan"), 1, 2, 3]),
        ann(bbox=[1, 2, float("-inf"), 3]),
        images=[{"id": 1, "file_name": "NaN, Infinity.jpg", "width": 100, "height": 50}],
    )
    path = write(tmp_path, "instances.json", json.dumps(data))  # Python writes bare NaN
    assert "NaN" in open(path).read()
    result = load_coco(path)
    assert len(result.annotations) == 1
    assert result.annotations.iloc[0]["image_ref"] == "NaN, Infinity.jpg"
    assert [(e.file, e.pointer, e.message) for e in result.errors] == [
        (path, "/annotations/1/bbox", "bbox x is NaN"),
        (path, "/annotations/2/bbox", "bbox width is infinite (-inf)"),
    ]


def test_streaming_load_equals_the_in_memory_converter(tmp_path: Any) -> None:
    anns = [ann(id=i, bbox=[i % 50, 1, 10, 10], category_id=[1, 3, 7][i % 3]) for i in range(300)]
    anns.append(ann(image_id=40, bbox=..., segmentation=UNCOMPRESSED))
    data = doc(*anns)
    path = write(tmp_path, "big.json", json.dumps(data, indent=1))
    streamed = load_coco(path)
    memory = coco_to_annotations(data, source_file=path)
    assert streamed.annotations.equals(memory.annotations)
    assert len(streamed.annotations) == 301


@pytest.mark.parametrize("locate_limit", [coco.STDLIB_LOCATE_LIMIT, 0])
def test_malformed_json_names_the_file_line_and_column(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, locate_limit: int
) -> None:
    # locate_limit 0 forces the streaming locator used for files too large to load
    monkeypatch.setattr(coco, "STDLIB_LOCATE_LIMIT", locate_limit)
    text = '{\n  "images": [\n    {"id": 1 "file_name": "a.jpg"}\n  ]\n}\n'
    path = write(tmp_path, "bad.json", text)
    result = load_coco(path)
    assert len(result.annotations) == 0
    [err] = result.errors
    assert (err.code, err.file, err.pointer) == ("malformed_json", path, "line 3, column 14")
    assert str(err).startswith(f"{path}:line 3, column 14: malformed JSON")


@pytest.mark.parametrize("locate_limit", [coco.STDLIB_LOCATE_LIMIT, 0])
def test_truncated_json_is_located_at_its_end(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, locate_limit: int
) -> None:
    monkeypatch.setattr(coco, "STDLIB_LOCATE_LIMIT", locate_limit)
    path = write(tmp_path, "cut.json", '{"images": [\n {"id": 1,\n')
    [err] = load_coco(path).errors
    assert err.code == "malformed_json"
    assert err.pointer.startswith("line 3")


def test_folder_of_coco_files_shares_one_category_map(tmp_path: Any) -> None:
    write(tmp_path, "ann/instances_train.json", json.dumps(doc(ann())))
    write(tmp_path, "ann/instances_val.json", json.dumps(doc(ann(category_id=7))))
    write(tmp_path, "ann/notes.json", json.dumps({"hello": 1}))
    result = load_coco(str(tmp_path / "ann"))
    assert result.annotations["subset"].tolist() == ["train", "val"]
    assert result.annotations["category_id"].tolist() == [1, 2]
    assert [w.code for w in result.warnings] == ["skipped_file"]
    assert set(result.categories.source_maps) == {
        f"{tmp_path}/ann/instances_train.json",
        f"{tmp_path}/ann/instances_val.json",
    }


def test_missing_source_raises(tmp_path: Any) -> None:
    with pytest.raises(AnnotationImportError, match="does not exist"):
        load_coco(str(tmp_path / "nope.json"))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a/instances_train.json", "train"),
        ("panoptic_val2017.json", "val2017"),
        ("x/train/_annotations.coco.json", "train"),
        ("data/source/annotations/coco/instances.json", None),
    ],
)
def test_subset_from_path(path: str, expected: str | None) -> None:
    assert subset_from_path(path) == expected


def test_memory_filesystem_paths_work_like_local_ones() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/coco_mem/ann/instances_train.json", json.dumps(doc(ann(), ann(id=6))).encode())
    result = load_coco("memory://coco_mem/ann")
    assert len(result.annotations) == 2
    assert result.annotations.iloc[0]["source_file"] == "memory://coco_mem/ann/instances_train.json"
    fs.rm("/coco_mem", recursive=True)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", ("malformed_json", "line 1, column 1", "Expecting value")),
        (
            b'{"images": [{"id": 1, "file_name": "\xff.jpg"}]}',
            ("malformed_json", "line 1, column 37", "invalid UTF-8"),
        ),
        (b"[1, 2]", ("invalid_document", "", "JSON object")),
        (b'{"info": {}}', ("empty_document", "", "nothing to import")),
    ],
)
def test_unusable_files_are_reported_not_raised(
    tmp_path: Any, content: bytes, expected: tuple
) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(content)
    [issue] = load_coco(str(path)).issues
    code, pointer, text = expected
    assert (issue.code, issue.file, issue.pointer) == (code, str(path), pointer)
    assert text in issue.message


# ------------------------------------------------------------------------------------------
# The fast path (structure scan + json.loads batches + vectorised checks) against the
# reference converter, on annotations of every kind, valid and not, across batch boundaries.


def _mixed_annotations(n: int, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    out: list[Any] = []
    for i in range(n):
        x, y = float(rng.uniform(0, 90)), float(rng.uniform(0, 40))
        kind = i % 17
        a: dict[str, Any] = {"id": i, "image_id": 1, "category_id": [1, 3, 7][i % 3]}
        if kind == 0:
            a["bbox"] = [x, y, 5.5, 4]
        elif kind == 1:
            a["segmentation"] = [[x, y, x + 5, y, x + 5, y + 5]]
        elif kind == 2:
            a |= {
                "bbox": [x, y, 5, 5],
                "segmentation": [[x, y, x + 5, y, x + 5, y + 5], [1, 1, 2, 1, 2, 2]],
            }
        elif kind == 3:
            a["bbox"] = [math.nan, y, 5, 5]
        elif kind == 4:
            a["bbox"] = [x, y, 5, 5]
            a["image_id"] = 999  # unknown image
        elif kind == 5:
            a["bbox"] = [99.5, y, 1.2, 5]  # overhang within tolerance: clipped with a warning
        elif kind == 6:
            a["bbox"] = [-0.004, y, 5, 5]  # float noise: clipped silently
        elif kind == 7:
            a |= {"bbox": [x, y, 5, 5], "attributes": {"occluded": bool(i % 2), "n": i}}
        elif kind == 8:
            a |= {"bbox": [x, y, 5, 5], "iscrowd": 1, "score": 0.5}
        elif kind == 9:
            a = {"id": i, "image_id": 40, "category_id": 1, "segmentation": UNCOMPRESSED}
        elif kind == 10:
            a["bbox"] = [x, y, 0, 5]
        elif kind == 11:
            a["bbox"] = [int(x), int(y), 5, 5]
            a["segmentation"] = [[int(x), int(y), int(x) + 5, int(y), 0.0, 1e-5]]
        elif kind == 12:
            a["category_id"] = 2  # unknown category
            a["bbox"] = [x, y, 5, 5]
        elif kind == 13:
            a |= {"bbox": [x, y, 5, 5], "iscrowd": 2}
        elif kind == 14:
            a |= {"bbox": [x, y, 5, 5], "keypoints": [x, y, 2, 0, 0, 0]}
        elif kind == 15:
            a = "not an object"
        else:
            a |= {"bbox": [x, y, 5, "7"], "extra": [1]}
        out.append(a)
    return out


@pytest.mark.parametrize("batch", [7, 1000])
def test_fast_path_equals_the_reference_converter(
    tmp_path: Any, monkeypatch: Any, batch: int
) -> None:
    monkeypatch.setattr(coco, "FAST_BATCH", batch)
    data = doc(*_mixed_annotations(300))
    path = write(tmp_path, "mixed.json", json.dumps(data))  # NaN as a bare token
    fast = load_coco(path)
    reference = coco_to_annotations(data, source_file=path)
    assert fast.annotations.equals(reference.annotations)
    assert [str(i) for i in fast.issues] == [str(i) for i in reference.issues]
    assert len(fast.annotations) > 150 and len(fast.errors) > 50
    # and the streaming (ijson) path used for remote files agrees too
    monkeypatch.setattr(coco, "_load_file_fast", _refuse)
    streamed = load_coco(path)
    assert streamed.annotations.equals(reference.annotations)
    assert [str(i) for i in streamed.issues] == [str(i) for i in reference.issues]


def _refuse(uri: str, ctx: Any) -> None:
    raise coco._UseReference("test")


def test_streamed_to_parquet_equals_in_memory(tmp_path: Any) -> None:
    from visionloop.annotations.export import import_to_table, read_annotation_table

    data = doc(*_mixed_annotations(100))
    path = write(tmp_path, "mixed.json", json.dumps(data))
    out = str(tmp_path / "t.parquet")
    result = import_to_table(path, "coco", out)
    table, cmap = read_annotation_table(out)
    memory = load_coco(path)
    assert result.rows == len(table) == len(memory.annotations)
    pd.testing.assert_frame_equal(table, memory.annotations)
    assert cmap.to_json() == memory.categories.to_json()


def test_unsplittable_annotations_array_falls_back_to_the_reference(tmp_path: Any) -> None:
    text = json.dumps(doc(ann(id=1), ann(id=2)))
    text = text.replace('"annotations": [', '"annotations": [7, ')
    path = write(tmp_path, "odd.json", text)
    result = load_coco(path)
    assert len(result.annotations) == 2
    assert [(e.code, e.pointer) for e in result.errors] == [
        ("invalid_annotation", "/annotations/0")
    ]
