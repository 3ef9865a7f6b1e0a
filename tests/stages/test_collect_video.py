"""collect with video files: sampled frames as PNG rows, rejected videos, incremental reruns."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from visionloop import storage, video
from visionloop.config import CollectParams, Params
from visionloop.stages import collect as collect_mod
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.collect import CollectStage

W, H = 320, 240
FACE = 48  # side of the face pasted into each frame


def face_patch() -> np.ndarray:
    """The astronaut's face (a real face from scikit-image's data), FACE x FACE, RGB."""
    import skimage.data

    return cv2.resize(skimage.data.astronaut()[30:200, 150:320], (FACE, FACE))


def face_x(i: int) -> int:
    return 10 + 8 * i


def scene(i: int) -> np.ndarray:
    """Frame ``i`` (RGB): a textured background with the face at (face_x(i), 90)."""
    rng = np.random.default_rng(7)
    frame = rng.integers(30, 120, (H, W, 3), dtype=np.uint8)
    frame[90 : 90 + FACE, face_x(i) : face_x(i) + FACE] = face_patch()
    return frame


def write_video(
    path: Path, n: int = 12, fps: float = 10.0, fourcc: str = "MJPG", static: bool = False
) -> None:
    """``n`` frames at ``fps``: the face moving right 8 px per frame (or standing still)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.ascontiguousarray(scene(0 if static else i)[:, :, ::-1]))
    writer.release()


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "cam").mkdir(parents=True)
    write_video(root / "cam" / "clip.avi")
    (root / "cam" / "still.png").write_bytes(png(scene(3)[:48, :64]))
    (root / "cam" / "bad.avi").write_bytes(b"not a video at all" * 50)
    (root / "cam" / "empty.mp4").write_bytes(b"")
    # A real AVI whose codec FourCC no decoder knows: container fine, codec missing.
    write_video(root / "cam" / "codec.avi", n=3)
    data = (root / "cam" / "codec.avi").read_bytes()
    (root / "cam" / "codec.avi").write_bytes(data.replace(b"MJPG", b"ZZZZ"))
    return root


def make_params(tmp_path: Path, source: Path, **collect: object) -> Params:
    base = {
        "run.data_dir": str(tmp_path / "data"),
        "run.shard_size": 2,
        "collect.source": str(source),
        "collect.video_fps": 5.0,
    }
    base.update({f"collect.{k}": v for k, v in collect.items()})
    return Params().with_overrides(base)


def run(params: Params) -> tuple[pd.DataFrame, object]:
    ws = Workspace.from_params(params)
    summary = run_stage(CollectStage(), ws, params)
    return storage.read_table(ws.manifest_uri("collect")).set_index("source_uri"), summary


def test_default_video_extensions_match_the_video_module() -> None:
    assert CollectParams().video_extensions == list(video.VIDEO_EXTENSIONS)


def test_frames_become_png_rows_and_broken_videos_one_row_each(
    tmp_path: Path, source: Path
) -> None:
    params = make_params(tmp_path, source)
    df, summary = run(params)
    clip = str(source / "cam" / "clip.avi")
    frames = df[df["collect_video_uri"] == clip]
    # 12 frames at 10 fps sampled at 5 per second: every 2nd frame
    assert frames["collect_frame_index"].tolist() == [0, 2, 4, 6, 8, 10]
    assert frames["collect_frame_time_s"].tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert list(frames.index) == [f"{clip}#frame={i:06d}" for i in (0, 2, 4, 6, 8, 10)]
    assert frames["rel_path"].tolist() == [
        f"cam/clip.avi/frame_{i:06d}.png" for i in (0, 2, 4, 6, 8, 10)
    ]
    assert (frames["status"] == "accepted").all() and frames["collect_video_note"].isna().all()
    assert set(frames["format"]) == {"PNG"} and set(frames["mode"]) == {"RGB"}
    assert set(frames["width"]) == {W} and set(frames["height"]) == {H}
    assert set(frames["channels"]) == {3} and not frames["has_gps"].any()
    ws = Workspace.from_params(params)
    for uri, row in frames.iterrows():
        data = Path(ws.resolve(row["object_uri"])).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["item_id"] == row["object_uri"][-68:-4]
        assert row["object_uri"] == f"collect/objects/{row['item_id'][:2]}/{row['item_id']}.png"
        assert row["size_bytes"] == len(data)
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and not im.info and not im.getexif()
            got = np.asarray(im)
        # lossless: the very pixels OpenCV decoded from the video
        cap = cv2.VideoCapture(clip)
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(row["collect_frame_index"]))
        ok, bgr = cap.read()
        cap.release()
        assert ok and np.array_equal(got, bgr[:, :, ::-1]), uri
    # the face moved: frame 10 shows it 80 px right of frame 0
    first = np.asarray(Image.open(ws.resolve(frames["object_uri"].iloc[0]))).astype(int)
    last = np.asarray(Image.open(ws.resolve(frames["object_uri"].iloc[-1]))).astype(int)
    face = face_patch().astype(int)
    x = face_x(10)
    assert np.abs(first[90:138, 10:58] - face).mean() < 8
    assert np.abs(last[90:138, x : x + FACE] - face).mean() < 8

    # rejected videos: ONE quarantined row each, under their own uri
    bad = df.loc[str(source / "cam" / "bad.avi")]
    assert (bad["status"], bad["reason"]) == ("quarantined", "corrupt")
    assert "no known container header" in bad["reason_detail"]
    assert bad["item_id"] == hashlib.sha256(b"not a video at all" * 50).hexdigest()
    codec = df.loc[str(source / "cam" / "codec.avi")]
    assert codec["reason"] == "unsupported_format" and "'ZZZZ'" in codec["reason_detail"]
    empty = df.loc[str(source / "cam" / "empty.mp4")]
    assert (empty["reason"], empty["item_id"]) == ("empty_file", hashlib.sha256(b"").hexdigest())
    for row in (bad, codec, empty):
        assert row["collect_video_uri"] == row.name and pd.isna(row["collect_frame_index"])
        assert pd.isna(row["object_uri"])
    still = df.loc[str(source / "cam" / "still.png")]
    assert still["status"] == "accepted" and pd.isna(still["collect_video_uri"])

    assert (summary.input, summary.accepted, summary.quarantined) == (10, 7, 3)
    assert summary.reasons == {"corrupt": 1, "empty_file": 1, "unsupported_format": 1}
    assert summary.details["listed"] == 5 and summary.details["videos"] == 4
    assert summary.details["video_frames"] == 6 and summary.details["objects_written"] == 7
    schema = pq.read_schema(ws.manifest_uri("collect"))
    assert [str(schema.field(c).type) for c in collect_mod.COLLECT_SCHEMA.names[-4:]] == [
        "string",
        "int64",
        "double",
        "string",
    ]


@pytest.mark.parametrize(
    ("fps", "max_frames", "indices"),
    [
        (10.0, 300, list(range(12))),
        (10.0, 4, [0, 1, 2, 3]),
        (2.5, 300, [0, 4, 8]),
        (1.0, 300, [0, 10]),
        (50.0, 5, [0, 1, 2, 3, 4]),  # faster than the video: every frame, capped
    ],
)
def test_sampling_rate_and_cap_come_from_params(
    tmp_path: Path, fps: float, max_frames: int, indices: list[int]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "clip.avi")
    df, _ = run(make_params(tmp_path, src, video_fps=fps, video_max_frames=max_frames))
    assert df["collect_frame_index"].tolist() == indices
    assert df["collect_frame_time_s"].tolist() == pytest.approx([i / 10 for i in indices])


def test_mp4_and_static_video_frames_deduplicated(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "moving.mp4", fourcc="mp4v")
    write_video(src / "static.avi", n=6, static=True)
    df, summary = run(make_params(tmp_path, src, video_fps=10.0))
    moving = df[df["rel_path"].str.startswith("moving.mp4/")]
    assert len(moving) == 12 and (moving["status"] == "accepted").all()
    static = df[df["rel_path"].str.startswith("static.avi/")].sort_values("collect_frame_index")
    # FFmpeg's MJPEG decoder returns the first frame of this clip slightly differently (not
    # bit-exact to the rest), so 2 distinct frames; the other 4 repeat frame 1 exactly.
    with video.VideoSampler(str(src / "static.avi"), 10.0, 100) as v:
        distinct = [hashlib.sha256(f.rgb.tobytes()).hexdigest() for f in v.frames()]
    assert len(set(distinct)) == 2 and len(set(distinct[1:])) == 1
    assert static["item_id"].nunique() == 2  # same pixels, same PNG bytes
    assert static["status"].tolist() == ["accepted"] * 2 + ["quarantined"] * 4
    assert set(static["reason"].dropna()) == {"duplicate_exact"}
    kept = f"{src / 'static.avi'}#frame=000001"
    assert set(static["duplicate_of"].dropna()) == {kept}  # the earliest copy is kept
    assert summary.reasons == {"duplicate_exact": 4}


def test_too_large_videos_by_pixels_and_by_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "clip.avi", n=3)
    df, _ = run(make_params(tmp_path, src, max_pixels=W * H - 1))
    (row,) = df.itertuples()
    assert (row.reason, row.rel_path) == ("too_large", "clip.avi")
    assert f"{W}x{H} = {W * H} pixels" in row.reason_detail
    assert row.item_id == hashlib.sha256((src / "clip.avi").read_bytes()).hexdigest()
    size = (src / "clip.avi").stat().st_size
    df, _ = run(make_params(tmp_path, src, video_max_bytes=size - 1))
    (row,) = df.itertuples()
    assert row.reason == "too_large"
    assert (
        row.reason_detail
        == f"video file is {size} bytes, above collect.video_max_bytes ({size - 1}); not read"
    )


def test_damaged_video_keeps_the_frames_read_before_the_damage(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "clip.avi")
    data = (src / "clip.avi").read_bytes()
    (src / "clip.avi").write_bytes(data[: len(data) // 2])
    df, summary = run(make_params(tmp_path, src, video_fps=10.0))
    assert df["collect_frame_index"].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert (df["status"] == "accepted").all()
    assert set(df["collect_video_note"]) == {
        "decoding stopped at frame 7 of 12 declared (truncated or damaged); 7 sampled frame(s) kept"
    }
    assert summary.details["videos_cut_short"] == 1


def test_rerun_reuses_every_frame_row_without_decoding(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    decoded: list[int] = []
    real_sampler = collect_mod.video.VideoSampler
    real_probe = collect_mod.imaging.probe_and_decode

    class Counting(real_sampler):  # type: ignore[misc,valid-type]
        def __enter__(self) -> video.VideoSampler:
            opened.append(self.label)
            return super().__enter__()

    def probe(data: bytes, max_pixels: int):  # type: ignore[no-untyped-def]
        decoded.append(len(data))
        return real_probe(data, max_pixels)

    monkeypatch.setattr(collect_mod.video, "VideoSampler", Counting)
    monkeypatch.setattr(collect_mod.imaging, "probe_and_decode", probe)
    params = make_params(tmp_path, source)
    first, _ = run(params)
    assert sorted(opened) == ["cam/bad.avi", "cam/clip.avi", "cam/codec.avi"]
    assert len(decoded) == 1  # still.png

    opened.clear(), decoded.clear()
    second, summary = run(params)
    assert opened == [] and decoded == []
    assert summary.details["reused"] == 5 and summary.details["reused_rows"] == 10
    assert summary.details["to_process"] == 0
    pd.testing.assert_frame_equal(first, second)

    # another sampling rate re-reads the videos only, never the images
    second_params = make_params(tmp_path, source, video_fps=2.5)
    third, summary = run(second_params)
    assert sorted(opened) == ["cam/bad.avi", "cam/clip.avi", "cam/codec.avi"]
    assert decoded == [] and summary.details["reused"] == 1  # still.png
    clip = str(source / "cam" / "clip.avi")
    assert third.loc[third["collect_video_uri"] == clip, "collect_frame_index"].tolist() == [
        0,
        4,
        8,
    ]

    # one frame object missing: the whole video is sampled again, and the object rewritten
    ws = Workspace.from_params(second_params)
    lost = ws.resolve(third.loc[f"{clip}#frame=000004", "object_uri"])
    os.remove(lost)
    opened.clear()
    fourth, summary = run(second_params)
    assert opened == ["cam/clip.avi"] and summary.details["objects_written"] == 1
    assert os.path.exists(lost)
    pd.testing.assert_frame_equal(third, fourth)

    # the video removed from the source: all its frame rows go, counted as one file
    os.remove(source / "cam" / "clip.avi")
    fifth, summary = run(second_params)
    assert summary.details["removed_since_last_run"] == 1 and len(fifth) == len(fourth) - 3


def test_video_on_a_remote_filesystem(tmp_path: Path) -> None:
    """memory:// stands in for s3://: the video is streamed to a temp file for OpenCV."""
    local = tmp_path / "clip.avi"
    write_video(local, n=4)
    root = f"memory://collect-video-{tmp_path.name}"
    try:
        storage.write_bytes_atomic(f"{root}/src/clip.avi", local.read_bytes())
        params = Params().with_overrides(
            {
                "run.data_dir": f"{root}/data",
                "collect.source": f"{root}/src",
                "collect.video_fps": 10.0,
            }
        )
        ws = Workspace.from_params(params)
        summary = run_stage(CollectStage(), ws, params)
        df = storage.read_table(ws.manifest_uri("collect"))
        assert summary.accepted == 4 and summary.details["video_frames"] == 4
        (video_uri,) = set(df["collect_video_uri"])
        assert video_uri.endswith("/src/clip.avi")  # as the listing spells it (memory:///...)
        assert df["source_uri"].tolist() == [f"{video_uri}#frame={i:06d}" for i in range(4)]
        for rel, iid in zip(df["object_uri"], df["item_id"], strict=True):
            assert hashlib.sha256(storage.read_bytes(ws.resolve(rel))).hexdigest() == iid
        assert run_stage(CollectStage(), ws, params).details["reused"] == 1
    finally:
        storage.remove(root, recursive=True)


@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [("quarantine", "quarantined", "extension_mismatch"), ("accept", "accepted", None)],
)
def test_an_image_named_as_a_video_is_an_extension_mismatch(
    tmp_path: Path, mode: str, status: str, reason: str | None
) -> None:
    # FFmpeg would open a lone JPEG as a one-frame video: the content decides, not the name
    root = tmp_path / "src"
    root.mkdir()
    buf = io.BytesIO()
    Image.fromarray(scene(2)).save(buf, "JPEG", quality=90)
    (root / "photo.mp4").write_bytes(buf.getvalue())
    (root / "text.mkv").write_bytes(b"hello " * 100)  # neither video nor image: corrupt
    df, _ = run(make_params(tmp_path, root, on_extension_mismatch=mode))
    row = df.loc[str(root / "photo.mp4")]
    got_reason = None if pd.isna(row["reason"]) else row["reason"]
    assert len(df) == 2 and (row["status"], got_reason) == (status, reason)
    assert row["item_id"] == hashlib.sha256(buf.getvalue()).hexdigest()
    if mode == "quarantine":
        assert row["reason_detail"] == "content is JPEG, name says .mp4 (a video extension)"
        assert pd.isna(row["object_uri"])
    else:  # accepted as the image it is: one row, the bytes stored unchanged, no frame columns
        assert row["format"] == "JPEG" and (row["width"], row["height"]) == (W, H)
        assert row["rel_path"] == "photo.mp4" and pd.isna(row["collect_frame_index"])
        assert row["object_uri"].endswith(".jpg")
    text = df.loc[str(root / "text.mkv")]
    assert (text["status"], text["reason"]) == ("quarantined", "corrupt")


def test_image_format_of_reads_headers_only() -> None:
    from visionloop.imaging import image_format_of

    buf = io.BytesIO()
    Image.fromarray(scene(0)[:32, :32]).save(buf, "PNG")
    assert image_format_of(buf.getvalue()[:64]) == "PNG"
    gif = io.BytesIO()
    Image.fromarray(scene(0)[:32, :32]).convert("P").save(gif, "GIF")
    assert image_format_of(gif.getvalue()) == "GIF"
    assert image_format_of(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64) is None
    assert image_format_of(b"RIFF\x00\x00\x00\x00AVI LIST") is None
    assert image_format_of(b"hello " * 20) is None
