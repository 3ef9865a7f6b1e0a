"""A failing error-level gate stops the flow before the next stage, and no snapshot is cut."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import git, make_project
from tests.flows.test_pipeline import _write_params


def test_failed_gate_stops_the_flow_and_cuts_no_snapshot(tmp_path: Path, prefect_api: str) -> None:
    from flows.pipeline import pipeline
    from visionloop.expectations.gate import GateFailed
    from visionloop.sample import build_sample

    project = make_project(tmp_path / "repo")
    build_sample(str(project / "data" / "source"), n=24, seed=5)
    # The sample always holds broken files, so a zero quarantine budget must block at collect.
    _write_params(project, validate={"max_quarantine_fraction": 0.0})
    cwd = Path.cwd()
    os.chdir(project)
    try:
        with pytest.raises(GateFailed) as info:
            pipeline(repo_dir=".")
    finally:
        os.chdir(cwd)
    message = str(info.value)
    assert "collect" in message
    assert "data_docs" in message or "Data Docs" in message
    assert git(project, "tag", "--list").strip() == ""
    assert not (project / "data" / "anonymize").exists()
