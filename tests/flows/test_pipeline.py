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


def test_every_input_file_is_accounted_for_once(project: Path, flow_result: dict) -> None:
    truth = json.loads((project / "data/source/truth.json").read_text())
    files = sorted(
        p.relative_to(project / "data/source/images").as_posix()
        for p in (project / "data/source/images").rglob("*")
        if p.is_file() or p.is_symlink()
    )
    for stage, c in flow_result["counts"].items():
        assert c["accepted"] + c["quarantined"] == c["input"] == len(files), stage
    final = pd.read_parquet(project / "data/curate/manifest.parquet")
    assert sorted(final["rel_path"]) == files
    assert final["source_uri"].is_unique
    by_path = final.set_index("rel_path")
    for rel, expected in truth["files"].items():
        if expected.get("reason") in {"corrupt", "truncated"}:
            assert by_path.loc[rel, "status"] == "quarantined"
            assert by_path.loc[rel, "reason"] == expected["reason"]


def test_published_images_carry_no_gps(project: Path, flow_result: dict) -> None:
    manifest = pd.read_parquet(project / "data/anonymize/manifest.parquet")
    published = manifest[manifest["status"] == "accepted"]
    assert len(published) > 0
    for rel in published["anonymize_object_uri"]:
        with Image.open(io.BytesIO((project / "data" / rel).read_bytes())) as im:
            exif = im.getexif()
            assert 0x8825 not in exif and not exif.get_ifd(0x8825), rel


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
    assert collect["accepted"] + collect["quarantined"] == collect["input"] == N_FILES


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
