"""Curate stage end to end on a workspace of planted images: reasons, flags, cache, reruns."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
        {"run": {"data_dir": str(tmp_path / "data"), "shard_size": 3, "max_workers": 1}}
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
