"""Track checks on tables built in code (``track_id``, ``frame`` and the ``outside`` /
``keyframe`` attributes, as the CVAT-for-video and MOT readers write them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.qa.builders import ann, checks_of, params, table
from visionloop.qa.run import run_qa
from visionloop.qa.tracks import frame_step


def shape(
    i: int,
    track: int,
    frame: int,
    x: float = 10.0,
    category: str = "car",
    outside: bool | None = None,
    keyframe: bool | None = None,
    **kw: Any,
) -> dict[str, Any]:
    attrs = {k: v for k, v in (("outside", outside), ("keyframe", keyframe)) if v is not None}
    return ann(
        i,
        item=f"frame_{frame:04d}.jpg",
        category=category,
        box=(x, 10.0, 40.0, 30.0),
        track_id=track,
        frame=frame,
        source_file="video.xml",
        attrs=attrs or None,
        **kw,
    )


def qa(rows: list[dict[str, Any]], **p: Any) -> pd.DataFrame:
    return run_qa(table(rows), params(**p)).findings


def ids(found: pd.DataFrame) -> list[list[str]]:
    return found["annotation_ids"].map(list).tolist()


def straight(track: int, frames: list[int], start: int = 0, **kw: Any) -> list[dict[str, Any]]:
    """A track moving 2 px per frame (consecutive boxes overlap well)."""
    return [shape(start + k, track, f, x=10.0 + 2 * f, **kw) for k, f in enumerate(frames)]


def test_frame_step_is_the_gcd_of_frame_differences() -> None:
    assert frame_step(np.array([10, 13, 16, 22])) == 3
    assert frame_step(np.array([4])) == 1
    assert frame_step(np.array([0, 1, 5])) == 1


def test_a_clean_track_has_no_findings() -> None:
    rows = straight(1, [0, 1, 2, 3], keyframe=True)
    rows += straight(2, [0, 1, 2, 3], start=10, category="person")
    for r in rows[4:]:
        r["bbox_y"] = 200.0
    found = qa(rows)
    assert found[found["family"] == "track"].empty
    assert len(rows) == 8 and found[found["severity"] != "info"].empty


def test_track_duplicate_frame() -> None:
    rows = [*straight(1, [0, 1, 2]), shape(9, 1, 1, x=300.0)]
    found = checks_of(qa(rows), "track_duplicate_frame")
    assert ids(found) == [["a1", "a9"]]
    assert found["frame"].tolist() == [1] and found["track_id"].tolist() == [1]
    assert checks_of(qa(straight(1, [0, 1, 2])), "track_duplicate_frame").empty


def test_track_label_change() -> None:
    rows = straight(1, [0, 1, 2, 3])
    rows[3]["category"] = "truck"
    found = checks_of(qa(rows), "track_label_change")
    assert ids(found) == [["a3"]]
    assert found["reason"].iloc[0] == (
        "track 1 changes label: 'car' on 3 shape(s) (frames 0-2), 'truck' on 1 shape(s) "
        "(frames 3-3)"
    )
    assert checks_of(qa(straight(1, [0, 1, 2, 3])), "track_label_change").empty


def test_track_gap_unless_outside_or_frame_step() -> None:
    gap = straight(1, [0, 1, 2, 5])
    found = checks_of(qa(gap), "track_gap")
    assert found["frame"].tolist() == [2] and found["value"].tolist() == [2.0]
    assert checks_of(qa(gap, track_max_gap=2), "track_gap").empty
    explained = straight(1, [0, 1, 2, 5])
    explained[2]["attributes"] = '{"outside": 1, "keyframe": 1}'  # gone from frame 2 on
    explained[3]["attributes"] = '{"keyframe": true}'
    assert checks_of(qa(explained), "track_gap").empty
    # CVAT's reader drops outside shapes: the gap stays, and the object re-enters on a keyframe
    reentered = straight(1, [0, 1, 2, 6, 7], keyframe=False)
    reentered[0]["attributes"] = reentered[3]["attributes"] = '{"keyframe": true}'
    assert qa(reentered)[lambda f: f["family"] == "track"].empty
    not_key = straight(1, [0, 1, 2, 6, 7], keyframe=False)
    not_key[0]["attributes"] = '{"keyframe": true}'
    found = qa(not_key)
    assert checks_of(found, "track_gap").empty
    back = checks_of(found, "track_reappears_without_keyframe")
    assert back["frame"].tolist() == [6] and back["value"].tolist() == [3.0]
    stepped = straight(1, [10, 13, 16, 19])  # CVAT frame_filter step=3
    assert checks_of(qa(stepped), "track_gap").empty
    stepped_gap = straight(1, [10, 13, 19]) + straight(2, [10, 13, 16], start=10, category="bus")
    assert checks_of(qa(stepped_gap), "track_gap")["value"].tolist() == [1.0]


def test_id_switch_swap_and_fragment() -> None:
    a = [shape(0, 1, 0, x=10.0), shape(1, 1, 1, x=12.0)]
    b = [shape(2, 2, 0, x=300.0), shape(3, 2, 1, x=302.0)]
    assert checks_of(qa(a + b), "id_switch").empty
    swapped = [shape(0, 1, 0, x=10.0), shape(1, 2, 1, x=12.0)]
    swapped += [shape(2, 2, 0, x=300.0), shape(3, 1, 1, x=302.0)]
    found = checks_of(qa(swapped), "id_switch")
    assert ids(found) == [["a0", "a1"], ["a2", "a3"]]
    assert found["reason"].iloc[0] == (
        "the 'car' box of track 1 in frame 0 continues as track 2 in frame 1 (IoU 0.905)"
    )
    fragment = [shape(0, 1, 0, x=10.0), shape(1, 1, 1, x=12.0), shape(2, 7, 2, x=14.0)]
    assert ids(checks_of(qa(fragment), "id_switch")) == [["a1", "a2"]]
    other_label = [shape(0, 1, 0, x=10.0), shape(1, 7, 1, x=12.0, category="person")]
    assert checks_of(qa(other_label), "id_switch").empty


@pytest.mark.parametrize(
    ("flags", "check", "at"),
    [
        ([(True, True), (False, True), (False, False)], "track_starts_outside", 0),
        ([(False, False), (False, False)], "track_first_not_keyframe", 0),
        ([(False, True), (True, False), (False, True)], "track_outside_not_keyframe", 1),
        ([(False, True), (True, True), (False, False)], "track_reappears_without_keyframe", 2),
    ],
)
def test_outside_and_keyframe_rules(flags: list[tuple[bool, bool]], check: str, at: int) -> None:
    rows = [
        shape(k, 1, k, x=10.0 + 2 * k, outside=o, keyframe=kf) for k, (o, kf) in enumerate(flags)
    ]
    found = checks_of(qa(rows), check)
    assert found["frame"].tolist() == [at]
    good = [(False, True), (True, True), (False, True), (False, False)]
    clean = [
        shape(k, 1, k, x=10.0 + 2 * k, outside=o, keyframe=kf) for k, (o, kf) in enumerate(good)
    ]
    assert checks_of(qa(clean), check).empty
    no_flags = straight(1, [0, 1, 2])  # MOT: neither outside nor keyframe written
    assert checks_of(qa(no_flags), check).empty


def test_negative_ids_and_rows_without_frames_are_not_tracks() -> None:
    rows = [shape(0, -1, 0), shape(1, -1, 0, x=300.0), shape(2, -1, 3)]
    rows.append(ann(3, item="still.jpg", track_id=None, frame=None))
    assert qa(rows)[lambda f: f["family"] == "track"].empty


def test_annotators_of_one_video_have_their_own_tracks() -> None:
    rows = straight(1, [0, 1, 2]) + straight(1, [0, 1, 2], start=10, annotator="bob")
    assert checks_of(qa(rows), "track_duplicate_frame").empty
