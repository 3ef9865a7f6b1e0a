"""Building blocks both flows share: run-time overrides, one stage over the task runner, the
stage chain with its gates and DVC records, and the snapshot's commit message."""

from __future__ import annotations

from typing import Any

from prefect import unmapped

from tasks.curate_artifacts import publish_curate_artifacts_task
from tasks.gate import gate_task, publish_validation_task
from tasks.stage import finalize_stage, plan_stage, process_shard
from tasks.versioning import dvc_commit
from visionloop.config import Params, load_params
from visionloop.expectations.gate import GateFailed
from visionloop.pipeline import GATE_AFTER
from visionloop.schema import STAGES
from visionloop.stages.base import StageSummary, Workspace
from visionloop.stages.validate import suite_versions_text

# Overrides a flow run may pass: how to run, never what to compute (dvc.lock records
# params.yaml, so a threshold changed only for one run would make the lock lie). What a run
# may choose about the data (source, budget, reference) goes through RunRequest, which writes
# it into params.yaml (visionloop.refresh.request).
RUN_KEYS = (
    "run.runner",
    "run.max_workers",
    "run.dask_address",
    "run.shard_size",
    "run.retries",
    "run.retry_delay_seconds",
    "run.on_busy",
)


def load_run_params(params_path: str, overrides: dict[str, Any] | None) -> Params:
    """params.yaml with the run-time overrides (``RUN_KEYS`` only) applied."""
    overrides = overrides or {}
    bad = sorted(set(overrides) - set(RUN_KEYS))
    if bad:
        raise ValueError(f"only {', '.join(RUN_KEYS)} may be overridden per run; got {bad}")
    return load_params(params_path).with_overrides(overrides)


def run_one_stage(name: str, params: Params, runner: Any) -> StageSummary:
    """Plan, process every shard over ``runner`` (with retries from params.run), finalize."""
    shards = plan_stage(name, params)
    delays = [params.run.retry_delay_seconds * 2**i for i in range(params.run.retries)]
    task = process_shard.with_options(retries=params.run.retries, retry_delay_seconds=delays)
    futures = runner.map(task, {"shard": shards, "params": unmapped(params)})
    parts = [f.result() for f in futures]
    return finalize_stage(name, params, parts)


def stage_counts(summary: StageSummary) -> dict[str, Any]:
    return {
        "input": summary.input,
        "accepted": summary.accepted,
        "quarantined": summary.quarantined,
        "reasons": summary.reasons,
    }


def run_stages(
    params: Params,
    runner: Any,
    repo_dir: str,
    log: Any,
    stages: tuple[str, ...] = STAGES,
    commit_each: bool = True,
) -> tuple[dict[str, dict[str, Any]], dict[str, StageSummary]]:
    """Each stage, then its gate (a failing gate raises: no later stage, no snapshot), then
    its record in dvc.lock. Returns (counts, summaries) per stage.

    ``commit_each=False`` leaves the dvc.lock records to the caller (one ``dvc commit`` of
    every stage once all gates passed: one DVC start-up instead of one per stage)."""
    counts: dict[str, dict[str, Any]] = {}
    summaries: dict[str, StageSummary] = {}
    for name in stages:
        if name == "validate":
            summary = _validate_with_artifacts(params, runner, repo_dir)
        else:
            summary = run_one_stage(name, params, runner)
        summaries[name] = summary
        counts[name] = stage_counts(summary)
        log.info("%s: %s", name, counts[name])
        if name in GATE_AFTER:
            gate_task(GATE_AFTER[name], params, context_root=repo_dir)
        if name == "curate":
            publish_curate_artifacts_task(params)
        if commit_each:
            dvc_commit(name, params, repo_dir)
    return counts, summaries


def _validate_with_artifacts(params: Params, runner: Any, repo_dir: str) -> StageSummary:
    """The validate stage; its gate and QA artifacts are published whether it passes or blocks."""
    try:
        summary = run_one_stage("validate", params, runner)
    except GateFailed:
        publish_validation_task(params, context_root=repo_dir)
        raise
    publish_validation_task(params, context_root=repo_dir)
    return summary


def snapshot_message(counts: dict[str, dict[str, Any]], params: Params | None = None) -> str:
    """Counts per stage, then (with params) the suite versions that passed and the QA tally."""
    text = "\n".join(
        f"{n}: {c['accepted']} accepted, {c['quarantined']} quarantined {c['reasons']}"
        for n, c in counts.items()
    )
    if params is not None:
        versions = suite_versions_text(Workspace.from_params(params))
        if versions:
            text += "\n\n" + versions
    return text
