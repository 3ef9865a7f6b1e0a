"""Coverage: slice values, the coverage and gap tables (exact figures), the balanced subset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers import mock_annotations
from visionloop.curate.coverage import (
    allocate,
    balanced_subset,
    coverage_table,
    gap_table,
    slice_frame,
    slice_values,
)


def _frame(n_day_a: int, n_day_b: int, n_night_a: int) -> pd.DataFrame:
    rows = (
        [("day", "Acme", "A100")] * n_day_a
        + [("day", "Birch", "B7")] * n_day_b
        + [("night", "Acme", "A100")] * n_night_a
    )
    return pd.DataFrame(rows, columns=["curate_day_night", "camera_make", "camera_model"])


def test_slice_values_of_derived_dimensions() -> None:
    df = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "curate_day_night": ["day", "night", None, "day"],
            "capture_time": [
                "2024-01-01T05:59:00",
                "2024-01-01T06:00:00",
                "2024-01-01 13:10:00",
                None,
            ],
            "camera_make": ["Acme", None, "Birch", ""],
            "camera_model": ["A100", "X1", None, None],
            "gps_lat": [-33.87, 40.71, None, 0.5],
            "gps_lon": [151.21, -74.0, None, -0.5],
            "weather": ["rain", None, "sun", "sun"],
        }
    )
    assert slice_values(df, "day_night").tolist() == ["day", "night", "unknown", "day"]
    assert slice_values(df, "time_of_day").tolist() == ["night", "morning", "afternoon", "unknown"]
    assert slice_values(df, "camera").tolist() == ["Acme A100", "X1", "Birch", "unknown"]
    assert slice_values(df, "location", cell_deg=1.0).tolist() == [
        "-34,+151",
        "+40,-74",
        "no_gps",
        "+0,-1",
    ]
    assert slice_values(df, "location", cell_deg=0.5).tolist()[0] == "-34.0,+151.0"
    assert slice_values(df, "weather").tolist() == ["rain", "unknown", "sun", "sun"]
    with pytest.raises(KeyError, match="'altitude' is neither"):
        slice_values(df, "altitude")


def test_class_dimension_from_annotations_counts_an_image_in_each_of_its_classes() -> None:
    df = pd.DataFrame({"item_id": ["i0", "i1", "i2"], "curate_day_night": ["day", "day", "night"]})
    ann = mock_annotations(items=["i0", "i1"], per_item=2)  # person + car on each
    ann.loc[ann["item_id"] == "i1", "category"] = "car"
    frame, skipped = slice_frame(df, ["day_night", "class"], annotations=ann)
    assert skipped == []
    assert frame["cell"].tolist() == [
        "day | car",
        "day | person",
        "day | car",
        "night | unlabelled",
    ]
    # without labels the class dimension is skipped, not an error
    frame, skipped = slice_frame(df, ["day_night", "class"])
    assert skipped == ["class"] and frame["cell"].tolist() == ["day", "day", "night"]


def test_coverage_table_exact_figures_and_the_empty_cell() -> None:
    frame, _ = slice_frame(_frame(30, 12, 8), ["day_night", "camera"])
    cov = coverage_table(frame, ["day_night", "camera"], min_count=10, max_share=0.5, max_cells=100)
    joint = cov[cov["slice"] == "day_night×camera"].set_index("cell")
    assert joint["count"].to_dict() == {
        "day | Acme A100": 30,
        "day | Birch B7": 12,
        "night | Acme A100": 8,
        "night | Birch B7": 0,  # never observed together: the product makes it a gap
    }
    assert joint.loc["day | Acme A100", "share"] == pytest.approx(0.6)
    assert joint["needed"].to_dict() == {
        "day | Acme A100": 0,
        "day | Birch B7": 0,
        "night | Acme A100": 2,
        "night | Birch B7": 10,
    }
    assert joint.loc["day | Acme A100", "surplus"] == 5  # 30 - floor(0.5 x 50)
    assert joint["status"].to_dict() == {
        "day | Acme A100": "over",
        "day | Birch B7": "ok",
        "night | Acme A100": "gap",
        "night | Birch B7": "gap",
    }
    marginal = cov[cov["slice"] == "camera"].set_index("cell")
    assert marginal["count"].to_dict() == {"Acme A100": 38, "Birch B7": 12}
    assert (marginal["surplus"] == 0).all()  # max_share gates joint cells only
    assert joint.loc["night | Birch B7", "day_night"] == "night"
    assert pd.isna(marginal.loc["Acme A100", "day_night"])


def test_gap_table_lists_cells_still_needing_images() -> None:
    frame, _ = slice_frame(_frame(30, 12, 8), ["day_night", "camera"])
    cov = coverage_table(frame, ["day_night", "camera"], min_count=10, max_share=0.5, max_cells=100)
    gaps = gap_table(cov)
    assert gaps[["slice", "cell", "count", "needed"]].values.tolist() == [
        ["day_night×camera", "night | Birch B7", 0, 10],
        ["day_night", "night", 8, 2],
        ["day_night×camera", "night | Acme A100", 8, 2],
    ]
    assert list(gaps.columns) == ["slice", "cell", "day_night", "camera", "count", "needed"]


def test_too_many_joint_cells_lists_observed_ones_only() -> None:
    frame, _ = slice_frame(_frame(30, 12, 8), ["day_night", "camera"])
    cov = coverage_table(frame, ["day_night", "camera"], min_count=10, max_share=0.5, max_cells=3)
    assert "night | Birch B7" not in set(cov["cell"])
    assert len(cov[cov["slice"] == "day_night×camera"]) == 3


@pytest.mark.parametrize(
    ("counts", "budget", "max_share", "expected"),
    [
        ({"a": 100, "b": 10, "c": 3}, 30, 1.0, {"a": 17, "b": 10, "c": 3}),
        ({"a": 100, "b": 10, "c": 3}, 30, 0.4, {"a": 12, "b": 10, "c": 3}),  # a capped: 25 < 30
        ({"a": 100, "b": 100}, 9, 0.5, {"a": 4, "b": 4}),  # 5 would exceed 50 % of 9
        ({"a": 100, "b": 100, "c": 100}, 10, 0.5, {"a": 4, "b": 3, "c": 3}),  # remainder to "a"
        ({"a": 5, "b": 5}, 100, 0.5, {"a": 5, "b": 5}),  # budget above the data
        ({"a": 100, "b": 1}, 50, 0.5, {"a": 25, "b": 1}),  # balance before size
        ({"a": 3}, 0, 0.5, {"a": 0}),
    ],
)
def test_allocate(counts, budget, max_share, expected) -> None:
    assert allocate(counts, budget, max_share) == expected


def test_balanced_subset_spreads_the_budget_and_skips_near_copies() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for cell, n in (("day", 40), ("night", 6)):
        for k in range(n):
            rows.append(
                {
                    "item_id": f"{cell}{k:02d}",
                    "source_uri": f"/{cell}/{k}.jpg",
                    "cell": cell,
                    "phash": f"{int(rng.integers(0, 2**62)):016x}",
                    "blur": 0.9 - k / 100,
                }
            )
    items = pd.DataFrame(rows)
    # day01 and day02 are 3 bits from day00 (the sharpest): they must not be picked with it
    base = int(items.at[0, "phash"], 16)
    items.at[1, "phash"] = f"{base ^ 0b111:016x}"
    items.at[2, "phash"] = f"{base ^ 0b111000:016x}"
    out = balanced_subset(items, budget=16, max_share=0.75, min_distance=12)
    assert len(out) == 16
    assert out["cell"].value_counts().to_dict() == {"day": 10, "night": 6}
    day = set(out.loc[out["cell"] == "day", "item_id"])
    assert "day00" in day and not {"day01", "day02"} & day
    assert day == {f"day{k:02d}" for k in [0, *range(3, 12)]}  # the next sharpest instead
    assert out["rank"].tolist() == list(range(1, 17))
    assert out["cell"].tolist()[:4] == ["day", "night", "day", "night"]  # round robin
    # when too few far-apart images are left, the quota is filled with the closest ones
    small = balanced_subset(items.iloc[:3], budget=3, max_share=1.0, min_distance=12)
    assert small["item_id"].tolist() == ["day00", "day01", "day02"]
    assert small["why"].str.startswith("filled").tolist() == [False, True, True]
    assert balanced_subset(items, budget=0, max_share=0.5, min_distance=12).empty
