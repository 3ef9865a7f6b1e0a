"""MOT sequences: gt and det files, track ids, classes, seqinfo.ini, frame images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionloop.annotations.formats import detect_format
from visionloop.annotations.formats.mot import load_mot
from visionloop.annotations.table import AnnotationImportError


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


SEQINFO = "[Sequence]\nname=S\nimDir=frames\nframeRate=25\nseqLength=3\nimWidth=64\n"
SEQINFO += "imHeight=48\nimExt=.png\n"


def test_ground_truth_with_seqinfo_labels_tracks_and_flags(tmp_path: Path) -> None:
    seq = tmp_path / "train/S-01"
    write(seq / "seqinfo.ini", SEQINFO)
    write(seq / "gt/labels.txt", "walker\ncar\n")
    write(
        seq / "gt/gt.txt",
        "1,7,10,5,20,30,1,1,0.9\n2,7,11,5,20,30,0,1,0.5\n2,-1,0,0,5,5,1,2,1\n"
        "3,8,nan,0,5,5,1,1,1\n3,9,1,1,5,5,1,3,1\n4,9,1,1,5,5,1,1,1\n",
    )
    assert detect_format(str(tmp_path))[0] == "mot"
    result = load_mot(str(tmp_path))
    df = result.annotations
    assert df["image_ref"].tolist()[:3] == [
        "train/S-01/frames/000001.png",
        "train/S-01/frames/000002.png",
        "train/S-01/frames/000002.png",
    ]
    assert df["frame"].tolist() == [1, 2, 2, 4]
    assert df["track_id"].tolist()[:2] == [7, 7] and df["track_id"].isna().tolist()[2]
    assert df["category"].tolist() == ["walker", "walker", "car", "walker"]
    assert df["subset"].unique().tolist() == ["train"]
    assert (df["image_width"].iloc[0], df["image_height"].iloc[0]) == (64, 48)
    assert [json.loads(a) for a in df["attributes"][:2]] == [
        {"visibility": 0.9},
        {"ignored": True, "visibility": 0.5},
    ]
    codes = sorted((i.code, i.pointer) for i in result.issues)
    assert codes == [
        ("frame_beyond_sequence", "line 6"),
        ("invalid_bbox", "line 4"),
        ("unknown_category", "line 5"),
    ]


def test_detections_are_predictions_with_scores_and_no_class(tmp_path: Path) -> None:
    write(tmp_path / "S/det/det.txt", "1,-1,1,2,3,4,0.75\n")
    result = load_mot(str(tmp_path))
    row = result.annotations.iloc[0]
    assert (row["annotator"], row["score"], row["category"]) == (
        "prediction:mot-det",
        0.75,
        "object",
    )
    assert [w.code for w in result.warnings] == ["no_class"]
    assert row["image_ref"] == "S/img1/000001.jpg"


def test_bad_lines_and_sources(tmp_path: Path) -> None:
    write(tmp_path / "S/gt/gt.txt", "1,2,3\nx,1,1,1,1,1,1,1,1\n1.5,1,1,1,1,1,1,1,1\n")
    assert sorted(e.code for e in load_mot(str(tmp_path)).errors) == [
        "invalid_line",
        "invalid_line",
        "invalid_value",
    ]
    write(tmp_path / "S/gt/notes.txt", "x")
    with pytest.raises(AnnotationImportError, match=r"gt\.txt or det\.txt"):
        load_mot(str(tmp_path / "S/gt/notes.txt"))
