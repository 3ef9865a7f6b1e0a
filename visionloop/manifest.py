"""Reading, extending and accounting for the Parquet manifest (see ``schema.py``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from visionloop.schema import MANIFEST_SCHEMA, Status


class ManifestError(ValueError):
    """A manifest broke the contract: missing columns, lost rows or a status reversed."""


def empty_manifest() -> pd.DataFrame:
    return MANIFEST_SCHEMA.empty_table().to_pandas()


def require_columns(df: pd.DataFrame, columns: list[str] | tuple[str, ...], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ManifestError(f"{where}: manifest lacks columns {missing}; has {list(df.columns)}")


def quarantine(
    df: pd.DataFrame, mask: pd.Series | np.ndarray, reason: str, detail: Any, stage: str
) -> pd.DataFrame:
    """Quarantine the *accepted* rows selected by ``mask``; earlier decisions are left alone.

    ``detail`` is either one string for all rows or a Series aligned with ``df``.
    """
    mask = pd.Series(np.asarray(mask, dtype=bool), index=df.index)
    target = mask & (df["status"] == Status.ACCEPTED)
    if not target.any():
        return df
    df = df.copy()
    df.loc[target, "status"] = Status.QUARANTINED.value
    df.loc[target, "reason"] = str(reason)
    df.loc[target, "quarantined_by"] = stage
    if isinstance(detail, pd.Series):
        df.loc[target, "reason_detail"] = detail[target].astype(str)
    else:
        df.loc[target, "reason_detail"] = str(detail)
    return df


def accepted(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == Status.ACCEPTED]


def status_counts(df: pd.DataFrame) -> dict[str, Any]:
    """Accepted and quarantined counts, with quarantines broken down by reason."""
    is_acc = df["status"] == Status.ACCEPTED
    reasons = Counter(df.loc[~is_acc, "reason"].fillna("unknown"))
    return {
        "input": len(df),
        "accepted": int(is_acc.sum()),
        "quarantined": int((~is_acc).sum()),
        "reasons": dict(sorted(reasons.items())),
    }


def check_transition(before: pd.DataFrame, after: pd.DataFrame, stage: str) -> None:
    """Assert the stage contract: same rows, no decision reversed, earlier columns unchanged."""
    key = ["source_uri"]
    if len(before) != len(after) or set(before["source_uri"]) != set(after["source_uri"]):
        raise ManifestError(
            f"{stage}: rows changed ({len(before)} in, {len(after)} out); every input row must "
            "come out exactly once"
        )
    b = before.set_index(key).sort_index()
    a = after.set_index(key).sort_index()
    revived = (b["status"] == Status.QUARANTINED) & (a["status"] == Status.ACCEPTED)
    if revived.any():
        raise ManifestError(f"{stage}: {int(revived.sum())} quarantined rows were accepted again")
    for col in b.columns:
        if col not in a.columns:
            raise ManifestError(f"{stage}: dropped column {col!r}")
        if col in ("status", "reason", "reason_detail", "quarantined_by"):
            continue
        left, right = b[col], a[col]
        same = (left == right) | (left.isna() & right.isna())
        if not bool(same.all()):
            raise ManifestError(f"{stage}: rewrote column {col!r} decided by an earlier stage")
