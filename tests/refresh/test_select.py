"""Labelling shortlist: the four passes (QA, gap quotas, drift, diversity), budget, why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers import mock_annotations
from visionloop.refresh.select import (
    ALL_COLUMNS,
    SelectConfig,
    farthest_first,
    labelled_items,
    qa_disputed,
    select_for_annotation,
)


def _current() -> pd.DataFrame:
    """12 items: 8 camera A by day (id00-07), 3 camera B at night (id08-10), 1 quarantined."""
    rows = []
    for i in range(12):
        cam, dn = ("A", "day") if i < 8 else ("B", "night")
        rows.append(
            {
                "item_id": f"id{i:02d}",
                "source_uri": f"/src/{i:02d}.jpg",
                "status": "quarantined" if i == 11 else "accepted",
                "cell": f"{dn} | {cam}",
                "cam": cam,
            }
        )
    return pd.DataFrame(rows)


def _vectors(n: int = 12) -> np.ndarray:
    return np.arange(n, dtype=float)[:, None]  # items on a line: id00 ... id11


def test_diversity_only_new_before_old_and_farthest_first() -> None:
    cur = _current()
    labels = mock_annotations(["id00", "id01"])
    new = {"id05", "id06", "id07"}
    out = select_for_annotation(cur, labels, new, SelectConfig(budget=5), vectors=_vectors())
    assert list(out.columns) == ALL_COLUMNS
    assert out["priority"].tolist() == [1, 2, 3, 4, 5]
    ids = out["item_id"].tolist()
    # new tier first: id07 is farthest from the labelled id00/id01, then id05, then id06
    assert ids[:3] == ["id07", "id05", "id06"]
    # then the old unlabelled ones, farthest from everything taken: id10, then id03
    assert ids[3:] == ["id10", "id03"]
    assert (out["reason"] == "diversity").all()
    assert out["new"].tolist() == [True, True, True, False, False]
    assert out.at[0, "why"].startswith("new since the reference, unlabelled; diversity")
    assert "distance 6.00" in out.at[0, "why"]
    assert out.at[3, "why"].startswith("in the reference")
    assert not {"id00", "id01", "id11"} & set(ids)


def test_gap_quotas_fill_before_diversity() -> None:
    cur = _current()
    gaps = pd.DataFrame({"slice": ["d×c"], "cell": ["night | B"], "count": [3], "needed": [22]})
    cells = {"d×c": cur["cell"]}
    labels = mock_annotations(["id08"])
    out = select_for_annotation(
        cur, labels, set(), SelectConfig(budget=4, min_count=25),
        vectors=_vectors(), gaps=gaps, cells=cells,
    )  # fmt: skip
    assert out["reason"].tolist()[:2] == ["gap", "gap"]
    assert set(out["item_id"][:2]) == {"id09", "id10"}  # the quota: both unlabelled night items
    assert (
        "cell 'night | B' holds 3 image(s), 1 labelled, below the 25 wanted: quota 2"
        in (out.at[0, "why"])
    )
    assert out.at[0, "cell"] == "d×c: night | B"
    assert out["reason"].tolist()[2:] == ["diversity", "diversity"]


def test_qa_disputed_items_come_first_within_their_share() -> None:
    cur = _current()
    labels = mock_annotations(["id00", "id01", "id02"])
    findings = pd.DataFrame(
        {
            "check": ["low_agreement", "low_agreement", "few_samples"],
            "item": ["id02", "id01", "id03"],
            "reason": ["F1 0.20 between a and b", "F1 0.40 between a and b", "x"],
        }
    )
    qa = qa_disputed(findings, ["low_agreement"])
    assert qa == {
        "id02": "low_agreement: F1 0.20 between a and b",
        "id01": "low_agreement: F1 0.40 between a and b",
    }
    out = select_for_annotation(
        cur, labels, set(), SelectConfig(budget=5, qa_share=0.2), vectors=_vectors(), qa_items=qa
    )
    assert out["reason"].tolist() == ["qa", "diversity", "diversity", "diversity", "diversity"]
    assert out.at[0, "item_id"] == "id01"  # one QA pick (20% of 5), by source order
    assert out.at[0, "why"] == "labels disagreed in QA: low_agreement: F1 0.40 between a and b"
    assert "id02" not in set(out["item_id"])  # labelled and beyond the QA share


def test_drift_pass_takes_new_items_of_the_drifted_slice_least_reference_like_first() -> None:
    cur = _current()
    new = {"id03", "id04", "id09", "id10"}
    drift = pd.DataFrame(
        {
            "feature": ["brightness[cam=B]", "dataset"],
            "base_feature": ["brightness", "dataset"],
            "slice": ["cam=B", None],
            "level": ["slice", "dataset"],
            "drifted": [True, False],
        }
    )
    ref_vectors = np.array([[0.0], [1.0], [2.0]])
    out = select_for_annotation(
        cur, None, new, SelectConfig(budget=4, drift_share=0.5),
        vectors=_vectors(), reference_vectors=ref_vectors, drift=drift,
        slice_columns={"cam": cur["cam"]},
    )  # fmt: skip
    assert out["item_id"].tolist()[:2] == ["id10", "id09"]
    assert out["reason"].tolist() == ["drift", "drift", "diversity", "diversity"]
    assert out.at[0, "score"] == 8.0  # distance of id10 to the nearest reference point (2.0)
    assert "slice cam=B drifted (brightness)" in out.at[0, "why"]
    assert set(out["item_id"][2:]) == {"id03", "id04"}  # the remaining new items


def test_budget_zero_empty_and_larger_than_pool() -> None:
    cur = _current()
    assert select_for_annotation(cur, None, set(), SelectConfig(budget=0)).empty
    out = select_for_annotation(cur, None, set(), SelectConfig(budget=100), vectors=_vectors())
    assert len(out) == 11 and out["item_id"].is_unique
    done = select_for_annotation(
        cur, mock_annotations(list(cur["item_id"])), set(), SelectConfig(5)
    )
    assert done.empty and list(done.columns) == ALL_COLUMNS


def test_labels_exclude_unmatched_rows_and_predictions() -> None:
    ann = mock_annotations(["a", "b", "c"])
    ann.loc[ann["item_id"] == "b", "match_status"] = "unmatched"
    ann.loc[ann["item_id"] == "c", "annotator"] = "prediction:yolo"
    assert labelled_items(ann) == {"a"}
    assert labelled_items(None) == set()


@pytest.mark.parametrize(
    ("seeds", "expected"),
    # with a seed at 0: 4 (farthest), 2, then 1 and 3 tie at distance 1: the smaller key
    [(None, [2, 0, 4]), (np.array([[0.0]]), [4, 2, 1])],
)
def test_farthest_first(seeds: np.ndarray | None, expected: list[int]) -> None:
    v = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])
    order = farthest_first(v, ["a", "b", "c", "d", "e"], 3, seeds)
    assert [i for i, _ in order] == expected
