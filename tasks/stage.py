"""The three steps of any stage as Prefect tasks: plan, process one shard, finalize.

Process tasks are mapped over shards (a few hundred images each), never over single images:
a task run costs 13-25 ms of bookkeeping on the server.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.retry import retry_on_transient
from visionloop.config import Params
from visionloop.stages.base import Shard, StageSummary, Workspace, get_stage, write_summary


@task(name="plan", cache_policy=NO_CACHE, persist_result=False, task_run_name="plan-{name}")
def plan_stage(name: str, params: Params) -> list[Shard]:
    return get_stage(name).plan(Workspace.from_params(params), params)


@task(
    name="process-shard",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=3,  # the flow sets retries and delays from params.run
    retry_delay_seconds=[2, 4, 8],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_on_transient,
    task_run_name="{shard.stage}-shard-{shard.index}",
)
def process_shard(shard: Shard, params: Params) -> str:
    return get_stage(shard.stage).process(Workspace.from_params(params), params, shard)


@task(name="finalize", cache_policy=NO_CACHE, persist_result=False, task_run_name="finalize-{name}")
def finalize_stage(name: str, params: Params, parts: list[str]) -> StageSummary:
    ws = Workspace.from_params(params)
    summary = get_stage(name).finalize(ws, params, parts)
    write_summary(ws, summary)
    rows = [{"status": "accepted", "reason": "", "items": summary.accepted}] + [
        {"status": "quarantined", "reason": reason, "items": count}
        for reason, count in sorted(summary.reasons.items())
    ]
    create_table_artifact(
        key=f"{name.replace('_', '-')}-summary",
        table=rows,
        description=f"{name}: {summary.input} items in, {summary.accepted} accepted",
    )
    return summary
