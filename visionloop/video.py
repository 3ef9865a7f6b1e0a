"""Video: sample frames from a video file, and redact a frame sequence with a temporal hold.

A detector that finds a face in frames 10-14 and 16-20 has missed it in frame 15, and a
published frame 15 leaks the face. So detections are linked into tracks across frames (greedy
IoU matching), gaps inside a track are filled (box interpolated between the sightings), and
each track's box is *held* for ``hold`` frames before its first and after its last sighting
(a face entering or leaving the picture is usually detected late and lost early).

Sampling uses ``cv2.VideoCapture`` (FFmpeg backend of the headless wheel; MJPG in AVI always
works): frames are taken at about ``fps`` per second of video (every ``round(src_fps / fps)``-th
frame), at most ``max_frames``. Remote files (``s3://``) are copied to a temporary local file
first, as OpenCV reads paths only.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from visionloop.anonymize.detectors import Regions

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")
TRACK_IOU = 0.3


@dataclass(frozen=True)
class Frame:
    index: int  # frame number in the video (0-based)
    time_s: float  # its timestamp
    rgb: np.ndarray  # (H, W, 3) uint8


def sample_frames(uri: str, fps: float, max_frames: int) -> Iterator[Frame]:
    """Frames of the video at ``uri``, about ``fps`` per second, at most ``max_frames``.

    Raises ``ValueError`` if the file cannot be opened as a video.
    """
    import cv2

    from visionloop import storage

    if fps <= 0 or max_frames <= 0:
        raise ValueError(f"fps and max_frames must be > 0, got {fps}, {max_frames}")
    local, tmp = uri, None
    if "://" in uri and not uri.startswith("file://"):
        suffix = os.path.splitext(uri)[1]
        fd, tmp = tempfile.mkstemp(suffix=suffix)
        with os.fdopen(fd, "wb") as fh:
            fh.write(storage.read_bytes(uri))
        local = tmp
    cap = cv2.VideoCapture(local)
    try:
        if not cap.isOpened():
            raise ValueError(f"cannot open {uri} as a video")
        src_fps = cap.get(cv2.CAP_PROP_FPS)
        src_fps = src_fps if src_fps and np.isfinite(src_fps) and src_fps > 0 else 25.0
        step = max(1, round(src_fps / fps))
        index = taken = 0
        while taken < max_frames:
            if not cap.grab():
                break
            if index % step == 0:
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    break
                yield Frame(index, index / src_fps, np.ascontiguousarray(bgr[:, :, ::-1]))
                taken += 1
            index += 1
    finally:
        cap.release()
        if tmp is not None:
            os.unlink(tmp)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Track:
    kind: str
    sightings: dict[int, tuple[np.ndarray, float]]  # frame -> (box, score)

    @property
    def last(self) -> int:
        return max(self.sightings)


def link_tracks(per_frame: list[Regions], max_gap: int, iou: float = TRACK_IOU) -> list[Track]:
    """Greedy IoU linking of each frame's regions to the tracks seen in the last ``max_gap``+1
    frames (same kind; best overlap first)."""
    tracks: list[Track] = []
    for f, regions in enumerate(per_frame):
        live = [t for t in tracks if f - t.last <= max_gap + 1]
        used: set[int] = set()
        if len(regions) and live:
            last_boxes = np.stack([t.sightings[t.last][0] for t in live])
            ov = _iou(regions.boxes, last_boxes)
            for k in np.argsort(-ov, axis=None):
                i, j = divmod(int(k), len(live))
                if ov[i, j] < iou:
                    break
                if i in used or live[j].last == f or live[j].kind != regions.kind[i]:
                    continue
                live[j].sightings[f] = (regions.boxes[i], float(regions.scores[i]))
                used.add(i)
        for i in range(len(regions)):
            if i not in used:
                sighting = (regions.boxes[i], float(regions.scores[i]))
                tracks.append(Track(str(regions.kind[i]), {f: sighting}))
    return tracks


def hold_regions(per_frame: list[Regions], hold: int, iou: float = TRACK_IOU) -> list[Regions]:
    """Extra regions per frame: each track's box in the frames where it was not detected,
    from ``hold`` frames before its first sighting to ``hold`` after its last, gaps filled by
    interpolating between sightings (the frames outside the video are dropped)."""
    n = len(per_frame)
    extra: list[list[tuple[np.ndarray, float, str]]] = [[] for _ in range(n)]
    for track in link_tracks(per_frame, max_gap=hold, iou=iou):
        seen = sorted(track.sightings)
        first, last = seen[0], seen[-1]
        for f in range(max(0, first - hold), min(n, last + hold + 1)):
            if f in track.sightings:
                continue
            before = [s for s in seen if s < f]
            after = [s for s in seen if s > f]
            if before and after:
                a, b = before[-1], after[0]
                w = (f - a) / (b - a)
                box = (1 - w) * track.sightings[a][0] + w * track.sightings[b][0]
                score = min(track.sightings[a][1], track.sightings[b][1])
            else:
                box, score = track.sightings[before[-1] if before else after[0]]
            extra[f].append((np.asarray(box, np.float32), score, track.kind))
    return [
        Regions(
            np.asarray([e[0] for e in items], np.float32).reshape(-1, 4),
            np.asarray([e[1] for e in items], np.float32),
            np.asarray([e[2] for e in items], str),
        )
        if items
        else Regions.empty()
        for items in extra
    ]


def redact_sequence(
    frames: list[bytes], detector: Any, params: Any, max_pixels: int | None = None
) -> list[dict[str, Any]]:
    """The anonymize per-image function over consecutive frames (encoded images, in order),
    each frame also redacting the regions held from its neighbours (``params.hold_frames``).

    Returns one result per frame (as :func:`~visionloop.stages.anonymize.anonymize_image`),
    or the :class:`~visionloop.stages.anonymize.AnonymizeError` raised for that frame.
    """
    from visionloop.imaging import load_oriented_rgb
    from visionloop.stages.anonymize import AnonymizeError, anonymize_image, detect_for_redaction

    found: list[tuple[Regions, list] | AnonymizeError] = []
    for data in frames:
        try:
            found.append(detect_for_redaction(detector, load_oriented_rgb(data, max_pixels)))
        except Exception as exc:
            found.append(AnonymizeError("detect", exc))
    per_frame = [f[0] if not isinstance(f, AnonymizeError) else Regions.empty() for f in found]
    held = hold_regions(per_frame, params.hold_frames)
    results: list[dict[str, Any]] = []
    for data, f, h in zip(frames, found, held, strict=True):
        if isinstance(f, AnonymizeError):
            results.append({"error": f})
            continue
        try:
            results.append(anonymize_image(data, "PNG", detector, params, max_pixels, h, f))
        except AnonymizeError as exc:
            results.append({"error": exc})
    return results
