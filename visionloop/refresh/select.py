"""Budgeted choice of the next images to label, each pick with the reason it was chosen.

Order of preference:
1. unlabelled items that are NEW (not in the reference snapshot) before older unlabelled ones
   (items with matched annotations are never proposed);
2. within that, the rarest (camera_model, day/night) slice first: slices take turns, rarest
   first, so one budget covers every slice before any slice gets a second pick;
3. within a slice, farthest-first (greedy k-center) on the standardised metric vector: the
   first pick is the slice's most typical item, each next one the item farthest from all
   earlier picks of its slice, so a small budget spreads over the slice's variety.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from visionloop.schema import Status

SELECT_COLUMNS = ["item_id", "source_uri", "priority", "why"]
DEFAULT_SLICES = ("camera_model", "curate_day_night")
DEFAULT_FEATURES = ("curate_blur_score", "curate_brightness", "curate_entropy", "aspect")


def empty_selection() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": pd.Series(dtype=object),
            "source_uri": pd.Series(dtype=object),
            "priority": pd.Series(dtype="int64"),
            "why": pd.Series(dtype=object),
        }
    )


def _vectors(pool: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """Standardised metric vectors (z-scores over the pool; missing -> the mean)."""
    cols = []
    for f in features:
        if f == "aspect" and f not in pool.columns and {"width", "height"} <= set(pool.columns):
            w = pd.to_numeric(pool["width"], errors="coerce").astype(float)
            h = pd.to_numeric(pool["height"], errors="coerce").astype(float)
            v = (w / h.where(h > 0)).to_numpy(float)
        elif f in pool.columns:
            v = pd.to_numeric(pool[f], errors="coerce").to_numpy(float)
        else:
            continue
        mean = np.nanmean(v) if np.isfinite(v).any() else 0.0
        std = np.nanstd(v) if np.isfinite(v).any() else 0.0
        z = (v - mean) / (std if std > 0 else 1.0)
        cols.append(np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0))
    if not cols:
        return np.zeros((len(pool), 1))
    return np.column_stack(cols)


def farthest_first(vectors: np.ndarray, keys: Sequence[str], k: int) -> list[tuple[int, float]]:
    """Greedy k-center order: (row, distance to the nearest earlier pick; nan for the first).

    The first pick is the row nearest the centroid; ties go to the smaller ``keys`` value.
    """
    n = len(vectors)
    if n == 0 or k <= 0:
        return []
    tie = np.argsort(np.argsort(np.asarray(keys, dtype=object)))  # rank of each key
    centre = vectors.mean(axis=0)
    d0 = np.linalg.norm(vectors - centre, axis=1)
    first = int(np.lexsort((tie, d0))[0])
    order = [(first, float("nan"))]
    nearest = np.linalg.norm(vectors - vectors[first], axis=1)
    taken = np.zeros(n, dtype=bool)
    taken[first] = True
    while len(order) < min(k, n):
        cand = np.where(taken, -np.inf, nearest)
        best = cand.max()
        pick = int(np.flatnonzero(cand == best)[np.argmin(tie[cand == best])])
        order.append((pick, float(best)))
        taken[pick] = True
        nearest = np.minimum(nearest, np.linalg.norm(vectors - vectors[pick], axis=1))
    return order


def select_for_annotation(
    current: pd.DataFrame,
    annotations: pd.DataFrame | None,
    new_ids: Iterable[str],
    budget: int,
    *,
    slices: Sequence[str] = DEFAULT_SLICES,
    features: Sequence[str] = DEFAULT_FEATURES,
) -> pd.DataFrame:
    """Up to ``budget`` accepted, unlabelled items of ``current``, in labelling order.

    Columns: SELECT_COLUMNS. ``annotations`` may be None or empty (nothing labelled yet); only
    rows with ``match_status == "matched"`` count as labels.
    """
    if budget <= 0 or len(current) == 0:
        return empty_selection()
    acc = current
    if "status" in current.columns:
        acc = current[current["status"] == Status.ACCEPTED]
    labelled: set[str] = set()
    if annotations is not None and len(annotations):
        matched = annotations
        if "match_status" in annotations.columns:
            matched = annotations[annotations["match_status"] == "matched"]
        labelled = set(matched["item_id"].dropna())
    pool = acc[~acc["item_id"].isin(labelled)].drop_duplicates("item_id").reset_index(drop=True)
    if pool.empty:
        return empty_selection()
    new = set(new_ids)

    def slice_key(df: pd.DataFrame) -> pd.Series:
        parts = [
            df[c].astype(object).where(df[c].notna(), "unknown").astype(str)
            if c in df.columns
            else pd.Series("unknown", index=df.index)
            for c in slices
        ]
        return pd.Series(list(zip(*parts, strict=True)), index=df.index)

    # Rarity is measured on the whole accepted dataset: what the model sees least.
    sizes = slice_key(acc).value_counts()
    pool["_slice"] = slice_key(pool)
    pool["_new"] = pool["item_id"].isin(new)
    vectors = _vectors(pool, features)
    total = len(acc)
    rarity_rank = {
        key: i + 1 for i, key in enumerate(sorted(sizes.index, key=lambda k: (sizes[k], str(k))))
    }

    picks: list[tuple[int, str]] = []
    for is_new in (True, False):
        tier = pool[pool["_new"] == is_new]
        if tier.empty:
            continue
        groups = sorted(tier.groupby("_slice").groups.items(), key=lambda kv: rarity_rank[kv[0]])
        orders = []
        for key, idx in groups:
            rows = np.asarray(idx)
            k = min(len(rows), budget - len(picks))
            ordered = farthest_first(vectors[rows], pool.loc[rows, "source_uri"].tolist(), k)
            orders.append((key, [(int(rows[r]), dist, j) for j, (r, dist) in enumerate(ordered)]))
        rnd = 0
        while len(picks) < budget and any(rnd < len(o) for _, o in orders):
            for key, order in orders:
                if rnd >= len(order) or len(picks) >= budget:
                    continue
                row, dist, j = order[rnd]
                slice_desc = ", ".join(f"{c}={v}" for c, v in zip(slices, key, strict=True))
                diversity = (
                    "most typical item of its slice"
                    if j == 0
                    else f"farthest-first pick {j + 1} of its slice, metric distance {dist:.2f} "
                    "to the nearest earlier pick"
                )
                why = (
                    f"{'new since the reference' if is_new else 'in the reference'}, unlabelled; "
                    f"slice {slice_desc} holds {int(sizes[key])} of {total} accepted items "
                    f"(rarity rank {rarity_rank[key]}); {diversity}"
                )
                picks.append((row, why))
            rnd += 1
    out = pd.DataFrame(
        {
            "item_id": [pool.at[r, "item_id"] for r, _ in picks],
            "source_uri": [pool.at[r, "source_uri"] for r, _ in picks],
            "priority": np.arange(1, len(picks) + 1, dtype="int64"),
            "why": [w for _, w in picks],
        }
    )
    return out
