"""The run request: written into params.yaml as text (comments kept), verified by parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from visionloop.config import load_params
from visionloop.refresh.request import (
    ParamsEditError,
    RunRequest,
    add_list_item,
    apply_request,
    ensure_returned_source,
    set_scalar,
)

ROOT = Path(__file__).resolve().parents[2]
TEXT = """\
collect:
  source: data/source/images   # where images land
  max_pixels: 100

refresh:
  reference: latest         # tag, latest or none
  annotate_budget: 50       # per refresh
"""


def test_set_scalar_keeps_comments_and_columns() -> None:
    out = set_scalar(TEXT, "refresh.annotate_budget", 80)
    assert "  annotate_budget: 80       # per refresh\n" in out
    assert out.replace("80 ", "50 ") == TEXT
    out = set_scalar(TEXT, "collect.source", "s3://bucket/new batch #2")
    assert '  source: "s3://bucket/new batch #2" # where images land' in out
    assert yaml.safe_load(out)["collect"]["source"] == "s3://bucket/new batch #2"
    assert set_scalar(TEXT, "refresh.reference", "none").count("reference: none ") == 1
    added = set_scalar(TEXT, "refresh.seed", 3)
    assert yaml.safe_load(added)["refresh"] == {
        "reference": "latest",
        "annotate_budget": 50,
        "seed": 3,
    }


def test_set_scalar_refuses_a_block_value() -> None:
    with pytest.raises(ParamsEditError, match="not a scalar"):
        set_scalar("a:\n  b:\n    c: 1\n", "a.b", 2)


def test_add_list_item_to_block_and_inline_lists() -> None:
    text = "imp:\n  sources:\n    - format: coco  # first\n      path: a.json\n  other: 1\n"
    out = add_list_item(text, "imp.sources", {"format": "label_studio", "path": "r"})
    assert yaml.safe_load(out)["imp"] == {
        "sources": [{"format": "coco", "path": "a.json"}, {"format": "label_studio", "path": "r"}],
        "other": 1,
    }
    assert "# first" in out
    dumped = yaml.safe_dump({"imp": {"sources": [{"format": "coco", "path": "a"}], "n": 1}})
    assert "  sources:\n  - format: coco" in dumped  # PyYAML: items at the key's indent
    out = add_list_item(dumped, "imp.sources", {"format": "yolo", "path": "y"})
    assert yaml.safe_load(out)["imp"] == {
        "sources": [{"format": "coco", "path": "a"}, {"format": "yolo", "path": "y"}],
        "n": 1,
    }
    out = add_list_item("imp:\n  sources: []   # none yet\n", "imp.sources", {"path": "r"})
    assert yaml.safe_load(out)["imp"]["sources"] == [{"path": "r"}]
    out = add_list_item("other: 1\n", "imp.sources", {"path": "r"})
    assert yaml.safe_load(out) == {"other": 1, "imp": {"sources": [{"path": "r"}]}}
    with pytest.raises(ParamsEditError, match="inline"):
        add_list_item("imp:\n  sources: [{path: a}]\n", "imp.sources", {"path": "r"})


def test_apply_request_writes_only_what_differs(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(TEXT)
    assert apply_request(path, RunRequest()) == []
    assert apply_request(path, RunRequest(budget=50, reference="latest")) == []
    assert path.read_text() == TEXT
    changes = apply_request(path, RunRequest(budget=80, reference="dataset-v2"))
    assert changes == [
        "refresh.annotate_budget: 50 -> 80",
        "refresh.reference: latest -> dataset-v2",
    ]
    doc = yaml.safe_load(path.read_text())
    assert doc["refresh"] == {"reference": "dataset-v2", "annotate_budget": 80}
    with pytest.raises(ValueError):
        RunRequest(budget=-1)


def test_the_shipped_params_yaml_takes_every_edit(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    apply_request(path, RunRequest(source="incoming/", budget=7, reference="none"))
    assert ensure_returned_source(path, "data/source/annotations/returned") is True
    assert ensure_returned_source(path, "data/source/annotations/returned/") is False
    params = load_params(path)
    assert params.collect.source == "incoming/" and params.refresh.annotate_budget == 7
    assert params.refresh.reference == "none"
    assert params.import_annotations.sources[-1].path == "data/source/annotations/returned"
    assert params.import_annotations.sources[-1].format == "label_studio"
