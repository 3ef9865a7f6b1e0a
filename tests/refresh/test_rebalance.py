"""Rebalancing: targets from params, train-only parents, exact replay, the split assertion."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.refresh import builders as b
from visionloop import storage
from visionloop.config import Params, RebalanceParams
from visionloop.refresh import rebalance
from visionloop.refresh import synthetic as syn
from visionloop.stages.base import Workspace

SPEC = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.3, "contrast_limit": 0.3, "p": 1.0},
    {"name": "Affine", "scale": [0.9, 1.1], "rotate": [-8, 8], "p": 1.0},
]


def _manifest(n: int, splits: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"{i:064x}" for i in range(n)],
            "source_uri": [f"/s/{i}.jpg" for i in range(n)],
            "status": "accepted",
            "anonymize_object_uri": [f"anonymize/objects/{i}.jpg" for i in range(n)],
            "anonymize_sha256": [f"{i:064x}" for i in range(n)],
            "curate_split": [splits[i % len(splits)] for i in range(n)],
        }
    )


def _labels(man: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    rows = []
    for i, (iid, cat) in enumerate(zip(man["item_id"], classes, strict=True)):
        rows.append(
            {
                "annotation_id": f"a{i}",
                "item_id": iid,
                "category": cat,
                "category_id": ["car", "bike"].index(cat),
                "bbox_x": 10.0,
                "bbox_y": 10.0,
                "bbox_w": 20.0,
                "bbox_h": 10.0,
                "annotator": "alice",
                "match_status": "matched",
            }
        )
    return pd.DataFrame(rows)


def test_plan_fills_the_small_class_up_to_the_target_from_train_parents_only() -> None:
    man = _manifest(12, ["train", "train", "val"])  # items 2, 5, 8, 11 are validation
    classes = ["car"] * 9 + ["bike"] * 3  # bike: items 9 (train), 10 (train), 11 (val)
    rp = RebalanceParams(target_ratio=1.0, max_per_parent=2)
    plan, report = rebalance.plan_rebalance(man, _labels(man, classes), rp)
    # train cars: 0,1,3,4,6,7 = 6; train bikes: 9, 10 = 2; target = 6 -> 4 bikes to derive
    assert report["target"] == 6
    assert report["groups"]["bike"] == {
        "items": 2,
        "needed": 4,
        "pipeline": "default",
        "planned": 4,
    }
    assert report["groups"]["car"]["needed"] == 0
    assert sorted(plan["parent_item_id"]) == sorted(
        [man.at[9, "item_id"], man.at[10, "item_id"]] * 2
    )
    assert man.at[11, "item_id"] not in set(plan["parent_item_id"])  # a val parent: never
    assert sorted(plan["k"]) == [0, 0, 1, 1]
    assert plan["seed"].nunique() == 4
    assert plan["seed"].tolist() == [
        rebalance.derive_seed(0, p, "bike", k)
        for p, k in zip(plan["parent_item_id"], plan["k"], strict=True)
    ]


def test_plan_caps_per_parent_and_reports_the_shortfall() -> None:
    man = _manifest(10, ["train"])
    classes = ["car"] * 9 + ["bike"]
    rp = RebalanceParams(target_ratio=1.0, max_per_parent=3)
    plan, report = rebalance.plan_rebalance(man, _labels(man, classes), rp)
    assert len(plan) == 3 and report["groups"]["bike"]["short_by"] == 5


def test_unsplit_parents_only_when_allowed() -> None:
    man = _manifest(10, [None])
    classes = ["car"] * 8 + ["bike"] * 2
    rp = RebalanceParams(target_ratio=1.0, allow_unsplit=False)
    plan, report = rebalance.plan_rebalance(man, _labels(man, classes), rp)
    assert plan.empty and "no eligible parent" in report["note"]
    plan, _ = rebalance.plan_rebalance(
        man, _labels(man, classes), RebalanceParams(target_ratio=1.0)
    )
    assert len(plan) == 6


def test_derivation_replays_exactly_from_its_record(tmp_path: Path) -> None:
    ws = Workspace(str(tmp_path / "data"))
    items, boxes = b.measured_items(ws, syn.no_shift(1), seed=3)
    parent = storage.read_bytes(ws.resolve(items.at[0, "anonymize_object_uri"]))
    parent_boxes = [
        {"category": x["category"], "bbox": x["bbox"]} for x in boxes[items.at[0, "item_id"]]
    ]
    out = rebalance.derive(parent, SPEC, 1234, parent_boxes, min_visibility=0.3, jpeg_quality=95)
    assert out["item_id"] == hashlib.sha256(out["data"]).hexdigest()
    record = json.loads(out["transform"])
    assert record["__version__"] and record["transform"]["__class_fullname__"] == "Compose"
    assert [t["__class_fullname__"] for t in record["transform"]["transforms"]] == [
        "HorizontalFlip", "RandomBrightnessContrast", "Affine",
    ]  # fmt: skip
    assert out["seed"] == 1234  # this draw changed the image: no redraw
    image, replayed_boxes = rebalance.replay(parent, out["transform"], out["seed"], parent_boxes)
    import cv2

    _, jpg = cv2.imencode(
        ".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    assert jpg.tobytes() == out["data"]  # same pixels, same bytes, same item id
    assert replayed_boxes == out["boxes"]
    other = rebalance.derive(parent, SPEC, 1235, parent_boxes, min_visibility=0.3, jpeg_quality=95)
    assert other["item_id"] != out["item_id"]


def test_boxes_follow_a_flip() -> None:
    import cv2

    img = np.zeros((40, 100, 3), np.uint8)
    img[10:20, 5:25] = 255
    _, buf = cv2.imencode(".png", img)
    out = rebalance.derive(
        buf.tobytes(), [{"name": "HorizontalFlip", "p": 1.0}], 0,
        [{"category": "car", "bbox": [5, 10, 20, 10]}], min_visibility=0.3, jpeg_quality=95,
    )  # fmt: skip
    assert out["boxes"] == [{"category": "car", "bbox": [75.0, 10.0, 20.0, 10.0]}]


def test_a_draw_that_changes_nothing_is_redrawn() -> None:
    import cv2

    img = np.full((30, 40, 3), 128, np.uint8)
    img[5:10, 5:15] = 255
    _, buf = cv2.imencode(".png", img)
    spec = [{"name": "HorizontalFlip", "p": 0.5}]
    seeds = [
        s
        for s in range(40)
        if rebalance.derive(buf.tobytes(), spec, s, [], min_visibility=0.3, jpeg_quality=95)["seed"]
        != s
    ]
    assert seeds  # some draws did not flip: they were redrawn...
    out = rebalance.derive(buf.tobytes(), spec, seeds[0], [], min_visibility=0.3, jpeg_quality=95)
    image, _ = rebalance.replay(buf.tobytes(), out["transform"], out["seed"])
    assert np.array_equal(image, img[:, ::-1])  # ...into a flip (gray: channel order moot)
    with pytest.raises(ValueError, match="unchanged"):
        rebalance.derive(
            buf.tobytes(),
            [{"name": "HorizontalFlip", "p": 0.0}],
            0,
            [],
            min_visibility=0.3,
            jpeg_quality=95,
        )


def test_train_only_assertion() -> None:
    man = _manifest(4, ["train", "val", "test", None])
    ok = pd.DataFrame(
        {"item_id": ["d1"], "parent_item_id": [man.at[0, "item_id"]], "split": ["train"]}
    )
    rebalance.assert_train_only(ok, man)
    with pytest.raises(rebalance.SplitLeakError, match="not in the train split"):
        rebalance.assert_train_only(ok.assign(split="val"), man)
    with pytest.raises(rebalance.SplitLeakError, match="validation/test parents"):
        rebalance.assert_train_only(ok.assign(parent_item_id=man.at[2, "item_id"]), man)


def test_params_reject_an_unknown_pipeline_name() -> None:
    with pytest.raises(ValueError, match="unknown pipelines"):
        Params.model_validate({"refresh": {"rebalance": {"assign": {"*": "nope"}}}})


def test_slices_as_groups(tmp_path: Path) -> None:
    man = _manifest(6, ["train"]).assign(curate_day_night=["day"] * 5 + ["night"])
    rp = RebalanceParams(by=["day_night"], target_ratio=0.6, max_per_parent=5)
    plan, report = rebalance.plan_rebalance(man, None, rp)
    assert report["groups"]["night"] == {
        "items": 1,
        "needed": 2,
        "pipeline": "default",
        "planned": 2,
    }
    assert set(plan["group"]) == {"night"}
