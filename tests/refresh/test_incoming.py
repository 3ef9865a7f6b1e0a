"""Incoming items by content hash: known files are not read, renames are not new."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from visionloop.config import Params
from visionloop.refresh import incoming
from visionloop.refresh import synthetic as syn
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.collect import CollectStage


@pytest.fixture
def collected(tmp_path: Path) -> tuple[Params, Workspace, Path]:
    src = tmp_path / "source"
    syn.write_batch(str(src), syn.no_shift(6), seed=1)
    params = Params.model_validate(
        {"run": {"data_dir": str(tmp_path / "data")}, "collect": {"source": str(src)}}
    )
    ws = Workspace.from_params(params)
    run_stage(CollectStage(), ws, params)
    return params, ws, src


def _manifest(ws: Workspace):
    import pandas as pd

    return pd.read_parquet(ws.manifest_uri("collect"))


def test_nothing_new_reads_nothing(collected, monkeypatch) -> None:
    params, ws, _ = collected
    reads: list[str] = []
    monkeypatch.setattr(incoming, "_sha256", lambda uri: reads.append(uri))
    found = incoming.find_incoming(params.collect, _manifest(ws))
    assert (found.listed, found.known_by_stamp, found.hashed) == (6, 6, 0)
    assert reads == [] and not found.changed and found.new == [] and found.gone == []


def test_new_renamed_and_gone_files(collected) -> None:
    params, ws, src = collected
    reference = _manifest(ws)
    files = sorted(src.rglob("*.jpg"))
    shutil.move(files[0], files[0].with_name("renamed.jpg"))  # same bytes, new name
    files[1].unlink()  # gone
    pixels = syn.render(syn.Shot(), np.random.default_rng(9)).pixels
    data = syn.encode(pixels, "cam_a", "2024:07:01 10:00:00")
    (src / "cam_a" / "fresh.jpg").write_bytes(data)
    found = incoming.find_incoming(params.collect, reference)
    import hashlib

    assert found.listed == 6 and found.hashed == 2  # the renamed and the fresh file
    assert found.new == [
        {
            "source_uri": str(src / "cam_a" / "fresh.jpg"),
            "item_id": hashlib.sha256(data).hexdigest(),
        }
    ]
    gone_id = reference.set_index("source_uri").at[str(files[1]), "item_id"]
    assert found.gone == [gone_id] and found.known_elsewhere == 1 and found.changed


def test_no_reference_means_everything_is_new(collected) -> None:
    params, _, _ = collected
    found = incoming.find_incoming(params.collect, None)
    assert len(found.new) == 6 and found.reference_items == 0 and found.hashed == 6


def test_a_known_video_stands_for_its_frames_and_a_new_one_is_new(
    collected, monkeypatch, tmp_path: Path
) -> None:
    from tests.stages.test_collect_video import write_video

    params, ws, src = collected
    params = params.model_copy(
        update={"collect": params.collect.model_copy(update={"video_fps": 5.0})}
    )
    write_video(src / "cam_a" / "clip.avi", n=10, fps=10.0)  # 5 frames sampled at 5 fps
    run_stage(CollectStage(), ws, params)
    reference = _manifest(ws)
    frame_ids = set(reference.loc[reference["collect_video_uri"].notna(), "item_id"])
    assert len(frame_ids) == 5

    reads: list[str] = []
    monkeypatch.setattr(incoming, "_sha256", lambda uri: reads.append(uri))
    found = incoming.find_incoming(params.collect, reference)
    # the video is known by its stamp: its five frames are present, nothing is read or new
    assert (found.listed, found.known_by_stamp, found.hashed) == (7, 7, 0)
    assert reads == [] and found.new == [] and found.gone == [] and not found.changed

    # against a reference without the video, its frames (known by stamp) are the new items
    older = reference[reference["collect_video_uri"].isna()]
    found = incoming.find_incoming(params.collect, older, workspace_manifest=reference)
    assert {n["item_id"] for n in found.new} == frame_ids
    assert all(
        n["source_uri"].startswith(str(src / "cam_a" / "clip.avi#frame=")) for n in found.new
    )

    # a second video nobody has sampled yet is new as a file (its frames are not known yet)
    write_video(src / "cam_a" / "other.avi", n=4, fps=10.0)
    found = incoming.find_incoming(params.collect, reference)
    assert found.new == [{"source_uri": str(src / "cam_a" / "other.avi"), "item_id": None}]
    assert found.hashed == 0 and found.gone == [] and found.changed
