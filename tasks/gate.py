"""The Great Expectations gate after a stage, published as a Prefect table artifact."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from visionloop.config import Params
from visionloop.stages.base import Workspace


def publish_gate(result: Any) -> None:
    rows = [
        {
            "expectation": r.get("expectation"),
            "column": r.get("column") or "",
            "severity": r.get("severity"),
            "success": r.get("success"),
            "unexpected": r.get("unexpected_count"),
            "of": r.get("element_count"),
        }
        for r in asdict(result)["results"]
    ]
    state = "passed" if result.success else "FAILED"
    create_table_artifact(
        key=f"gate-{result.gate.replace('_', '-')}",
        table=rows,
        description=f"Gate {result.gate} {state}. Data Docs: {result.docs_path}",
    )


@task(name="gate", cache_policy=NO_CACHE, persist_result=False, task_run_name="gate-{gate}")
def gate_task(gate: str, params: Params, context_root: str = ".") -> bool:
    """Run the suite; publish its table; raise GateFailed (failing the flow) when it blocks."""
    from visionloop.expectations.gate import enforce, run_gate

    result = run_gate(gate, Workspace.from_params(params), params, context_root=context_root)
    publish_gate(result)
    enforce(result)
    return bool(result.success)
