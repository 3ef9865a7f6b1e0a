"""Labelling shortlist: budget, tiers (new before old), rarest slice first, diversity, why."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.helpers import mock_annotations
from visionloop.refresh.select import SELECT_COLUMNS, farthest_first, select_for_annotation


def _current() -> pd.DataFrame:
    """12 accepted items: 8 from camera A by day, 3 from camera B at night, 1 quarantined."""
    rows = []
    for i in range(12):
        cam, dn = ("A", "day") if i < 8 else ("B", "night")
        rows.append(
            {
                "item_id": f"id{i:02d}",
                "source_uri": f"/src/{i:02d}.jpg",
                "status": "quarantined" if i == 11 else "accepted",
                "camera_model": cam,
                "curate_day_night": dn,
                "curate_blur_score": 0.3 + 0.05 * i,
                "curate_brightness": 0.2 + 0.05 * (i % 4),
                "curate_entropy": 6.0 + 0.1 * i,
                "width": 640,
                "height": 480,
            }
        )
    return pd.DataFrame(rows)


def test_budget_tiers_rarity_and_why() -> None:
    cur = _current()
    labels = mock_annotations(["id00", "id01"])  # two A/day items are labelled already
    new_ids = {"id05", "id06", "id07", "id08", "id09"}
    out = select_for_annotation(cur, labels, new_ids, budget=6)
    assert list(out.columns) == SELECT_COLUMNS
    assert out["priority"].tolist() == [1, 2, 3, 4, 5, 6]
    ids = out["item_id"].tolist()
    assert len(ids) == 6 and len(set(ids)) == 6
    assert not {"id00", "id01", "id11"} & set(ids)  # labelled and quarantined never proposed
    # new items first (5 of them), the rare B/night slice leads each round
    assert set(ids[:5]) == new_ids
    assert ids[0] in {"id08", "id09"} and ids[2] in {"id08", "id09"}
    assert ids[5] in {"id02", "id03", "id04", "id10"}
    assert out["why"].str.contains("unlabelled").all()
    assert "new since the reference" in out.at[0, "why"]
    assert "camera_model=B, curate_day_night=night holds 3 of 11" in out.at[0, "why"]
    assert "rarity rank 1" in out.at[0, "why"]
    assert "in the reference" in out.at[5, "why"]


def test_budget_larger_than_pool_and_zero_budget() -> None:
    cur = _current()
    out = select_for_annotation(cur, None, set(), budget=100)
    assert len(out) == 11  # every accepted item, none twice
    assert select_for_annotation(cur, None, set(), budget=0).empty
    none_left = select_for_annotation(cur, mock_annotations(list(cur["item_id"])), set(), 5)
    assert none_left.empty and list(none_left.columns) == SELECT_COLUMNS


def test_unmatched_annotations_are_not_labels() -> None:
    cur = _current()
    labels = mock_annotations(["id08", "id09", "id10"])
    labels["match_status"] = "unmatched"
    out = select_for_annotation(cur, labels, set(), budget=11)
    assert {"id08", "id09", "id10"} <= set(out["item_id"])


def test_farthest_first_spreads_out() -> None:
    # points on a line: the middle one is most typical, then the two ends
    v = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])
    order = farthest_first(v, ["a", "b", "c", "d", "e"], 3)
    assert [i for i, _ in order] == [2, 0, 4]
    assert np.isnan(order[0][1]) and order[1][1] == 2.0 and order[2][1] == 2.0


def test_diversity_within_a_slice() -> None:
    """Within one slice the second pick is the outlier, not the near-twin of the first."""
    cur = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "source_uri": ["/a", "/b", "/c", "/d"],
            "status": "accepted",
            "camera_model": "X",
            "curate_day_night": "day",
            "curate_blur_score": [0.50, 0.51, 0.52, 0.95],
            "curate_brightness": [0.4, 0.4, 0.41, 0.9],
            "curate_entropy": [6.0, 6.0, 6.1, 7.5],
        }
    )
    out = select_for_annotation(cur, None, set(), budget=2)
    assert out["item_id"].tolist()[1] == "d"
    assert "farthest-first pick 2" in out.at[1, "why"]
