"""Leakage between train, validation and test splits: copies of one picture in two splits.

A model scored on a test image it has seen (or a copy of it) in training scores too well. The
split of each file comes from a manifest column (``curate.split_column``) or from its path
(``curate.split_pattern``, e.g. ``train/...`` vs ``test/...``). Every duplicate tier is checked:
byte-identical files (collect's ``duplicate_of``), identical pixels and pHash near copies.

``leakage_table`` lists every cross-split pair (whatever became of it); ``flag_leaks`` flags,
among images still accepted, one member of each remaining cross-split pair: the one whose
split ranks later in ``curate.leakage_keep_order`` (evaluation splits are kept, the training
copy goes), ties broken by the keep rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from visionloop.schema import Reason, Status

LEAKAGE_COLUMNS = [
    "tier",
    "item_a",
    "source_a",
    "split_a",
    "item_b",
    "source_b",
    "split_b",
    "distance",
    "resolved_by",
]


def split_labels(
    df: pd.DataFrame, split_column: str | None, split_pattern: str | None
) -> pd.Series:
    """The split of every row (lower-case text) or None when it has none.

    A named ``split_column`` must exist (KeyError otherwise); else ``split_pattern``'s first
    group is searched in ``rel_path`` (``source_uri`` when there is no rel_path).
    """
    if split_column:
        if split_column not in df.columns:
            raise KeyError(f"curate.split_column {split_column!r} is not a manifest column")
        values = [
            str(v).strip().lower() if pd.notna(v) and str(v).strip() else None
            for v in df[split_column]
        ]
        return pd.Series(values, index=df.index, dtype=object)
    if not split_pattern:
        return pd.Series([None] * len(df), index=df.index, dtype=object)
    rx = re.compile(split_pattern, re.IGNORECASE)
    paths = df["rel_path"] if "rel_path" in df.columns else df["source_uri"]

    def one(path: object) -> str | None:
        if not isinstance(path, str):
            return None
        m = rx.search(path.replace("\\", "/"))
        if not m:
            return None
        return (m.group(1) if m.groups() else m.group(0)).lower()

    return pd.Series([one(p) for p in paths], index=df.index, dtype=object)


def _label(value: object) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def exact_pairs(df: pd.DataFrame) -> list[tuple[int, int, int]]:
    """(kept row, copy row, 0) for collect's byte-identical duplicates (``duplicate_of``)."""
    if "duplicate_of" not in df.columns:
        return []
    by_uri = pd.Series(df.index, index=df["source_uri"])
    by_uri = by_uri[~by_uri.index.duplicated()]
    dup = df[(df["reason"] == Reason.DUPLICATE_EXACT) & df["duplicate_of"].notna()]
    kept = dup["duplicate_of"].map(by_uri)
    return [(int(k), int(i), 0) for i, k in kept.dropna().items()]


def leakage_table(
    df: pd.DataFrame, split: pd.Series, pairs: dict[str, Sequence[tuple[int, int, int]]]
) -> pd.DataFrame:
    """Every pair of ``pairs`` (tier -> (row, row, distance)) whose rows are in two splits.

    ``resolved_by`` is the quarantine reason that already removed one member (or None when
    both are still accepted: then only ``flag_leaks`` can resolve it).
    """
    rows = []
    for tier, tier_pairs in pairs.items():
        for a, b, d in tier_pairs:
            sa, sb = _label(split.at[a]), _label(split.at[b])
            if sa is None or sb is None or sa == sb:
                continue
            resolved = None
            for r in (a, b):
                if df.at[r, "status"] != Status.ACCEPTED:
                    resolved = resolved or df.at[r, "reason"]
            rows.append(
                {
                    "tier": tier,
                    "item_a": df.at[a, "item_id"],
                    "source_a": df.at[a, "source_uri"],
                    "split_a": sa,
                    "item_b": df.at[b, "item_id"],
                    "source_b": df.at[b, "source_uri"],
                    "split_b": sb,
                    "distance": int(d),
                    "resolved_by": resolved,
                }
            )
    out = pd.DataFrame(rows, columns=LEAKAGE_COLUMNS)
    return out.astype({"distance": "int16"})


def flag_leaks(
    df: pd.DataFrame,
    split: pd.Series,
    pairs: Sequence[tuple[int, int, int]],
    keep_order: Sequence[str],
    priority: pd.Series,
) -> tuple[pd.Series, pd.Series]:
    """(flag, other copy's source_uri) per row for cross-split pairs still both accepted.

    Pairs are visited closest first; a pair is skipped once either member is flagged.
    ``priority`` is the keep-rule rank per row (lower = kept), for splits ranked equal.
    """
    flag = pd.Series(False, index=df.index)
    other = pd.Series(None, index=df.index, dtype=object)
    rank = {name.lower(): k for k, name in enumerate(keep_order)}
    accepted = df["status"] == Status.ACCEPTED
    for a, b, _ in sorted(pairs, key=lambda p: (p[2], p[0], p[1])):
        sa, sb = _label(split.at[a]), _label(split.at[b])
        if sa is None or sb is None or sa == sb:
            continue
        if not (accepted.at[a] and accepted.at[b]) or flag.at[a] or flag.at[b]:
            continue
        ra, rb = rank.get(sa, len(rank)), rank.get(sb, len(rank))
        if ra != rb:
            loser, winner = (b, a) if ra < rb else (a, b)
        else:
            loser, winner = (b, a) if priority.at[a] < priority.at[b] else (a, b)
        flag.at[loser] = True
        other.at[loser] = df.at[winner, "source_uri"]
    return flag, other


def as_row_pairs(
    rows: np.ndarray, i: np.ndarray, j: np.ndarray, d: np.ndarray
) -> list[tuple[int, int, int]]:
    """Pairs given as positions into ``rows`` -> pairs of manifest rows."""
    return [
        (int(rows[a]), int(rows[b]), int(x))
        for a, b, x in zip(i.tolist(), j.tolist(), d.tolist(), strict=True)
    ]
