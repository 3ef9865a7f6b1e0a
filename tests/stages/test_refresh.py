"""Refresh stage on a workspace of measured synthetic images (reference injected: no git/DVC)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import tree_digest
from tests.refresh import builders as b
from visionloop import storage
from visionloop.config import Params
from visionloop.refresh import synthetic as syn
from visionloop.refresh.drift import ALL_COLUMNS
from visionloop.refresh.select import ALL_COLUMNS as SELECT_COLUMNS
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.refresh import RefreshStage


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 120-image reference (all labelled) and a 50-image night-heavy batch."""
    root = tmp_path_factory.mktemp("refresh")
    ws = Workspace(str(root / "data"))
    ref, ref_boxes = b.measured_items(ws, syn.no_shift(120), seed=1, prefix="ref", split="train")
    new, new_boxes = b.measured_items(ws, syn.night_shift(50), seed=2, prefix="new")
    return {"root": root, "ref": ref, "new": new, "boxes": {**ref_boxes, **new_boxes}}


def _params(ws_dir: Path, **refresh: object) -> Params:
    return Params.model_validate(
        {
            "run": {"data_dir": str(ws_dir), "shard_size": 64},
            "curate": {"coverage_min_count": 1},  # no coverage gaps: the gap pass stays idle
            "refresh": {
                "annotate_budget": 20,
                "mmd_permutations": 200,
                "mmd_max_permutations": 1000,
                **refresh,
            },
        }
    )


def _workspace(world: dict, tmp_path: Path, with_new: bool = True) -> tuple[Workspace, Params]:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(world["root"] / "data", data)
    ws = Workspace(str(data))
    cur = pd.concat([world["ref"], world["new"]] if with_new else [world["ref"]], ignore_index=True)
    labels = b.annotations_for(world["ref"], world["boxes"])
    b.write_inputs(ws, cur, labels)
    return ws, _params(data)


def _read(ws: Workspace, name: str) -> pd.DataFrame:
    return storage.read_table(ws.uri("refresh", name))


def test_first_run_without_reference(world: dict, tmp_path: Path) -> None:
    ws, params = _workspace(world, tmp_path)
    summary = run_stage(
        RefreshStage(reference=None),
        ws,
        params.with_overrides({"refresh.rebalance.enabled": False}),
    )
    new = _read(ws, "new_items.parquet")
    assert list(new.columns) == ["item_id", "source_uri"] and len(new) == 170
    drift = _read(ws, "drift.parquet")
    assert drift.empty and list(drift.columns) == ALL_COLUMNS
    assert "no reference snapshot" in summary.details["drift_skipped_reason"]
    picks = _read(ws, "to_annotate.parquet")
    assert list(picks.columns) == SELECT_COLUMNS and len(picks) == 20
    assert not set(picks["item_id"]) & set(world["ref"]["item_id"])  # those are labelled
    assert (summary.input, summary.accepted, summary.quarantined) == (170, 170, 0)
    assert not storage.exists(ws.manifest_uri("refresh"))
    assert summary.details["embedded"] == 170 and summary.details["n_labelled"] == 120
    emb = _read(ws, "embeddings.parquet")
    assert len(emb) == 170 and emb["error"].isna().all()
    assert storage.exists(ws.uri("refresh", "tasks", "label_studio.json"))
    assert storage.exists(ws.uri("refresh", "tasks", "cvat.xml"))


def test_night_batch_drifts_and_a_rerun_does_no_image_work(world: dict, tmp_path: Path) -> None:
    ws, params = _workspace(world, tmp_path)
    stage = RefreshStage(reference=world["ref"])
    summary = run_stage(stage, ws, params)
    d = summary.details
    assert d["n_new"] == 50 and d["reference_items"] == 120
    assert {"day_night", "time_of_day"} <= set(d["drifted_features"])
    drift = _read(ws, "drift.parquet").set_index("feature")
    assert drift.at["day_night", "n_current"] == 50 and drift.at["day_night", "n_reference"] == 120
    assert drift.at["day_night", "statistic"] == pytest.approx(abs(20 / 50 - 12 / 120))
    assert not drift.loc[["camera", "blur", "size", "aspect"], "drifted"].any()
    assert drift.at["outcome", "statistic"] == 0.0  # every item accepted on both sides
    picks = _read(ws, "to_annotate.parquet")
    assert (picks["reason"] == "drift").sum() == 6  # 30% of 20
    assert set(picks.loc[picks["reason"] == "drift", "item_id"]) <= set(world["new"]["item_id"])
    # rerun: nothing to embed or derive, same bytes out
    before = tree_digest(str(tmp_path / "data" / "refresh"))
    calls: list[int] = []
    original = stage.process
    stage.process = lambda ws_, p, shard: calls.append(shard.index) or original(ws_, p, shard)  # type: ignore[method-assign]
    again = run_stage(stage, ws, params)
    assert calls == [] and again.details["embedded"] == 0
    assert again.details["embeddings_cached"] == 170
    assert again.details["augmented"]["derived_now"] == 0
    after = tree_digest(str(tmp_path / "data" / "refresh"))
    assert {k: v for k, v in after.items() if k != "summary.json"} == {
        k: v for k, v in before.items() if k != "summary.json"
    }


def test_rebalancing_derives_train_items_only_and_drops_them_when_a_parent_leaves_train(
    world: dict, tmp_path: Path
) -> None:
    ws, params = _workspace(world, tmp_path, with_new=False)
    labels = b.annotations_for(world["ref"], world["boxes"])
    counts = labels.groupby("category")["item_id"].nunique()
    params = params.with_overrides(
        {"refresh.rebalance.target_ratio": 1.0, "refresh.rebalance.max_items": 12}
    )
    summary = run_stage(RefreshStage(reference=world["ref"]), ws, params)
    rb = summary.details["augmented"]["rebalance"]
    small = counts.idxmin()
    assert (
        rb["target"] == counts.max()
        and rb["groups"][small]["needed"] == counts.max() - counts.min()
    )
    aug = _read(ws, "augmented/manifest.parquet")
    assert len(aug) == 12 and set(aug["group"]) == {small} and aug["error"].isna().all()
    assert (aug["split"] == "train").all() and (aug["family_id"] == aug["parent_item_id"]).all()
    assert set(aug["parent_item_id"]) <= set(world["ref"]["item_id"])
    for rel in aug["object_uri"]:
        assert storage.exists(ws.resolve(rel))
    ann = _read(ws, "augmented/annotations.parquet")
    assert set(ann["item_id"]) <= set(aug["item_id"]) and (ann["match_status"] == "matched").all()
    assert (ann["subset"] == "train").all() and small in set(ann["category"])
    # one parent moves to the validation split: its derived items go, and never come back
    moved = aug["parent_item_id"].iloc[0]
    cur = storage.read_table(ws.manifest_uri("curate"))
    cur.loc[cur["item_id"] == moved, "curate_split"] = "val"
    storage.write_table(ws.manifest_uri("curate"), cur)
    again = run_stage(RefreshStage(reference=world["ref"]), ws, params)
    aug2 = _read(ws, "augmented/manifest.parquet")
    assert moved not in set(aug2["parent_item_id"])
    assert not set(aug.loc[aug["parent_item_id"] == moved, "object_uri"]) & set(aug2["object_uri"])
    for rel in aug.loc[aug["parent_item_id"] == moved, "object_uri"]:
        assert not storage.exists(ws.resolve(rel))
    assert (
        again.details["augmented"]["reused"]
        == len(aug2) - again.details["augmented"]["derived_now"]
    )


def test_loader_gets_the_reference_param_and_old_snapshots_lack_columns(
    world: dict, tmp_path: Path
) -> None:
    ws, params = _workspace(world, tmp_path)
    seen: list[str] = []
    old = world["ref"].drop(columns=["curate_day_night"])

    def loader(ref: str, p: Params) -> pd.DataFrame:
        seen.append(ref)
        return old

    params = params.with_overrides(
        {"refresh.reference": "dataset-v3", "refresh.rebalance.enabled": False}
    )
    summary = run_stage(RefreshStage(reference_loader=loader), ws, params)
    assert seen == ["dataset-v3"]
    assert summary.details["features_missing_in_reference"] == ["day_night"]
    assert "day_night" not in set(_read(ws, "drift.parquet")["feature"])
    assert summary.details["n_new"] == 50


def test_default_loader_with_reference_none(world: dict, tmp_path: Path) -> None:
    ws, params = _workspace(world, tmp_path)
    params = params.with_overrides(
        {"refresh.reference": "none", "refresh.rebalance.enabled": False}
    )
    summary = run_stage(RefreshStage(), ws, params)
    assert summary.details["reference_items"] == 0 and summary.details["n_new"] == 170


def test_a_bad_pipeline_declaration_fails_before_any_pixel_work(
    world: dict, tmp_path: Path
) -> None:
    ws, params = _workspace(world, tmp_path, with_new=False)
    params = params.with_overrides(
        {
            "refresh.rebalance.target_ratio": 1.0,
            "refresh.rebalance.pipelines": {"default": [{"name": "NoSuchTransform"}]},
        }
    )
    stage = RefreshStage(reference=world["ref"])
    with pytest.raises(ValueError, match=r"pipelines\.default: .*unknown albumentations"):
        stage.plan(ws, params)
    assert not storage.exists(ws.uri("refresh", "embeddings.parquet"))
