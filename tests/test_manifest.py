from __future__ import annotations

import pandas as pd
import pytest

from visionloop.manifest import ManifestError, check_transition, quarantine, status_counts


def _df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "source_uri": ["/s/a", "/s/b", "/s/c"],
            "status": ["accepted", "accepted", "quarantined"],
            "reason": [None, None, "corrupt"],
            "reason_detail": [None, None, "bad header"],
            "quarantined_by": [None, None, "collect"],
            "width": [10, 20, None],
        }
    )


def test_quarantine_touches_only_accepted_rows() -> None:
    df = quarantine(_df(), [True, False, True], "blurry", "score 0.1", "curate")
    assert list(df["status"]) == ["quarantined", "accepted", "quarantined"]
    assert df["reason"].fillna("-").tolist() == ["blurry", "-", "corrupt"]
    assert df["quarantined_by"].fillna("-").tolist() == ["curate", "-", "collect"]
    assert status_counts(df) == {
        "input": 3,
        "accepted": 1,
        "quarantined": 2,
        "reasons": {"blurry": 1, "corrupt": 1},
    }


def test_transition_contract() -> None:
    before = _df()
    after = quarantine(before, [False, True, False], "too_dark", "dark", "curate")
    after["curate_blur_score"] = [0.5, 0.6, None]
    check_transition(before, after, "curate")
    with pytest.raises(ManifestError, match="rows changed"):
        check_transition(before, after.iloc[:2], "curate")
    revived = after.copy()
    revived.loc[2, "status"] = "accepted"
    with pytest.raises(ManifestError, match="accepted again"):
        check_transition(before, revived, "curate")
    rewritten = after.copy()
    rewritten.loc[0, "width"] = 99
    with pytest.raises(ManifestError, match="width"):
        check_transition(before, rewritten, "curate")
