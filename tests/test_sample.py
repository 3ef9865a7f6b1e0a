"""The sample dataset: its truth is right (checked against the files) and collect agrees with it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from visionloop import imaging, storage
from visionloop.config import Params
from visionloop.sample import build_sample, luminance
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.collect import CollectStage

N = 60


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    out = tmp_path_factory.mktemp("sample")
    summary = build_sample(str(out), n=N, seed=0)
    truth = json.loads((out / "truth.json").read_text())
    return out, truth, summary


def image_files(out: Path) -> list[str]:
    root = out / "images"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_layout_and_totals(sample: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    out, truth, summary = sample
    files = image_files(out)
    assert len(files) == N == truth["n"] == summary["files"]
    assert set(files) == set(truth["files"])
    assert {f.split("/")[0] for f in files} == {"cam_a", "cam_b", "notes.txt"}
    kinds = summary["kinds"]
    for kind in ("corrupt", "truncated", "wrong_extension", "orientation_6", "text"):
        assert kinds[kind] == 1
    for kind in ("blurry", "dark", "overexposed", "exact_duplicate", "near_duplicate"):
        assert kinds[kind] >= 1
    assert summary["expected"]["accepted"] + summary["expected"]["quarantined"] == N
    assert summary["collect"]["reasons"] == {
        "corrupt": 1,
        "duplicate_exact": kinds["exact_duplicate"],
        "extension_mismatch": 1,
        "truncated": 1,
        "unsupported_format": 1,
    }
    assert summary["expected"]["quarantined"] / N < 0.5
    assert summary["faces"] == sum(len(e["faces"]) for e in truth["files"].values())
    for e in truth["files"].values():
        assert (e["status"], e["reason"]) == (e["expected"]["status"], e["expected"]["reason"])
        if e["expected"]["stage"] != "collect":
            assert e["collect"] == {"status": "accepted", "reason": None}


def test_collect_agrees_with_truth(
    sample: tuple[Path, dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    out, truth, _ = sample
    params = Params().with_overrides(
        {"run.data_dir": str(tmp_path / "data"), "collect.source": str(out / "images")}
    )
    ws = Workspace.from_params(params)
    summary = run_stage(CollectStage(), ws, params)
    df = storage.read_table(ws.manifest_uri("collect")).set_index("rel_path")
    assert summary.input == N
    for rel, entry in truth["files"].items():
        row = df.loc[rel]
        reason = row.reason if isinstance(row.reason, str) else None
        assert (row.status, reason) == (entry["collect"]["status"], entry["collect"]["reason"]), rel
        if entry["duplicate_of"]:
            assert row.duplicate_of == str(out / "images" / entry["duplicate_of"])
        if row.status == "accepted":
            assert (row.width, row.height) == (entry["width"], entry["height"]), rel
            assert row.capture_time == entry["capture_time"]
            assert row.camera_make == entry["make"] and row.camera_model == entry["model"]
            assert bool(row.has_gps) == (entry["gps"] is not None)
            if entry["gps"]:
                assert row.gps_lat == pytest.approx(entry["gps"]["lat"], abs=1e-6)
                assert row.gps_lon == pytest.approx(entry["gps"]["lon"], abs=1e-6)


def test_planted_defects_are_real(sample: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    out, truth, _ = sample
    lumas: dict[str, list[float]] = {}
    for rel, e in truth["files"].items():
        data = (out / "images" / rel).read_bytes()
        if e["sha256"]:
            assert hashlib.sha256(data).hexdigest() == e["sha256"]
        if e["kind"] in ("corrupt", "truncated", "text"):
            continue
        pixels = imaging.load_oriented_rgb(data)
        assert pixels.shape[:2] == (e["height"], e["width"]), rel
        key = e["kind"] if e["kind"] in ("dark", "overexposed") else e["day_night"]
        lumas.setdefault(key, []).append(luminance(pixels))
        if e["kind"] == "exact_duplicate":
            assert data == (out / "images" / e["duplicate_of"]).read_bytes()
        if e["kind"] == "near_duplicate":
            src = truth["files"][e["near_duplicate_of"]]
            assert data != (out / "images" / e["near_duplicate_of"]).read_bytes()
            assert e["width"] == round(src["width"] * 0.95)
            src_boxes = src["faces"] + [o["box"] for o in src["objects"]]
            boxes = e["faces"] + [o["box"] for o in e["objects"]]
            np.testing.assert_allclose(boxes, np.array(src_boxes) * 0.95, atol=0.02)
        if e["kind"] == "orientation_6":
            info = imaging.probe_and_decode(data, 10**8)
            assert info.exif.orientation == 6
            assert (info.stored_width, info.stored_height) == (e["height"], e["width"])
            assert e["width"] < e["height"]
        if e["kind"] == "blurry":
            assert 4.0 <= e["defect"]["sigma"] <= 6.0
    assert max(lumas["dark"]) < 15
    assert min(lumas["overexposed"]) > 240
    assert 38 <= min(lumas["night"]) and max(lumas["night"]) <= 65
    assert min(lumas["day"]) > 70


def test_boxes_faces_and_annotation_exports(
    sample: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    out, truth, summary = sample
    files = truth["files"]
    with_faces = [e for e in files.values() if e["faces"]]
    assert 0.2 <= len(with_faces) / N <= 0.5
    for e in files.values():
        assert len(e["faces"]) <= 3
        for x0, y0, x1, y1 in e["faces"] + [o["box"] for o in e["objects"]]:
            assert 0 <= x0 < x1 <= e["width"] and 0 <= y0 < y1 <= e["height"]
        for face in e["faces"]:
            assert 50 <= face[3] - face[1] <= 200
    assert {s for e in with_faces for s in e["face_sources"]} & {"astronaut", "grace_hopper"}

    coco = json.loads((out / "annotations/coco/instances.json").read_text())
    assert {c["id"]: c["name"] for c in coco["categories"]} == {1: "face", 3: "vehicle", 7: "sign"}
    images = {im["id"]: im for im in coco["images"]}
    missing = [im for im in coco["images"] if not (out / "images" / im["file_name"]).exists()]
    assert len(missing) == 1
    assert sum(a["image_id"] == missing[0]["id"] for a in coco["annotations"]) == 1
    assert all(im["file_name"].startswith("cam_a/") for im in coco["images"])
    expected = 0
    for im in coco["images"]:
        if im is missing[0]:
            continue
        e = files[im["file_name"]]
        assert (im["width"], im["height"]) == (e["width"], e["height"])
        expected += len(e["faces"]) + len(e["objects"])
    assert len(coco["annotations"]) == expected + 1 == summary["annotations"]["coco"]["annotations"]
    first = next(a for a in coco["annotations"] if a["category_id"] == 1)
    face = files[images[first["image_id"]]["file_name"]]["faces"][0]
    assert first["bbox"] == pytest.approx([face[0], face[1], face[2] - face[0], face[3] - face[1]])

    yolo = out / "annotations/yolo"
    assert yaml.safe_load((yolo / "data.yaml").read_text())["names"] == ["face", "vehicle", "sign"]
    labels = sorted((yolo / "labels/cam_b").glob("*.txt"))
    assert len(labels) == summary["annotations"]["yolo"]["label_files"] > 0
    for path in labels:
        e = files[f"cam_b/{path.stem}.jpg"]
        rows = [line.split() for line in path.read_text().splitlines()]
        assert len(rows) == len(e["faces"]) + len(e["objects"])
        for cls, *vals in rows:
            assert cls in {"0", "1", "2"} and all(0 <= float(v) <= 1 for v in vals)
        cx, _, _, h = (float(v) for v in rows[0][1:])
        box = e["faces"][0] if e["faces"] else e["objects"][0]["box"]
        assert cx * e["width"] == pytest.approx((box[0] + box[2]) / 2, abs=0.01)
        assert h * e["height"] == pytest.approx(box[3] - box[1], abs=0.01)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    def digest(out: Path) -> dict[str, str]:
        return {
            p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*"))
            if p.is_file()
        }

    build_sample(str(tmp_path / "a"), n=24, seed=7)
    build_sample(str(tmp_path / "b"), n=24, seed=7)
    build_sample(str(tmp_path / "c"), n=24, seed=8)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b
    assert a["truth.json"] != c["truth.json"]
    # a rebuild into the same folder replaces, rather than adds to, the previous files
    build_sample(str(tmp_path / "a"), n=24, seed=8)
    assert digest(tmp_path / "a") == c


def test_too_small_n_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        build_sample(str(tmp_path), n=10)


def test_luminance_is_bt601() -> None:
    px = np.zeros((2, 2, 3), np.uint8)
    px[..., 1] = 100
    assert luminance(px) == pytest.approx(58.7)
