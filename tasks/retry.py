"""Retry only what a retry can fix: transient storage and network errors."""

from __future__ import annotations

from typing import Any

from visionloop.storage import is_transient


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task run only on a transient error."""
    try:
        state.result()
    except Exception as exc:  # the failed run's exception, re-raised by Prefect
        return is_transient(exc)
    return False
