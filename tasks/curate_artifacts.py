"""The curate stage in the Prefect UI: a table of flags and a markdown summary.

Artifact keys: ``curate-flags`` (table: per flag, images flagged and quarantined) and
``curate-overview`` (markdown: duplicates, split leakage, coverage gaps, report location).
``finalize_stage`` already publishes ``curate-summary`` (status counts); these add what curate
found. Call after the curate stage (and its gate) in the flow:

    publish_curate_artifacts_task(params)
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from visionloop.config import Params
from visionloop.curate.report import summary_markdown, summary_rows
from visionloop.stages.base import Workspace

TABLE_KEY = "curate-flags"
MARKDOWN_KEY = "curate-overview"


def publish_curate_artifacts(ws: Workspace, params: Params) -> dict[str, Any]:
    """Publish both artifacts from the curate outputs in ``ws``; returns what was sent."""
    rows = summary_rows(ws, params)
    markdown = summary_markdown(ws, params)
    flagged = sum(r["flagged"] for r in rows)
    create_table_artifact(
        key=TABLE_KEY,
        table=rows,
        description=f"curate flags: {flagged} flag(s) set over all images",
    )
    create_markdown_artifact(key=MARKDOWN_KEY, markdown=markdown, description="curate overview")
    return {"rows": rows, "markdown": markdown}


@task(name="curate-artifacts", cache_policy=NO_CACHE, persist_result=False)
def publish_curate_artifacts_task(params: Params) -> dict[str, Any]:
    return publish_curate_artifacts(Workspace.from_params(params), params)
