"""The refresh loop's Prefect tasks: labels coming back, files coming in, and what a new
snapshot changed, each published as an artifact.

Artifact keys: ``refresh-incoming`` (markdown), ``refresh-intake`` (table), ``refresh-drift``
(table of the drifted tests), ``refresh-to-annotate`` (table), ``snapshot-diff`` (markdown).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from visionloop import storage
from visionloop.config import Params
from visionloop.stages.base import Workspace

MAX_ROWS = 200


def _reference(params: Params, repo_dir: str) -> tuple[str | None, Any]:
    """(tag, curate manifest) of ``refresh.reference``; (None, None) without a snapshot."""
    from visionloop import snapshots

    tag = snapshots.resolve_ref(params.refresh.reference, repo_dir)
    if tag is None:
        return None, None
    return tag, snapshots.load_reference(tag, repo_dir, data_dir=params.run.data_dir)


@task(name="refresh-incoming", cache_policy=NO_CACHE, persist_result=False)
def incoming_task(params: Params, repo_dir: str = ".") -> dict[str, Any]:
    """New and gone items of the source against the reference snapshot (by content hash)."""
    from visionloop.refresh.incoming import find_incoming

    tag, reference = _reference(params, repo_dir)
    ws = Workspace.from_params(params)
    uri = ws.manifest_uri("collect")
    current = storage.read_table(uri) if storage.exists(uri) else None
    found = find_incoming(params.collect, reference, current, params.run.max_workers * 2)
    out = {"reference": tag, **found.to_dict()}
    lines = [
        f"# Incoming against `{tag or 'no snapshot'}`",
        "",
        f"{found.listed} file(s) in `{params.collect.source}`: {found.known_by_stamp} known by "
        f"stamp, {found.hashed} hashed; **{len(found.new)} new**, {len(found.gone)} gone, "
        f"{found.known_elsewhere} known under another name.",
    ]
    if found.new:
        lines += ["", *[f"- `{n['source_uri']}`" for n in found.new[:MAX_ROWS]]]
    create_markdown_artifact(key="refresh-incoming", markdown="\n".join(lines))
    return out


@task(name="refresh-intake", cache_policy=NO_CACHE, persist_result=False)
def intake_task(params: Params, params_path: str) -> dict[str, Any]:
    """Returned label exports from the inbox, matched back, QA-checked, made an import source."""
    import json

    from visionloop.refresh.request import ensure_returned_source
    from visionloop.refresh.roundtrip import intake, returned_files

    rp = params.refresh
    ws = Workspace.from_params(params)
    man_uri = ws.manifest_uri("curate")
    if not storage.exists(man_uri) or not storage.exists(rp.inbox):
        return {"taken": [], "skipped": [], "failed": [], "source_added": False}
    tasks_uri = ws.uri("refresh", "tasks", "tasks.parquet")
    cat_uri = ws.uri("import_annotations", "categories.json")
    result = intake(
        rp.inbox,
        rp.returned_dir,
        storage.read_table(man_uri),
        storage.read_table(tasks_uri) if storage.exists(tasks_uri) else None,
        params,
        json.loads(storage.read_text(cat_uri)) if storage.exists(cat_uri) else None,
    )
    added = bool(returned_files(rp.returned_dir)) and ensure_returned_source(
        params_path, rp.returned_dir
    )
    if result.taken:
        create_table_artifact(
            key="refresh-intake",
            table=[{k: v for k, v in t.items() if k != "unmatched_refs"} for t in result.taken],
            description=f"Returned label exports taken in from {rp.inbox}",
        )
    return {**result.to_dict(), "source_added": added}


@task(
    name="dvc-commit-stages",
    cache_policy=NO_CACHE,
    persist_result=False,
    tags=["visionloop-dvc"],
)
def dvc_commit_stages_task(stages: list[str], params: Params, repo_dir: str = ".") -> bool:
    """Record every stage in dvc.lock with one ``dvc commit`` (after all their gates passed).

    Outputs on s3:// are not DVC-tracked (the manifests pin the objects by hash instead)."""
    import subprocess

    from visionloop import snapshots

    if storage.is_remote(params.run.data_dir):
        return False
    with snapshots.repo_lock(repo_dir):
        proc = subprocess.run(
            [snapshots.dvc_executable(), "commit", "--force", *stages],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
    if proc.returncode != 0:
        raise snapshots.SnapshotError(f"dvc commit failed: {proc.stderr.strip() or proc.stdout}")
    return True


@task(name="snapshot-diff", cache_policy=NO_CACHE, persist_result=False)
def diff_task(a: str, b: str, params: Params, repo_dir: str = ".") -> dict[str, Any]:
    """The diff of snapshot ``b`` against ``a`` as a markdown artifact."""
    from visionloop.refresh.diff import snapshot_diff

    diff = snapshot_diff(a, b, repo_dir, params.run.data_dir, params.refresh.drift_slices)
    create_markdown_artifact(
        key="snapshot-diff", markdown=diff.markdown(), description=f"{a} -> {b}"
    )
    return diff.to_dict()


@task(name="refresh-artifacts", cache_policy=NO_CACHE, persist_result=False)
def refresh_artifacts_task(params: Params) -> None:
    """The drifted tests and the labelling shortlist of the refresh stage as tables."""
    ws = Workspace.from_params(params)
    drift_uri, picks_uri = (
        ws.uri("refresh", "drift.parquet"),
        ws.uri("refresh", "to_annotate.parquet"),
    )
    if storage.exists(drift_uri):
        drift = storage.read_table(drift_uri)
        drifted = drift[drift["drifted"].astype(bool)] if len(drift) else drift
        cols = [c for c in ("feature", "test", "statistic", "threshold", "p_value_adjusted",
                            "n_reference", "n_current") if c in drift.columns]  # fmt: skip
        create_table_artifact(
            key="refresh-drift",
            table=drifted[cols]
            .astype(object)
            .where(drifted[cols].notna(), None)
            .to_dict("records"),
            description=f"{len(drifted)} of {len(drift)} drift test(s) flagged",
        )
    if storage.exists(picks_uri):
        picks = storage.read_table(picks_uri).head(MAX_ROWS)
        cols = [c for c in ("priority", "reason", "source_uri", "why") if c in picks.columns]
        create_table_artifact(
            key="refresh-to-annotate",
            table=picks[cols].astype(object).where(picks[cols].notna(), None).to_dict("records"),
            description="Labelling shortlist (task files in data/refresh/tasks/)",
        )
