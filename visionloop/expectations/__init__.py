"""Great Expectations gates between stages: suites built from params, and the gate runner.

Importing this package is cheap; Great Expectations itself is imported on the first gate run.
"""

from visionloop.expectations.gate import (
    ExpectationOutcome,
    GateFailed,
    GateResult,
    check_table,
    enforce,
    evaluate_gate,
    read_gate_result,
    run_gate,
)
from visionloop.expectations.suites import GATES, Check, gate_checks, gate_suite_hash, suite_name

__all__ = [
    "GATES",
    "Check",
    "ExpectationOutcome",
    "GateFailed",
    "GateResult",
    "check_table",
    "enforce",
    "evaluate_gate",
    "gate_checks",
    "gate_suite_hash",
    "read_gate_result",
    "run_gate",
    "suite_name",
]
