"""The refresh flow: take in returned labels, look for new items, and when something changed
run the (incremental) stages, gate, cut the next snapshot and publish its diff.

1. the run request (source, labelling budget, reference snapshot) goes into params.yaml;
2. ``intake``: returned label exports in ``refresh.inbox`` are matched back to their items,
   QA-checked and written to ``refresh.returned_dir``, an import source;
3. ``incoming``: the source is listed and compared with the reference snapshot by content
   hash (files known by stamp are not read);
4. nothing new, nothing gone, no labels returned, no request change: stop (no stage runs, no
   snapshot). Else every stage runs (each is incremental by item id, so only new items are
   decoded; curate checks their duplicates against every accepted item), each gated; once all
   gates passed, one ``dvc commit`` records every stage; then the snapshot, then the diff of
   the new snapshot against the reference as a markdown artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.common import load_run_params, run_stages, snapshot_message
from flows.runners import make_task_runner
from tasks.refresh import (
    diff_task,
    dvc_commit_stages_task,
    incoming_task,
    intake_task,
    refresh_artifacts_task,
)
from tasks.versioning import snapshot_task
from visionloop.refresh.request import RunRequest, apply_request
from visionloop.snapshots import run_lock


@flow(name="visionloop-refresh", log_prints=True)
def refresh(
    request: RunRequest | None = None,
    params_path: str = "params.yaml",
    snapshot: bool = True,
    repo_dir: str = ".",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Refresh the dataset from new incoming items and returned labels (see the module doc)."""
    log = get_run_logger()
    params_file = str(Path(repo_dir) / params_path)
    params = load_run_params(params_file, overrides)
    result: dict[str, Any] = {"snapshot": None, "snapshot_created": False, "ran": False}
    with (
        run_lock(repo_dir, wait=params.run.on_busy == "wait"),
        make_task_runner(params.run) as runner,
    ):
        changes = apply_request(params_file, request) if request is not None else []
        if changes:
            params = load_run_params(params_file, overrides)
        result["request_changes"] = changes
        taken = intake_task(params, params_file)
        if taken["source_added"]:
            params = load_run_params(params_file, overrides)
        result["intake"] = taken
        incoming = incoming_task(params, repo_dir)
        result["incoming"] = {k: v for k, v in incoming.items() if k not in ("new", "gone")}
        result["new"] = len(incoming["new"])
        result["gone"] = len(incoming["gone"])
        reference = incoming["reference"]
        if not (incoming["changed"] or taken["taken"] or changes):
            log.info("nothing new since %s: no stage runs, no snapshot", reference or "(none)")
            create_markdown_artifact(
                key="refresh-summary",
                markdown=f"# Refresh: nothing new since `{reference or 'no snapshot'}`\n\n"
                f"{incoming['listed']} file(s) listed, all known; no returned labels.",
            )
            result["snapshot"] = reference
            return result
        counts, summaries = run_stages(params, runner, repo_dir, log, commit_each=False)
        dvc_commit_stages_task(list(counts), params, repo_dir)
        result["ran"] = True
        result["counts"] = counts
        result["refresh"] = summaries["refresh"].details if "refresh" in summaries else {}
        refresh_artifacts_task(params)
        if snapshot:
            snap = snapshot_task(snapshot_message(counts, params), params, repo_dir)
            result["snapshot"] = snap.tag
            result["snapshot_created"] = snap.created
            if snap.created and reference:
                result["diff"] = diff_task(reference, snap.tag, params, repo_dir)
    create_markdown_artifact(key="refresh-summary", markdown=_markdown(result, reference))
    return result


def _markdown(result: dict[str, Any], reference: str | None) -> str:
    r = result.get("refresh", {})
    lines = [
        f"# Refresh against `{reference or 'no snapshot'}`: snapshot "
        f"`{result['snapshot'] or 'not cut'}`",
        "",
        f"{result['new']} new item(s), {result['gone']} gone; "
        f"{len(result['intake']['taken'])} returned export(s) taken in.",
        "",
        f"Drift: {r.get('n_drifted', 0)} test(s) flagged"
        + (" (**dataset drift**)" if r.get("dataset_drift") else "")
        + f"; features {r.get('drifted_features') or '-'}; slices "
        f"{r.get('drifted_slices') or '-'}.",
        f"Labelling: {r.get('n_to_annotate', 0)} proposed {r.get('to_annotate_by_reason', {})}.",
    ]
    if result.get("request_changes"):
        lines += ["", "params.yaml changed by the run request:", ""]
        lines += [f"- {c}" for c in result["request_changes"]]
    return "\n".join(lines)
