"""The curate report: class coverage once labels exist, and never a raw (unpublished) image."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tests.curate import synthetic as S
from tests.helpers import mock_annotations, mock_manifest
from visionloop import storage
from visionloop.config import Params
from visionloop.curate.report import build_curate_report, thumbnail
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.curate import CurateStage


def _run(tmp_path: Path) -> tuple[Workspace, Params]:
    params = Params.model_validate(
        {"run": {"data_dir": str(tmp_path / "data"), "max_workers": 1}, "curate": {"report": False}}
    )
    ws = Workspace.from_params(params)
    df = mock_manifest("anonymize", n=4)
    rng = np.random.default_rng(3)
    for i in range(4):
        img = S.texture(rng) if i != 3 else S.blurred(S.texture(rng), 5.0)
        data = S.jpeg(img)
        storage.write_bytes_atomic(ws.resolve(df.at[i, "anonymize_object_uri"]), data)
        df.at[i, "anonymize_sha256"] = hashlib.sha256(data).hexdigest()
        df.at[i, "width"], df.at[i, "height"] = 320, 240
    storage.write_table(ws.manifest_uri("anonymize"), df)
    run_stage(CurateStage(), ws, params)
    return ws, params


def test_class_coverage_appears_with_annotations(tmp_path: Path) -> None:
    ws, params = _run(tmp_path)
    page = storage.read_text(build_curate_report(ws, params))
    assert "class coverage appears once labels exist" in page
    accepted = storage.read_table(ws.manifest_uri("curate"))
    ids = accepted.loc[accepted["status"] == "accepted", "item_id"].tolist()
    assert len(ids) == 3  # the blurred one is quarantined
    page = storage.read_text(build_curate_report(ws, params, annotations=mock_annotations(ids)))
    # mock_annotations: a person and a car on each image; 3 < coverage_min_count 25 -> gaps
    assert "<td>person</td><td>3</td>" in page and "<td>car</td><td>3</td>" in page
    assert page.count("<td>gap</td>") >= 2


def test_thumbnails_come_from_published_images_only(tmp_path: Path) -> None:
    ws, _ = _run(tmp_path)
    df = storage.read_table(ws.manifest_uri("curate"))
    published = df.at[0, "anonymize_object_uri"]
    assert thumbnail(ws, published).startswith("data:image/jpeg;base64,")
    raw = f"collect/objects/{df.at[0, 'item_id'][:2]}/{df.at[0, 'item_id']}.jpg"
    storage.write_bytes_atomic(ws.resolve(raw), storage.read_bytes(ws.resolve(published)))
    assert thumbnail(ws, raw) is None  # a collected original may show a face: never shown
    assert thumbnail(ws, None) is None
