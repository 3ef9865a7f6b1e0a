"""Labelling round trip: task files out (Label Studio, CVAT), returned exports back in."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.refresh import builders as b
from visionloop import storage
from visionloop.annotations.formats import get_reader
from visionloop.config import Params
from visionloop.refresh import roundtrip
from visionloop.refresh import synthetic as syn
from visionloop.stages.base import Workspace

PREFIX = "/data/local-files/?d="


@pytest.fixture
def world(tmp_path: Path) -> dict:
    ws = Workspace(str(tmp_path / "data"))
    items, boxes = b.measured_items(ws, syn.no_shift(6), seed=4)
    items = items.sort_values("item_id").reset_index(drop=True)
    labels = b.annotations_for(items.iloc[:1], boxes)  # item 0 has labels: pre-annotations
    picks = pd.DataFrame(
        {
            "item_id": items["item_id"].iloc[[2, 0, 1]].tolist(),
            "source_uri": items["source_uri"].iloc[[2, 0, 1]].tolist(),
            "priority": [1, 2, 3],
            "why": ["gap", "qa", "diversity"],
            "reason": ["gap", "qa", "diversity"],
        }
    )
    out = str(tmp_path / "data" / "refresh" / "tasks")
    report = roundtrip.export_tasks(
        picks, items, labels, b.categories_json(), out,
        formats=["label_studio", "cvat"], url_prefix=PREFIX, name="round 1",
    )  # fmt: skip
    return {"ws": ws, "items": items, "boxes": boxes, "labels": labels, "picks": picks,
            "out": out, "report": report, "tmp": tmp_path}  # fmt: skip


def test_label_studio_tasks_in_priority_order_with_pre_annotations(world: dict) -> None:
    items, picks = world["items"], world["picks"]
    docs = json.loads(Path(world["out"], "label_studio.json").read_text())
    assert [d["id"] for d in docs] == [1, 2, 3]
    assert [d["data"]["item_id"] for d in docs] == picks["item_id"].tolist()
    pub = items.set_index("item_id")["anonymize_object_uri"]
    assert docs[0]["data"]["image"] == PREFIX + pub[picks.at[0, "item_id"]]
    assert docs[0]["data"]["reason"] == "gap" and docs[0]["predictions"] == []
    pre = docs[1]["predictions"]  # item 0: its labels as a prediction
    n_boxes = len(world["boxes"][items.at[0, "item_id"]])
    assert len(pre) == 1 and pre[0]["model_version"] == "visionloop-refresh"
    assert len(pre[0]["result"]) == n_boxes and pre[0]["result"][0]["type"] == "rectanglelabels"
    assert world["report"]["pre_annotations"] == n_boxes
    # the project's own Label Studio reader reads the task file back
    got = get_reader("label_studio").load(str(Path(world["out"], "label_studio.json")))
    assert not got.errors and len(got.annotations) == n_boxes
    assert set(got.annotations["annotator"]) == {"prediction:visionloop-refresh"}


def test_cvat_task_file(world: dict) -> None:
    items, picks = world["items"], world["picks"]
    root = ET.parse(Path(world["out"], "cvat.xml")).getroot()
    images = root.findall("image")
    pub = items.set_index("item_id")["anonymize_object_uri"]
    assert [i.get("name") for i in images] == [pub[x] for x in picks["item_id"]]
    assert [i.get("id") for i in images] == ["0", "1", "2"]
    assert images[0].get("width") == "160" and images[0].get("height") == "120"
    assert len(images[0]) == 0 and len(images[1].findall("box")) == len(
        world["boxes"][items.at[0, "item_id"]]
    )
    assert [n.text for n in root.findall("meta/task/labels/label/name")] == ["vehicle", "sign"]
    spec = json.loads(Path(world["out"], "cvat_task.json").read_text())
    assert spec["files"] == [pub[x] for x in picks["item_id"]] and spec["name"] == "round 1"
    got = get_reader("cvat").load(str(Path(world["out"], "cvat.xml")))
    assert not got.errors and len(got.annotations) == len(images[1].findall("box"))
    tasks = pd.read_parquet(Path(world["out"], "tasks.parquet"))
    assert tasks["item_id"].tolist() == picks["item_id"].tolist()
    assert tasks["pre_annotations"].tolist()[1] > 0


def _returned_label_studio(world: dict, bad_label_on: int | None = None) -> list[dict]:
    """What Label Studio exports after annotators labelled the tasks (true boxes, in %)."""
    docs = json.loads(Path(world["out"], "label_studio.json").read_text())
    jitter = np.random.default_rng(0)  # people do not draw the exact truth
    for d in docs:
        iid = d["data"]["item_id"]
        result = []
        for j, box in enumerate(world["boxes"][iid]):
            x, y, w, h = (v + jitter.uniform(-0.5, 0.5) for v in box["bbox"])
            label = "unicorn" if bad_label_on is not None and j == bad_label_on else box["category"]
            result.append(
                {
                    "id": f"r{j}",
                    "type": "rectanglelabels",
                    "from_name": "label",
                    "to_name": "image",
                    "original_width": 160,
                    "original_height": 120,
                    "value": {
                        "x": x / 1.6,
                        "y": y / 1.2,
                        "width": w / 1.6,
                        "height": h / 1.2,
                        "rotation": 0,
                        "rectanglelabels": [label],
                    },
                }
            )
        d["annotations"] = [{"id": 1, "completed_by": 7, "result": result}]
        d["predictions"] = []
    return docs


def test_intake_matches_back_checks_and_is_idempotent(world: dict) -> None:
    tmp, items = world["tmp"], world["items"]
    inbox, returned = tmp / "inbox", tmp / "returned"
    inbox.mkdir()
    (inbox / "project-1-export.json").write_text(json.dumps(_returned_label_studio(world, 0)))
    # a CVAT export of the same round with bare file names (CVAT keeps the uploaded names)
    root = ET.parse(Path(world["out"], "cvat.xml")).getroot()
    for image in root.findall("image"):
        image.set("name", Path(image.get("name")).name)
        for child in list(image):
            image.remove(child)
        iid = Path(image.get("name")).stem
        for box in world["boxes"][iid]:
            x, y, w, h = box["bbox"]
            ET.SubElement(image, "box", label=box["category"], occluded="0", xtl=str(x),
                          ytl=str(y), xbr=str(x + w), ybr=str(y + h))  # fmt: skip
    (inbox / "cvat-job.xml").write_text(ET.tostring(root, encoding="unicode"))
    params = Params()
    tasks = pd.read_parquet(Path(world["out"], "tasks.parquet"))
    res = roundtrip.intake(str(inbox), str(returned), items, tasks, params, b.categories_json())
    assert not res.failed and len(res.taken) == 2
    by_fmt = {t["format"]: t for t in res.taken}
    n_true = sum(len(world["boxes"][i]) for i in world["picks"]["item_id"])
    cvat, ls = by_fmt["cvat"], by_fmt["label_studio"]
    assert (cvat["matched"], cvat["unmatched"], cvat["held_back"]) == (n_true, 0, 0)
    # the Label Studio round named one box "unicorn": an error-level QA finding, held back
    assert (ls["matched"], ls["held_back"]) == (n_true, 3)  # one bad box per task
    assert ls["qa_errors"] >= 3
    out = pd.DataFrame(get_reader("label_studio").load(ls["output"]).annotations)
    assert len(out) == n_true - 3 and "unicorn" not in set(out["category"])
    rel = items.set_index("item_id")["rel_path"]
    assert set(out["image_ref"]) <= set(rel[world["picks"]["item_id"]])  # manifest spelling
    assert set(out["annotator"]) == {"7"}
    assert storage.exists(ls["output"][: -len(".json")] + ".qa.parquet")
    log = pd.read_parquet(returned / "intake.parquet")
    assert len(log) == 2 and set(log["format"]) == {"cvat", "label_studio"}
    again = roundtrip.intake(str(inbox), str(returned), items, tasks, params, b.categories_json())
    assert not again.taken and len(again.skipped) == 2
    assert len(roundtrip.returned_files(str(returned))) == 2


def test_an_unreadable_export_is_reported_not_raised(world: dict) -> None:
    tmp = world["tmp"]
    inbox = tmp / "inbox2"
    inbox.mkdir()
    (inbox / "notes.json").write_text('{"hello": 1}')
    res = roundtrip.intake(str(inbox), str(tmp / "ret2"), world["items"], None, Params())
    assert res.taken == [] and len(res.failed) == 1 and "notes.json" in res.failed[0]["inbox_file"]


def test_item_of_ref() -> None:
    iid = "ab" * 32
    ids = {iid}
    assert roundtrip.item_of_ref(f"/data/upload/3/1a2b3c4d-{iid}.jpg", {}, {}, ids) == iid
    assert roundtrip.item_of_ref("cam_a/x.jpg", {}, {"cam_a/x.jpg": iid}, ids) == iid
    assert roundtrip.item_of_ref("elsewhere.jpg", {}, {}, ids) is None
