"""Budgeted choice of the next images to label, each pick with the reason it was chosen.

The budget is spent in four passes, each pick recorded with its ``reason`` and a sentence
(``why``):

1. ``qa``: items whose labels disagreed in label QA (``validate/qa_findings.parquet``, checks
   ``refresh.qa_checks``), at most ``qa_share`` of the budget: a second look settles them;
2. ``gap``: quotas for under-covered coverage cells (curate's ``gaps.parquet``). A gap cell
   holds fewer than ``curate.coverage_min_count`` images; its quota is what it takes to get
   the cell's labelled images up to that count (all of its unlabelled images when it is
   short of images too), largest need first, cells taking turns;
3. ``drift``: when the drift report flagged the incoming items, new items from the drifted
   slices (or all new items, for a global drift), the least reference-like first (largest
   distance to the nearest reference item in the embedding), at most ``drift_share``;
4. ``diversity``: the rest by farthest-first (greedy k-center) on the embedding, seeded with
   everything already labelled or picked, new items before older ones: each next pick is the
   item farthest from all of those.

Items with matched annotations are never proposed, except by the QA pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from visionloop.schema import Status

SELECT_COLUMNS = ["item_id", "source_uri", "priority", "why"]
EXTRA_COLUMNS = ["reason", "cell", "score", "new"]
ALL_COLUMNS = SELECT_COLUMNS + EXTRA_COLUMNS
REASONS = ("qa", "gap", "drift", "diversity")


@dataclass(frozen=True)
class SelectConfig:
    budget: int = 50
    qa_share: float = 0.2
    drift_share: float = 0.3
    min_count: int = 25  # curate.coverage_min_count: the labelled images a cell should have


def empty_selection() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": pd.Series(dtype=object),
            "source_uri": pd.Series(dtype=object),
            "priority": pd.Series(dtype="int64"),
            "why": pd.Series(dtype=object),
            "reason": pd.Series(dtype=object),
            "cell": pd.Series(dtype=object),
            "score": pd.Series(dtype=float),
            "new": pd.Series(dtype=bool),
        }
    )


def labelled_items(annotations: pd.DataFrame | None) -> set[str]:
    """Item ids with at least one matched annotation (predictions are not labels)."""
    if annotations is None or not len(annotations):
        return set()
    rows = annotations
    if "match_status" in rows.columns:
        rows = rows[rows["match_status"] == "matched"]
    if "annotator" in rows.columns:
        human = ~rows["annotator"].fillna("").astype(str).str.startswith("prediction:")
        rows = rows[human]
    return set(rows["item_id"].dropna().astype(str))


def farthest_first(
    vectors: np.ndarray, keys: Sequence[str], k: int, seeds: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """Greedy k-center order: (row, distance to the nearest earlier pick or seed point).

    Without ``seeds`` the first pick is the row nearest the centroid (its distance is nan);
    ties go to the smaller ``keys`` value.
    """
    n = len(vectors)
    if n == 0 or k <= 0:
        return []
    tie = np.argsort(np.argsort(np.asarray(keys, dtype=object)))  # rank of each key
    taken = np.zeros(n, dtype=bool)
    order: list[tuple[int, float]] = []
    if seeds is not None and len(seeds):
        nearest = np.full(n, np.inf)
        for s in range(0, len(seeds), 512):
            block = seeds[s : s + 512]
            d = np.sqrt(np.maximum(_sqdist(vectors, block), 0.0)).min(axis=1)
            nearest = np.minimum(nearest, d)
    else:
        centre = vectors.mean(axis=0)
        d0 = np.linalg.norm(vectors - centre, axis=1)
        first = int(np.lexsort((tie, d0))[0])
        order.append((first, float("nan")))
        taken[first] = True
        nearest = np.linalg.norm(vectors - vectors[first], axis=1)
    while len(order) < min(k, n):
        cand = np.where(taken, -np.inf, nearest)
        best = cand.max()
        pick = int(np.flatnonzero(cand == best)[np.argmin(tie[cand == best])])
        order.append((pick, float(best)))
        taken[pick] = True
        nearest = np.minimum(nearest, np.linalg.norm(vectors - vectors[pick], axis=1))
    return order


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T


def standardise(matrix: np.ndarray) -> np.ndarray:
    """z-scores per column over the rows (missing -> 0, constant columns -> 0)."""
    m = np.asarray(matrix, dtype=float)
    if m.size == 0:
        return m.reshape(len(m), -1)
    mean = np.nanmean(np.where(np.isfinite(m), m, np.nan), axis=0)
    std = np.nanstd(np.where(np.isfinite(m), m, np.nan), axis=0)
    mean = np.nan_to_num(mean)
    std = np.where(np.nan_to_num(std) > 1e-12, std, 1.0)
    z = (m - mean) / std
    return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class _Pick:
    row: int
    reason: str
    why: str
    cell: str | None = None
    score: float = math.nan


def select_for_annotation(
    current: pd.DataFrame,
    annotations: pd.DataFrame | None,
    new_ids: Iterable[str],
    cfg: SelectConfig,
    *,
    vectors: np.ndarray | None = None,
    reference_vectors: np.ndarray | None = None,
    gaps: pd.DataFrame | None = None,
    cells: dict[str, pd.Series] | None = None,
    drift: pd.DataFrame | None = None,
    slice_columns: dict[str, pd.Series] | None = None,
    qa_items: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Up to ``cfg.budget`` items of ``current`` (a curate manifest), in labelling order.

    ``vectors``: one embedding row per row of ``current`` (NaN allowed), standardised by the
    caller; ``reference_vectors``: the reference items' rows in the same space (for the drift
    pass). ``gaps``: curate's gap table; ``cells``: slice name -> each row's cell label in that
    slice. ``drift``: the drift table; ``slice_columns``: slice dim -> each row's value.
    ``qa_items``: item id -> the QA finding that disputes its labels.
    """
    if cfg.budget <= 0 or len(current) == 0:
        return empty_selection()
    cur = current.reset_index(drop=True)
    acc = cur["status"] == Status.ACCEPTED if "status" in cur.columns else cur["item_id"].notna()
    first = ~cur["item_id"].duplicated()
    eligible = (acc & first).to_numpy()
    labelled = labelled_items(annotations)
    is_labelled = cur["item_id"].astype(str).isin(labelled).to_numpy()
    new = cur["item_id"].astype(str).isin(set(new_ids)).to_numpy()
    keys = cur["source_uri"].astype(str).tolist()
    vec = (
        np.nan_to_num(np.asarray(vectors, dtype=float))
        if vectors is not None
        else np.zeros((len(cur), 1))
    )
    picks: list[_Pick] = []
    taken = np.zeros(len(cur), dtype=bool)

    def left() -> int:
        return cfg.budget - len(picks)

    # 1. QA: labels that disagreed.
    if qa_items:
        cap = min(left(), math.floor(cfg.qa_share * cfg.budget))
        rows = [i for i in np.flatnonzero(eligible) if str(cur.at[i, "item_id"]) in qa_items]
        rows.sort(key=lambda i: keys[i])
        for i in rows[:cap]:
            picks.append(
                _Pick(
                    int(i), "qa", f"labels disagreed in QA: {qa_items[str(cur.at[i, 'item_id'])]}"
                )
            )
            taken[i] = True

    pool = eligible & ~is_labelled & ~taken

    # 2. Gap quotas.
    if gaps is not None and len(gaps) and cells:
        quotas = _gap_quotas(gaps, cells, pool, is_labelled & eligible, cfg.min_count)
        lists = []
        for slice_name, cell, quota, labelled_n, count in quotas:
            members = np.flatnonzero(pool & (cells[slice_name].to_numpy() == cell))
            members = sorted(members, key=lambda i: (not new[i], keys[i]))
            lists.append((slice_name, cell, quota, labelled_n, count, list(members)))
        rnd = 0
        while left() > 0 and any(rnd < q[2] and q[5] for q in lists):
            for slice_name, cell, quota, labelled_n, count, members in lists:
                if left() <= 0 or rnd >= quota:
                    continue
                while members and taken[members[0]]:
                    members.pop(0)
                if not members:
                    continue
                i = members.pop(0)
                why = (
                    f"coverage gap: {slice_name} cell '{cell}' holds {count} image(s), "
                    f"{labelled_n} labelled, below the {cfg.min_count} wanted: quota {quota}, "
                    f"pick {rnd + 1}"
                )
                picks.append(_Pick(int(i), "gap", why, cell=f"{slice_name}: {cell}"))
                taken[i] = True
            rnd += 1
        pool &= ~taken

    # 3. Drifted items.
    drifted = _drifted_scopes(drift)
    if drifted and new.any():
        cap = min(left(), math.floor(cfg.drift_share * cfg.budget))
        scope = np.zeros(len(cur), dtype=bool)
        labels: dict[int, str] = {}
        for scope_name, dim, value, features in drifted:
            if dim is None:
                mask = np.ones(len(cur), dtype=bool)
            elif slice_columns and dim in slice_columns:
                mask = slice_columns[dim].astype(str).to_numpy() == value
            else:
                continue
            for i in np.flatnonzero(mask & pool & new):
                labels.setdefault(int(i), f"{scope_name} drifted ({', '.join(features)})")
            scope |= mask
        cand = np.flatnonzero(scope & pool & new)
        if len(cand) and cap > 0:
            novelty = _novelty(vec[cand], reference_vectors)
            order = sorted(range(len(cand)), key=lambda j: (-novelty[j], keys[cand[j]]))
            for j in order[:cap]:
                i = int(cand[j])
                why = (
                    f"new item in a drifted scope: {labels[i]}; distance {novelty[j]:.2f} to "
                    "the nearest reference item (least reference-like first)"
                )
                picks.append(_Pick(i, "drift", why, score=float(novelty[j])))
                taken[i] = True
        pool &= ~taken

    # 4. Diversity: farthest-first from everything labelled or picked, new items first.
    anchors = np.flatnonzero((is_labelled & eligible) | taken)
    seeds = vec[anchors] if len(anchors) else None
    for tier in (True, False):
        if left() <= 0:
            break
        cand = np.flatnonzero(pool & (new == tier) & ~taken)
        if not len(cand):
            continue
        order = farthest_first(vec[cand], [keys[i] for i in cand], left(), seeds)
        for j, dist in order:
            i = int(cand[j])
            where = "new since the reference" if tier else "in the reference"
            if math.isnan(dist):
                why = f"{where}, unlabelled; diversity: the most typical item (first pick)"
            else:
                why = (
                    f"{where}, unlabelled; diversity: farthest-first, distance {dist:.2f} to "
                    "the nearest labelled or already picked item"
                )
            picks.append(_Pick(i, "diversity", why, score=dist))
            taken[i] = True
        seeds = vec[np.flatnonzero((is_labelled & eligible) | taken)]

    out = pd.DataFrame(
        {
            "item_id": [str(cur.at[p.row, "item_id"]) for p in picks],
            "source_uri": [str(cur.at[p.row, "source_uri"]) for p in picks],
            "priority": np.arange(1, len(picks) + 1, dtype="int64"),
            "why": [p.why for p in picks],
            "reason": [p.reason for p in picks],
            "cell": [p.cell for p in picks],
            "score": np.asarray([p.score for p in picks], dtype=float),
            "new": np.asarray([bool(new[p.row]) for p in picks], dtype=bool),
        }
    )
    return out if len(out) else empty_selection()


def _gap_quotas(
    gaps: pd.DataFrame,
    cells: dict[str, pd.Series],
    pool: np.ndarray,
    labelled: np.ndarray,
    min_count: int,
) -> list[tuple[str, str, int, int, int]]:
    """(slice, cell, quota, labelled, images) per gap cell we can label in, largest need first.

    quota = min(min_count - labelled images of the cell, its unlabelled images): a gap cell
    is short of images, so in practice every unlabelled image of it."""
    out = []
    for row in gaps.itertuples(index=False):
        slice_name, cell = str(row.slice), str(row.cell)
        if slice_name not in cells:
            continue
        in_cell = cells[slice_name].to_numpy() == cell
        n_labelled = int((in_cell & labelled).sum())
        available = int((in_cell & pool).sum())
        quota = min(max(0, min_count - n_labelled), available)
        if quota:
            out.append((slice_name, cell, quota, n_labelled, int(row.count)))
    out.sort(key=lambda q: (-(q[2]), q[0], q[1]))
    return out


def _drifted_scopes(
    drift: pd.DataFrame | None,
) -> list[tuple[str, str | None, str | None, list[str]]]:
    """(scope name, slice dim or None for global, slice value, drifted features)."""
    if drift is None or not len(drift) or "level" not in drift.columns:
        return []
    d = drift[drift["drifted"].astype(bool)]
    scopes: dict[tuple[str | None, str | None], list[str]] = {}
    for r in d.itertuples(index=False):
        if r.level in ("feature", "image"):
            scopes.setdefault((None, None), []).append(str(r.base_feature))
        elif r.level == "slice" and isinstance(r.slice, str) and "=" in r.slice:
            dim, value = r.slice.split("=", 1)
            scopes.setdefault((dim, value), []).append(str(r.base_feature))
    out = []
    for (dim, value), feats in sorted(
        scopes.items(), key=lambda kv: (kv[0][0] is not None, str(kv[0]))
    ):
        name = "the whole batch" if dim is None else f"slice {dim}={value}"
        out.append((name, dim, value, sorted(set(feats))))
    return out


def _novelty(vectors: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """Distance of each row to its nearest reference row (0 without a reference)."""
    if reference is None or not len(reference) or not len(vectors):
        return np.zeros(len(vectors))
    ref = np.nan_to_num(np.asarray(reference, dtype=float))
    best = np.full(len(vectors), np.inf)
    for s in range(0, len(ref), 1024):
        d = _sqdist(vectors, ref[s : s + 1024]).min(axis=1)
        best = np.minimum(best, d)
    return np.sqrt(np.maximum(best, 0.0))


def qa_disputed(findings: pd.DataFrame | None, checks: Sequence[str]) -> dict[str, str]:
    """item id -> the first finding (check: reason) of ``checks`` that names it."""
    if findings is None or not len(findings) or not checks:
        return {}
    rows = findings[findings["check"].isin(list(checks)) & findings["item"].notna()]
    out: dict[str, str] = {}
    for r in rows.itertuples(index=False):
        out.setdefault(str(r.item), f"{r.check}: {r.reason}")
    return out


__all__ = [
    "ALL_COLUMNS",
    "SELECT_COLUMNS",
    "SelectConfig",
    "empty_selection",
    "farthest_first",
    "labelled_items",
    "qa_disputed",
    "select_for_annotation",
    "standardise",
]
