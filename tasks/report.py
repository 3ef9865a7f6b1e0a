"""The run report as a task, linked from the Prefect UI."""

from __future__ import annotations

import os

from prefect import task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE

from visionloop import storage
from visionloop.config import Params
from visionloop.report import build_report
from visionloop.stages.base import Workspace


@task(name="report", cache_policy=NO_CACHE, persist_result=False)
def report_task(params: Params, snapshot: str | None) -> str:
    uri = build_report(Workspace.from_params(params), params, snapshot)
    link = uri if storage.is_remote(uri) else "file://" + os.path.abspath(uri)
    create_link_artifact(key="run-report", link=link, link_text="visionloop run report")
    return uri
