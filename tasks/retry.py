"""Retry only what a retry can fix: transient storage and network errors."""

from __future__ import annotations

from typing import Any

# Errors a second attempt may not hit: S3 endpoints briefly down, timeouts, connection resets.
TRANSIENT = (ConnectionError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    name = type(exc).__name__
    # botocore/aiohttp errors without importing them here
    return name in {"EndpointConnectionError", "ClientConnectorError", "ServerDisconnectedError"}


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task run only on a transient error."""
    try:
        state.result()
    except Exception as exc:  # the failed run's exception, re-raised by Prefect
        return is_transient(exc)
    return False
