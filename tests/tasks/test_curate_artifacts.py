"""The curate artifacts (flag table + overview markdown), captured instead of sent to Prefect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import tasks.curate_artifacts as ca
from tests.helpers import mock_manifest, write_stage_table
from visionloop import storage
from visionloop.config import Params
from visionloop.stages.base import Workspace


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(ca, "create_table_artifact", lambda **kw: calls.append(("table", kw)))
    monkeypatch.setattr(ca, "create_markdown_artifact", lambda **kw: calls.append(("md", kw)))
    return calls


def _workspace(tmp_path: Path) -> Workspace:
    ws = Workspace(str(tmp_path / "data"))
    df = mock_manifest(
        "curate",
        n=10,
        quarantine={
            2: ("blurry", "curate"),
            3: ("near_duplicate", "curate"),
            5: ("corrupt", "collect"),
        },
    )
    df.loc[4, "curate_is_grayscale"] = True  # a flag that does not quarantine
    write_stage_table(ws, "curate", "manifest.parquet", df)
    write_stage_table(
        ws,
        "curate",
        "gaps.parquet",
        pd.DataFrame(
            {
                "slice": ["camera"],
                "cell": ["Birch B7"],
                "camera": ["Birch B7"],
                "count": [3],
                "needed": [22],
            }
        ),
    )
    write_stage_table(
        ws,
        "curate",
        "leakage.parquet",
        pd.DataFrame(
            {
                "tier": ["near"],
                "item_a": ["a"],
                "source_a": ["/s/train/a.jpg"],
                "split_a": ["train"],
                "item_b": ["b"],
                "source_b": ["/s/test/a.jpg"],
                "split_b": ["test"],
                "distance": [3],
                "resolved_by": ["near_duplicate"],
            }
        ),
    )
    details = {
        "dedup": {"indexed": 8, "searched": 2, "reused_pairs": 1, "pairs": 2},
        "pixel_duplicate_groups": 0,
        "near_duplicate_groups": 1,
        "coverage": {
            "dimensions": ["camera"],
            "cells": 2,
            "gaps": 1,
            "images_needed": 22,
            "over_max_share": 1,
            "balanced": 7,
        },
    }
    storage.write_text_atomic(ws.uri("curate", "summary.json"), json.dumps({"details": details}))
    return ws


def test_flag_table_and_overview(tmp_path: Path, made: list[tuple[str, dict[str, Any]]]) -> None:
    ws = _workspace(tmp_path)
    sent = ca.publish_curate_artifacts(ws, Params())
    (kind1, table_kw), (kind2, md_kw) = made
    assert (kind1, table_kw["key"], kind2, md_kw["key"]) == (
        "table",
        "curate-flags",
        "md",
        "curate-overview",
    )
    rows = {r["flag"]: r for r in table_kw["table"]}
    assert rows["blurry"] == {"flag": "blurry", "flagged": 1, "quarantines": True, "quarantined": 1}
    assert rows["grayscale"] == {
        "flag": "grayscale",
        "flagged": 1,
        "quarantines": False,
        "quarantined": 0,
    }
    assert rows["near_duplicate"]["quarantined"] == 1
    md = md_kw["markdown"]
    assert md.startswith("# Curate: 7 of 10 images accepted")
    assert "blurry 1" in md and "near_duplicate 1" in md
    assert "2 of 8 hashes searched this run, 1 pairs reused" in md
    assert "1 cross-split pair(s), 0 unresolved" in md
    assert "| camera | Birch B7 | 3 | 22 |" in md
    assert sent["markdown"] == md
