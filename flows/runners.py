"""Pick the task runner for the shard work from params: threads, processes or Dask."""

from __future__ import annotations

from typing import Any

from visionloop.config import RunParams


def make_task_runner(run: RunParams) -> Any:
    """A bounded runner: Prefect's default thread pool is unbounded without ``max_workers``."""
    if run.runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=run.max_workers)
    if run.runner == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=run.max_workers)
    from prefect_dask import DaskTaskRunner

    if run.dask_address:
        return DaskTaskRunner(address=run.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": run.max_workers, "threads_per_worker": 1, "processes": True}
    )
