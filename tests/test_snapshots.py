"""Snapshots against a real git + DVC repo (no Prefect)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import dvc_bin, git
from visionloop import snapshots

MAKE = """
import os, sys, pandas as pd
os.makedirs("data/curate", exist_ok=True)
pd.DataFrame({"item_id": sys.argv[1].split(",")}).to_parquet("data/curate/manifest.parquet")
"""


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "data" / "curate").mkdir(parents=True)
    (repo / "make.py").write_text(MAKE)
    (repo / "params.yaml").write_text("ids: a,b\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  curate:\n"
        f"    cmd: {sys.executable} make.py ${{ids}}\n"
        "    deps: [make.py]\n    params: [ids]\n    outs: [data/curate]\n"
    )
    (repo / ".gitignore").write_text("/data/\n")
    git(repo, "init", "-q", "-b", "main")
    subprocess.run([dvc_bin(), "init", "-q"], cwd=repo, check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def _repro(repo: Path) -> None:
    subprocess.run([dvc_bin(), "repro", "-q"], cwd=repo, check=True, capture_output=True)


def test_snapshot_tags_versions_and_reads_them_back(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert snapshots.latest_tag(repo) is None
    assert snapshots.load_reference("latest", repo) is None
    _repro(repo)
    first = snapshots.cut_snapshot(repo, message="first")
    assert (first.tag, first.created, first.pushed) == ("dataset-v1", True, False)
    assert git(repo, "status", "--porcelain").strip() == ""

    again = snapshots.cut_snapshot(repo)
    assert (again.tag, again.created) == ("dataset-v1", False)

    (repo / "params.yaml").write_text("ids: a,b,c\n")
    _repro(repo)
    second = snapshots.cut_snapshot(repo)
    assert second.tag == "dataset-v2"
    assert snapshots.list_tags(repo) == ["dataset-v1", "dataset-v2"]
    assert list(snapshots.load_reference("dataset-v1", repo)["item_id"]) == ["a", "b"]
    assert list(snapshots.load_reference("latest", repo)["item_id"]) == ["a", "b", "c"]
    assert snapshots.load_reference("none", repo) is None
    with pytest.raises(snapshots.SnapshotError, match="no snapshot tag"):
        snapshots.load_reference("dataset-v9", repo)


def test_tags_sort_by_number_not_text(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    for n in (1, 2, 10):
        git(repo, "tag", f"dataset-v{n}")
    git(repo, "tag", "dataset-vX")
    assert snapshots.latest_tag(repo) == "dataset-v10"
    assert snapshots.next_tag(repo) == "dataset-v11"


def test_repo_lock_refuses_a_second_writer(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with snapshots.repo_lock(repo):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(snapshots.SnapshotError, match="another visionloop run"):
            with snapshots.repo_lock(repo, wait=False):
                pass
    finally:
        release.set()
        t.join()
    with snapshots.repo_lock(repo, wait=False):
        pass
