"""The refresh loop on a real Prefect server: deployments with their schedules, and the
acceptance run (snapshot v1, a shifted batch, drift, selection, tasks, returned labels, v2)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, git, make_project

POOL = "visionloop-local"


def _env(api: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFECT_API_URL"] = api
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


async def _ensure_pool(api: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass


async def _read(names: list[str]) -> dict:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return {n: await client.read_deployment_by_name(n) for n in names}


def test_prefect_deploy_registers_both_deployments_with_their_schedules(
    tmp_path: Path, prefect_api: str
) -> None:
    project = make_project(tmp_path / "repo")
    for name in ("prefect.yaml",):
        (project / name).write_text((ROOT / name).read_text())
    asyncio.run(_ensure_pool(prefect_api))
    done = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy", "--all"],
        cwd=project,
        env=_env(prefect_api),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    declared = {
        d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    }
    got = asyncio.run(
        _read(["visionloop-pipeline/pipeline-nightly", "visionloop-refresh/refresh-hourly"])
    )
    for full, dep in got.items():
        want = declared[full.split("/")[1]]
        assert dep.entrypoint == want["entrypoint"]
        assert dep.work_pool_name == POOL
        crons = [(s.schedule.cron, s.schedule.timezone) for s in dep.schedules]
        assert crons == [(s["cron"], s["timezone"]) for s in want["schedules"]]
        assert all(s.active for s in dep.schedules)
        # the run request is a form: an object with the three fields
        props = dep.parameter_openapi_schema["properties"]
        assert "request" in props
        definitions = dep.parameter_openapi_schema.get("definitions", {})
        request = definitions["RunRequest"]["properties"]
        assert set(request) == {"source", "budget", "reference"}
    assert got["visionloop-refresh/refresh-hourly"].parameters == {
        "params_path": "params.yaml",
        "snapshot": True,
    }


def test_serve_builds_the_same_deployments_from_prefect_yaml() -> None:
    from flows.serve import runner_deployments

    deps = runner_deployments(ROOT / "prefect.yaml")
    assert [d.name for d in deps] == ["pipeline-nightly", "refresh-hourly"]
    assert [d.schedules[0].schedule.cron for d in deps] == ["0 2 * * *", "15 * * * *"]
    assert [d.flow_name for d in deps] == ["visionloop-pipeline", "visionloop-refresh"]
    only = runner_deployments(ROOT / "prefect.yaml", only=("refresh-hourly",))
    assert [d.name for d in only] == ["refresh-hourly"]
    with pytest.raises(KeyError, match="no deployment"):
        runner_deployments(ROOT / "prefect.yaml", only=("nope",))


def test_visionloop_serve_hands_the_deployments_to_prefect_serve(monkeypatch) -> None:
    import prefect
    from click.testing import CliRunner

    from visionloop.cli import main

    served: list = []
    monkeypatch.setattr(prefect, "serve", lambda *deps, **kw: served.extend(deps))
    result = CliRunner().invoke(
        main, ["serve", "--prefect-yaml", str(ROOT / "prefect.yaml"), "--only", "refresh-hourly"]
    )
    assert result.exit_code == 0, result.output
    assert [d.name for d in served] == ["refresh-hourly"]


def test_visionloop_run_flow_refresh_runs_the_refresh_flow(monkeypatch) -> None:
    from click.testing import CliRunner

    import flows.pipeline
    import flows.refresh
    from visionloop.cli import main

    calls: list = []

    def fake(name: str):
        return lambda **kw: calls.append((name, kw)) or {"flow": name}

    monkeypatch.setattr(flows.refresh, "refresh", fake("refresh"))
    monkeypatch.setattr(flows.pipeline, "pipeline", fake("pipeline"))
    result = CliRunner().invoke(main, ["run", "--flow", "refresh", "--no-snapshot"])
    assert result.exit_code == 0, result.output
    assert calls == [
        ("refresh", {"params_path": "params.yaml", "overrides": {}, "snapshot": False})
    ]
    assert json.loads(result.output) == {"flow": "refresh"}
    calls.clear()
    assert CliRunner().invoke(main, ["run", "--max-workers", "3"]).exit_code == 0
    assert calls == [
        ("pipeline", {"params_path": "params.yaml", "overrides": {"run.max_workers": 3},
                      "snapshot": True})
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------
# Acceptance: the whole loop against a real server, git and DVC (slow)
# ------------------------------------------------------------------------------------------

N_TRAIN, N_VAL, N_BATCH, BUDGET = 60, 30, 60, 40


def _write_params(project: Path) -> None:
    from visionloop.config import Params

    params = Params().model_dump(by_alias=True)
    params["run"].update({"shard_size": 32, "max_workers": 2})
    params["import_annotations"]["sources"] = [
        {"format": "coco", "path": "data/source/annotations/v1.json"}
    ]
    params["curate"]["coverage_min_count"] = 20  # night x camera B stays a gap after the batch
    params["refresh"].update(
        {"annotate_budget": BUDGET, "mmd_permutations": 300, "inbox": "labels/inbox"}
    )
    params["refresh"]["rebalance"].update({"target_ratio": 1.0, "max_items": 16})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(project, "commit", "-qam", "test params")


def _returned_export(project: Path, truth: dict) -> list[dict]:
    """Label Studio's export of the task file: annotators drew the true boxes."""
    import numpy as np

    docs = json.loads((project / "data/refresh/tasks/label_studio.json").read_text())
    man = pd.read_parquet(project / "data/curate/manifest.parquet").set_index("item_id")
    jitter = np.random.default_rng(0)  # people do not draw the exact truth
    for d in docs:
        rel = man.at[d["data"]["item_id"], "rel_path"]
        w, h = 160, 120
        result = []
        for j, b in enumerate(truth[rel]["boxes"]):
            x, y, bw, bh = (v + jitter.uniform(-0.4, 0.4) for v in b["bbox"])
            result.append(
                {
                    "id": f"r{j}", "type": "rectanglelabels", "from_name": "label",
                    "to_name": "image", "original_width": w, "original_height": h,
                    "value": {"x": max(x, 0) / w * 100, "y": max(y, 0) / h * 100,
                              "width": bw / w * 100, "height": bh / h * 100,
                              "rotation": 0, "rectanglelabels": [b["category"]]},
                }
            )  # fmt: skip
        d["annotations"] = [{"id": 1, "completed_by": 3, "result": result}]
        d["predictions"] = []
    return docs


@pytest.mark.slow
def test_the_refresh_loop_end_to_end(tmp_path: Path, prefect_api: str) -> None:
    from flows.pipeline import pipeline
    from flows.refresh import refresh
    from visionloop.refresh import synthetic as syn
    from visionloop.refresh.diff import snapshot_diff

    project = make_project(tmp_path / "repo")
    images = project / "data/source/images"
    train = syn.write_batch(str(images / "train"), syn.no_shift(N_TRAIN), seed=1, prefix="v1")
    val = syn.write_batch(str(images / "val"), syn.no_shift(N_VAL), seed=2, prefix="v1")
    truth = {f"train/{k}": v for k, v in train.items()} | {f"val/{k}": v for k, v in val.items()}
    coco = syn.coco_document(truth, syn.no_shift())
    ann_dir = project / "data/source/annotations"
    ann_dir.mkdir(parents=True)
    (ann_dir / "v1.json").write_text(json.dumps(coco))
    _write_params(project)

    cwd = Path.cwd()
    os.chdir(project)
    try:
        v1 = pipeline(repo_dir=".")
        assert v1["snapshot"] == "dataset-v1"
        # nothing new: the refresh flow runs no stage and cuts nothing
        idle = refresh(repo_dir=".")
        assert idle["ran"] is False and idle["snapshot"] == "dataset-v1" and idle["new"] == 0

        # a batch with a planted shift: night share 10% -> 40%
        batch = syn.write_batch(
            str(images / "train"), syn.night_shift(N_BATCH), seed=3, prefix="b1"
        )
        truth |= {f"train/{k}": v for k, v in batch.items()}
        # ...with a re-encoded copy of a v1 image: new bytes, but a near duplicate of an item
        # accepted in v1 (duplicates of new items are checked against everything accepted)
        from PIL import Image

        original = images / "train" / sorted(train)[0]
        copy = images / "train" / "cam_a" / "b1_copy_of_v1.jpg"
        with Image.open(original) as im:
            im.save(copy, quality=70)
        truth["train/cam_a/b1_copy_of_v1.jpg"] = truth[f"train/{sorted(train)[0]}"]
        first = refresh(repo_dir=".", snapshot=False)
        assert first["ran"] and first["new"] == N_BATCH + 1 and first["snapshot"] is None
        r = first["refresh"]
        assert {"day_night", "brightness"} <= set(r["drifted_features"])
        assert "camera" not in r["drifted_features"] and "blur" not in r["drifted_features"]
        man = pd.read_parquet(project / "data/curate/manifest.parquet")
        pair = man.set_index("rel_path").loc[
            ["train/cam_a/b1_copy_of_v1.jpg", f"train/{sorted(train)[0]}"]
        ]
        # the copy and its v1 original: one is kept, the other quarantined as its near
        # duplicate (which one is curate's keeper policy: the sharper, see the report)
        assert sorted(pair["status"]) == ["accepted", "quarantined"]
        lost = pair[pair["status"] == "quarantined"].iloc[0]
        kept = pair.index[pair["status"] == "accepted"][0]
        assert lost["reason"] == "near_duplicate"
        assert lost["curate_near_duplicate_of"] == f"data/source/images/{kept}"
        original_lost = pair.at[f"train/{sorted(train)[0]}", "status"] == "quarantined"
        new_acc = man[(man["status"] == "accepted") & man["rel_path"].str.contains("/b1_")]
        drift = pd.read_parquet(project / "data/refresh/drift.parquet").set_index("feature")
        assert drift.at["day_night", "n_current"] == len(new_acc) >= N_BATCH - 3
        # the selection fills the gap quotas: every gap cell's unlabelled images, up to budget
        picks = pd.read_parquet(project / "data/refresh/to_annotate.parquet")
        gaps = pd.read_parquet(project / "data/curate/gaps.parquet")
        acc = man[man["status"] == "accepted"]
        joint = gaps[gaps["slice"].str.contains("×")]
        in_gaps = acc[acc["curate_cell"].isin(set(joint["cell"]))]
        labelled = set(
            pd.read_parquet(project / "data/import_annotations/annotations.parquet")["item_id"]
        )
        quota = in_gaps[~in_gaps["item_id"].isin(labelled)]
        assert len(quota) > 0
        gap_picks = picks[picks["reason"] == "gap"]
        if len(quota) <= BUDGET:
            assert set(gap_picks["item_id"]) == set(quota["item_id"])
        else:
            assert len(gap_picks) == BUDGET and set(gap_picks["item_id"]) <= set(quota["item_id"])
        assert gap_picks["priority"].tolist() == list(range(1, len(gap_picks) + 1))
        # task files for the picks
        tasks = pd.read_parquet(project / "data/refresh/tasks/tasks.parquet")
        assert tasks["item_id"].tolist() == picks["item_id"].tolist()
        assert (project / "data/refresh/tasks/cvat.xml").exists()

        # the labels come back; the next refresh takes them in, QA-checks them and cuts v2
        inbox = project / "labels/inbox"
        inbox.mkdir(parents=True)
        (inbox / "export-1.json").write_text(json.dumps(_returned_export(project, truth)))
        second = refresh(repo_dir=".")
        taken = second["intake"]["taken"]
        assert len(taken) == 1 and taken[0]["matched"] == taken[0]["rows"] > 0
        assert taken[0]["held_back"] == 0 and second["intake"]["source_added"] is True
        assert second["snapshot"] == "dataset-v2" and second["snapshot_created"]
        report = json.loads((project / "data/validate/report.json").read_text())
        assert report["qa"]["annotations"] > 0  # the returned labels went through label QA
        ann = pd.read_parquet(project / "data/import_annotations/annotations.parquet")
        returned = ann[ann["source_format"] == "label_studio"]
        assert set(returned["item_id"]) == set(picks["item_id"])
        assert (returned["match_status"] == "matched").all()

        # the diff v1 -> v2 (also published as an artifact by the flow)
        d = snapshot_diff("dataset-v1", "dataset-v2")
        assert d.items["added"] == len(new_acc)
        assert d.items["removed"] == d.items["removed_quarantined"] == int(original_lost)
        assert d.labels["newly_labelled"] == len(set(picks["item_id"]) - set(new_acc["item_id"]))
        assert d.labels["added_items_labelled"] == len(
            set(picks["item_id"]) & set(new_acc["item_id"])
        )
        assert second["diff"]["items"]["added"] == d.items["added"]
        night = d.slices.set_index(["dimension", "value"]).loc[("day_night", "night")]
        assert night["b"] > night["a"]
        assert {r["feature"] for r in d.drift["drifted"]} >= {"day_night"}

        # augmented items: train parents only, never validation
        aug = pd.read_parquet(project / "data/refresh/augmented/manifest.parquet")
        assert len(aug) > 0 and (aug["split"] == "train").all()
        split = man.set_index("item_id")["curate_split"]
        assert set(split[aug["parent_item_id"]]) == {"train"}
        assert not set(aug["item_id"]) & set(man.loc[man["curate_split"] == "val", "item_id"])

        # twice on the same input: nothing the second time
        again = refresh(repo_dir=".")
        assert again["ran"] is False and again["snapshot"] == "dataset-v2"
        assert "dataset-v3" not in git(project, "tag", "--list")

        # a batch drawn like the reference (v2: 90 images at 10% night + 60 at 40%) raises
        # no alarm
        night = (0.1 * (N_TRAIN + N_VAL) + 0.4 * N_BATCH) / (N_TRAIN + N_VAL + N_BATCH)
        calm_batch = syn.Batch(n=N_BATCH, night_share=night)
        syn.write_batch(str(images / "train"), calm_batch, seed=4, prefix="b2")
        calm = refresh(repo_dir=".")
        assert calm["new"] == N_BATCH and calm["snapshot"] == "dataset-v3"
        assert calm["refresh"]["n_drifted"] == 0 and calm["refresh"]["dataset_drift"] is False
    finally:
        os.chdir(cwd)
    assert git(project, "status", "--porcelain", "--untracked-files=no").strip() == ""
