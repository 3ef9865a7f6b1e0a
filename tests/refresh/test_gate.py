"""The refresh gate on real drift reports: a calm batch passes; dataset / image drift warns,
or blocks the refresh snapshot with ``refresh.drift_severity: error``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from visionloop.config import Params
from visionloop.expectations.gate import GateFailed, enforce, run_gate
from visionloop.expectations.suites import gate_checks
from visionloop.refresh.drift import DriftConfig, DriftData, drift_report
from visionloop.stages.base import Workspace


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("gxroot"))


def _table(shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(0, 1, 300), "b": rng.normal(0, 1, 300)})
    cur = pd.DataFrame({"a": rng.normal(shift, 1, 100), "b": rng.normal(shift, 1, 100)})
    emb_r, emb_c = rng.normal(0, 1, (300, 3)), rng.normal(shift, 1, (100, 3))
    return drift_report(
        DriftData(ref, emb_r),
        DriftData(cur, emb_c),
        DriftConfig(mmd_permutations=200),
        numeric=["a", "b"],
        categorical=[],
    )


def _run(gx_root: str, tmp_path: Path, table: pd.DataFrame, params: Params):
    ws = Workspace(str(tmp_path / "data"))
    from visionloop import storage

    storage.write_table(ws.uri("refresh", "drift.parquet"), table)
    return run_gate("refresh", ws, params, context_root=gx_root)


@pytest.mark.slow  # Great Expectations' import and context: ~10-40 s on a loaded machine
def test_a_calm_report_passes_clean(gx_root: str, tmp_path: Path) -> None:
    table = _table(0.0)
    assert not table["drifted"].any()
    result = _run(gx_root, tmp_path, table, Params())
    assert result.success and result.errors == [] and result.warnings == []
    assert result.outcome("statistic_non_negative").success  # nan p-values are not failures


@pytest.mark.slow
def test_drift_warns_by_default_and_blocks_when_configured(gx_root: str, tmp_path: Path) -> None:
    table = _table(1.5)
    assert set(table.loc[table["drifted"], "feature"]) == {"a", "b", "embedding", "dataset"}
    warned = _run(gx_root, tmp_path, table, Params())
    assert warned.success
    assert {w.key for w in warned.warnings} == {
        "drifted_share", "dataset_not_drifted", "embedding_not_drifted",
    }  # fmt: skip
    strict = Params().with_overrides({"refresh.drift_severity": "error"})
    blocked = _run(gx_root, tmp_path, table, strict)
    assert not blocked.success
    assert {e.key for e in blocked.errors} == {"dataset_not_drifted", "embedding_not_drifted"}
    with pytest.raises(GateFailed, match="dataset_not_drifted"):
        enforce(blocked)


def test_the_drift_verdict_checks_follow_the_configured_severity() -> None:
    """(No GX import: the suite is plain data.)"""
    checks = {c.key: c for c in gate_checks("refresh", Params())}
    for key in ("dataset_not_drifted", "embedding_not_drifted"):
        assert checks[key].severity == "warning"
        assert checks[key].kwargs["row_condition"]["parameter"] == key.split("_")[0]
    strict = Params().with_overrides({"refresh.drift_severity": "error"})
    assert gate_checks("refresh", strict)[-1].severity == "error"
    assert checks["statistic_non_negative"].kwargs == {"column": "statistic", "min_value": 0.0}
