"""Split labels and cross-split leakage: the table of pairs and which copy gets flagged."""

from __future__ import annotations

import pandas as pd
import pytest

from visionloop.curate.leakage import exact_pairs, flag_leaks, leakage_table, split_labels

PATTERN = r"(?:^|/)(train|training|val|valid|validation|test|testing)(?:/|$)"


def _df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"id{k}" for k in range(6)],
            "source_uri": [
                f"/d/{p}"
                for p in (
                    "train/a.jpg",
                    "test/a.jpg",
                    "val/b.jpg",
                    "train/b.jpg",
                    "train/c.jpg",
                    "misc/c.jpg",
                )
            ],
            "rel_path": [
                "train/a.jpg",
                "test/a.jpg",
                "val/b.jpg",
                "train/b.jpg",
                "train/c.jpg",
                "misc/c.jpg",
            ],
            "status": ["accepted"] * 6,
            "reason": [None] * 6,
            "duplicate_of": [None] * 6,
        }
    )


@pytest.mark.parametrize(
    ("path", "split"),
    [
        ("train/x.jpg", "train"),
        ("data/Test/x.jpg", "test"),
        ("cam/validation/x.jpg", "validation"),
        ("trainset/x.jpg", None),  # a word inside a name is not a split folder
        ("x_test.jpg", None),
        ("val", "val"),
    ],
)
def test_split_from_the_path(path: str, split: str | None) -> None:
    df = pd.DataFrame({"rel_path": [path], "source_uri": [path]})
    assert split_labels(df, None, PATTERN).tolist() == [split]


def test_split_from_a_column_wins_and_must_exist() -> None:
    df = pd.DataFrame({"rel_path": ["train/a.jpg", "b.jpg"], "subset": ["TEST ", None]})
    assert split_labels(df, "subset", PATTERN).tolist() == ["test", None]
    with pytest.raises(KeyError, match="'fold'"):
        split_labels(df, "fold", PATTERN)
    assert split_labels(df, None, None).tolist() == [None, None]


def test_leakage_table_lists_cross_split_pairs_of_every_tier() -> None:
    df = _df()
    df.loc[1, ["status", "reason"]] = ["quarantined", "near_duplicate"]
    split = split_labels(df, None, PATTERN)
    pairs = {
        "exact": [],
        "pixel": [(2, 3, 0)],  # val vs train: leak, both accepted
        "near": [(0, 1, 5), (4, 5, 3), (0, 3, 7)],  # train/test; train/no split; train/train
    }
    table = leakage_table(df, split, pairs)
    assert table[
        ["tier", "source_a", "split_a", "source_b", "split_b", "distance"]
    ].values.tolist() == [
        ["pixel", "/d/val/b.jpg", "val", "/d/train/b.jpg", "train", 0],
        ["near", "/d/train/a.jpg", "train", "/d/test/a.jpg", "test", 5],
    ]
    assert table["resolved_by"].isna().tolist() == [True, False]
    assert table.at[1, "resolved_by"] == "near_duplicate"


def test_flag_leaks_keeps_the_evaluation_copy() -> None:
    df = _df()
    split = split_labels(df, None, PATTERN)
    priority = pd.Series(range(6), index=df.index)
    flag, other = flag_leaks(
        df, split, [(0, 1, 5), (2, 3, 0), (4, 5, 3)], ["test", "validation", "val"], priority
    )
    # train/a vs test/a: the train copy goes; val/b vs train/b: the train copy goes
    assert flag.tolist() == [True, False, False, True, False, False]
    assert other[0] == "/d/test/a.jpg" and other[3] == "/d/val/b.jpg"
    # a pair already resolved (one member quarantined) is not flagged again
    df.loc[1, "status"] = "quarantined"
    flag, _ = flag_leaks(df, split, [(0, 1, 5)], ["test"], priority)
    assert not flag.any()


def test_flag_leaks_equal_rank_uses_the_keep_rule() -> None:
    df = _df()
    split = pd.Series(["train", "extra", None, None, None, None])  # neither split is listed
    flag, _ = flag_leaks(df, split, [(0, 1, 2)], ["test"], pd.Series([5, 1, 0, 0, 0, 0]))
    assert flag.tolist()[:2] == [True, False]  # row 1 ranks better by the keep rule


def test_exact_pairs_come_from_collects_duplicate_of() -> None:
    df = _df()
    df.loc[3, ["status", "reason", "duplicate_of"]] = [
        "quarantined",
        "duplicate_exact",
        "/d/val/b.jpg",
    ]
    assert exact_pairs(df) == [(2, 3, 0)]
