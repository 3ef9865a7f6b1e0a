"""The pipeline flow: each stage, then its gate, then the next stage; last, the snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.common import RUN_KEYS, load_run_params, run_one_stage, run_stages, snapshot_message
from flows.runners import make_task_runner
from tasks.report import report_task
from tasks.versioning import snapshot_task
from visionloop.refresh.request import RunRequest, apply_request
from visionloop.snapshots import run_lock

_params = load_run_params  # (the name this module used before flows/common.py)
__all__ = ["RUN_KEYS", "pipeline", "run_one_stage"]


@flow(name="visionloop-pipeline", log_prints=True)
def pipeline(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    snapshot: bool = True,
    repo_dir: str = ".",
    request: RunRequest | None = None,
) -> dict[str, Any]:
    """Collect, anonymize, curate, import annotations, validate and refresh; then snapshot.

    A gate that fails raises, so the flow run fails and no snapshot is cut. ``request`` (the
    form of a custom run: source, labelling budget, reference snapshot) is written into
    params.yaml first, so that dvc.lock and the snapshot record what ran.
    """
    log = get_run_logger()
    params_file = str(Path(repo_dir) / params_path)
    params = _params(params_file, overrides)
    with (
        run_lock(repo_dir, wait=params.run.on_busy == "wait"),
        make_task_runner(params.run) as runner,
    ):
        if request is not None and apply_request(params_file, request):
            params = _params(params_file, overrides)
        counts, _ = run_stages(params, runner, repo_dir, log)
        result: dict[str, Any] = {"snapshot": None, "counts": counts}
        if snapshot:
            snap = snapshot_task(snapshot_message(counts, params), params, repo_dir)
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
