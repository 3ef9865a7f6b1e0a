"""Crash safety, concurrency and a Dask cluster: the flow on a real Prefect server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import git, make_project
from tests.flows.test_pipeline import _rows, _write_params

N = 24


def _project(root: Path, seed: int = 9, **sections: dict) -> Path:
    from visionloop.sample import build_sample

    project = make_project(root)
    build_sample(str(project / "data" / "source"), n=N, seed=seed)
    _write_params(project, **sections)
    return project


def _env(api: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFECT_API_URL"] = api
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _start_run(project: Path, api: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "visionloop.cli", "run"],
        cwd=project,
        env=_env(api),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


CONTENT = {
    "collect": ["manifest.parquet"],
    "anonymize": ["manifest.parquet", "audit.parquet"],
    "curate": ["manifest.parquet"],
    "import_annotations": ["annotations.parquet", "categories.json"],
    "refresh": ["to_annotate.parquet", "new_items.parquet"],
}


def _content(project: Path) -> dict[str, str]:
    """What a snapshot holds: every table's bytes and every stored object's name."""
    import hashlib

    data = project / "data"
    out = {
        f"{stage}/{name}": hashlib.sha256((data / stage / name).read_bytes()).hexdigest()
        for stage, names in CONTENT.items()
        for name in names
    }
    for store in ("collect", "anonymize"):
        files = sorted(p.name for p in (data / store / "objects").rglob("*") if p.is_file())
        out[f"{store}/objects"] = ",".join(files)
    return out


def _run(project: Path, api: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "visionloop.cli", "run"],
        cwd=project,
        env=_env(api),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_sigkill_mid_stage_then_rerun_gives_the_same_snapshot(
    tmp_path: Path, prefect_api: str
) -> None:
    import shutil

    project = _project(tmp_path / "repo", run={"shard_size": 4})
    _run(project, prefect_api)
    uninterrupted = _content(project)
    # back to before the run: no snapshot, no outputs (the same source files, untouched)
    git(project, "tag", "-d", "dataset-v1")
    git(project, "reset", "-q", "--hard", "HEAD~1")
    for stage in [*CONTENT, "validate", "report"]:
        shutil.rmtree(project / "data" / stage, ignore_errors=True)

    proc = _start_run(project, prefect_api)
    first_part = project / "data" / "anonymize" / "_work" / "part-00000.parquet"
    deadline = time.monotonic() + 240
    while not first_part.exists():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "anonymize never started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the flow process and every worker thread in it
    proc.wait(30)
    assert not (project / "data" / "anonymize" / "manifest.parquet").exists()
    assert git(project, "tag", "--list").strip() == ""

    _run(project, prefect_api)
    assert git(project, "tag", "--list").split() == ["dataset-v1"]
    assert _content(project) == uninterrupted
    final = pd.read_parquet(project / "data" / "curate" / "manifest.parquet")
    assert len(final) == _rows(project) == N - 1 + 4  # the clip: 4 frame rows
    assert final["source_uri"].is_unique


@pytest.mark.slow
def test_two_runs_at_once_one_fails_clearly_and_history_stays_whole(
    tmp_path: Path, prefect_api: str
) -> None:
    project = _project(tmp_path / "repo", seed=10)
    first, second = _start_run(project, prefect_api), _start_run(project, prefect_api)
    out = [p.communicate(timeout=600)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes[0] == 0 and codes[1] != 0, out
    loser = out[[first.returncode, second.returncode].index(codes[1])]
    assert "another visionloop run holds" in loser
    assert git(project, "tag", "--list").split() == ["dataset-v1"]
    snapshots = [c for c in git(project, "log", "--format=%s").splitlines() if "snapshot" in c]
    assert snapshots == ["dataset-v1: dataset snapshot"]
    status = subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "status"],
        cwd=project,
        capture_output=True,
        text=True,
        env=_env(prefect_api),
    )
    assert "up to date" in status.stdout, status.stdout + status.stderr


@pytest.mark.slow
def test_flow_on_a_two_worker_dask_cluster(tmp_path: Path, prefect_api: str) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    from flows.pipeline import pipeline

    project = _project(tmp_path / "repo", seed=12, run={"shard_size": 4})
    cwd = Path.cwd()
    os.chdir(project)
    try:
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
            Client(cluster) as client,
            get_task_stream(client) as stream,
        ):
            result = pipeline(
                repo_dir=".",
                overrides={"run.runner": "dask", "run.dask_address": cluster.scheduler_address},
            )
    finally:
        os.chdir(cwd)
    assert result["snapshot"] == "dataset-v1"
    for stage, c in result["counts"].items():
        assert c["accepted"] + c["quarantined"] == c["input"] == _rows(project), stage
    workers = {t["worker"] for t in stream.data}
    assert len(workers) == 2, workers
