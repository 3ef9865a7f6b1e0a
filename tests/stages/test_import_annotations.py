"""The import_annotations stage end to end on a workspace: outputs, counts, incremental reruns."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.helpers import mock_manifest
from visionloop import storage
from visionloop.annotations.formats import FormatDetectionError
from visionloop.annotations.table import AnnotationImportError
from visionloop.config import (
    AnnotationSource,
    CollectParams,
    ImportAnnotationsParams,
    Params,
    RunParams,
)
from visionloop.schema import ANNOTATION_SCHEMA
from visionloop.stages import import_annotations as stage_module
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.import_annotations import ImportAnnotationsStage

REL_PATHS = [
    "cam_a/img_0000.jpg",
    "cam_a/img_0001.jpg",
    "cam_a/img_0002.jpg",
    "cam_b/img_0003.jpg",
    "cam_b/img_0004.jpg",
    "cam_b/img_0005.jpg",  # blurry
    "cam_b/copy_of_0000.jpg",  # byte-identical to cam_a/img_0000.jpg
    "cam_b/img_0007.jpg",
]


def write_curate_manifest(ws: Workspace) -> None:
    df = mock_manifest(
        "curate", n=8, quarantine={5: ("blurry", "curate"), 6: ("duplicate_exact", "collect")}
    )
    df["rel_path"] = REL_PATHS
    df["source_uri"] = [f"src/images/{p}" for p in REL_PATHS]
    df.loc[6, "item_id"] = df.loc[0, "item_id"]
    storage.write_table(ws.manifest_uri("curate"), df)


def coco_doc() -> dict[str, Any]:
    return {
        "categories": [
            {"id": 1, "name": "face"},
            {"id": 3, "name": "vehicle"},
            {"id": 7, "name": "sign"},
        ],
        "images": [
            {"id": 1, "file_name": "cam_a/img_0000.jpg", "width": 640, "height": 480},
            {"id": 2, "file_name": "cam_a/img_0001.jpg", "width": 640, "height": 480},
            {"id": 3, "file_name": "cam_b/copy_of_0000.jpg", "width": 640, "height": 480},
            {"id": 4, "file_name": "cam_a/img_0500.jpg", "width": 640, "height": 480},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 60]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [100, 200, 150, 80]},
            {"id": 3, "image_id": 3, "category_id": 7, "bbox": [5, 5, 20, 20]},
            {"id": 4, "image_id": 4, "category_id": 3, "bbox": [100, 260, 150, 80]},
            {"id": 5, "image_id": 2, "category_id": 3, "bbox": [math.nan, 260, 150, 80]},
        ],
    }


def write_sources(root: Path) -> None:
    coco = root / "src/annotations/coco/instances.json"
    coco.parent.mkdir(parents=True)
    coco.write_text(json.dumps(coco_doc()))  # Python writes NaN as a bare token
    yolo = root / "src/annotations/yolo"
    (yolo / "labels/cam_b").mkdir(parents=True)
    (yolo / "data.yaml").write_text("path: .\ntrain: images/cam_b\nnames: [face, vehicle, sign]\n")
    (yolo / "labels/cam_b/img_0003.txt").write_text("1 0.5 0.5 0.25 0.25\n2 0.1 0.1 0.1 0.1\n")
    (yolo / "labels/cam_b/img_0005.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (yolo / "labels/cam_b/img_0099.txt").write_text("0 0.5 0.5 0.1 0.1\n")


def make_params(formats: tuple[str, str] = ("coco", "yolo")) -> Params:
    return Params(
        run=RunParams(data_dir="data", max_workers=1),
        collect=CollectParams(source="src/images"),
        import_annotations=ImportAnnotationsParams(
            sources=[
                AnnotationSource(format=formats[0], path="src/annotations/coco/instances.json"),
                AnnotationSource(format=formats[1], path="src/annotations/yolo"),
            ]
        ),
    )


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.chdir(tmp_path)  # source paths are relative to the working directory
    ws = Workspace("data")
    write_curate_manifest(ws)
    write_sources(tmp_path)
    return ws


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every source the stage reads, to prove reruns read nothing."""
    calls: list[str] = []
    real = stage_module.read_source

    def counting(source: AnnotationSource, *args: Any) -> Any:
        calls.append(source.path)
        return real(source, *args)

    monkeypatch.setattr(stage_module, "read_source", counting)
    return calls


def test_stage_writes_the_contract_outputs(workspace: Workspace, reads: list[str]) -> None:
    ws = workspace
    summary = run_stage(ImportAnnotationsStage(), ws, make_params())
    assert len(reads) == 2

    # summary counts mirror the curate manifest; details hold the annotation counts
    assert (summary.input, summary.accepted, summary.quarantined) == (8, 6, 2)
    assert summary.reasons == {"blurry": 1, "duplicate_exact": 1}
    d = summary.details
    assert (d["annotations"], d["matched"], d["quarantined_item"], d["unmatched"]) == (7, 5, 1, 1)
    assert (d["errors"], d["matched_via_duplicate"], d["skipped"]) == (2, 1, False)
    assert d["per_category"] == {"face": 2, "sign": 2, "vehicle": 3}

    table = pq.read_table(ws.uri("import_annotations", "annotations.parquet"))
    assert table.schema.remove_metadata().equals(ANNOTATION_SCHEMA)
    df = table.to_pandas()
    assert df["source_format"].tolist() == ["coco"] * 4 + ["yolo"] * 3
    assert df["match_status"].tolist() == [
        "matched",
        "matched",
        "matched",  # on the duplicate's path: its item is accepted
        "unmatched",  # cam_a/img_0500.jpg was never delivered
        "matched",
        "matched",
        "quarantined_item",
    ]
    assert df["category_id"].tolist() == [0, 1, 2, 1, 1, 2, 0]
    yolo = df[df["source_format"] == "yolo"]
    assert yolo["image_ref"].tolist() == ["cam_b/img_0003.jpg"] * 2 + ["cam_b/img_0005.jpg"]
    assert yolo.iloc[0][["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].tolist() == [240, 180, 160, 120]

    categories = json.loads(storage.read_text(ws.uri("import_annotations", "categories.json")))
    assert categories == {
        "categories": [
            {"id": 0, "name": "face"},
            {"id": 1, "name": "vehicle"},
            {"id": 2, "name": "sign"},
        ],
        "source_maps": {
            "src/annotations/coco/instances.json": {"1": 0, "3": 1, "7": 2},
            "src/annotations/yolo/data.yaml": {"0": 0, "1": 1, "2": 2},
        },
    }

    report = json.loads(storage.read_text(ws.uri("import_annotations", "report.json")))
    assert report["unmatched_examples"][0]["image_ref"] == "cam_a/img_0500.jpg"
    assert (report["labelled_accepted"], report["declared_empty_accepted"]) == (2, 1)
    assert report["unlabelled_accepted"] == 3
    assert report["unlabelled_accepted_examples"] == [
        "cam_a/img_0002.jpg",
        "cam_b/img_0004.jpg",
        "cam_b/img_0007.jpg",
    ]
    errors = {(e["code"], e["file"], e["pointer"]) for e in report["error_examples"]}
    assert errors == {
        ("invalid_bbox", "src/annotations/coco/instances.json", "/annotations/4/bbox"),
        ("unknown_image", "src/annotations/yolo/labels/cam_b/img_0099.txt", ""),
    }

    after = storage.read_table(ws.manifest_uri("import_annotations"))
    before = storage.read_table(ws.manifest_uri("curate"))
    assert after[before.columns].equals(before)  # no image quarantined, nothing rewritten
    counts = after["import_annotations_count"].tolist()
    assert counts[:5] == [3, 0, 0, 2, 0] and counts[7] == 0
    assert after["import_annotations_count"].isna().tolist() == [False] * 5 + [True, True, False]
    assert not storage.exists(ws.uri("import_annotations", "_work"))


def test_rerun_with_unchanged_inputs_reads_nothing(workspace: Workspace, reads: list[str]) -> None:
    ws = workspace
    first = run_stage(ImportAnnotationsStage(), ws, make_params())
    out = ws.uri("import_annotations", "annotations.parquet")
    stamp = os.stat(out).st_mtime_ns
    assert ImportAnnotationsStage().plan(ws, make_params()) == []
    again = run_stage(ImportAnnotationsStage(), ws, make_params())
    assert len(reads) == 2  # only the first run read the sources
    assert again.details["skipped"] is True
    assert again.details["annotations"] == first.details["annotations"]
    assert os.stat(out).st_mtime_ns == stamp

    # a changed label file re-imports
    label = Path("src/annotations/yolo/labels/cam_b/img_0003.txt")
    label.write_text("1 0.5 0.5 0.25 0.25\n")
    third = run_stage(ImportAnnotationsStage(), ws, make_params())
    assert len(reads) == 4 and third.details["annotations"] == 6

    # so does a changed manifest (here: cam_b/img_0004.jpg quarantined by curate)
    df = storage.read_table(ws.manifest_uri("curate"))
    df.loc[4, ["status", "reason", "quarantined_by"]] = ["quarantined", "too_dark", "curate"]
    storage.write_table(ws.manifest_uri("curate"), df)
    fourth = run_stage(ImportAnnotationsStage(), ws, make_params())
    assert len(reads) == 6 and fourth.accepted == 5

    # and changed params
    params = make_params()
    params.import_annotations.out_of_bounds_tolerance = 0.05
    run_stage(ImportAnnotationsStage(), ws, params)
    assert len(reads) == 8


def test_auto_format_detection(workspace: Workspace) -> None:
    summary = run_stage(ImportAnnotationsStage(), workspace, make_params(("auto", "auto")))
    sources = summary.details["sources"]
    assert [s["format"] for s in sources] == ["coco", "yolo"]
    assert sources[0]["format_choice"].startswith("detected: JSON object with")
    assert summary.details["annotations"] == 7


def test_auto_refuses_a_folder_that_fits_two_formats(workspace: Workspace) -> None:
    both = Path("src/annotations/yolo/instances.json")
    both.write_text(json.dumps(coco_doc()))
    params = make_params(("coco", "auto"))
    with pytest.raises(FormatDetectionError, match=r"several formats fit: coco .*; yolo"):
        run_stage(ImportAnnotationsStage(), workspace, params)


def test_missing_source_fails_in_plan(workspace: Workspace) -> None:
    params = make_params()
    params.import_annotations.sources[0].path = "src/annotations/coco/nope.json"
    with pytest.raises(AnnotationImportError, match=r"nope\.json does not exist"):
        ImportAnnotationsStage().plan(workspace, params)


def test_no_sources_gives_an_empty_table_and_every_image_unlabelled(workspace: Workspace) -> None:
    params = make_params()
    params.import_annotations.sources = []
    summary = run_stage(ImportAnnotationsStage(), workspace, params)
    assert (summary.details["annotations"], summary.details["unlabelled_accepted"]) == (0, 6)
    table = pq.read_table(workspace.uri("import_annotations", "annotations.parquet"))
    assert table.num_rows == 0 and table.schema.remove_metadata().equals(ANNOTATION_SCHEMA)


def test_stage_reads_label_studio_and_cvat_through_the_same_registry(
    workspace: Workspace, tmp_path: Path
) -> None:
    """Every format the CLI reads, the stage reads (format given or detected): here two
    annotators in Label Studio (sizes from the manifest) and a CVAT file."""
    task = {
        "data": {"image": "/data/local-files/?d=cam_a/img_0001.jpg"},
        "annotations": [
            {"completed_by": 1, "result": [_ls_box(10, 10)]},
            {"completed_by": 2, "result": [_ls_box(11, 10)]},
        ],
        "predictions": [{"model_version": "m1", "result": [_ls_box(12, 10, score=0.5)]}],
    }
    ls = tmp_path / "src/annotations/ls/export.json"
    ls.parent.mkdir(parents=True)
    ls.write_text(json.dumps([task]))
    cvat = tmp_path / "src/annotations/cvat/annotations.xml"
    cvat.parent.mkdir(parents=True)
    cvat.write_text(
        '<annotations><version>1.1</version><image id="0" name="cam_b/img_0003.jpg" '
        'width="640" height="480"><box label="vehicle" xtl="1" ytl="1" xbr="9" ybr="9"/>'
        "</image></annotations>"
    )
    params = Params(
        run=RunParams(data_dir="data", max_workers=1),
        collect=CollectParams(source="src/images"),
        import_annotations=ImportAnnotationsParams(
            sources=[
                AnnotationSource(format="label_studio", path="src/annotations/ls"),
                AnnotationSource(format="auto", path="src/annotations/cvat"),
            ]
        ),
    )
    summary = run_stage(ImportAnnotationsStage(), workspace, params)
    df = storage.read_table(workspace.uri("import_annotations", "annotations.parquet"))
    assert df["annotator"].tolist()[:3] == ["1", "2", "prediction:m1"]
    assert df["annotator"].isna().tolist()[3]  # CVAT has no annotator
    assert df["match_status"].tolist() == ["matched"] * 4
    assert df["bbox_x"].tolist()[:3] == [64.0, 70.4, 76.8]  # 10 % of the manifest's 640 px
    assert df["score"].tolist()[2] == 0.5
    assert [s["format_choice"] for s in summary.details["sources"]] == [
        "configured",
        "detected: src/annotations/cvat/annotations.xml: XML with an <annotations> root (CVAT 1.1)",
    ]


def _ls_box(x: float, y: float, **extra: Any) -> dict[str, Any]:
    value = {"x": x, "y": y, "width": 5, "height": 5, "rectanglelabels": ["face"]}
    return {
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "value": value,
        **extra,
    }
