"""Stage order and the gate after each, shared by the CLI driver and the Prefect flow."""

from __future__ import annotations

import json
from typing import Any

from visionloop import storage
from visionloop.config import Params
from visionloop.schema import STAGES
from visionloop.stages.base import StageSummary, Workspace, read_summary

# The gate that checks a stage's output before the next stage may read it. The validate stage
# runs the "import_annotations" gate itself (it is the last gate before a snapshot).
GATE_AFTER: dict[str, str] = {
    "collect": "collect",
    "anonymize": "anonymize",
    "curate": "curate",
    "refresh": "refresh",
}


def summaries(ws: Workspace) -> dict[str, StageSummary]:
    """Each stage's latest summary, in pipeline order; stages that never ran are left out."""
    found = {name: read_summary(ws, name) for name in STAGES}
    return {name: s for name, s in found.items() if s is not None}


def gate_results(ws: Workspace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        uri = ws.uri(stage, "gate.json")
        if storage.exists(uri):
            out[stage] = json.loads(storage.read_text(uri))
    return out


def run_gate_for(stage: str, ws: Workspace, params: Params, context_root: str = ".") -> Any:
    """Run the gate that follows ``stage`` (if any) and raise ``GateFailed`` when it blocks."""
    gate = GATE_AFTER.get(stage)
    if gate is None:
        return None
    from visionloop.expectations.gate import enforce, run_gate

    result = run_gate(gate, ws, params, context_root=context_root)
    enforce(result)
    return result
