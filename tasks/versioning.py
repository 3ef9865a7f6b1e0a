"""DVC and git writes: recording stages in dvc.lock and cutting snapshots, one at a time.

DVC holds one repo-wide lock, so these tasks take visionloop's repo lock and run with a
Prefect tag-based concurrency limit of 1 where the server has one configured.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from visionloop import snapshots, storage
from visionloop.config import Params
from visionloop.schema import STAGES


@task(
    name="dvc-commit",
    cache_policy=NO_CACHE,
    persist_result=False,
    tags=["visionloop-dvc"],
    task_run_name="dvc-commit-{stage}",
)
def dvc_commit(stage: str, params: Params, repo_dir: str = ".") -> bool:
    """Record a stage's deps and outs in dvc.lock, as `dvc repro` would have.

    Outputs on s3:// are not DVC-tracked (the manifests pin the objects by hash instead).
    """
    if storage.is_remote(params.run.data_dir):
        return False
    with snapshots.repo_lock(repo_dir):
        snapshots.commit_stage(stage, repo_dir)
    return True


@task(name="snapshot", cache_policy=NO_CACHE, persist_result=False, tags=["visionloop-dvc"])
def snapshot_task(message: str, params: Params, repo_dir: str = ".") -> snapshots.SnapshotResult:
    data_dir = params.run.data_dir
    with snapshots.repo_lock(repo_dir):
        return snapshots.cut_snapshot(
            repo_dir,
            message=message,
            remote_data_dir=data_dir if storage.is_remote(data_dir) else None,
            stages=STAGES,
        )
