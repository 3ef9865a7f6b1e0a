"""The S3 endpoint goes down mid-stage: retries with backoff, a clear failure, nothing published."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import git, make_project
from tests.s3.test_s3_flow import _params
from visionloop import storage

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_endpoint_outage_fails_after_retries_and_publishes_nothing(
    s3_endpoint: str, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs
    import yaml
    from moto.server import ThreadedMotoServer

    from flows.pipeline import pipeline
    from visionloop.sample import build_sample

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    bucket = f"vl-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir(bucket)
    build_sample(f"s3://{bucket}/source", n=24, seed=31)
    project = make_project(tmp_path / "repo")
    data_dir = f"s3://{bucket}/data"
    _params(project, f"s3://{bucket}/source", data_dir)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["run"].update({"shard_size": 8, "retries": 2, "retry_delay_seconds": 0.5})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(project, "commit", "-qam", "fast retries")

    # plan's last write: from there on only the shards touch the store (taking the endpoint
    # down at input.parquet raced plan's own next write and failed plan instead of a shard)
    planned = f"{data_dir}/anonymize/_work/reused.parquet"

    def take_endpoint_down() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if storage.exists(planned):
                    break
            except Exception:
                pass
            time.sleep(0.05)
        server.stop()

    watcher = threading.Thread(target=take_endpoint_down, daemon=True)
    watcher.start()
    cwd = Path.cwd()
    os.chdir(project)
    started = time.monotonic()
    started_at = datetime.now(UTC)
    try:
        with pytest.raises(Exception) as info:
            pipeline(repo_dir=".")
    finally:
        os.chdir(cwd)
        watcher.join(10)
    elapsed = time.monotonic() - started
    assert storage.is_transient(info.value), repr(info.value)
    assert "Could not connect" in str(info.value) or "connect" in str(info.value).lower()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterName,
        TaskRunFilterStartTime,
    )

    # this run's shards only (a shared CI server holds every other test's task runs too)
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="anonymize-shard-"),
                start_time=TaskRunFilterStartTime(after_=started_at),
            )
        )
    failed = [r for r in runs if r.state and r.state.is_failed()]
    assert failed, [(r.name, r.state_name) for r in runs]
    assert max(r.run_count for r in failed) == 3  # the first try and two retries
    assert elapsed > 0.5 + 1.0  # the backoff was waited out

    # Back up: nothing of the failed stage was published and no snapshot was cut.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        assert not storage.exists(f"{data_dir}/anonymize/manifest.parquet")
        assert storage.exists(f"{data_dir}/collect/manifest.parquet")
        assert git(project, "tag", "--list").strip() == ""
        os.chdir(project)
        try:
            result = pipeline(repo_dir=".")
        finally:
            os.chdir(cwd)
        assert result["snapshot"] == "dataset-v1"
        truth = json.loads(storage.read_bytes(f"s3://{bucket}/source/truth.json"))
        assert result["counts"]["anonymize"]["input"] == truth["totals"]["rows"] == 24 - 1 + 4
    finally:
        server.stop()
