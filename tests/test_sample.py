"""The sample dataset: its truth is right (checked against the files) and collect agrees with it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from visionloop import imaging, storage, video
from visionloop.config import CurateParams, Params
from visionloop.curate import flag_quality
from visionloop.curate.dedup import hamming_pairs, hex_to_uint64
from visionloop.curate.metrics import compute_metrics, decode_for_metrics
from visionloop.sample import CLIP_NAME, build_sample, luminance, sampled_frames
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.collect import CollectStage, frame_rel_path

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


def manifest_rows(truth: dict[str, Any], files: list[str]) -> list[str]:
    """The rel_paths collect should write: each file on disk, a video by its sampled frames."""
    rows = [f for f in files if f not in truth["videos"]]
    return sorted(rows + [r for v in truth["videos"].values() for r in v["frames"]])


def _null(value: Any) -> Any:
    """None for a missing manifest value (a row of mixed dtypes reads it back as NaN)."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def test_layout_and_totals(sample: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    out, truth, summary = sample
    files = image_files(out)
    assert len(files) == N == truth["n"] == summary["files"]
    assert list(truth["videos"]) == [CLIP_NAME] and CLIP_NAME in files
    assert summary["videos"] == 1 and summary["frames"] == len(truth["videos"][CLIP_NAME]["frames"])
    rows = manifest_rows(truth, files)
    assert rows == sorted(truth["files"])
    assert len(rows) == summary["rows"] == N - 1 + summary["frames"]
    assert {f.split("/")[0] for f in files} == {"cam_a", "cam_b", "notes.txt"}
    kinds = summary["kinds"]
    for kind in ("corrupt", "truncated", "wrong_extension", "orientation_6", "text"):
        assert kinds[kind] == 1
    for kind in ("blurry", "dark", "overexposed", "exact_duplicate", "near_duplicate"):
        assert kinds[kind] >= 1
    assert kinds["video_frame"] == summary["frames"]
    assert summary["expected"]["accepted"] + summary["expected"]["quarantined"] == len(rows)
    assert summary["collect"]["reasons"] == {
        "corrupt": 1,
        "duplicate_exact": kinds["exact_duplicate"],
        "extension_mismatch": 1,
        "truncated": 1,
        "unsupported_format": 1,
    }
    assert summary["expected"]["quarantined"] / len(rows) < 0.5
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
    assert summary.input == len(truth["files"]) == len(df)
    assert sorted(df.index) == sorted(truth["files"])
    for rel, entry in truth["files"].items():
        row = df.loc[rel]
        reason = row.reason if isinstance(row.reason, str) else None
        assert (row.status, reason) == (entry["collect"]["status"], entry["collect"]["reason"]), rel
        if entry["sha256"]:  # a frame's: the sha256 of its PNG, as collect stores it
            assert row.item_id == entry["sha256"], rel
        if entry["video"]:
            assert row.collect_video_uri == str(out / "images" / entry["video"])
            assert row.collect_frame_index == entry["frame_index"]
            assert _null(row.exif_orientation) is None
        if entry["duplicate_of"]:
            assert row.duplicate_of == str(out / "images" / entry["duplicate_of"])
        if row.status == "accepted":
            assert (row.width, row.height) == (entry["width"], entry["height"]), rel
            assert _null(row.capture_time) == entry["capture_time"], rel
            assert (_null(row.camera_make), _null(row.camera_model)) == (
                entry["make"],
                entry["model"],
            ), rel
            assert bool(row.has_gps) == (entry["gps"] is not None)
            if entry["gps"]:
                assert row.gps_lat == pytest.approx(entry["gps"]["lat"], abs=1e-6)
                assert row.gps_lon == pytest.approx(entry["gps"]["lon"], abs=1e-6)


def test_planted_defects_are_real(sample: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    out, truth, _ = sample
    lumas: dict[str, list[float]] = {}
    for rel, e in truth["files"].items():
        if e["kind"] == "video_frame":  # not a file on disk (test_clip_frames_are_distinct)
            continue
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
    assert 0.2 <= len(with_faces) / len(files) <= 0.5
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


def test_clip_frames_are_in_truth_and_not_near_duplicates(
    sample: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    """The clip's sampled frames are recorded as collect will see them, pass every curate
    quality check and lie far outside curate's pHash radius of each other and of every image."""
    out, truth, _ = sample
    clip = truth["videos"][CLIP_NAME]
    data = (out / "images" / CLIP_NAME).read_bytes()
    assert hashlib.sha256(data).hexdigest() == clip["sha256"]
    assert (clip["fps"], clip["frames_total"], clip["codec"]) == (10.0, 32, "MJPG")
    assert clip["frames"] == [frame_rel_path(CLIP_NAME, i) for i in (0, 10, 20, 30)]
    frames = sampled_frames(data)  # decoded as collect decodes them, at its default 1 frame/s
    assert [f.index for f in frames] == [0, 10, 20, 30]
    cfg = CurateParams()
    measured = []
    for rel, frame in zip(clip["frames"], frames, strict=True):
        e = truth["files"][rel]
        assert (e["kind"], e["status"], e["reason"], e["expected"]["stage"]) == (
            "video_frame",
            "accepted",
            None,
            None,
        )
        assert e["collect"] == {"status": "accepted", "reason": None}
        assert (e["camera"], e["make"], e["model"], e["capture_time"], e["gps"]) == (
            "cam_a",
            None,
            None,
            None,
            None,
        )
        assert (e["video"], e["frame_index"], e["day_night"]) == (CLIP_NAME, frame.index, "day")
        assert hashlib.sha256(video.encode_png(frame.rgb)).hexdigest() == e["sha256"]
        assert frame.rgb.shape == (e["height"], e["width"], 3) == (480, 640, 3)
        assert luminance(frame.rgb) == pytest.approx(e["mean_luma"], abs=0.01)
        assert e["face_sources"] == [clip["face_source"]]
        assert clip["face_source"] in {"astronaut", "grace_hopper"}
        ((x0, y0, x1, y1),) = e["faces"]
        assert 0 <= x0 < x1 <= e["width"] and 0 <= y0 < y1 <= e["height"]
        assert 90 <= y1 - y0 <= 120
        measured.append(compute_metrics(frame.rgb, cfg.work_max_side, "rgb"))
    lefts = [truth["files"][rel]["faces"][0][0] for rel in clip["frames"]]
    assert np.diff(lefts).tolist() == [40.0, 40.0, 40.0]  # the walker drifts right in view

    metrics = pd.DataFrame(measured)
    flags = flag_quality(metrics, cfg)
    assert not flags.to_numpy().any(), flags  # seed 0: not even a record-only flag
    frame_hashes = hex_to_uint64(metrics["phash"])
    _, _, apart = hamming_pairs(frame_hashes, 64)
    assert len(apart) == 6 and int(apart.min()) == 22  # measured; curate.phash_radius is 8
    # ... and no frame is a near duplicate of any accepted still image either
    stills = []
    for rel, e in truth["files"].items():
        if e["kind"] in ("clean", "orientation_6"):
            pixels, _ = decode_for_metrics(
                (out / "images" / rel).read_bytes(), work_max_side=cfg.work_max_side
            )
            stills.append(compute_metrics(pixels, cfg.work_max_side, "bgr")["phash"])
    hashes = np.concatenate([frame_hashes, hex_to_uint64(np.array(stills, dtype=object))])
    i, _, _ = hamming_pairs(hashes, cfg.phash_radius)
    assert not (i < len(frame_hashes)).any()


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
