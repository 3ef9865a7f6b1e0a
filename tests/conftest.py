"""Session-wide fixtures: a real Prefect server and throw-away git+DVC project repos."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a project repo needs besides data: the code DVC hashes as deps, and the pipeline files.
PROJECT_FILES = ("dvc.yaml", "params.yaml", "visionloop", "flows", "tasks", "gx")

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect API: the server .ci/run started (PREFECT_API_URL), else a test harness."""
    url = os.environ.get("PREFECT_API_URL")
    if url and _healthy(url):
        yield url
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=240):
        from prefect.settings import PREFECT_API_URL

        yield str(PREFECT_API_URL.value())


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def dvc_bin() -> str:
    import sys

    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else "dvc"


def make_project(dest: Path) -> Path:
    """A fresh git + DVC repo holding the project's pipeline files, as a user's clone would."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "uncommitted")
            )
        elif src.exists():
            shutil.copy2(src, dest / name)
    shutil.copy2(ROOT / ".gitignore", dest / ".gitignore")
    git(dest, "init", "-q", "-b", "main")
    subprocess.run([dvc_bin(), "init", "-q"], cwd=dest, check=True)
    subprocess.run([dvc_bin(), "config", "core.analytics", "false"], cwd=dest, check=True)
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "project")
    return dest


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint on loopback (moto's server), as s3fs and DVC talk to it."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
        )
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="visionloop-test-key",
        AWS_SECRET_ACCESS_KEY="visionloop-test-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=url,
    )
    try:
        yield url
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
