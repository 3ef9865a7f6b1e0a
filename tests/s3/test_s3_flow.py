"""The whole flow against a real S3 endpoint (moto on loopback): sources, outputs, DVC remote."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import dvc_bin, git, make_project
from visionloop import storage
from visionloop.config import Params

pytestmark = pytest.mark.s3
SECRETS = ("visionloop-test-key", "visionloop-test-secret")


def _bucket(endpoint: str) -> str:
    import s3fs

    name = f"vl-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir(name)
    return name


def _params(project: Path, source_root: str, data_dir: str) -> None:
    params = Params().model_dump(by_alias=True)
    params["run"].update({"shard_size": 12, "max_workers": 2, "data_dir": data_dir})
    params["collect"]["source"] = f"{source_root}/images"
    params["import_annotations"]["sources"] = [
        {"format": "coco", "path": f"{source_root}/annotations/coco/instances.json"},
        {"format": "yolo", "path": f"{source_root}/annotations/yolo"},
    ]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # dvc.yaml's deps name the local sample folder; on S3 the source is listed by collect itself
    dvc_yaml = yaml.safe_load((project / "dvc.yaml").read_text())
    for stage in dvc_yaml["stages"].values():
        stage["deps"] = [d for d in stage["deps"] if "source" not in str(d)]
    (project / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    git(project, "commit", "-qam", "s3 params")


def _run_flow(project: Path) -> dict:
    from flows.pipeline import pipeline

    cwd = Path.cwd()
    os.chdir(project)
    try:
        return pipeline(repo_dir=".")
    finally:
        os.chdir(cwd)


def _assert_no_secrets(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"credential found in {where}"


def test_flow_with_source_and_outputs_on_s3(
    s3_endpoint: str, prefect_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from visionloop.sample import build_sample

    bucket = _bucket(s3_endpoint)
    build_sample(f"s3://{bucket}/source", n=24, seed=21)
    project = make_project(tmp_path / "repo")
    data_dir = f"s3://{bucket}/data"
    _params(project, f"s3://{bucket}/source", data_dir)
    caplog.set_level("INFO")  # what a run logs (botocore's DEBUG prints signed headers)
    caplog.set_level("DEBUG", logger="visionloop")
    result = _run_flow(project)

    assert result["snapshot"] == "dataset-v1"
    truth = json.loads(storage.read_bytes(f"s3://{bucket}/source/truth.json"))
    assert truth["totals"]["files"] == 24  # a video among them, counted by its frames below
    for stage, c in result["counts"].items():
        assert c["accepted"] + c["quarantined"] == c["input"] == truth["totals"]["rows"], stage
    curated_frames = [r for v in truth["videos"].values() for r in v["frames"]]
    lock = json.loads((project / "remote-outputs.json").read_text())
    assert git(project, "show", "dataset-v1:remote-outputs.json").strip() == json.dumps(
        lock, indent=2
    )
    # the frozen copy of the curated manifest is what the snapshot pins
    frozen = storage.join(lock["prefix"], "curate", "manifest.parquet")
    assert storage.exists(frozen)
    curated = storage.read_table(frozen)
    published = curated[curated["status"] == "accepted"]["anonymize_object_uri"]
    assert len(published) > 0 and all(storage.exists(f"{data_dir}/{p}") for p in published)
    # the clip was read from S3 (streamed to a temp file) and its frames published
    frame_status = curated.set_index("rel_path").loc[curated_frames, "status"]
    assert len(curated_frames) == 4 and (frame_status == "accepted").all()

    from visionloop.snapshots import load_reference

    reference = load_reference("latest", project, data_dir=data_dir)
    pd.testing.assert_frame_equal(reference, curated)

    # credentials never reach logs, outputs, the repository or the Prefect artifacts
    _assert_no_secrets(caplog.text, "logs")
    for uri in storage.walk_files(data_dir):
        if "/objects/" not in uri:
            _assert_no_secrets(storage.read_bytes(uri).decode("latin-1"), uri)
    for path in project.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            _assert_no_secrets(path.read_bytes().decode("latin-1"), str(path))
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    assert artifacts
    _assert_no_secrets(json.dumps([a.model_dump(mode="json") for a in artifacts]), "artifacts")


def test_dvc_remote_on_s3_pushes_and_a_clone_pulls_the_snapshot(
    s3_endpoint: str, prefect_api: str, tmp_path: Path
) -> None:
    from visionloop.sample import build_sample

    bucket = _bucket(s3_endpoint)
    project = make_project(tmp_path / "repo")
    build_sample(str(project / "data" / "source"), n=24, seed=22)
    params = Params().model_dump(by_alias=True)
    params["run"].update({"shard_size": 12})
    params["import_annotations"]["sources"] = [
        {"format": "coco", "path": "data/source/annotations/coco/instances.json"},
        {"format": "yolo", "path": "data/source/annotations/yolo"},
    ]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(project, "commit", "-qam", "params")
    dvc = dvc_bin()
    subprocess.run(
        [dvc, "remote", "add", "-d", "store", f"s3://{bucket}/dvc"], cwd=project, check=True
    )
    subprocess.run(
        [dvc, "remote", "modify", "store", "endpointurl", s3_endpoint], cwd=project, check=True
    )
    git(project, "commit", "-qam", "dvc remote on s3 (credentials from the environment)")

    result = _run_flow(project)
    assert result["snapshot"] == "dataset-v1" and result["pushed"] is True
    status = subprocess.run(
        [dvc, "status", "--cloud"], cwd=project, capture_output=True, text=True, check=True
    )
    assert "in sync" in status.stdout, status.stdout

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    git(clone, "checkout", "-q", "dataset-v1")
    pull = subprocess.run([dvc, "pull"], cwd=clone, capture_output=True, text=True)
    assert pull.returncode == 0, pull.stderr
    for stage in ("collect", "anonymize", "curate"):
        a = (project / "data" / stage / "manifest.parquet").read_bytes()
        b = (clone / "data" / stage / "manifest.parquet").read_bytes()
        assert a == b, stage
