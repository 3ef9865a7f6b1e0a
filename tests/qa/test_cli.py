"""``visionloop labels qa``: the click command, driven with CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from tests.helpers import mock_manifest
from tests.qa.builders import ann, table
from visionloop import storage
from visionloop.qa.cli import format_finding, qa

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = next(
    (
        p
        for p in (
            ROOT.parent / "shared/samples/annotations",
            Path("/work/shared/samples/annotations"),
        )
        if p.is_dir()
    ),
    None,
)


def write(tmp_path: Path, rows: list[dict], name: str = "annotations.parquet") -> str:
    path = tmp_path / name
    table(rows).to_parquet(path)
    return str(path)


def invoke(*args: str) -> tuple[int, str]:
    # No params.yaml in the test's working directory: --params points at a missing file.
    result = CliRunner().invoke(qa, [*args, "--params", "/nonexistent/params.yaml"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


ROWS = [
    ann(0, box=(10.0, 10.0, 0.5, 20.0)),  # box_too_small: error
    ann(1, box=(100.0, 10.0, 50.0, 40.0)),
    ann(2, box=(100.5, 10.0, 50.0, 40.0)),  # duplicate of a1: warning
]


def test_text_lists_every_finding_and_exits_1_on_errors(tmp_path: Path) -> None:
    code, out = invoke(write(tmp_path, ROWS))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == (
        "ERROR   box_too_small  item=img_a  annotations=a0  label=car  annotator=alice  "
        "box is 0.5 x 20 px (a side below 1 px)"
    )
    assert lines[1].startswith("WARNING duplicate_annotation  item=img_a  annotations=a1,a2  ")
    assert lines[1].endswith("overlap with IoU 0.980 (> 0.95)")
    assert all(line.startswith("INFO") for line in lines[2:-1])
    assert lines[-1].startswith(
        "3 annotation(s) on 1 item(s), label set from table: 1 error(s), 1 warning(s)"
    )


def test_json_has_every_finding_and_the_tables(tmp_path: Path) -> None:
    code, out = invoke(write(tmp_path, ROWS), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["summary"]["by_severity"]["error"] == 1
    assert len(doc["findings"]) == doc["summary"]["findings"]
    first = doc["findings"][0]
    assert (first["check"], first["severity"], first["annotation_ids"]) == (
        "box_too_small",
        "error",
        ["a0"],
    )
    assert first["track_id"] is None and first["value"] == 0.5
    assert set(doc) == {"summary", "findings", "agreement", "scorecards", "gold"}


def test_warnings_only_exit_0_and_min_severity_filters(tmp_path: Path) -> None:
    path = write(tmp_path, ROWS[1:])
    code, out = invoke(path, "--min-severity", "warning")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[:-1]] == ["WARNING"]
    assert out.splitlines()[-1].endswith("(1 shown)")


def test_label_set_beside_the_table_and_manifest_items(tmp_path: Path) -> None:
    man = mock_manifest("curate", n=2)
    man.to_parquet(tmp_path / "manifest.parquet")
    rows = [ann(0, item_id=man["item_id"].iloc[0], category="dog")]
    path = write(tmp_path, rows)
    cats = {"categories": [{"id": 1, "name": "car"}]}
    (tmp_path / "categories.json").write_text(json.dumps(cats))
    code, out = invoke(path, "--json", "--manifest", str(tmp_path / "manifest.parquet"))
    doc = json.loads(out)
    checks = {(f["check"], f["item"]) for f in doc["findings"]}
    assert ("undefined_label", man["item_id"].iloc[0]) in checks
    assert ("missing_annotation", man["item_id"].iloc[1]) in checks
    assert ("label_defined_but_unused", None) in checks
    assert code == 1 and doc["summary"]["categories"] == str(tmp_path / "categories.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"categories": [{"id": 9, "name": "dog"}]}))
    code, out = invoke(path, "--json", "--categories", str(other))
    assert code == 0 and not [f for f in json.loads(out)["findings"] if f["severity"] == "error"]


def test_published_only_and_out(tmp_path: Path) -> None:
    rows = [ann(0), ann(1, box=(1.0, 1.0, 0.2, 0.2), match_status="unmatched")]
    path = write(tmp_path, rows)
    assert invoke(path)[0] == 1
    code, _ = invoke(path, "--published-only", "--out", str(tmp_path / "qa"))
    assert code == 0
    assert storage.exists(str(tmp_path / "qa" / "qa_findings.parquet"))
    cards = pd.read_parquet(tmp_path / "qa" / "qa_scorecards.parquet")
    assert cards[["annotator", "shared_items"]].values.tolist() == [["alice", 0]]


def test_a_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    code, out = invoke(str(tmp_path / "nope.parquet"))
    assert code == 1  # a ClickException
    assert "does not exist" in out


def test_format_finding_without_items() -> None:
    row = {"check": "label_imbalance", "severity": "info", "reason": "ratio 60.0 >= 50"}
    assert format_finding(row) == "INFO    label_imbalance  ratio 60.0 >= 50"


LS_DATA = "label_studio/converter_yolo_tests/data.json"


def test_label_studio_export_with_two_annotators(tmp_path: Path) -> None:
    """Label Studio's converter test export: task 1 was labelled by users 1 and 2.

    Both drew one 'parasites' and one 'white' box (percent of a 2800 x 2800 image). The
    'parasites' boxes overlap; by hand, in pixels (x0, y0, w, h = percent * 28):
      user 2: 1040.437, 1978.871, 117.304, 132.605   user 1: 1060.838, 2009.472, 107.104, 127.505
      intersection = (1157.741 - 1060.838) x (2111.475 - 2009.472) = 96.903 x 102.004
      IoU = 9884.5 / (15555.2 + 13656.2 - 9884.5) = 0.5114 >= 0.5: matched.
    The 'white' boxes are 1100 px apart: unmatched. F1 = 2 * 1 / (2 + 2) = 0.5.
    """
    if SAMPLES is None or not (SAMPLES / LS_DATA).is_file():
        pytest.skip("the Label Studio sample (../shared/samples/annotations) is not present")
    reader_mod = pytest.importorskip(
        "visionloop.annotations.formats.label_studio",
        reason="the Label Studio reader (issue 5) is not in this tree yet",
    )
    del reader_mod
    from visionloop.annotations.formats import get_reader

    result = get_reader("label_studio").load(str(SAMPLES / LS_DATA))
    result.annotations.to_parquet(tmp_path / "ls.parquet")
    code, out = invoke(str(tmp_path / "ls.parquet"), "--json")
    doc = json.loads(out)
    agree = doc["summary"]["agreement"]
    assert (agree["items_compared"], agree["matched"], agree["objects"]) == (1, 1, 4)
    assert agree["f1"] == 0.5

    def px(v: float) -> float:
        return v * 2800 / 100

    a = [
        px(v) for v in (37.15846994535519, 70.67395264116576, 4.189435336976321, 4.735883424408015)
    ]
    b = [
        px(v) for v in (37.88706739526412, 71.76684881602914, 3.8251366120218573, 4.553734061930784)
    ]
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = iw * ih
    iou = inter / (a[2] * a[3] + b[2] * b[3] - inter)
    assert agree["mean_iou"] == pytest.approx(iou, abs=1e-9)
    assert round(iou, 4) == 0.5114
    cards = {c["annotator"]: c for c in doc["scorecards"]}
    assert set(cards) == {"1", "2"}
    assert cards["1"]["f1"] == 0.5 and cards["1"]["matched"] == 1 and cards["1"]["unmatched"] == 1
    pairs = {p["category"]: p for p in doc["agreement"]}
    assert pairs["parasites"]["matched"] == 1 and pairs["white"]["matched"] == 0
    assert code == 0  # no error-level finding in this export
