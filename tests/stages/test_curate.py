"""Curate stage end to end on a workspace of planted images: reasons, flags, cache, reruns."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.curate import synthetic as S
from tests.helpers import mock_manifest
from visionloop import storage
from visionloop.config import Params
from visionloop.curate import metrics
from visionloop.manifest import ManifestError
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.curate import CurateStage

# row -> (what is planted, expected status/reason after curate)
PLANTED = {
    0: ("sharp A", None),
    1: ("near copy of A", "near_duplicate"),
    2: ("blurred", "blurry"),
    3: ("dark", "too_dark"),
    4: ("washed out", "overexposed"),
    5: ("flat", "low_information"),
    6: ("sharp B, shot at 23:00", None),
    7: ("blurred and dark", "blurry"),
    8: ("quarantined by collect", "corrupt"),
    9: ("published bytes do not decode", "corrupt"),
}


def _images() -> dict[int, bytes]:
    rng = np.random.default_rng(2024)
    a = S.texture(rng)
    b = S.texture(rng)
    c = S.texture(rng)
    return {
        0: S.jpeg(a),
        1: S.jpeg(S.near_copy(a)),
        2: S.jpeg(S.blurred(S.texture(rng), 3.5)),
        3: S.jpeg(S.darkened(S.texture(rng), 0.1)),
        4: S.jpeg(S.washed_out(S.texture(rng), 0.05)),
        5: S.jpeg(S.flat(rng)),
        6: S.jpeg(b),
        7: S.jpeg(S.darkened(S.blurred(c, 6.0), 0.25)),
        9: b"\xff\xd8\xff\xe0 this is not really a jpeg",
    }


def _write_image(ws: Workspace, rel: str, data: bytes) -> None:
    storage.write_bytes_atomic(ws.resolve(rel), data)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Workspace, Params, pd.DataFrame]:
    params = Params.model_validate(
        {
            "run": {"data_dir": str(tmp_path / "data"), "shard_size": 3, "max_workers": 1},
            "curate": {"report": False},
        }
    )
    ws = Workspace.from_params(params)
    df = mock_manifest("anonymize", n=10, quarantine={8: ("corrupt", "collect")})
    for i, data in _images().items():
        rel = df.at[i, "anonymize_object_uri"]
        _write_image(ws, rel, data)
        df.at[i, "anonymize_sha256"] = hashlib.sha256(data).hexdigest()
        df.at[i, "width"], df.at[i, "height"] = (320, 240) if i != 1 else (304, 228)
    df.at[6, "capture_time"] = "2024-03-01T23:10:00"
    storage.write_table(ws.manifest_uri("anonymize"), df)
    return ws, params, df


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every decode the stage does (the expensive step the cache must skip)."""
    calls: list[int] = []
    real = metrics.decode_for_metrics

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "decode_for_metrics", counting)
    return calls


def _read(ws: Workspace) -> pd.DataFrame:
    return storage.read_table(ws.manifest_uri("curate")).set_index("source_uri")


def test_reasons_flags_and_columns(setup, decodes) -> None:
    ws, params, before = setup
    summary = run_stage(CurateStage(), ws, params)
    out = storage.read_table(ws.manifest_uri("curate"))
    assert out["source_uri"].tolist() == before["source_uri"].tolist()
    reasons = {i: (r if isinstance(r, str) else None) for i, r in enumerate(out["reason"])}
    assert reasons == {i: r for i, (_, r) in PLANTED.items()}
    assert out.loc[8, "quarantined_by"] == "collect"  # earlier decisions untouched
    assert out.loc[9, "quarantined_by"] == "curate"
    assert "does not decode" in out.loc[9, "reason_detail"]

    # flags are kept even when another reason won: row 7 is blurry AND dark
    assert bool(out.loc[7, "curate_is_blurry"]) and bool(out.loc[7, "curate_is_dark"])
    assert out.loc[1, "curate_near_duplicate_of"] == before.loc[0, "source_uri"]
    assert bool(out.loc[1, "curate_is_near_duplicate"])
    assert 0 <= out.loc[1, "curate_near_duplicate_distance"] <= params.curate.phash_radius
    assert "to kept copy /src/img_000.jpg" in out.loc[1, "reason_detail"]
    assert "blur score" in out.loc[2, "reason_detail"]
    assert pd.isna(out.loc[0, "curate_near_duplicate_of"])
    # accepted rows are clean on every flag
    for i in (0, 6):
        for flag in ("blurry", "dark", "overexposed", "low_information", "near_duplicate"):
            assert not bool(out.loc[i, f"curate_is_{flag}"])
    assert (out.loc[6, "curate_day_night"], out.loc[6, "curate_day_night_source"]) == (
        "night",
        "exif",
    )
    assert (out.loc[0, "curate_day_night"], out.loc[0, "curate_day_night_source"]) == (
        "day",
        "brightness",
    )
    assert out.loc[3, "curate_day_night"] == "night"  # dark, no EXIF hour

    # rows not processed carry nulls; processed ones carry bounded metrics
    for col in ("curate_blur_score", "curate_phash", "curate_is_blurry", "curate_day_night"):
        assert pd.isna(out.loc[8, col]) and pd.isna(out.loc[9, col])
    measured = out.drop(index=[8, 9])
    assert measured["curate_blur_score"].between(0, 1).all()
    assert measured["curate_brightness"].between(0, 1).all()
    assert measured["curate_entropy"].between(0, 8).all()
    assert measured["curate_phash"].str.fullmatch(r"[0-9a-f]{16}").all()

    schema = pq.read_schema(ws.manifest_uri("curate"))
    assert str(schema.field("width").type) == "int32"  # upstream types preserved
    for flag in ("blurry", "dark", "overexposed", "low_information", "near_duplicate"):
        assert str(schema.field(f"curate_is_{flag}").type) == "bool"
    assert str(schema.field("curate_blur_score").type) == "double"

    assert summary.input == 10 and summary.accepted == 2 and summary.quarantined == 8
    assert summary.reasons == {
        "blurry": 2,
        "corrupt": 2,
        "low_information": 1,
        "near_duplicate": 1,
        "overexposed": 1,
        "too_dark": 1,
    }
    assert summary.details["flags"]["curate_is_dark"] == 2
    assert summary.details["measured"] == 9 and summary.details["cached"] == 0
    assert len(decodes) == 9
    feats = storage.read_table(ws.uri("curate", "features.parquet"))
    assert len(feats) == 9 and feats["error"].notna().sum() == 1
    assert not storage.exists(ws.uri("curate", "_work"))


def test_rerun_decodes_nothing_and_changes_nothing(setup, decodes) -> None:
    ws, params, _ = setup
    run_stage(CurateStage(), ws, params)
    first = storage.read_table(ws.manifest_uri("curate"))
    n_first = len(decodes)
    summary = run_stage(CurateStage(), ws, params)
    assert len(decodes) == n_first  # the corrupt item is cached too: nothing decoded
    assert summary.details["measured"] == 0 and summary.details["cached"] == 9
    pd.testing.assert_frame_equal(storage.read_table(ws.manifest_uri("curate")), first)


def test_rethreshold_reuses_metrics(setup, decodes) -> None:
    ws, params, _ = setup
    run_stage(CurateStage(), ws, params)
    n_first = len(decodes)
    looser = params.with_overrides({"curate.blur_threshold": 0.0})
    run_stage(CurateStage(), ws, looser)
    assert len(decodes) == n_first
    out = storage.read_table(ws.manifest_uri("curate"))
    assert out.loc[2, "status"] == "accepted" and not bool(out.loc[2, "curate_is_blurry"])
    assert out.loc[7, "reason"] == "too_dark"  # the next flag in precedence takes over


def test_work_size_change_recomputes(setup, decodes) -> None:
    ws, params, _ = setup
    run_stage(CurateStage(), ws, params)
    n_first = len(decodes)
    run_stage(CurateStage(), ws, params.with_overrides({"curate.work_max_side": 256}))
    assert len(decodes) == 2 * n_first


def test_republished_image_is_measured_again(setup, decodes) -> None:
    ws, params, before = setup
    run_stage(CurateStage(), ws, params)
    n_first = len(decodes)
    data = S.jpeg(S.blurred(S.texture(np.random.default_rng(9)), 4.0))
    _write_image(ws, before.at[6, "anonymize_object_uri"], data)
    before.at[6, "anonymize_sha256"] = hashlib.sha256(data).hexdigest()
    storage.write_table(ws.manifest_uri("anonymize"), before)
    summary = run_stage(CurateStage(), ws, params)
    assert len(decodes) == n_first + 1
    assert (summary.details["measured"], summary.details["cached"]) == (1, 8)
    assert storage.read_table(ws.manifest_uri("curate")).loc[6, "reason"] == "blurry"


def test_unreadable_image_is_quarantined_and_retried(setup, decodes) -> None:
    ws, params, before = setup
    storage.remove(ws.resolve(before.at[6, "anonymize_object_uri"]))
    run_stage(CurateStage(), ws, params)
    out = storage.read_table(ws.manifest_uri("curate"))
    assert out.loc[6, "reason"] == "unreadable"
    assert "FileNotFoundError" in out.loc[6, "reason_detail"]
    feats = storage.read_table(ws.uri("curate", "features.parquet"))
    assert before.at[6, "item_id"] not in set(feats["item_id"])  # not cached: retried next run
    assert len(CurateStage().plan(ws, params)) == 1


def test_accepted_row_without_published_image_is_an_error(setup) -> None:
    ws, params, before = setup
    before.at[0, "anonymize_object_uri"] = None
    storage.write_table(ws.manifest_uri("anonymize"), before)
    with pytest.raises(ManifestError, match="no published image"):
        CurateStage().plan(ws, params)


def test_nothing_accepted(tmp_path: Path) -> None:
    params = Params.model_validate({"run": {"data_dir": str(tmp_path / "d")}})
    ws = Workspace.from_params(params)
    df = mock_manifest(
        "anonymize", n=2, quarantine={0: ("corrupt", "collect"), 1: ("corrupt", "collect")}
    )
    storage.write_table(ws.manifest_uri("anonymize"), df)
    summary = run_stage(CurateStage(), ws, params)
    assert (summary.accepted, summary.quarantined) == (0, 2)
    out = storage.read_table(ws.manifest_uri("curate"))
    assert out["curate_blur_score"].isna().all()


# --- new flags, duplicate tiers, leakage, coverage, refresh ----------------------------------


def _workspace(
    tmp_path: Path,
    images: dict[str, bytes],
    sizes: dict[str, tuple[int, int]] | None = None,
    extra: dict[str, dict[str, object]] | None = None,
    **curate: object,
) -> tuple[Workspace, Params, pd.DataFrame]:
    """An anonymize manifest whose accepted rows are ``images`` (rel_path -> published bytes)."""
    params = Params.model_validate(
        {
            "run": {"data_dir": str(tmp_path / "data"), "shard_size": 8, "max_workers": 1},
            "curate": {"report": False, "coverage": ["camera"], **curate},
        }
    )
    ws = Workspace.from_params(params)
    df = mock_manifest("anonymize", n=len(images))
    for i, (rel, data) in enumerate(images.items()):
        df.at[i, "rel_path"] = rel
        df.at[i, "source_uri"] = f"/src/{rel}"
        _write_image(ws, df.at[i, "anonymize_object_uri"], data)
        df.at[i, "anonymize_sha256"] = hashlib.sha256(data).hexdigest()
        w, h = (sizes or {}).get(rel, (320, 240))
        df.at[i, "width"], df.at[i, "height"] = w, h
        for col, value in (extra or {}).get(rel, {}).items():
            df.at[i, col] = value
    storage.write_table(ws.manifest_uri("anonymize"), df)
    return ws, params, df


def _tint(img: np.ndarray) -> np.ndarray:
    tint = np.array([40, 140, 255], np.float32)
    return np.clip(img.astype(np.float32) * 0.45 + tint * 0.55, 0, 255).astype(np.uint8)


def _new_flag_images() -> tuple[dict[str, bytes], dict[str, tuple[int, int]]]:
    rng = np.random.default_rng(77)
    gray = cv2.cvtColor(S.texture(rng), cv2.COLOR_BGR2GRAY)
    lossless = S.texture(rng)
    images = {
        "clean.jpg": S.jpeg(S.texture(rng)),
        "gray_as_rgb.jpg": S.jpeg(cv2.merge([gray, gray, gray])),
        "orange.jpg": S.jpeg(_tint(S.texture(rng))),
        "tiny.jpg": S.jpeg(S.texture(rng, 40, 30)),
        "strip.jpg": S.jpeg(S.texture(rng, 1800, 180)),
        "same_pixels_a.png": S.png(lossless),
        "same_pixels_b.png": cv2.imencode(".png", lossless, [cv2.IMWRITE_PNG_COMPRESSION, 9])[
            1
        ].tobytes(),
        "flat_1.jpg": S.jpeg(S.flat(rng)),
        "flat_2.jpg": S.jpeg(S.flat(rng)),
    }
    assert images["same_pixels_a.png"] != images["same_pixels_b.png"]
    sizes = {"tiny.jpg": (40, 30), "strip.jpg": (1800, 180)}
    return images, sizes


def test_new_flags_quarantine_or_only_inform(tmp_path: Path) -> None:
    images, sizes = _new_flag_images()
    ws, params, _ = _workspace(tmp_path, images, sizes)
    summary = run_stage(CurateStage(), ws, params)
    out = _read(ws).set_index("rel_path")
    reasons = {r: (x if isinstance(x, str) else None) for r, x in out["reason"].items()}
    assert reasons == {
        "clean.jpg": None,
        "gray_as_rgb.jpg": None,  # grayscale is a flag only (by default)
        "orange.jpg": None,  # colour cast too
        "tiny.jpg": "odd_size",
        "strip.jpg": "odd_aspect",
        "same_pixels_a.png": None,
        "same_pixels_b.png": "duplicate_pixels",
        "flat_1.jpg": "low_information",
        "flat_2.jpg": "low_information",
    }
    assert bool(out.at["gray_as_rgb.jpg", "curate_is_grayscale"])
    assert bool(out.at["orange.jpg", "curate_is_color_cast"])
    assert not out.loc[["clean.jpg", "orange.jpg"], "curate_is_grayscale"].any()
    assert not out.loc[["clean.jpg", "gray_as_rgb.jpg"], "curate_is_color_cast"].any()
    assert out.at["same_pixels_b.png", "curate_pixel_duplicate_of"] == "/src/same_pixels_a.png"
    assert "same decoded pixels" in out.at["same_pixels_b.png", "reason_detail"]
    pixel_hash = out["curate_pixel_hash"]
    assert pixel_hash["same_pixels_a.png"] == pixel_hash["same_pixels_b.png"]
    assert pixel_hash.nunique() == len(pixel_hash) - 1
    # near-flat frames share a degenerate pHash but are never grouped as near duplicates
    assert not out.loc[["flat_1.jpg", "flat_2.jpg"], "curate_is_near_duplicate"].any()
    assert "shorter side < curate.odd_size_min_side 64" in out.at["tiny.jpg", "reason_detail"]
    assert "aspect ratio 10.00" in out.at["strip.jpg", "reason_detail"]
    assert out.at["strip.jpg", "curate_aspect_ratio"] == pytest.approx(10.0)
    assert summary.details["flags"]["curate_is_grayscale"] == 1
    assert summary.details["pixel_duplicate_groups"] == 1
    schema = pq.read_schema(ws.manifest_uri("curate"))
    for flag in ("grayscale", "color_cast", "clipped", "odd_size", "pixel_duplicate", "split_leak"):
        assert str(schema.field(f"curate_is_{flag}").type) == "bool"

    # Informational flags quarantine when listed; a flag removed from the list only informs.
    strict = params.with_overrides(
        {"curate.quarantine": ["grayscale", "color_cast", "low_information", "pixel_duplicate"]}
    )
    run_stage(CurateStage(), ws, strict)
    out = _read(ws).set_index("rel_path")
    assert out.at["gray_as_rgb.jpg", "reason"] == "grayscale"
    assert out.at["orange.jpg", "reason"] == "color_cast"
    assert out.at["tiny.jpg", "status"] == "accepted" and bool(
        out.at["tiny.jpg", "curate_is_odd_size"]
    )


def _scene_set(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [S.texture(rng) for _ in range(n)]


def test_refresh_with_10_new_images_checks_them_against_everything(
    tmp_path: Path, decodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Acceptance: only the 10 new images are decoded, and the duplicate check runs the 10 new
    hashes against an index of all accepted ones (old included), with the old pairs reused."""
    from visionloop.curate import dedup

    scenes = _scene_set(40, seed=31)
    old = {f"old/{k:02d}.jpg": S.jpeg(img) for k, img in enumerate(scenes[:30])}
    old["old/30_copy_of_03.jpg"] = S.jpeg(S.near_copy(scenes[3]))  # a pair among old items
    ws, params, _ = _workspace(tmp_path, old, coverage_min_count=0, balanced_budget=0)
    run_stage(CurateStage(), ws, params)
    assert len(decodes) == 31

    new = {f"new/{k:02d}.jpg": S.jpeg(img) for k, img in enumerate(scenes[30:38])}
    new["new/copy_of_old_07.jpg"] = S.jpeg(S.near_copy(scenes[7]))  # new vs old
    new["new/copy_of_new_00.jpg"] = S.jpeg(S.near_copy(scenes[30]))  # new vs new
    assert len(new) == 10
    queries: list[tuple[int, int]] = []
    real = dedup.MultiIndexHash.query

    def spy(self, q, exclude_self=None):  # type: ignore[no-untyped-def]
        queries.append((len(self), len(q)))
        return real(self, q, exclude_self)

    monkeypatch.setattr(dedup.MultiIndexHash, "query", spy)
    monkeypatch.setattr(dedup, "BRUTE_MAX", 2)  # use the index even for 40 hashes
    ws, params, _ = _workspace(tmp_path, {**old, **new}, coverage_min_count=0, balanced_budget=0)
    summary = run_stage(CurateStage(), ws, params)

    assert len(decodes) == 31 + 10  # old features come from the cache
    assert (summary.details["measured"], summary.details["cached"]) == (10, 31)
    assert queries == [(41, 10)]  # one search: the 10 new hashes against all 41
    assert summary.details["dedup"] == {
        "indexed": 41,
        "searched": 10,
        "reused_pairs": 1,
        "pairs": 3,
    }
    out = _read(ws).set_index("rel_path")
    assert out.at["new/copy_of_old_07.jpg", "reason"] == "near_duplicate"
    assert out.at["new/copy_of_old_07.jpg", "curate_near_duplicate_of"] == "/src/old/07.jpg"
    assert out.at["new/copy_of_new_00.jpg", "curate_near_duplicate_of"] == "/src/new/00.jpg"
    assert out.at["old/30_copy_of_03.jpg", "reason"] == "near_duplicate"  # the reused pair

    # The incremental answer is exactly what a run from scratch decides.
    incremental = storage.read_table(ws.manifest_uri("curate"))
    storage.remove(ws.uri("curate"), recursive=True)
    run_stage(CurateStage(), ws, params)
    pd.testing.assert_frame_equal(storage.read_table(ws.manifest_uri("curate")), incremental)


def test_leakage_between_splits(tmp_path: Path) -> None:
    scenes = _scene_set(6, seed=41)
    images = {
        "train/a.jpg": S.jpeg(scenes[0]),
        "test/a_copy.jpg": S.jpeg(S.near_copy(scenes[0])),
        "train/b.jpg": S.jpeg(scenes[1]),
        "val/b_copy.jpg": S.jpeg(S.near_copy(scenes[1])),
        "train/c.jpg": S.jpeg(scenes[2]),
        "train/c_copy.jpg": S.jpeg(S.near_copy(scenes[2])),  # same split: no leak
        "test/d.jpg": S.jpeg(scenes[3]),
    }
    ws, params, _ = _workspace(tmp_path, images)
    run_stage(CurateStage(), ws, params)
    out = _read(ws).set_index("rel_path")
    assert out["curate_split"].to_dict() == {
        "train/a.jpg": "train",
        "test/a_copy.jpg": "test",
        "train/b.jpg": "train",
        "val/b_copy.jpg": "val",
        "train/c.jpg": "train",
        "train/c_copy.jpg": "train",
        "test/d.jpg": "test",
    }
    leaks = storage.read_table(ws.uri("curate", "leakage.parquet"))
    assert sorted(zip(leaks["split_a"], leaks["split_b"], strict=True)) == [
        ("train", "test"),
        ("train", "val"),
    ]
    assert (leaks["resolved_by"] == "near_duplicate").all()  # dedup already removed one copy
    assert not out["curate_is_split_leak"].any()

    # Near duplicates only flagged: leakage quarantines the training copy of each pair.
    flag_only = params.with_overrides(
        {"curate.quarantine": ["blurry", "dark", "overexposed", "low_information", "split_leak"]}
    )
    run_stage(CurateStage(), ws, flag_only)
    out = _read(ws).set_index("rel_path")
    assert out.loc[out["reason"] == "split_leakage"].index.tolist() == [
        "train/a.jpg",
        "train/b.jpg",
    ]
    assert out.at["train/a.jpg", "curate_split_leak_of"] == "/src/test/a_copy.jpg"
    assert out.at["train/c_copy.jpg", "status"] == "accepted"  # same split: a near copy only
    leaks = storage.read_table(ws.uri("curate", "leakage.parquet"))
    assert (leaks["resolved_by"] == "split_leakage").all()


def test_coverage_outputs_and_gate_columns(tmp_path: Path) -> None:
    scenes = _scene_set(12, seed=51)
    cams = {0: ("Acme", "A100"), 1: ("Birch", "B7")}
    images, extra = {}, {}
    for k, img in enumerate(scenes):
        rel = f"img_{k:02d}.jpg"
        images[rel] = S.jpeg(img)
        make, model = cams[0] if k < 9 else cams[1]
        extra[rel] = {
            "camera_make": make,
            "camera_model": model,
            "capture_time": "2024-05-01T12:00:00",  # EXIF hour: day, whatever the brightness
        }
    ws, params, _ = _workspace(
        tmp_path,
        images,
        extra=extra,
        coverage=["day_night", "camera"],
        coverage_min_count=4,
        balanced_budget=6,
    )
    summary = run_stage(CurateStage(), ws, params)
    cov = storage.read_table(ws.uri("curate", "coverage.parquet"))
    joint = cov[cov["slice"] == "day_night×camera"].set_index("cell")["count"].to_dict()
    assert joint == {"day | Acme A100": 9, "day | Birch B7": 3}
    gaps = storage.read_table(ws.uri("curate", "gaps.parquet"))
    assert gaps[["cell", "count", "needed"]].values.tolist() == [
        ["Birch B7", 3, 1],
        ["day | Birch B7", 3, 1],
    ]
    balanced = storage.read_table(ws.uri("curate", "balanced.parquet"))
    assert balanced["cell"].value_counts().to_dict() == {"day | Acme A100": 3, "day | Birch B7": 3}
    out = _read(ws).set_index("rel_path")
    assert out.at["img_00.jpg", "curate_cell"] == "day | Acme A100"
    assert out.at["img_00.jpg", "curate_cell_count"] == 9
    assert out.at["img_10.jpg", "curate_cell_share"] == pytest.approx(0.25)
    assert summary.details["coverage"] == {
        "dimensions": ["day_night", "camera"],
        "skipped_dimensions": [],
        "cells": 2,
        "gaps": 1,
        "images_needed": 1,
        "over_max_share": 1,
        "balanced": 6,
    }


def test_unknown_coverage_dimension_fails_before_any_decoding(setup, decodes) -> None:
    ws, params, _ = setup
    bad = params.with_overrides({"curate.coverage": ["weather"]})
    with pytest.raises(ManifestError, match="weather"):
        run_stage(CurateStage(), ws, bad)
    assert decodes == []


def test_report_shows_published_thumbnails_only(setup) -> None:
    ws, params, before = setup
    run_stage(CurateStage(), ws, params.with_overrides({"curate.report": True}))
    page = storage.read_text(ws.uri("curate", "report.html"))
    assert "<h1>Curate report</h1>" in page
    for section in ("metric histograms", "coverage heatmap", "Gaps", "Split leakage"):
        assert section in page
    out = storage.read_table(ws.manifest_uri("curate"))
    flagged = {
        c: int(out[c].fillna(False).astype(bool).sum())
        for c in out.columns
        if c.startswith("curate_is_")
    }
    assert flagged["curate_is_blurry"] == 2 and flagged["curate_is_near_duplicate"] == 1
    # one thumbnail per flagged image, plus the kept copy of the one near-duplicate group;
    # row 8 (quarantined by collect) has no published image and row 9 does not decode
    assert page.count("data:image/jpeg") == sum(flagged.values()) + 1
    assert "kept copy" in page
    assert before.at[8, "rel_path"] not in page


def test_report_is_not_rebuilt_when_nothing_changed(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    from visionloop.curate import report

    ws, params, _ = setup
    with_report = params.with_overrides({"curate.report": True})
    run_stage(CurateStage(), ws, with_report)
    thumbs: list[str] = []
    real = report.thumbnail

    def counting(ws_, rel):  # type: ignore[no-untyped-def]
        thumbs.append(rel)
        return real(ws_, rel)

    monkeypatch.setattr(report, "thumbnail", counting)
    run_stage(CurateStage(), ws, with_report)
    assert thumbs == []  # same tables, same params: the page is kept
    run_stage(CurateStage(), ws, with_report.with_overrides({"curate.blur_threshold": 0.1}))
    assert len(thumbs) > 0
