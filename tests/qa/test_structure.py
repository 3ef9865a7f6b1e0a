"""Structure checks (Datumaro's set, its default thresholds): each is triggered by planted data
and stays silent on data one step short of the threshold."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.qa.builders import ann, checks_of, params, table
from visionloop.qa.checks import CHECKS
from visionloop.qa.run import run_qa

CATEGORIES = {
    "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}, {"id": 3, "name": "bus"}]
}


def qa(rows: list[dict[str, Any]], **kw: Any) -> pd.DataFrame:
    p = kw.pop("p", None) or params()
    return run_qa(table(rows), p, **kw).findings


def varied(n: int, start: int = 0, category: str = "car", **kw: Any) -> list[dict[str, Any]]:
    """``n`` boxes of about 40 x 30 px with a little spread (no outlier, no skew in width)."""
    return [
        ann(start + i, item=f"img_{i % 7}", category=category,
            box=(5.0 + i, 5.0, 40.0 + (i % 5) * 2.0, 30.0 + (i % 3) * 2.0), **kw)
        for i in range(n)
    ]  # fmt: skip


def test_defaults_are_datumaros() -> None:
    q = params().validate_.qa
    assert (q.few_samples, q.imbalance_ratio, q.far_from_mean) == (1, 50.0, 5.0)
    assert (q.dominance_ratio, q.topk_bins, q.histogram_bins, q.min_box_side) == (0.8, 0.1, 10, 1)
    severities = {name: CHECKS[name].severity for name in CHECKS}
    assert severities["missing_annotation"] == "warning"  # Datumaro: MissingAnnotation
    assert severities["undefined_label"] == severities["undefined_attribute"] == "error"
    assert severities["label_defined_but_unused"] == severities["missing_attribute"] == "warning"
    assert severities["few_samples_in_label"] == severities["label_imbalance"] == "info"
    assert severities["invalid_value"] == severities["box_too_small"] == "error"
    assert severities["far_from_label_mean"] == "warning"
    assert severities["skewed_distribution"] == "info"


def test_missing_annotation_needs_the_item_universe() -> None:
    rows = [ann(0, item="img_a"), ann(1, item="img_c", annotator="prediction:v1")]
    found = qa(rows, items=["img_a", "img_b", "img_c"])
    missing = checks_of(found, "missing_annotation")
    # img_b has nothing; img_c has only a model's pre-annotation, which is not a label
    assert missing["item"].tolist() == ["img_b", "img_c"]
    assert set(missing["severity"]) == {"warning"}
    assert checks_of(qa(rows, items=["img_a"]), "missing_annotation").empty
    assert checks_of(qa(rows), "missing_annotation").empty  # no universe: not checked


def test_undefined_label_against_categories_and_empty_names() -> None:
    rows = [ann(0, category="car"), ann(1, category="dog"), ann(2, category=" ")]
    found = checks_of(qa(rows, categories=CATEGORIES), "undefined_label")
    assert found["annotation_ids"].map(list).tolist() == [["a2"], ["a1"]]
    assert "not in the label set (categories.json)" in found["reason"].iloc[1]
    # Without a label set every named label is defined; an empty name never is.
    assert checks_of(qa(rows), "undefined_label")["annotation_ids"].map(list).tolist() == [["a2"]]
    # qa.labels overrides categories.json
    by_params = qa(rows, categories=CATEGORIES, p=params(labels=["car", "dog"]))
    assert checks_of(by_params, "undefined_label")["annotation_ids"].map(list).tolist() == [["a2"]]


def test_category_id_mismatch() -> None:
    rows = [ann(i, category="car") for i in range(3)] + [ann(3, category="car", category_id=5)]
    found = checks_of(qa(rows, categories=CATEGORIES), "category_id_mismatch")
    assert found["annotation_ids"].map(list).tolist() == [["a3"]]
    assert "gives it id 1" in found["reason"].iloc[0]
    inferred = checks_of(qa(rows), "category_id_mismatch")  # majority id wins
    assert inferred["annotation_ids"].map(list).tolist() == [["a3"]]
    same_id_two_names = [ann(0, category="car"), ann(1, category="car"), ann(2, "img_b", "van")]
    same_id_two_names[2]["category_id"] = 1
    found = checks_of(qa(same_id_two_names), "category_id_mismatch")
    assert found["annotation_ids"].map(list).tolist() == [["a2"]]
    assert checks_of(qa(rows[:3], categories=CATEGORIES), "category_id_mismatch").empty


def test_label_defined_but_unused_and_only_one_label() -> None:
    rows = [ann(0, category="car"), ann(1, category="person")]
    found = qa(rows, categories=CATEGORIES)
    assert checks_of(found, "label_defined_but_unused")["category"].tolist() == ["bus"]
    assert checks_of(found, "only_one_label").empty
    only_cars = qa([ann(0), ann(1, item="img_b")])
    assert checks_of(only_cars, "only_one_label")["category"].tolist() == ["car"]
    assert checks_of(only_cars, "label_defined_but_unused").empty  # no label set given


def test_few_samples_in_label() -> None:
    rows = [*varied(5), ann(10, category="person")]
    found = checks_of(qa(rows), "few_samples_in_label")
    assert found["category"].tolist() == ["person"]
    assert found["value"].tolist() == [1.0] and found["threshold"].tolist() == [1.0]
    two = [*varied(5), ann(10, category="person"), ann(11, "img_b", category="person")]
    assert checks_of(qa(two), "few_samples_in_label").empty


@pytest.mark.parametrize(("cars", "expected"), [(50, [50.0]), (49, [])])
def test_label_imbalance_at_ratio_50(cars: int, expected: list[float]) -> None:
    rows = [*varied(cars), ann(100, category="person")]
    assert checks_of(qa(rows), "label_imbalance")["value"].tolist() == expected


ATTR = params(attributes={"car": ["color"]})


def test_undefined_and_missing_attributes() -> None:
    rows = [
        ann(0, attrs={"color": "red", "size": 3, "occluded": True, "_extra": {"x": 1}}),
        ann(1, attrs={"occluded": False}),
        ann(2, attrs={"color": "blue"}),
        ann(3, category="person", attrs={"pose": "up"}),  # person's attributes are not defined
    ]
    found = qa(rows, p=ATTR)
    undefined = checks_of(found, "undefined_attribute")
    assert list(
        zip(undefined["annotation_ids"].map(list), undefined["attribute"], strict=True)
    ) == [(["a0"], "size")]
    missing = checks_of(found, "missing_attribute")
    assert missing["annotation_ids"].map(list).tolist() == [["a1"]]
    assert missing["attribute"].tolist() == ["color"]
    # categories.json may carry the attribute spec (CVAT's, objects with a name)
    cats = {"categories": [{"id": 1, "name": "car", "attributes": [{"name": "color"}]}]}
    assert len(checks_of(qa(rows[:3], categories=cats), "undefined_attribute")) == 1
    assert checks_of(qa(rows), "undefined_attribute").empty  # no spec: not checked


def test_attribute_distribution_checks() -> None:
    spec = params(attributes={"car": ["color", "model"]})
    reds = [ann(i, item=f"img_{i}", attrs={"color": "red", "model": "a"}) for i in range(50)]
    found = qa([*reds, ann(99, item="img_x", attrs={"color": "blue", "model": "a"})], p=spec)
    assert checks_of(found, "few_samples_in_attribute")["reason"].tolist() == [
        "attribute 'color' of label 'car' is 'blue' only 1 time(s)"
    ]
    assert checks_of(found, "attribute_imbalance")["value"].tolist() == [50.0]
    assert checks_of(found, "only_one_attribute_value")["attribute"].tolist() == ["model"]
    assert checks_of(found, "attribute_defined_but_unused").empty
    unused = qa([ann(0, attrs={"color": "red"}), ann(1, attrs={"color": "blue"})], p=spec)
    assert checks_of(unused, "attribute_defined_but_unused")["attribute"].tolist() == ["model"]
    balanced = [ann(i, item=f"i{i}", attrs={"color": c, "model": m}) for i, (c, m) in
                enumerate([("red", "a"), ("red", "b"), ("blue", "a"), ("blue", "b")])]  # fmt: skip
    quiet = qa(balanced, p=spec)
    for check in ("few_samples_in_attribute", "attribute_imbalance", "only_one_attribute_value"):
        assert checks_of(quiet, check).empty, check


def test_invalid_values_but_not_shapes_without_area() -> None:
    rows = [
        ann(0, box=(10.0, 10.0, float("nan"), 20.0)),
        ann(1, box=(10.0, float("inf"), 5.0, 20.0)),
        ann(2, box=None, shape="tag"),  # an image-level label: no geometry by design
        ann(3, box=None, shape="points", keypoints="[[5.0, 5.0, 2]]"),
        ann(4, box=None),  # a box-shaped annotation without its box
    ]
    found = checks_of(qa(rows), "invalid_value")
    assert found["annotation_ids"].map(list).tolist() == [["a0"], ["a1"], ["a4"]]
    assert found["reason"].iloc[0] == "box annotation: bbox_w is NaN or missing"
    assert found["reason"].iloc[1] == "box annotation: bbox_y is infinite"


def test_box_nonpositive_and_too_small() -> None:
    rows = [
        ann(0, box=(10.0, 10.0, 0.0, 20.0)),
        ann(1, box=(10.0, 10.0, 5.0, -2.0)),
        ann(2, box=(10.0, 10.0, 0.5, 20.0)),
        ann(3, box=(10.0, 10.0, 1.0, 1.0)),  # exactly 1 px: fine
    ]
    found = qa(rows)
    assert checks_of(found, "box_nonpositive")["annotation_ids"].map(list).tolist() == [
        ["a0"],
        ["a1"],
    ]
    small = checks_of(found, "box_too_small")
    assert small["annotation_ids"].map(list).tolist() == [["a2"]]
    assert small["value"].tolist() == [0.5] and small["threshold"].tolist() == [1.0]
    boxes = found[found["check"].isin(["box_nonpositive", "box_too_small", "invalid_value"])]
    assert "a3" not in set(boxes["annotation_ids"].explode())


def test_far_from_label_mean_at_5_sigma() -> None:
    rows = varied(40)
    assert checks_of(qa(rows), "far_from_label_mean").empty
    rows.append(ann(99, item="img_z", box=(0.0, 0.0, 400.0, 300.0)))
    found = checks_of(qa(rows), "far_from_label_mean")
    assert found["annotation_ids"].map(list).tolist() == [["a99"]]
    reason = found["reason"].iloc[0]
    for prop in ("width", "height", "area", "short", "long"):
        assert f"{prop} " in reason
    assert "ratio" not in reason  # 400/300 is an ordinary aspect ratio
    # The z-score is Datumaro's (population standard deviation).
    widths = np.array([r["bbox_w"] for r in rows], dtype=float)
    z = (400.0 - widths.mean()) / widths.std()
    assert found["value"].iloc[0] >= z - 1e-9 and found["threshold"].iloc[0] == 5.0
    # a constant label has no outliers (no float-noise findings)
    same = [ann(i, item=f"i{i}", box=(1.0, 1.0, 0.1 * 3, 0.7)) for i in range(5)]
    assert checks_of(qa(same, p=params(min_box_side=0.1)), "far_from_label_mean").empty


def test_far_from_attribute_mean() -> None:
    spec = params(attributes={"car": ["color"]})
    rows = varied(40, attrs={"color": "red"}) + varied(3, start=50, attrs={"color": "blue"})
    rows.append(ann(99, item="img_z", box=(0.0, 0.0, 400.0, 300.0), attrs={"color": "red"}))
    found = checks_of(qa(rows, p=spec), "far_from_attribute_mean")
    assert found["annotation_ids"].map(list).tolist() == [["a99"]]
    assert found["attribute"].tolist() == ["color"]
    assert "label 'car', color='red'" in found["reason"].iloc[0]


def _widths(ws: list[float], **kw: Any) -> list[dict[str, Any]]:
    return [
        ann(i, item=f"img_{i}", box=(1.0, 1.0, w, 10.0 + i % 4), **kw) for i, w in enumerate(ws)
    ]


def test_skewed_distribution_top_bin_holding_80_percent() -> None:
    skewed = _widths([10.0] * 19 + [100.0])  # 19 of 20 in the top bin: 95%
    found = checks_of(qa(skewed), "skewed_distribution")
    width = found[found["reason"].str.startswith("box width")]
    assert width["value"].tolist() == [0.95]
    spread = _widths([10.0 + 10 * k for k in range(10)] * 2)  # 2 per bin: 10%
    found = checks_of(qa(spread), "skewed_distribution")
    assert found[found["reason"].str.startswith("box width")].empty
    # 16 of 20 = 80% is already skewed (>=), 15 of 20 is not
    edge = _widths([10.0] * 16 + [40.0, 60.0, 80.0, 100.0])
    found = checks_of(qa(edge), "skewed_distribution")
    assert found[found["reason"].str.startswith("box width")]["value"].tolist() == [0.8]
    below = _widths([10.0] * 15 + [30.0, 50.0, 70.0, 90.0, 100.0])
    found = checks_of(qa(below), "skewed_distribution")
    assert found[found["reason"].str.startswith("box width")].empty
    assert checks_of(qa(_widths([10.0])), "skewed_distribution").empty  # one value: no histogram


def test_skewed_distribution_in_attribute() -> None:
    spec = params(attributes={"car": ["color"]})
    rows = _widths([10.0] * 19 + [100.0], attrs={"color": "red"})
    found = checks_of(qa(rows, p=spec), "skewed_distribution_in_attribute")
    width = found[found["reason"].str.startswith("box width")]
    assert width["attribute"].tolist() == ["color"] and width["value"].tolist() == [0.95]


def test_predictions_do_not_count_in_label_statistics() -> None:
    rows = [ann(0, category="person")] + [
        ann(i, item=f"img_{i}", annotator="prediction:v2") for i in range(1, 60)
    ]
    found = qa(rows)
    assert checks_of(found, "label_imbalance").empty
    assert checks_of(found, "only_one_label")["category"].tolist() == ["person"]
