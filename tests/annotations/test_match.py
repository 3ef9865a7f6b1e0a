"""Matching annotations to manifest rows, and the report built from the matches."""

from __future__ import annotations

import hashlib
from contextlib import ExitStack as DoesNotRaise
from typing import Any

import pandas as pd
import pytest

from visionloop.annotations.match import (
    ManifestIndex,
    build_report,
    match_annotations,
    normalise_ref,
)
from visionloop.annotations.table import (
    AnnotationRecord,
    ImageRecord,
    ImportIssue,
    TableBuilder,
    images_frame,
)


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def manifest(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    """(rel_path, status, reason) rows; item_id = sha of the path unless a duplicate."""
    out = []
    for rel, status, reason in rows:
        iid = (
            sha("dup-content")
            if reason == "duplicate_exact" or rel == "cam_a/orig.jpg"
            else sha(rel)
        )
        out.append(
            {
                "item_id": iid,
                "source_uri": f"/src/{rel}",
                "rel_path": rel,
                "status": status,
                "reason": reason,
                "width": 640,
                "height": 480,
            }
        )
    df = pd.DataFrame(out)
    df["width"] = df["width"].astype("Int32")
    df["height"] = df["height"].astype("Int32")
    return df


MANIFEST = manifest(
    [
        ("cam_a/img_0001.jpg", "accepted", None),
        ("cam_a/img_0002.jpg", "quarantined", "blurry"),
        ("images/Train/img0.jpg", "accepted", None),
        ("images/Test/img0.jpg", "accepted", None),
        ("other/Train/img0.jpg", "accepted", None),
        ("x/Validation/img9.jpg", "accepted", None),
        ("cam_a/orig.jpg", "accepted", None),
        ("cam_b/copy.jpg", "quarantined", "duplicate_exact"),
        ("unlabelled/u1.jpg", "accepted", None),
        ("unlabelled/u2.jpg", "accepted", None),
    ]
)


@pytest.mark.parametrize(
    ("ref", "subset", "sha256", "expected", "exception"),
    [
        ("cam_a/img_0001.jpg", None, None, ("cam_a/img_0001.jpg", "rel_path"), DoesNotRaise()),
        (".\\cam_a\\img_0001.jpg", None, None, ("cam_a/img_0001.jpg", "rel_path"), DoesNotRaise()),
        ("img_0001.jpg", None, None, ("cam_a/img_0001.jpg", "file_name"), DoesNotRaise()),
        (
            "/abs/export/img9.jpg",
            None,
            None,
            ("x/Validation/img9.jpg", "file_name"),
            DoesNotRaise(),
        ),
        ("Test/img0.jpg", None, None, ("images/Test/img0.jpg", "path_suffix"), DoesNotRaise()),
        ("img0.jpg", "Test", None, ("images/Test/img0.jpg", "subset_folder"), DoesNotRaise()),
        ("img0.jpg", "test", None, ("images/Test/img0.jpg", "subset_folder"), DoesNotRaise()),
        ("img0.jpg", "Train", None, (None, "subset 'Train' fits 2"), DoesNotRaise()),
        ("img0.jpg", None, None, (None, "3 manifest files share"), DoesNotRaise()),
        (
            "renamed.jpg",
            None,
            sha("cam_a/img_0001.jpg"),
            ("cam_a/img_0001.jpg", "sha256"),
            DoesNotRaise(),
        ),
        ("nowhere.jpg", None, None, (None, "no manifest file"), DoesNotRaise()),
        ("nowhere.jpg", None, "f" * 64, (None, "no manifest file"), DoesNotRaise()),
    ],
)
def test_manifest_index_find(
    ref: str, subset: str | None, sha256: str | None, expected: tuple, exception: Any
) -> None:
    index = ManifestIndex(MANIFEST)
    with exception:
        m = index.find(ref, subset, sha256)
        rel, method_or_why = expected
        if rel is None:
            assert m.row is None and m.method is None
            assert method_or_why in (m.why or "")
        else:
            assert (index.rel[m.row], m.method) == (rel, method_or_why)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("./a//b.jpg", "a/b.jpg"), ("a\\b.jpg", "a/b.jpg"), ("s3://b/k.jpg", "s3://b/k.jpg")],
)
def test_normalise_ref(ref: str, expected: str) -> None:
    assert normalise_ref(ref) == expected


def table(refs: list[tuple[str, str | None, str]]) -> pd.DataFrame:
    """(image_ref, subset, category) -> an annotation table as a reader returns it."""
    b = TableBuilder()
    for i, (ref, subset, cat) in enumerate(refs):
        b.add(
            AnnotationRecord(
                annotation_id=f"e.json#/annotations/{i}",
                image_ref=ref,
                category=cat,
                category_id=0 if cat == "face" else 1,
                source_format="coco",
                source_file="e.json",
                source_pointer=f"/annotations/{i}",
                bbox_x=1.0,
                bbox_y=1.0,
                bbox_w=5.0,
                bbox_h=5.0,
                image_width=640 if ref != "img_0001.jpg" else 480,
                image_height=480 if ref != "img_0001.jpg" else 640,
                subset=subset,
            )
        )
    return b.build()


def test_match_statuses_and_report() -> None:
    anns = table(
        [
            ("img_0001.jpg", None, "face"),  # accepted; export size swapped (EXIF?)
            ("cam_a/img_0002.jpg", None, "face"),  # blurry: quarantined item
            ("cam_b/copy.jpg", None, "car"),  # a duplicate row; its item is accepted
            ("img0.jpg", "Test", "car"),
            *[(f"missing_{k}.jpg", None, "car") for k in range(12)],
        ]
    )
    matched, detail = match_annotations(anns, MANIFEST)
    assert matched["match_status"].tolist()[:4] == [
        "matched",
        "quarantined_item",
        "matched",
        "matched",
    ]
    assert matched["item_id"].iloc[2] == sha("dup-content")
    assert matched["match_method"].tolist()[:4] == [
        "file_name",
        "rel_path",
        "rel_path",
        "subset_folder",
    ]
    assert matched["item_id"].iloc[4:].isna().all()

    images = images_frame(
        [ImageRecord("unlabelled/u1.jpg", "coco", "e.json", "/images/9")]  # declared, no boxes
    )
    issues = [
        ImportIssue("error", "invalid_bbox", "e.json", "/annotations/99/bbox", "bbox x is NaN"),
        ImportIssue("warning", "clipped", "e.json", "/annotations/98/bbox", "clipped"),
    ]
    report = build_report(matched, detail, images, MANIFEST, issues)
    assert {k: report[k] for k in ("annotations", "matched", "quarantined_item", "unmatched")} == {
        "annotations": 16,
        "matched": 3,
        "quarantined_item": 1,
        "unmatched": 12,
    }
    assert report["unmatched_fraction"] == 0.75
    assert len(report["unmatched_examples"]) == 10  # capped
    assert report["unmatched_examples"][0] == {
        "image_ref": "missing_0.jpg",
        "subset": None,
        "source_file": "e.json",
        "source_pointer": "/annotations/4",
        "why": "no manifest file with this path or file name",
    }
    assert report["quarantined_item_examples"][0]["reason"] == "blurry"
    assert report["matched_via_duplicate"] == 1
    # accepted: img_0001, Train/img0 x2, Test/img0, img9, orig, u1, u2 = 8
    assert report["accepted_images"] == 8
    assert report["labelled_accepted"] == 3  # img_0001, orig (via its copy), Test/img0
    assert report["declared_empty_accepted"] == 1  # u1
    assert report["unlabelled_accepted"] == 4
    assert report["unlabelled_accepted_examples"] == [
        "images/Train/img0.jpg",
        "other/Train/img0.jpg",
        "unlabelled/u2.jpg",
        "x/Validation/img9.jpg",
    ]
    assert report["per_category"] == {"car": 14, "face": 2}
    assert report["per_category_matched"] == {"car": 2, "face": 1}
    assert report["match_methods"] == {"file_name": 1, "rel_path": 2, "subset_folder": 1}
    assert report["size_mismatches"]["count"] == 1
    assert report["size_mismatches"]["examples"][0]["hint"].startswith("width and height swapped")
    assert (report["errors"], report["warnings"]) == (1, 1)
    assert report["errors_by_code"] == {"invalid_bbox": 1}
    assert report["error_examples"][0]["text"] == "e.json:/annotations/99/bbox: bbox x is NaN"


def test_empty_table_reports_zeros_and_every_accepted_image_unlabelled() -> None:
    empty = table([])
    matched, detail = match_annotations(empty, MANIFEST)
    report = build_report(matched, detail, images_frame([]), MANIFEST, [])
    assert (report["annotations"], report["matched"], report["unmatched_fraction"]) == (0, 0, 0.0)
    assert report["unlabelled_accepted"] == 8
    assert report["per_category"] == {}


# ------------------------------------------------------------------------------------------
# The table module underneath: records, category map, combined sources, coordinate checks


def test_annotation_record_has_exactly_the_schema_columns() -> None:
    from dataclasses import fields

    from visionloop.schema import ANNOTATION_SCHEMA

    assert {f.name for f in fields(AnnotationRecord)} == set(ANNOTATION_SCHEMA.names)
    assert list(table([("a.jpg", None, "face")]).columns) == ANNOTATION_SCHEMA.names


def test_table_builder_flushes_batches_and_keeps_order() -> None:
    b = TableBuilder(batch_size=3)
    for i in range(7):
        b.add(AnnotationRecord(f"id{i}", "a.jpg", "face", 0, "coco", "f", f"/annotations/{i}"))
    df = b.build()
    assert df["annotation_id"].tolist() == [f"id{i}" for i in range(7)]
    assert b.count == 7


def test_combine_results_assigns_first_seen_ids_across_sources() -> None:
    from visionloop.annotations.formats.coco import coco_to_annotations
    from visionloop.annotations.formats.yolo import yolo_to_annotations
    from visionloop.annotations.table import CategoryMap, combine_results

    coco = coco_to_annotations(
        {
            "categories": [{"id": 4, "name": "car"}, {"id": 2, "name": "person"}],
            "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [1, 1, 2, 2]}],
        },
        source_file="c.json",
    )
    yolo = yolo_to_annotations(
        "1 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2",
        ["bike", "car"],
        "b.jpg",
        10,
        10,
        source_file="data.yaml",
    )
    combined = combine_results([coco, yolo])
    doc = combined.categories.to_json()
    assert doc["categories"] == [
        {"id": 0, "name": "person"},
        {"id": 1, "name": "car"},
        {"id": 2, "name": "bike"},
    ]
    assert doc["source_maps"] == {"c.json": {"2": 0, "4": 1}, "data.yaml": {"0": 2, "1": 1}}
    assert combined.annotations["category_id"].tolist() == [1, 1, 2]
    assert CategoryMap.from_json(doc).to_json() == doc


@pytest.mark.parametrize(
    ("box", "size", "expected", "exception"),
    [
        ((1, 2, 3, 4), (10, 10), ((1, 2, 3, 4), None, None), DoesNotRaise()),
        ((1, 2, 3, 4), (None, None), ((1, 2, 3, 4), None, None), DoesNotRaise()),
        ((-1, 2, 3, 4), (10, 10), ((0, 2, 2, 4), None, "clipped"), DoesNotRaise()),
        ((-1.5, 2, 3, 4), (10, 10), (None, "outside", None), DoesNotRaise()),
        ((-8, 2, 30, 4), (1000, 10), ((0, 2, 22, 4), None, "clipped"), DoesNotRaise()),  # 1%
        ((-12, 2, 30, 4), (1000, 10), (None, "10 x 1 px", None), DoesNotRaise()),
        ((10, 2, 0.5, 4), (10, 10), (None, "no area inside", None), DoesNotRaise()),
        ((True, 2, 3, 4), (10, 10), (None, "not a number", None), DoesNotRaise()),
        ((1, 2, 3, 4e5), (None, None), (None, "absurd", None), DoesNotRaise()),
    ],
)
def test_check_box(box: tuple, size: tuple, expected: tuple, exception: Any) -> None:
    from visionloop.annotations.table import check_box

    with exception:
        check = check_box(*box, *size)
        want_box, error, warning = expected
        assert check.box == (None if want_box is None else tuple(float(v) for v in want_box))
        assert (check.error is None) == (error is None)
        assert error is None or error in check.error
        assert (check.warning is None) == (warning is None)
