"""`visionloop labels import|export|detect|formats` through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.helpers import mock_manifest
from visionloop import storage
from visionloop.annotations.cli import labels
from visionloop.cli import main

COCO = {
    "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "car"}],
    "images": [
        {"id": 1, "file_name": "img_000.jpg", "width": 640, "height": 480},
        {"id": 2, "file_name": "img_999.jpg", "width": 640, "height": 480},
    ],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [10, 10, 50, 60],
            "attributes": {"x": 1},
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 2,
            "bbox": [1, 1, 2, 2],
            "segmentation": [[1, 1, 3, 1, 3, 3]],
        },
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [1, 1, 2000, 2]},
    ],
}


def coco_file(tmp_path: Path) -> str:
    path = tmp_path / "instances_train.json"
    path.write_text(json.dumps(COCO))
    return str(path)


def test_import_then_export_with_a_loss_report(tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "t.parquet")
    res = runner.invoke(labels, ["import", coco_file(tmp_path), "--out", out])
    assert res.exit_code == 0, res.output
    assert "coco (detected: JSON object with" in res.output
    assert "2 annotation(s), 2 categories, 1 error(s) (not imported)" in res.output
    assert "invalid_bbox" in res.output
    report = json.loads((tmp_path / "t.report.json").read_text())
    assert (report["annotations"], report["errors"]) == (2, 1)
    assert (
        json.loads((tmp_path / "t.categories.json").read_text())["categories"][1]["name"] == "car"
    )

    res = runner.invoke(
        labels, ["export", out, "--format", "label_studio", "--out", str(tmp_path / "ls.json")]
    )
    assert res.exit_code == 0, res.output
    assert "label_studio: 2 of 2 annotation(s) written" in res.output
    res = runner.invoke(
        labels, ["export", out, "--format", "cvat", "--out", str(tmp_path / "c.xml"), "--strict"]
    )
    assert res.exit_code == 0 and (tmp_path / "c.xml.loss.json").exists()
    # strict: a loss makes the command fail, after saying what was lost
    res = runner.invoke(
        labels, ["export", out, "--format", "yolo", "--out", str(tmp_path / "y"), "--strict"]
    )
    assert res.exit_code == 1
    assert "LOST 1: attributes: YOLO has no place for attributes" in res.output
    assert (tmp_path / "y/labels/train/img_000.txt").read_text().count("\n") == 2


def test_import_with_a_manifest_matches_and_strict_fails_on_errors(tmp_path: Path) -> None:
    manifest = mock_manifest("curate", n=3)
    mpath = str(tmp_path / "manifest.parquet")
    storage.write_table(mpath, manifest)
    runner = CliRunner()
    args = [
        "import",
        coco_file(tmp_path),
        "--out",
        str(tmp_path / "t.parquet"),
        "--manifest",
        mpath,
    ]
    res = runner.invoke(labels, [*args, "--strict"])
    assert res.exit_code == 1
    assert "matched 2, on quarantined images 0, unmatched 0" in res.output
    table = storage.read_table(str(tmp_path / "t.parquet"))
    assert table["match_status"].tolist() == ["matched"] * 2


def test_detect_formats_help_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(labels, ["detect", coco_file(tmp_path)])
    assert res.exit_code == 0 and res.output.startswith("coco: ")
    res = runner.invoke(labels, ["detect", str(tmp_path)])
    assert res.exit_code == 0  # a folder with one COCO file
    (tmp_path / "other").mkdir()
    res = runner.invoke(labels, ["detect", str(tmp_path / "other")])
    assert res.exit_code == 1 and "no known annotation format fits" in res.output
    res = runner.invoke(labels, ["formats"])
    assert "export: coco, cvat, label_studio, yolo" in res.output
    res = runner.invoke(main, ["labels", "--help"])
    assert res.exit_code == 0 and "import" in res.output and "export" in res.output
    res = runner.invoke(
        labels, ["export", str(tmp_path / "missing.parquet"), "--format", "coco", "--out", "x"]
    )
    assert res.exit_code == 1 and "does not exist" in res.output
    res = runner.invoke(
        labels, ["import", str(tmp_path / "other"), "--format", "nope", "--out", "x"]
    )
    assert res.exit_code == 1 and "unknown annotation format" in res.output
