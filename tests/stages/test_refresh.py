"""Refresh stage on written stage outputs, with the reference injected (no git/DVC needed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import ks_2samp

from tests.helpers import write_pipeline
from visionloop import storage
from visionloop.config import Params
from visionloop.refresh.drift import DRIFT_COLUMNS
from visionloop.refresh.select import SELECT_COLUMNS
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.refresh import RefreshStage

N = 60
QUARANTINE = {3: ("blurry", "curate"), 7: ("corrupt", "collect")}


@pytest.fixture
def ws_params(tmp_path: Path) -> tuple[Workspace, Params, dict[str, pd.DataFrame]]:
    params = Params.model_validate(
        {"run": {"data_dir": str(tmp_path / "data")}, "refresh": {"annotate_budget": 5}}
    )
    ws = Workspace.from_params(params)
    tables = write_pipeline(ws, n=N, quarantine=QUARANTINE)
    # half the accepted items are labelled; the rest are candidates for labelling
    ann = tables["import_annotations"]
    labelled = sorted(set(ann["item_id"]))[: len(set(ann["item_id"])) // 2]
    ann = ann[ann["item_id"].isin(labelled)]
    storage.write_table(ws.uri("import_annotations", "annotations.parquet"), ann)
    tables["import_annotations"] = ann
    return ws, params, tables


def _read(ws: Workspace, name: str) -> pd.DataFrame:
    return storage.read_table(ws.uri("refresh", name))


def test_first_run_without_reference(ws_params) -> None:
    ws, params, tables = ws_params
    summary = run_stage(RefreshStage(reference=None), ws, params)
    cur = tables["curate"]
    accepted = cur[cur["status"] == "accepted"]
    new = _read(ws, "new_items.parquet")
    assert list(new.columns) == ["item_id", "source_uri"]
    assert set(new["item_id"]) == set(accepted["item_id"]) and len(new) == N - 2
    drift = _read(ws, "drift.parquet")
    assert drift.empty and list(drift.columns) == DRIFT_COLUMNS
    picks = _read(ws, "to_annotate.parquet")
    assert list(picks.columns) == SELECT_COLUMNS and len(picks) == 5
    assert not set(picks["item_id"]) & set(tables["import_annotations"]["item_id"])
    assert picks["why"].str.startswith("new since the reference, unlabelled").all()
    # counts mirror curate; refresh decides nothing and writes no manifest
    assert (summary.input, summary.accepted, summary.quarantined) == (N, N - 2, 2)
    assert summary.reasons == {"blurry": 1, "corrupt": 1}
    assert not storage.exists(ws.manifest_uri("refresh"))
    d = summary.details
    assert d["n_new"] == N - 2 and d["n_drifted"] == 0 and d["dataset_drift"] is False
    assert "no reference snapshot" in d["drift_skipped_reason"]
    assert d["n_labelled"] + d["n_unlabelled"] == N - 2 and d["n_labelled"] == (N - 2) // 2


def test_same_snapshot_is_no_news_and_no_drift(ws_params) -> None:
    ws, params, tables = ws_params
    summary = run_stage(RefreshStage(reference=tables["curate"]), ws, params)
    assert _read(ws, "new_items.parquet").empty
    drift = _read(ws, "drift.parquet")
    assert drift["feature"].tolist() == [
        "blur", "brightness", "entropy", "width", "height", "aspect",
        "camera_model", "curate_day_night",
    ]  # fmt: skip
    assert drift["statistic"].fillna(0).eq(0).all() and not drift["drifted"].any()
    assert summary.details["n_new"] == 0 and summary.details["dataset_drift"] is False
    picks = _read(ws, "to_annotate.parquet")
    assert len(picks) == 5 and picks["why"].str.startswith("in the reference").all()


def test_darker_current_data_drifts(ws_params) -> None:
    ws, params, tables = ws_params
    reference = tables["curate"].copy()
    current = tables["curate"].copy()
    current["curate_brightness"] = current["curate_brightness"] - 0.1
    storage.write_table(ws.manifest_uri("curate"), current)
    summary = run_stage(RefreshStage(reference=reference), ws, params)
    drift = _read(ws, "drift.parquet").set_index("feature")
    acc = reference["status"] == "accepted"
    expected = ks_2samp(
        reference.loc[acc, "curate_brightness"], current.loc[acc, "curate_brightness"]
    )
    assert drift.at["brightness", "statistic"] == pytest.approx(expected.statistic, abs=0)
    assert drift.at["brightness", "p_value"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert bool(drift.at["brightness", "drifted"])
    assert drift["drifted"].sum() == 1
    assert summary.details["drifted_features"] == ["brightness"]
    assert summary.details["dataset_drift"] is False  # 1 of 8 features < 0.5 share


def test_loader_gets_the_reference_param_and_old_snapshots_lack_columns(ws_params) -> None:
    ws, params, tables = ws_params
    seen: list[str] = []
    old = tables["curate"].drop(columns=["curate_day_night"]).iloc[: N // 2]

    def loader(ref: str, p: Params) -> pd.DataFrame:
        seen.append(ref)
        return old

    params = params.with_overrides({"refresh.reference": "dataset-v3"})
    summary = run_stage(RefreshStage(reference_loader=loader), ws, params)
    assert seen == ["dataset-v3"]
    assert summary.details["features_missing_in_reference"] == ["curate_day_night"]
    assert "curate_day_night" not in set(_read(ws, "drift.parquet")["feature"])
    old_acc = old[old["status"] == "accepted"]
    assert summary.details["n_new"] == N - 2 - len(old_acc)


def test_no_annotations_file_means_no_labels(ws_params) -> None:
    ws, params, _ = ws_params
    storage.remove(ws.uri("import_annotations", "annotations.parquet"))
    summary = run_stage(RefreshStage(reference=None), ws, params)
    assert summary.details["n_labelled"] == 0
    assert len(_read(ws, "to_annotate.parquet")) == 5


def test_default_loader_with_reference_none(ws_params) -> None:
    """The real snapshot loader: ``none`` needs no git repository and means no reference."""
    ws, params, _ = ws_params
    params = params.with_overrides({"refresh.reference": "none"})
    summary = run_stage(RefreshStage(), ws, params)
    assert summary.details["reference_items"] == 0 and summary.details["n_new"] == N - 2
