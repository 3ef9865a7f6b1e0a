"""The pipeline flow: each stage, then its gate, then the next stage; last, the snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact

from flows.runners import make_task_runner
from tasks.gate import gate_task
from tasks.report import report_task
from tasks.stage import finalize_stage, plan_stage, process_shard
from tasks.versioning import dvc_commit, snapshot_task
from visionloop.config import Params, load_params
from visionloop.pipeline import GATE_AFTER
from visionloop.schema import STAGES
from visionloop.snapshots import run_lock
from visionloop.stages.base import StageSummary

# Overrides a flow run may pass: how to run, never what to compute (dvc.lock records
# params.yaml, so a threshold changed only for one run would make the lock lie).
RUN_KEYS = (
    "run.runner",
    "run.max_workers",
    "run.dask_address",
    "run.shard_size",
    "run.retries",
    "run.retry_delay_seconds",
    "run.on_busy",
)


def _params(params_path: str, overrides: dict[str, Any] | None) -> Params:
    overrides = overrides or {}
    bad = sorted(set(overrides) - set(RUN_KEYS))
    if bad:
        raise ValueError(f"only {', '.join(RUN_KEYS)} may be overridden per run; got {bad}")
    return load_params(params_path).with_overrides(overrides)


def run_one_stage(name: str, params: Params, runner: Any) -> StageSummary:
    shards = plan_stage(name, params)
    delays = [params.run.retry_delay_seconds * 2**i for i in range(params.run.retries)]
    task = process_shard.with_options(retries=params.run.retries, retry_delay_seconds=delays)
    futures = runner.map(task, {"shard": shards, "params": unmapped(params)})
    parts = [f.result() for f in futures]
    return finalize_stage(name, params, parts)


@flow(name="visionloop-pipeline", log_prints=True)
def pipeline(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    snapshot: bool = True,
    repo_dir: str = ".",
) -> dict[str, Any]:
    """Collect, anonymize, curate, import annotations, validate and refresh; then snapshot.

    A gate that fails raises, so the flow run fails and no snapshot is cut.
    """
    log = get_run_logger()
    params = _params(str(Path(repo_dir) / params_path), overrides)
    counts: dict[str, dict[str, Any]] = {}
    with (
        run_lock(repo_dir, wait=params.run.on_busy == "wait"),
        make_task_runner(params.run) as runner,
    ):
        for name in STAGES:
            summary = run_one_stage(name, params, runner)
            counts[name] = {
                "input": summary.input,
                "accepted": summary.accepted,
                "quarantined": summary.quarantined,
                "reasons": summary.reasons,
            }
            log.info("%s: %s", name, counts[name])
            if name in GATE_AFTER:
                gate_task(GATE_AFTER[name], params, context_root=repo_dir)
            dvc_commit(name, params, repo_dir)
        result: dict[str, Any] = {"snapshot": None, "counts": counts}
        if snapshot:
            message = "\n".join(
                f"{n}: {c['accepted']} accepted, {c['quarantined']} quarantined {c['reasons']}"
                for n, c in counts.items()
            )
            snap = snapshot_task(message, params, repo_dir)
            result["snapshot"] = snap.tag
            result["snapshot_created"] = snap.created
            result["pushed"] = snap.pushed
        result["report"] = report_task(params, result["snapshot"])
    create_markdown_artifact(key="pipeline-summary", markdown=_markdown(result))
    return result


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# visionloop run: snapshot `{result['snapshot'] or 'not cut'}`",
        "",
        f"Run report: `{result['report']}`",
        "",
        "| stage | input | accepted | quarantined | reasons |",
        "|---|---:|---:|---:|---|",
    ]
    for name, c in result["counts"].items():
        reasons = ", ".join(f"{k}: {v}" for k, v in c["reasons"].items()) or "-"
        lines.append(
            f"| {name} | {c['input']} | {c['accepted']} | {c['quarantined']} | {reasons} |"
        )
    return "\n".join(lines)
