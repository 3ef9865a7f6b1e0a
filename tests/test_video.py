from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from visionloop.anonymize.detectors import Regions
from visionloop.config import AnonymizeParams
from visionloop.video import hold_regions, link_tracks, redact_sequence, sample_frames


def write_video(path: Path, n: int = 30, fps: float = 10.0) -> None:
    """A white square moving right 4 px per frame on a dark textured background."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (160, 120))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 120, (120, 160, 3), dtype=np.uint8)
    for i in range(n):
        frame = bg.copy()
        frame[40:70, 10 + 4 * i : 40 + 4 * i] = 255
        cv2.putText(frame, str(i), (5, 110), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 0, 0), 1)
        writer.write(frame)
    writer.release()


def test_sample_frames_at_the_requested_rate(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, n=30, fps=10.0)
    frames = list(sample_frames(str(path), fps=2.0, max_frames=100))
    assert [f.index for f in frames] == [0, 5, 10, 15, 20, 25]
    assert [f.time_s for f in frames] == pytest.approx([0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert frames[0].rgb.shape == (120, 160, 3) and frames[0].rgb.dtype == np.uint8
    assert frames[2].rgb[45:65, 55:65].mean() > 230  # the square at x = 50..80 in frame 10
    assert len(list(sample_frames(str(path), fps=100.0, max_frames=4))) == 4
    (tmp_path / "bad.avi").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot open"):
        list(sample_frames(str(tmp_path / "bad.avi"), fps=1, max_frames=1))


def box(x: float) -> Regions:
    return Regions([[x, 10, x + 20, 30]], [0.8], ["face"])


def test_hold_fills_gaps_and_extends_tracks() -> None:
    e = Regions.empty()
    # seen in frames 3, 4 and 6 (missed in 5); a second object only in frame 9
    per_frame = [
        e,
        e,
        e,
        box(30),
        box(32),
        e,
        box(36),
        e,
        e,
        Regions([[100, 0, 120, 20]], [0.5], ["face"]),
        e,
    ]
    tracks = link_tracks(per_frame, max_gap=2)
    assert sorted(sorted(t.sightings) for t in tracks) == [[3, 4, 6], [9]]
    held = hold_regions(per_frame, hold=2)
    assert [len(h) for h in held] == [0, 1, 1, 0, 0, 1, 0, 2, 2, 0, 1]
    assert held[5].boxes.tolist() == [[34, 10, 54, 30]]  # interpolated between 4 and 6
    assert held[1].boxes.tolist() == held[2].boxes.tolist() == [[30, 10, 50, 30]]
    assert held[8].boxes.tolist() == [[36, 10, 56, 30], [100, 0, 120, 20]]
    assert [len(h) for h in hold_regions(per_frame, hold=0)] == [0] * 11  # no hold, no fill


class MissesOddFrames:
    """Finds the white square, except in every other frame it is shown (a flaky detector)."""

    name = "flaky"
    version = "1"
    model_sha256 = "0" * 64
    licence = "MIT"

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image_rgb: np.ndarray) -> Regions:
        self.calls += 1
        ys, xs = np.nonzero((image_rgb > 235).all(axis=2))
        if len(ys) == 0 or (self.calls % 2 == 0 and self.calls <= 8):
            return Regions.empty()
        return Regions([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], [0.9], ["face"])


def test_redact_sequence_holds_a_track_where_the_detector_missed_it(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, n=12, fps=10.0)
    frames = []
    for f in sample_frames(str(path), fps=10.0, max_frames=6):
        buf = io.BytesIO()
        Image.fromarray(f.rgb).save(buf, "PNG")
        frames.append(buf.getvalue())
    det = MissesOddFrames()
    p = AnonymizeParams(hold_frames=2, verify=False, redaction="fill")
    results = redact_sequence(frames, det, p)
    assert det.calls == 6  # one detection per frame (verify off); frames 2 and 4 missed
    for i, r in enumerate(results):
        with Image.open(io.BytesIO(r["bytes"])) as im:
            out = np.asarray(im)
        square = out[42:68, 12 + 4 * i : 38 + 4 * i]
        assert square.max() < 60, f"frame {i} leaks the square"
    assert [r["faces"] for r in results] == [1, 1, 1, 1, 1, 1]
