"""Agreement figures on constructed two-annotator cases, checked against values computed by
hand, and gold scoring with CVAT's definitions."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pandas as pd
import pytest

from tests.qa.builders import ann, checks_of, params, table
from visionloop.qa.agreement import MIN_ALPHA_UNITS
from visionloop.qa.run import QAResult, run_qa

# Annotator A and B on one image, one label; IoUs 1, 1/3 and 1/2 (see test_alpha.py).
A = [(0.0, 0.0, 10.0, 10.0), (20.0, 0.0, 10.0, 10.0), (0.0, 20.0, 10.0, 10.0)]
B = [(0.0, 0.0, 10.0, 10.0), (25.0, 0.0, 10.0, 10.0), (0.0, 20.0, 10.0, 5.0)]


def two_annotators() -> list[dict[str, Any]]:
    rows = [ann(i, box=b, annotator="A") for i, b in enumerate(A)]
    rows += [ann(10 + i, box=b, annotator="B") for i, b in enumerate(B)]
    return rows


def run(rows: list[dict[str, Any]], **p: Any) -> QAResult:
    return run_qa(table(rows), params(**p))


def test_all_three_objects_match_at_iou_0_3() -> None:
    res = run(two_annotators(), agreement_iou=0.3)
    agree = res.summary["agreement"]
    assert (agree["items_compared"], agree["matched"], agree["objects"]) == (1, 3, 6)
    assert agree["f1"] == 1.0
    # mean IoU = (1 + 1/3 + 1/2) / 3 = 11/18
    assert agree["mean_iou"] == pytest.approx(float(Fraction(11, 18)), abs=1e-12)
    # alpha = 1 - (7/18) / (79/90) = 44/79 (hand computation in test_alpha.py)
    assert agree["alpha"]["alpha"] == pytest.approx(float(Fraction(44, 79)), abs=1e-12)
    assert agree["alpha"]["units"] == 3
    assert agree["alpha_per_category"]["car"]["alpha"] == agree["alpha"]["alpha"]


def test_at_iou_0_5_the_middle_pair_does_not_match() -> None:
    """IoU 1/3 < 0.5: two matches of three objects each.

    F1 = 2 * 2 / (3 + 3) = 2/3; mean IoU = (1 + 1/2) / 2 = 3/4.
    Alpha units: {A1, B1} (d 0), {A3, B3} (d 1/2), and A2, B2 alone (they drop out):
      D_o = (2 * 0 + 2 * 1/2) / 4 = 1/4
      D_e = (2 * 0 + 2 * 1/2 + 8 cross-unit pairs * 1) / (4 * 3) = 9/12 = 3/4
      alpha = 1 - (1/4) / (3/4) = 2/3
    """
    res = run(two_annotators(), agreement_iou=0.5)
    agree = res.summary["agreement"]
    assert agree["matched"] == 2
    assert agree["f1"] == pytest.approx(2 / 3, abs=1e-12)
    assert agree["mean_iou"] == pytest.approx(0.75, abs=1e-12)
    assert agree["alpha"]["alpha"] == pytest.approx(2 / 3, abs=1e-12)
    assert (agree["alpha"]["values"], agree["alpha"]["units"]) == (4, 2)
    pair = res.agreement.iloc[0]
    assert (pair["annotator_a"], pair["annotator_b"], pair["n_a"], pair["n_b"]) == ("A", "B", 3, 3)
    assert (pair["matched"], pair["f1"], pair["mean_iou"]) == (2, pytest.approx(2 / 3), 0.75)
    cards = res.scorecards.set_index("annotator")
    for who in ("A", "B"):
        card = cards.loc[who]
        assert (card["shared_items"], card["objects"], card["compared_with"]) == (1, 3, 1)
        assert (card["matched"], card["unmatched"]) == (2, 1)
        assert card["f1"] == pytest.approx(2 / 3) and card["mean_iou"] == pytest.approx(0.75)
    assert checks_of(res.findings, "low_agreement").empty  # 2/3 >= 0.5


def test_low_agreement_finding() -> None:
    res = run(two_annotators(), agreement_iou=0.5, min_agreement_f1=0.7)
    found = checks_of(res.findings, "low_agreement")
    assert found["item"].tolist() == ["img_a"]
    assert found["annotator"].tolist() == ["A,B"]
    assert found["value"].iloc[0] == pytest.approx(2 / 3)
    assert sorted(found["annotation_ids"].iloc[0]) == ["a0", "a1", "a10", "a11", "a12", "a2"]


def test_matching_is_per_label_and_single_annotator_items_are_not_compared() -> None:
    rows = [
        ann(0, box=A[0], annotator="A"),
        ann(1, box=A[0], annotator="B", category="person"),
        ann(2, item="img_b", annotator="A"),
    ]
    res = run(rows)
    pairs = res.agreement.sort_values("category")
    assert pairs[["category", "n_a", "n_b", "matched"]].values.tolist() == [
        ["car", 1, 0, 0],
        ["person", 0, 1, 0],
    ]
    assert res.summary["agreement"]["items_compared"] == 1
    assert res.summary["agreement"]["f1"] == 0.0


def test_three_annotators_form_one_unit_per_object() -> None:
    rows = []
    for k, who in enumerate(("A", "B", "C")):
        rows += [ann(10 * k + i, box=b, annotator=who) for i, b in enumerate(A)]
    res = run(rows)
    agree = res.summary["agreement"]
    assert agree["alpha"]["units"] == 3 and agree["alpha"]["values"] == 9
    assert agree["alpha"]["alpha"] == 1.0 and agree["f1"] == 1.0
    assert len(res.agreement) == 3  # A-B, A-C, B-C


def test_low_alpha_only_from_enough_units() -> None:
    def jittery(units: int) -> list[dict[str, Any]]:
        rows = []
        for u in range(units):
            x = 40.0 * u
            rows.append(ann(2 * u, box=(x, 0.0, 20.0, 20.0), annotator="A"))
            rows.append(ann(2 * u + 1, box=(x + 6.0, 0.0, 20.0, 20.0), annotator="B"))  # IoU 0.54
        return rows

    many = run(jittery(MIN_ALPHA_UNITS))
    found = checks_of(many.findings, "low_alpha")
    assert found["category"].isna().tolist() == [True, False]  # overall, then per label
    assert found["category"].iloc[1] == "car"
    assert found["value"].iloc[0] < 0.667
    few = run(jittery(MIN_ALPHA_UNITS - 1))
    assert checks_of(few.findings, "low_alpha").empty
    assert few.summary["agreement"]["alpha"]["alpha"] < 0.667  # reported, not judged


def test_predictions_take_no_part_in_peer_agreement() -> None:
    rows = [*two_annotators(), ann(50, box=A[0], annotator="prediction:yolo-v8")]
    res = run(rows, agreement_iou=0.3)
    assert set(res.agreement["annotator_a"]) | set(res.agreement["annotator_b"]) == {"A", "B"}
    assert res.summary["agreement"]["f1"] == 1.0


# --- gold (CVAT) -----------------------------------------------------------------------------

GOLD = [
    ("car", (0.0, 0.0, 20.0, 20.0)),
    ("car", (100.0, 0.0, 20.0, 20.0)),
    ("person", (200.0, 0.0, 20.0, 20.0)),
    ("car", (300.0, 0.0, 20.0, 20.0)),
]


def gold_case() -> list[dict[str, Any]]:
    rows = [ann(i, category=c, box=b, annotator="gold") for i, (c, b) in enumerate(GOLD)]
    rows += [
        ann(10, category="car", box=(0.0, 0.0, 20.0, 20.0), annotator="bob"),  # valid, IoU 1
        # IoU 0.45 >= 0.4: still a match (CVAT's threshold), so valid
        ann(11, category="car", box=(100.0 + 20 * 11 / 29, 0.0, 20.0, 20.0), annotator="bob"),
        ann(12, category="car", box=(200.0, 0.0, 20.0, 20.0), annotator="bob"),  # mismatched
        # the gold car at x=300 is missing; this box is extra
        ann(13, category="car", box=(500.0, 0.0, 20.0, 20.0), annotator="bob"),
    ]
    rows += [ann(20 + i, category=c, box=b, annotator="carol") for i, (c, b) in enumerate(GOLD)]
    return rows


def test_gold_scoring_with_cvat_definitions() -> None:
    """bob: valid 2, mismatched 1, missing 1, extra 1.
    accuracy = 2 / (2 + 1 + 1 + 1) = 0.4; precision = 2/4; recall = 2/4 (CVAT)."""
    res = run(gold_case(), gold_annotators=["gold"])
    gold = res.gold.set_index("annotator")
    bob = gold.loc["bob"]
    assert (bob["valid"], bob["mismatched"], bob["missing"], bob["extra"]) == (2, 1, 1, 1)
    assert (bob["accuracy"], bob["precision"], bob["recall"]) == (0.4, 0.5, 0.5)
    assert bob["mean_iou"] == pytest.approx((1 + 0.45 + 1) / 3)
    assert gold.loc["carol", "accuracy"] == 1.0
    cards = res.scorecards.set_index("annotator")
    assert cards.loc["bob", "gold_accuracy"] == 0.4 and not cards.loc["bob", "meets_target"]
    assert cards.loc["carol", "meets_target"]
    found = checks_of(res.findings, "gold_below_target")
    assert found["annotator"].tolist() == ["bob"]
    assert found["reason"].iloc[0] == (
        "annotator 'bob' scores accuracy 0.400 on 1 gold item(s) (< target 0.7): "
        "2 valid, 1 mismatched, 1 missing, 1 extra"
    )
    assert res.summary["agreement"]["gold"]["accuracy"] == pytest.approx(6 / 9)
    # gold takes no part in peer agreement: bob and carol are compared with each other only
    assert set(res.agreement["annotator_a"]) | set(res.agreement["annotator_b"]) == {
        "bob",
        "carol",
    }


def test_iou_below_0_4_is_missing_plus_extra() -> None:
    rows = [ann(0, box=(0.0, 0.0, 20.0, 20.0), annotator="gold")]
    rows.append(ann(1, box=(9.0, 0.0, 20.0, 20.0), annotator="bob"))  # IoU 11/29 = 0.379
    bob = run(rows, gold_annotators=["gold"]).gold.iloc[0]
    assert (bob["valid"], bob["missing"], bob["extra"], bob["accuracy"]) == (0, 1, 1, 0.0)


def test_label_studio_ground_truth_flag_marks_gold() -> None:
    rows = [ann(0, box=(0.0, 0.0, 20.0, 20.0), annotator="1", attrs={"ground_truth": True})]
    rows.append(ann(1, box=(0.0, 0.0, 20.0, 20.0), annotator="2"))
    res = run(rows)
    assert res.gold[["annotator", "gold_annotator", "accuracy"]].values.tolist() == [
        ["2", "1", 1.0]
    ]
    assert res.summary["agreement"]["items_compared"] == 0


def test_without_gold_the_gold_table_is_empty() -> None:
    res = run(two_annotators())
    assert res.gold.empty and list(res.gold.columns)[:3] == ["item", "image_ref", "annotator"]
    assert pd.isna(res.scorecards["gold_accuracy"]).all()
