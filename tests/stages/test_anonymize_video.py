"""anonymize with video frames: one shard per video, the temporal hold, caching, pass-through."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.stages.test_collect_video import FACE, H, W, face_patch, face_x, write_video
from visionloop import storage
from visionloop.anonymize.detectors import Regions, register_detector, unregister_detector
from visionloop.config import Params
from visionloop.stages.anonymize import AnonymizeStage
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.collect import CollectStage

MISS = 5  # the frame where the test detector fails to see the face
FACE_Y = 90


class MissesOneFrame:
    """Finds the astronaut's face by template matching, except in frame MISS, which it knows
    from where the face is (it moves 8 px per frame). Counts its calls and logs the frame
    index of every face it sees (-1: the face in a still image)."""

    name = "misses_one"
    version = "1"
    model_sha256 = "0" * 64
    licence = "MIT"
    calls = 0
    seen: list[int] = []  # noqa: RUF012 (class-level log, reset by the fixture)

    def __init__(self, **kwargs: object) -> None:
        pass

    def detect(self, image_rgb: np.ndarray) -> Regions:
        type(self).calls += 1
        found = cv2.matchTemplate(image_rgb, face_patch(), cv2.TM_CCOEFF_NORMED)
        _, score, _, (x, y) = cv2.minMaxLoc(found)
        if score < 0.8:  # no face (or a redacted one)
            return Regions.empty()
        index = round((x - 10) / 8) if y == FACE_Y else -1
        type(self).seen.append(index)
        if index == MISS:
            return Regions.empty()
        return Regions([[x, y, x + FACE, y + FACE]], [0.9], ["face"])


@pytest.fixture
def detector() -> Iterator[type[MissesOneFrame]]:
    register_detector("misses_one", MissesOneFrame, clobber=True)
    MissesOneFrame.seen = []
    MissesOneFrame.calls = 0
    yield MissesOneFrame
    unregister_detector("misses_one")


def still(seed: int) -> bytes:
    """A plain image with the face in it (top left), not a frame."""
    px = np.random.default_rng(seed).integers(0, 200, (H, W, 3), dtype=np.uint8)
    px[20 : 20 + FACE, 30 : 30 + FACE] = face_patch()
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "PNG")
    return buf.getvalue()


def params(tmp_path: Path, **anonymize: object) -> Params:
    overrides: dict[str, object] = {
        "run.data_dir": str(tmp_path / "data"),
        "run.shard_size": 2,
        "collect.source": str(tmp_path / "src"),
        "collect.video_fps": 10.0,
        "anonymize.detector": "misses_one",
        "anonymize.hold_frames": 2,
        "curate.report": False,
    }
    overrides.update({f"anonymize.{k}": v for k, v in anonymize.items()})
    return Params().with_overrides(overrides)


@pytest.fixture
def collected(tmp_path: Path) -> Params:
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "clip.avi")  # 12 frames, the face at x = 10 + 8 i
    (src / "a_still.png").write_bytes(still(1))
    (src / "b_still.png").write_bytes(still(2))
    p = params(tmp_path)
    summary = run_stage(CollectStage(), Workspace.from_params(p), p)
    assert summary.accepted == 14
    return p


def frames(p: Params, name: str) -> pd.DataFrame:
    df = storage.read_table(storage.join(p.run.data_dir, "anonymize", name))
    m = storage.read_table(storage.join(p.run.data_dir, "anonymize", "manifest.parquet"))
    if "collect_frame_index" not in df.columns:
        df = df.merge(m[["item_id", "collect_frame_index"]], on="item_id", how="left")
    return df[df["collect_frame_index"].notna()].sort_values("collect_frame_index")


def pixels(p: Params, rel: str) -> np.ndarray:
    with Image.open(storage.join(p.run.data_dir, rel)) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def face_box(px: np.ndarray, i: int) -> np.ndarray:
    return px[FACE_Y : FACE_Y + FACE, face_x(i) : face_x(i) + FACE]


def test_a_video_is_one_shard_in_frame_order(collected: Params, detector: type) -> None:
    shards = AnonymizeStage().plan(Workspace.from_params(collected), collected)
    assert [s.stop - s.start for s in shards] == [2, 12]  # shard_size 2, the video whole
    work = shards[1].rows()
    assert work["collect_frame_index"].tolist() == list(range(12))
    assert work["sequence"].nunique() == 1 and shards[0].rows()["sequence"].isna().all()


def test_hold_redacts_the_face_the_detector_missed(collected: Params, detector: type) -> None:
    p = collected
    summary = run_stage(AnonymizeStage(), Workspace.from_params(p), p)
    assert (summary.accepted, summary.quarantined) == (14, 0)
    assert summary.details["video_sequences"] == 1 and summary.details["held_regions"] == 1
    # one detection per frame in frame order (frame MISS seen but not reported); the
    # verification of each published frame (and still) finds no face left
    assert [c for c in detector.seen if c >= 0] == list(range(12))
    assert detector.seen.count(-1) == 2 and detector.calls == 2 * 14
    m = frames(p, "manifest.parquet")
    assert m["anonymize_faces"].tolist() == [1] * 12
    regions = frames(p, "regions.parquet")
    assert regions["collect_frame_index"].tolist() == list(range(12))
    assert regions["held"].tolist() == [i == MISS for i in range(12)]
    held = regions[regions["held"]].iloc[0]
    # interpolated between frames 4 and 6: the face's own box, grown by the dilation
    assert held["x0"] <= face_x(MISS) and held["x1"] >= face_x(MISS) + FACE
    assert held["y0"] <= FACE_Y and held["y1"] >= FACE_Y + FACE
    audit = frames(p, "audit.parquet")
    missed = audit[audit["collect_frame_index"] == MISS].iloc[0]
    assert [r.get("held", False) for r in json.loads(missed["regions"])] == [True]
    for _, row in m.iterrows():
        i = int(row["collect_frame_index"])
        before = face_box(pixels(p, row["object_uri"]), i)
        after = face_box(pixels(p, row["anonymize_object_uri"]), i)
        assert np.abs(after - before).mean() > 25, f"frame {i}: face not redacted"
        assert np.abs(before - face_patch().astype(int)).mean() < 8  # it was there before


def test_without_the_hold_the_missed_frame_leaks(collected: Params, detector: type) -> None:
    p = params(Path(collected.run.data_dir).parent, hold_frames=0)
    run_stage(AnonymizeStage(), Workspace.from_params(p), p)
    m = frames(p, "manifest.parquet").set_index("collect_frame_index")
    assert m.loc[MISS, "anonymize_faces"] == 0
    before = face_box(pixels(p, m.loc[MISS, "object_uri"]), MISS)
    after = face_box(pixels(p, m.loc[MISS, "anonymize_object_uri"]), MISS)
    assert np.array_equal(before, after)  # published with the face: what the hold prevents
    assert not frames(p, "regions.parquet")["held"].any()


def test_rerun_reuses_a_video_only_whole(collected: Params, detector: type) -> None:
    p = collected
    ws = Workspace.from_params(p)
    first = run_stage(AnonymizeStage(), ws, p)
    assert first.details["processed"] == 14
    detector.calls = 0
    assert AnonymizeStage().plan(ws, p) == []
    again = run_stage(AnonymizeStage(), ws, p)
    assert detector.calls == 0 and again.details["reused"] == 14
    assert again.details["held_regions"] == 1  # the reused audit still says so
    # one frame's published object is gone: the whole video is redone, the images are not
    m = frames(p, "manifest.parquet")
    storage.remove(storage.join(p.run.data_dir, m["anonymize_object_uri"].iloc[3]))
    shards = AnonymizeStage().plan(ws, p)
    assert [s.stop - s.start for s in shards] == [12]
    summary = run_stage(AnonymizeStage(), ws, p)
    assert summary.details["processed"] == 12 and summary.details["reused"] == 2
    assert summary.details["held_regions"] == 1 and detector.calls == 2 * 12


def test_frame_columns_pass_through_anonymize_and_curate(collected: Params, detector: type) -> None:
    from visionloop.stages.curate import CurateStage

    p = collected
    ws = Workspace.from_params(p)
    run_stage(AnonymizeStage(), ws, p)
    run_stage(CurateStage(), ws, p)
    cols = ["collect_video_uri", "collect_frame_index", "collect_frame_time_s"]
    col_types = ["string", "int64", "double"]
    collect = storage.read_table(ws.manifest_uri("collect")).set_index("source_uri")[cols]
    for stage in ("anonymize", "curate"):
        schema = pq.read_schema(ws.manifest_uri(stage))
        assert [str(schema.field(c).type) for c in cols] == col_types, stage
        out = storage.read_table(ws.manifest_uri(stage)).set_index("source_uri")[cols]
        pd.testing.assert_frame_equal(out.loc[collect.index], collect, check_names=False)
