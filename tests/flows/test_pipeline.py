"""End to end: the Prefect flow on a small sample against a real Prefect server, then DVC."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.conftest import dvc_bin, git, make_project
from visionloop.config import Params

N_FILES = 48


def _write_params(project: Path, **sections: dict) -> Params:
    params = Params().model_dump(by_alias=True)
    params["run"].update({"shard_size": 16, "max_workers": 2})
    params["import_annotations"]["sources"] = [
        {"format": "coco", "path": "data/source/annotations/coco/instances.json"},
        {"format": "yolo", "path": "data/source/annotations/yolo"},
    ]
    for section, values in sections.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(project, "commit", "-qam", "test params")
    return Params.model_validate(params)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from visionloop.sample import build_sample

    root = make_project(tmp_path_factory.mktemp("e2e") / "repo")
    build_sample(str(root / "data" / "source"), n=N_FILES, seed=3)
    _write_params(root)
    return root


@pytest.fixture(scope="module")
def flow_result(project: Path, prefect_api: str) -> dict:
    from flows.pipeline import pipeline

    cwd = Path.cwd()
    os.chdir(project)
    try:
        return pipeline(repo_dir=".")
    finally:
        os.chdir(cwd)


def test_flow_cuts_a_tagged_snapshot(project: Path, flow_result: dict) -> None:
    assert flow_result["snapshot"] == "dataset-v1"
    assert "dataset-v1" in git(project, "tag", "--list").split()
    assert git(project, "status", "--porcelain", "--untracked-files=no").strip() == ""


def _rows(project: Path) -> int:
    """Manifest rows of the sample: its files, with the video clip counted by its frames."""
    return json.loads((project / "data/source/truth.json").read_text())["totals"]["rows"]


def test_every_input_file_is_accounted_for_once(project: Path, flow_result: dict) -> None:
    truth = json.loads((project / "data/source/truth.json").read_text())
    files = sorted(
        p.relative_to(project / "data/source/images").as_posix()
        for p in (project / "data/source/images").rglob("*")
        if p.is_file() or p.is_symlink()
    )
    assert len(files) == N_FILES and set(truth["videos"]) <= set(files)
    # each file is one row, but a video is its sampled frames
    rows = [f for f in files if f not in truth["videos"]]
    rows = sorted(rows + [r for v in truth["videos"].values() for r in v["frames"]])
    assert len(rows) == _rows(project) == N_FILES - 1 + truth["totals"]["frames"]
    for stage, c in flow_result["counts"].items():
        assert c["accepted"] + c["quarantined"] == c["input"] == len(rows), stage
    final = pd.read_parquet(project / "data/curate/manifest.parquet")
    assert sorted(final["rel_path"]) == rows
    assert final["source_uri"].is_unique
    by_path = final.set_index("rel_path")
    for rel, expected in truth["files"].items():
        if expected.get("reason") in {"corrupt", "truncated"}:
            assert by_path.loc[rel, "status"] == "quarantined"
            assert by_path.loc[rel, "reason"] == expected["reason"]
    # the clip's sampled frames come out of every stage accepted (faces: the test below)
    frames = [r for v in truth["videos"].values() for r in v["frames"]]
    assert len(frames) == 4
    assert (by_path.loc[frames, "status"] == "accepted").all(), by_path.loc[frames, "reason"]
    assert (by_path.loc[frames, "format"] == "PNG").all()


def test_published_images_carry_no_gps(project: Path, flow_result: dict) -> None:
    manifest = pd.read_parquet(project / "data/anonymize/manifest.parquet")
    published = manifest[manifest["status"] == "accepted"]
    assert len(published) > 0
    for rel in published["anonymize_object_uri"]:
        with Image.open(io.BytesIO((project / "data" / rel).read_bytes())) as im:
            exif = im.getexif()
            assert 0x8825 not in exif and not exif.get_ifd(0x8825), rel


def test_every_sample_face_is_redacted(project: Path, flow_result: dict) -> None:
    """Each face pasted into a published image lies under the redacted regions of its audit."""
    import numpy as np

    truth = json.loads((project / "data/source/truth.json").read_text())
    manifest = pd.read_parquet(project / "data/anonymize/manifest.parquet").set_index("rel_path")
    audit = pd.read_parquet(project / "data/anonymize/audit.parquet").set_index("item_id")
    faces = missed = frame_faces = 0
    for rel, entry in truth["files"].items():
        if not entry.get("faces") or manifest.loc[rel, "status"] != "accepted":
            continue
        frame_faces += len(entry["faces"]) if entry["kind"] == "video_frame" else 0
        redacted = np.zeros((entry["height"], entry["width"]), bool)
        for region in json.loads(audit.loc[manifest.loc[rel, "item_id"], "regions"]):
            x0, y0, x1, y1 = (round(v) for v in region["box"])
            redacted[y0:y1, x0:x1] = True
        for face in entry["faces"]:
            x0, y0, x1, y1 = (round(v) for v in face)
            faces += 1
            missed += redacted[y0:y1, x0:x1].mean() < 0.9
    assert faces > 0
    assert frame_faces == 4  # the clip's walker, once in each sampled frame
    assert missed == 0, f"{missed} of {faces} faces not redacted"


def test_status_json_reports_the_tag(project: Path, flow_result: dict) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "visionloop.cli", "status", "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    status = json.loads(out)
    assert status["snapshot"] == "dataset-v1"
    collect = status["stages"]["collect"]
    assert collect["accepted"] + collect["quarantined"] == collect["input"] == _rows(project)


def test_dvc_status_is_clean_and_repro_skips_everything(project: Path, flow_result: dict) -> None:
    status = subprocess.run(
        [dvc_bin(), "status"], cwd=project, capture_output=True, text=True, env=_env()
    )
    assert "up to date" in status.stdout, status.stdout + status.stderr
    repro = subprocess.run(
        [dvc_bin(), "repro"], cwd=project, capture_output=True, text=True, env=_env()
    )
    assert repro.returncode == 0, repro.stderr
    assert "Running stage" not in repro.stdout, repro.stdout


def test_threshold_change_reruns_only_dependent_stages(project: Path, flow_result: dict) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["refresh"]["annotate_budget"] = 7
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repro = subprocess.run(
        [dvc_bin(), "repro"], cwd=project, capture_output=True, text=True, env=_env()
    )
    assert repro.returncode == 0, repro.stdout + repro.stderr
    ran = {line.split("'")[1] for line in repro.stdout.splitlines() if "Running stage" in line}
    assert ran == {"refresh"}
    picks = pd.read_parquet(project / "data/refresh/to_annotate.parquet")
    assert len(picks) <= 7


def test_rerun_does_no_image_work_and_new_files_alone_are_processed(
    project: Path, flow_result: dict
) -> None:
    """Last in this module: it adds a file to the source and cuts dataset-v2."""
    import shutil

    from flows.pipeline import pipeline

    cwd = Path.cwd()
    os.chdir(project)
    try:
        pipeline(repo_dir=".")  # takes in the params change of the test above, if any
        again = pipeline(repo_dir=".")
        details = _details(project)
        assert details["collect"]["to_process"] == 0
        assert details["anonymize"]["processed"] == 0
        assert details["curate"]["measured"] == 0
        assert again["snapshot_created"] is False

        # one new camera frame (a copy of an accepted image, re-encoded so its bytes are new)
        manifest = pd.read_parquet(project / "data/collect/manifest.parquet")
        stills = manifest["collect_video_uri"].isna()  # a frame row has no file of its own
        first = manifest[(manifest["status"] == "accepted") & stills].iloc[0]
        src = project / "data/source/images" / first["rel_path"]
        new = project / "data/source/images/cam_a/new_frame.png"
        with Image.open(src) as im:
            im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(new)
        shutil.copystat(src, new)
        grown = pipeline(repo_dir=".")
    finally:
        os.chdir(cwd)
    details = _details(project)
    assert details["collect"]["to_process"] == 1
    assert details["anonymize"]["processed"] == 1
    assert details["curate"]["measured"] == 1
    assert grown["counts"]["collect"]["input"] == _rows(project) + 1
    assert grown["snapshot"] == f"dataset-v{int(again['snapshot'].rsplit('v', 1)[1]) + 1}"
    new_items = pd.read_parquet(project / "data/refresh/new_items.parquet")
    assert list(new_items["source_uri"]) == ["data/source/images/cam_a/new_frame.png"]


def _details(project: Path) -> dict[str, dict]:
    return {
        stage: json.loads((project / "data" / stage / "summary.json").read_text())["details"]
        for stage in ("collect", "anonymize", "curate")
    }
