"""``visionloop diff``, ``visionloop refresh intake`` and ``visionloop refresh replay``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from tests.helpers import mock_manifest
from tests.refresh import builders as b
from visionloop import storage
from visionloop.cli import main
from visionloop.refresh import diff as diff_mod
from visionloop.refresh import rebalance, roundtrip
from visionloop.refresh import synthetic as syn
from visionloop.stages.base import Workspace


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    params = {"refresh": {"inbox": "inbox", "returned_dir": "returned"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_diff_prints_markdown_or_json(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, bb = mock_manifest(n=3), mock_manifest(n=5)
    seen: list[tuple] = []

    def fake(x: str, y: str, repo: str, data_dir: str, dims: list) -> diff_mod.SnapshotDiff:
        seen.append((x, y, data_dir, list(dims)))
        return diff_mod.diff_tables(x, y, a, bb)

    monkeypatch.setattr(diff_mod, "snapshot_diff", fake)
    out = CliRunner().invoke(main, ["diff", "dataset-v1", "dataset-v2"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("# Snapshot diff `dataset-v1` -> `dataset-v2`")
    assert "(**+2** added, **-0** removed" in out.output
    assert seen == [("dataset-v1", "dataset-v2", "data", ["camera", "day_night"])]
    js = CliRunner().invoke(main, ["diff", "dataset-v1", "--json"])
    assert js.exit_code == 0 and json.loads(js.output)["items"]["added"] == 2
    assert seen[-1][1] == "latest"


def test_diff_without_snapshots_is_a_clean_error(project: Path) -> None:
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    out = CliRunner().invoke(main, ["diff", "dataset-v1", "dataset-v2"])
    assert out.exit_code != 0 and "no snapshot tag 'dataset-v1'" in out.output


def test_intake_command(project: Path) -> None:
    ws = Workspace("data")
    items, boxes = b.measured_items(ws, syn.no_shift(2), seed=5)
    storage.write_table(ws.manifest_uri("curate"), items)
    ann = b.annotations_for(items, boxes, annotator="bob")
    from visionloop.annotations.export import export_table
    from visionloop.annotations.table import CategoryMap

    (project / "inbox").mkdir()
    export_table(
        ann.assign(
            image_ref=items.set_index("item_id")
            .loc[ann["item_id"], "anonymize_object_uri"]
            .to_numpy()
        ),
        CategoryMap.from_json(b.categories_json()),
        "label_studio",
        str(project / "inbox" / "returned.json"),
        report=False,
    )
    out = CliRunner().invoke(main, ["refresh", "intake"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["taken"][0]["matched"] == len(ann) and doc["source_added"] is True
    sources = yaml.safe_load((project / "params.yaml").read_text())["import_annotations"]["sources"]
    assert sources == [{"format": "label_studio", "path": "returned"}]
    assert len(roundtrip.returned_files("returned")) == 1
    again = json.loads(CliRunner().invoke(main, ["refresh", "intake"]).output)
    assert again["taken"] == [] and again["source_added"] is False


def test_replay_command_rebuilds_the_derived_bytes(project: Path) -> None:
    ws = Workspace("data")
    items, _ = b.measured_items(ws, syn.no_shift(1), seed=6)
    storage.write_table(ws.manifest_uri("curate"), items)
    parent = storage.read_bytes(ws.resolve(items.at[0, "anonymize_object_uri"]))
    spec = [{"name": "RandomBrightnessContrast", "p": 1.0}, {"name": "HorizontalFlip", "p": 1.0}]
    out = rebalance.derive(parent, spec, 7, [], min_visibility=0.3, jpeg_quality=95)
    rel = f"refresh/augmented/objects/{out['item_id'][:2]}/{out['item_id']}.jpg"
    storage.write_bytes_atomic(ws.resolve(rel), out["data"])
    row = {
        "item_id": out["item_id"],
        "parent_item_id": items.at[0, "item_id"],
        "transform": out["transform"],
        "seed": out["seed"],
        "object_uri": rel,
    }
    storage.write_table(ws.uri("refresh", "augmented", "manifest.parquet"), pd.DataFrame([row]))
    res = CliRunner().invoke(main, ["refresh", "replay", out["item_id"], "replayed.png"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["identical"] is True and (project / "replayed.png").exists()
    missing = CliRunner().invoke(main, ["refresh", "replay", "nope", "x.png"])
    assert missing.exit_code != 0 and "no derived item nope" in missing.output
