"""Duplicates in tiers: identical pixels, then perceptual hashes within a Hamming radius.

Tier 1, byte hash: byte-identical files share an item id and are quarantined by collect.
Tier 2, pixel hash (``metrics.calc_pixel_hash``): the same decoded picture under other bytes
(other metadata, a lossless re-encode). Grouped by exact key: every copy, flat ones included.
Tier 3, perceptual hash: 64-bit pHashes within ``radius`` bits (not hash equality), found by
``hamming_pairs`` and grouped by ``group_pairs``.

Index: multi-index hashing (Norouzi, Punjani, Fleet, "Fast search in Hamming space with
multi-index hashing", CVPR 2012). The 64 bits are cut into m blocks; two hashes within r bits
differ by at most floor(r / m) bits in at least one block (pigeonhole), so each block's value
is looked up exactly, with every variant within floor(r / m) flipped bits, in a bucket table,
and the candidates are verified on all 64 bits. m is chosen per call from a cost model
(``choose_blocks``): at a million hashes and r = 8 that is 3 blocks of 21-22 bits, about 700
bucket probes and a few hundred candidates per query instead of a million comparisons. A pair
reachable from several blocks is reported from the first one only, so no global dedup pass is
needed. Small sets (< ``BRUTE_MAX``) use the blocked XOR + popcount scan, which is exact too
and cheaper there. Measured: bench/bench_curate.py (``--full`` for a million hashes).
A BK-tree was not used: at radius 8 of 64 bits a query visits most of the tree, in Python.

Grouping: greedy leader assignment in keep-rule order, not connected components, so every
duplicate is within the radius of the copy it is said to duplicate (no chaining A~B~C that
would put A and C in one group while they differ by 2x the radius). Grouping needs only the
pair list, so a refresh can reuse the pairs among old items and query only the new ones
(``incremental_pairs``) and still decide exactly as a run from scratch would.

Keep rule (one copy kept per group), in order: a copy that passes the quarantining quality
flags (so that a dark or blurry copy never wins over a good one), then the sharpest (higher
blur score), then the largest (pixel count), then the first by source_uri.

Near-flat images (entropy below a threshold) are kept out of perceptual matching: the DCT of a
flat image is noise around zero, so all flat frames would "match" each other. They are flagged
low-information by their own rule instead (identical flat copies still meet in tier 2).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

BLOCK_ELEMENTS = 4_000_000  # hashes compared per block step of the scan (x 8 bytes: ~32 MB)
BRUTE_MAX = 4096  # below this many hashes the scan beats building an index
DENSE_TABLE_BITS = 24  # blocks up to this wide get a dense bucket-offset table (int64)
PROBE_CHUNK = 500_000  # (query, probe) pairs materialised at once (~4 MB per array)
CANDIDATE_CHUNK = 1_000_000  # candidates verified at once (~8 MB per array)

_EMPTY = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int16))


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x)


# ------------------------------------------------------------------------------------------
# Pair search
# ------------------------------------------------------------------------------------------


def _scan_pairs(
    hashes: np.ndarray, radius: int, block_elements: int = BLOCK_ELEMENTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` within ``radius`` by blocked XOR + popcount (n^2 / 2 compares)."""
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(h)
    if n < 2:
        return _EMPTY
    rows = max(1, block_elements // n)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    out_d: list[np.ndarray] = []
    for start in range(0, n - 1, rows):
        stop = min(start + rows, n - 1)
        # Compare rows [start, stop) against columns [start + 1, n): the upper triangle.
        dist = _popcount(h[start:stop, None] ^ h[None, start + 1 :])
        li, lj = np.nonzero(dist <= radius)
        gi = li + start
        gj = lj + start + 1
        keep = gj > gi
        if keep.any():
            out_i.append(gi[keep])
            out_j.append(gj[keep])
            out_d.append(dist[li[keep], lj[keep]].astype(np.int16))
    if not out_i:
        return _EMPTY
    return (
        np.concatenate(out_i).astype(np.int64),
        np.concatenate(out_j).astype(np.int64),
        np.concatenate(out_d),
    )


@lru_cache(maxsize=64)
def _probe_masks(bits: int, flips: int) -> np.ndarray:
    """Every ``bits``-wide mask with at most ``flips`` bits set (0 first), as int64."""
    masks = [0]
    for k in range(1, flips + 1):
        masks.extend(sum(1 << b for b in combo) for combo in combinations(range(bits), k))
    return np.array(masks, dtype=np.int64)


def _block_layout(blocks: int) -> list[tuple[int, int]]:
    """(shift, width) of each block, widths differing by at most one bit, covering 64 bits."""
    base, extra = divmod(64, blocks)
    layout, shift = [], 0
    for k in range(blocks):
        width = base + (1 if k < extra else 0)
        layout.append((shift, width))
        shift += width
    return layout


def choose_blocks(n: int, radius: int, n_queries: int | None = None) -> int:
    """Number of MIH blocks with the lowest estimated cost for ``n`` indexed hashes.

    Cost per query = m x probes(b, floor(r/m)) x (1 + 2 x n / 2^b): bucket lookups plus
    candidates to verify (about twice as costly), for uniformly spread hashes. Candidates with
    more than 100k probes per block are not considered.
    """
    del n_queries  # the cost per query does not depend on how many queries there are
    best_m, best_cost = radius + 1, math.inf
    # One block with radius > 0 would enumerate C(64, <= r) probes: never worth it.
    for m in range(1 if radius == 0 else 2, min(radius + 1, 64) + 1):
        layout = _block_layout(m)
        flips = radius // m
        cost = 0.0
        for _, width in layout:
            probes = sum(math.comb(width, j) for j in range(flips + 1))
            if probes > 100_000:
                cost = math.inf
                break
            cost += probes * (1 + 2 * n / 2.0**width)
        if cost < best_cost:
            best_m, best_cost = m, cost
    return best_m


class MultiIndexHash:
    """An index of 64-bit hashes answering "which items are within ``radius`` bits of q?".

    Build cost: one sort per block (plus a dense offset table for blocks of <= 24 bits).
    Memory: ~8 bytes per hash per block plus 8 x 2^width bytes per dense table.
    """

    def __init__(self, hashes: np.ndarray, radius: int, blocks: int | None = None) -> None:
        self.hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        self.radius = int(radius)
        n = len(self.hashes)
        self.blocks = blocks or choose_blocks(n, self.radius)
        self.layout = _block_layout(self.blocks)
        self.flips = self.radius // self.blocks
        self._order: list[np.ndarray] = []
        self._sorted: list[np.ndarray] = []
        self._offsets: list[np.ndarray | None] = []
        self._counts: list[np.ndarray | None] = []
        for shift, width in self.layout:
            values = self._block_values(self.hashes, shift, width)
            order = np.argsort(values, kind="stable")
            self._order.append(order)
            ordered = values[order]
            self._sorted.append(ordered)
            if width <= DENSE_TABLE_BITS:
                counts = np.bincount(ordered, minlength=1 << width)
                offsets = np.zeros((1 << width) + 1, dtype=np.int64)
                np.cumsum(counts, out=offsets[1:])
                self._offsets.append(offsets)
                self._counts.append(counts.astype(np.int32))
            else:
                self._offsets.append(None)
                self._counts.append(None)

    def __len__(self) -> int:
        return len(self.hashes)

    @staticmethod
    def _block_values(h: np.ndarray, shift: int, width: int) -> np.ndarray:
        mask = np.uint64((1 << width) - 1)
        return ((h >> np.uint64(shift)) & mask).astype(np.int64)

    def _hits(self, block: int, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions in ``probes`` with a non-empty bucket, bucket starts, bucket sizes)."""
        counts = self._counts[block]
        if counts is not None:
            sizes = counts[probes]
            hit = np.flatnonzero(sizes)
            offsets = self._offsets[block]
            assert offsets is not None
            return hit, offsets[probes[hit]], sizes[hit].astype(np.int64)
        ordered = self._sorted[block]
        lo = np.searchsorted(ordered, probes, side="left")
        sizes = np.searchsorted(ordered, probes, side="right") - lo
        hit = np.flatnonzero(sizes)
        return hit, lo[hit], sizes[hit]

    def query(
        self, queries: np.ndarray, exclude_self: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query row, index row, distance) for every indexed hash within the radius.

        ``exclude_self`` gives, per query, an index row never to report (the query itself when
        the queries are indexed too); -1 = none.
        """
        q = np.ascontiguousarray(queries, dtype=np.uint64)
        if len(q) == 0 or len(self.hashes) == 0:
            return _EMPTY
        out_q: list[np.ndarray] = []
        out_c: list[np.ndarray] = []
        out_d: list[np.ndarray] = []
        for k, (shift, width) in enumerate(self.layout):
            masks = _probe_masks(width, self.flips)
            qv = self._block_values(q, shift, width)
            step = max(1, PROBE_CHUNK // len(masks))
            for start in range(0, len(q), step):
                rows = np.arange(start, min(start + step, len(q)), dtype=np.int64)
                probes = (qv[rows, None] ^ masks[None, :]).ravel()
                hit, lo, counts = self._hits(k, probes)
                if len(hit) == 0:
                    continue
                qrow = rows[hit // len(masks)]
                self._verify(k, q, qrow, lo, counts, exclude_self, out_q, out_c, out_d)
        if not out_q:
            return _EMPTY
        return np.concatenate(out_q), np.concatenate(out_c), np.concatenate(out_d)

    def _verify(
        self,
        block: int,
        q: np.ndarray,
        qrow: np.ndarray,
        lo: np.ndarray,
        counts: np.ndarray,
        exclude_self: np.ndarray | None,
        out_q: list[np.ndarray],
        out_c: list[np.ndarray],
        out_d: list[np.ndarray],
    ) -> None:
        """Expand bucket ranges into candidates (in slices) and keep the true pairs."""
        ends = np.cumsum(counts)
        start = 0
        while start < len(counts):
            base = ends[start - 1] if start else 0
            stop = int(np.searchsorted(ends, base + CANDIDATE_CHUNK, side="right"))
            stop = max(stop, start + 1)
            c = counts[start:stop]
            total = int(c.sum())
            first = np.repeat(lo[start:stop] - (np.cumsum(c) - c), c)
            cand = self._order[block][first + np.arange(total, dtype=np.int64)]
            rows = np.repeat(qrow[start:stop], c)
            xor = q[rows] ^ self.hashes[cand]
            dist = _popcount(xor)
            keep = dist <= self.radius
            if exclude_self is not None:
                keep &= cand != exclude_self[rows]
            # Report a pair from the first block in which it is within ``flips`` bits only.
            for shift, width in self.layout[:block]:
                part = _popcount(self._block_values(xor, shift, width))
                keep &= part > self.flips
            if keep.any():
                out_q.append(rows[keep])
                out_c.append(cand[keep])
                out_d.append(dist[keep].astype(np.int16))
            start = stop


def hamming_pairs(
    hashes: np.ndarray,
    radius: int,
    block_elements: int = BLOCK_ELEMENTS,
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` with ``popcount(h[i] ^ h[j]) <= radius`` -> (i, j, distance).

    ``method``: "scan" (blocked all-pairs), "mih" (multi-index hashing) or "auto" (scan below
    ``BRUTE_MAX`` hashes). Both are exact; pairs come sorted by (i, j).
    """
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(h)
    if n < 2:
        return _EMPTY
    if method == "scan" or (method == "auto" and n < BRUTE_MAX):
        i, j, d = _scan_pairs(h, radius, block_elements)
    elif method in ("mih", "auto"):
        index = MultiIndexHash(h, radius)
        qi, ci, d = index.query(h)
        keep = qi < ci
        i, j, d = qi[keep], ci[keep], d[keep]
    else:
        raise ValueError(f"unknown method {method!r}: scan | mih | auto")
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def cross_pairs(
    index_hashes: np.ndarray, query_rows: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs between the ``query_rows`` of ``index_hashes`` and every other row of it.

    This is the incremental check: the new items are the queries, the index holds everything
    (old and new), and the result is canonical (i < j, sorted), each pair once.
    """
    h = np.ascontiguousarray(index_hashes, dtype=np.uint64)
    rows = np.asarray(query_rows, dtype=np.int64)
    if len(rows) == 0 or len(h) < 2:
        return _EMPTY
    if len(h) * len(rows) <= BRUTE_MAX * BRUTE_MAX // 2:
        dist = _popcount(h[rows, None] ^ h[None, :])
        qi, ci = np.nonzero(dist <= radius)
        d = dist[qi, ci].astype(np.int16)
        qi = rows[qi]
    else:
        index = MultiIndexHash(h, radius)
        qi, ci, d = index.query(h[rows], exclude_self=rows)
        qi = rows[qi]
    keep = qi != ci
    qi, ci, d = qi[keep], ci[keep], d[keep]
    i, j = np.minimum(qi, ci), np.maximum(qi, ci)
    if len(i) == 0:
        return _EMPTY
    key = np.unique(np.stack([i, j], axis=1), axis=0, return_index=True)[1]
    i, j, d = i[key], j[key], d[key]
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


# ------------------------------------------------------------------------------------------
# Grouping
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Groups:
    """Per item: index of the kept copy it duplicates (-1 if none) and its Hamming distance."""

    keeper: np.ndarray  # int64, -1 = kept or not a duplicate
    distance: np.ndarray  # int16, -1 where keeper == -1
    n_groups: int  # groups with at least one duplicate


def group_pairs(
    n: int, pi: np.ndarray, pj: np.ndarray, pd_: np.ndarray, priority: np.ndarray
) -> Groups:
    """Greedy leader assignment over a pair list, best ``priority`` first (0 = best)."""
    keeper = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, -1, dtype=np.int16)
    if len(pi) == 0:
        return Groups(keeper, distance, 0)
    # Symmetric adjacency in CSR form (sorted by source).
    src = np.concatenate([pi, pj]).astype(np.int64)
    dst = np.concatenate([pj, pi]).astype(np.int64)
    dd = np.concatenate([pd_, pd_]).astype(np.int16)
    order = np.argsort(src, kind="stable")
    src, dst, dd = src[order], dst[order], dd[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, src + 1, 1)
    indptr = np.cumsum(indptr)
    is_keeper = np.zeros(n, dtype=bool)
    with_neighbours = np.unique(src)
    prio = np.asarray(priority)
    n_groups = 0
    for a in with_neighbours[np.argsort(prio[with_neighbours], kind="stable")]:
        if keeper[a] != -1:
            continue  # already a duplicate of a better copy
        nbrs = dst[indptr[a] : indptr[a + 1]]
        dist = dd[indptr[a] : indptr[a + 1]]
        free = (keeper[nbrs] == -1) & ~is_keeper[nbrs]
        if not free.any():
            continue
        is_keeper[a] = True
        keeper[nbrs[free]] = a
        distance[nbrs[free]] = dist[free]
        n_groups += 1
    return Groups(keeper, distance, n_groups)


def group_near_duplicates(
    hashes: np.ndarray, radius: int, priority: np.ndarray, eligible: np.ndarray | None = None
) -> Groups:
    """Assign each duplicate to a kept copy, best ``priority`` first (0 = best).

    ``priority`` is a rank per item (lower is kept first); ``eligible`` False keeps an item
    out of matching altogether.
    """
    n = len(hashes)
    keeper = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, -1, dtype=np.int16)
    idx = np.arange(n) if eligible is None else np.flatnonzero(np.asarray(eligible, bool))
    if len(idx) < 2:
        return Groups(keeper, distance, 0)
    pi, pj, pd_ = hamming_pairs(np.asarray(hashes, dtype=np.uint64)[idx], radius)
    local = group_pairs(len(idx), pi, pj, pd_, np.asarray(priority)[idx])
    dup = local.keeper != -1
    keeper[idx[dup]] = idx[local.keeper[dup]]
    distance[idx[dup]] = local.distance[dup]
    return Groups(keeper, distance, local.n_groups)


def keep_priority(
    passes_quality: np.ndarray, sharpness: np.ndarray, pixels: np.ndarray, order: pd.Series
) -> np.ndarray:
    """Rank items by the keep rule: passes quality, sharpest, largest, then ``order`` (0 = best)."""
    frame = pd.DataFrame(
        {
            "bad": ~np.asarray(passes_quality, bool),
            "sharp": -np.nan_to_num(np.asarray(sharpness, float), nan=-1.0),
            "px": -np.nan_to_num(np.asarray(pixels, float), nan=0.0),
            "key": np.asarray(order, dtype=object),
        }
    )
    ranked = frame.sort_values(["bad", "sharp", "px", "key"], kind="stable").index.to_numpy()
    rank = np.empty(len(frame), dtype=np.int64)
    rank[ranked] = np.arange(len(frame))
    return rank


def hex_to_uint64(values: pd.Series | np.ndarray) -> np.ndarray:
    """16-hex-digit hashes -> uint64 (nulls -> 0; check ``notna`` yourself)."""
    arr = np.asarray(values, dtype=object)
    out = np.zeros(len(arr), dtype=np.uint64)
    ok = pd.notna(arr)
    if ok.any():
        out[ok] = np.array([int(h[:16], 16) for h in arr[ok]], dtype=np.uint64)
    return out


def _priority(items: pd.DataFrame) -> np.ndarray:
    pixels = items["width"].to_numpy(dtype=float) * items["height"].to_numpy(dtype=float)
    return keep_priority(
        items["passes_quality"].to_numpy(dtype=bool),
        items["blur"].to_numpy(dtype=float),
        pixels,
        items["source_uri"],
    )


def pixel_duplicates(items: pd.DataFrame) -> pd.Series:
    """Tier 2: per row, source_uri of the kept copy with the same pixel hash (else None).

    ``items`` columns: source_uri, pixel_hash (null = not hashed), blur, width, height,
    passes_quality. Rows with equal (pixel_hash, width, height) are one picture; the keep rule
    picks which copy stays.
    """
    out = pd.Series([None] * len(items), index=items.index, dtype=object)
    has = items["pixel_hash"].notna()
    if has.sum() < 2:
        return out
    rank = pd.Series(_priority(items), index=items.index)
    sub = items.loc[has, ["pixel_hash", "width", "height", "source_uri"]].copy()
    sub["rank"] = rank[has]
    sub = sub.sort_values("rank", kind="stable")
    key = ["pixel_hash", "width", "height"]
    first = sub.groupby(key, sort=False, dropna=False)["source_uri"].transform("first")
    dup = first != sub["source_uri"]
    out.loc[dup[dup].index] = first[dup]
    return out


def find_near_duplicates(
    items: pd.DataFrame,
    radius: int,
    min_entropy: float,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Near-duplicate decision per row of ``items``, aligned with its index.

    ``items`` columns: source_uri, phash (16 hex chars or null), entropy, blur, width, height,
    passes_quality (bool). Returns columns near_duplicate_of (source_uri of the kept copy, or
    None) and near_duplicate_distance (Hamming bits, or -1). ``pairs`` (positions in ``items``,
    from ``incremental_pairs``) replaces the search; eligibility is then the caller's business.
    """
    n = len(items)
    out = pd.DataFrame(
        {"near_duplicate_of": pd.Series([None] * n, dtype=object, index=items.index)},
        index=items.index,
    )
    out["near_duplicate_distance"] = np.full(n, -1, dtype=np.int16)
    if n < 2:
        return out
    priority = _priority(items)
    if pairs is None:
        hashes = hex_to_uint64(items["phash"])
        entropy = items["entropy"].to_numpy(dtype=float)
        eligible = items["phash"].notna().to_numpy() & (
            np.nan_to_num(entropy, nan=0.0) >= min_entropy
        )
        groups = group_near_duplicates(hashes, radius, priority, eligible)
    else:
        groups = group_pairs(n, *pairs, priority)
    dup = groups.keeper >= 0
    uris = items["source_uri"].to_numpy(dtype=object)
    of = np.full(n, None, dtype=object)
    of[dup] = uris[groups.keeper[dup]]
    out["near_duplicate_of"] = pd.Series(of, index=items.index, dtype=object)
    out["near_duplicate_distance"] = groups.distance
    return out


# ------------------------------------------------------------------------------------------
# Incremental pair state
# ------------------------------------------------------------------------------------------

PAIRS_COLUMNS = ["item_a", "item_b", "distance"]
INDEX_COLUMNS = ["item_id", "phash"]


@dataclass(frozen=True)
class PairSearch:
    """The pairs among ``item_ids`` (positions i < j) and how they were obtained."""

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray
    indexed: int  # hashes in the index (old + new)
    queried: int  # hashes searched for (the new ones; all of them on a fresh run)
    reused_pairs: int  # pairs among old items taken from the previous state


def incremental_pairs(
    item_ids: np.ndarray,
    phashes: np.ndarray,
    radius: int,
    previous_index: pd.DataFrame | None = None,
    previous_pairs: pd.DataFrame | None = None,
    previous_radius: int | None = None,
) -> PairSearch:
    """All pairs within ``radius`` among ``item_ids``, searching only for items not seen before.

    ``phashes`` are the items' 16-hex-digit hashes. ``previous_index`` (item_id, phash) lists
    the items the previous pair list covers and the hash each had; ``previous_pairs``
    (item_a, item_b, distance) are all their pairs within ``previous_radius``. Old items whose
    hash is unchanged keep their old pairs (filtered to the current radius, valid when it did
    not grow); every other item is a query against an index of all current hashes. The result
    equals a search from scratch.
    """
    ids = pd.Series(np.asarray(item_ids, dtype=object))
    hexes = pd.Series(np.asarray(phashes, dtype=object))
    h = hex_to_uint64(hexes)
    n = len(ids)
    old = np.zeros(n, dtype=bool)
    reuse = (
        previous_index is not None
        and previous_pairs is not None
        and previous_radius is not None
        and radius <= previous_radius
        and len(previous_index) > 0
    )
    pi = pj = np.empty(0, np.int64)
    pdist = np.empty(0, np.int16)
    if reuse:
        assert previous_index is not None and previous_pairs is not None
        prev = previous_index.drop_duplicates("item_id").set_index("item_id")["phash"]
        old = (ids.map(prev) == hexes).to_numpy(dtype=bool)
        pos = pd.Series(np.arange(n), index=pd.Index(ids))
        old_ids = pd.Index(ids[old])
        pp = previous_pairs
        pp = pp[
            pp["item_a"].isin(old_ids)
            & pp["item_b"].isin(old_ids)
            & (pp["distance"].astype(int) <= radius)
        ]
        a = pos.reindex(pp["item_a"]).to_numpy(np.int64)
        b = pos.reindex(pp["item_b"]).to_numpy(np.int64)
        pi, pj = np.minimum(a, b), np.maximum(a, b)
        pdist = pp["distance"].to_numpy(np.int16)
    new_rows = np.flatnonzero(~old)
    if len(new_rows) == n:
        ni, nj, nd = hamming_pairs(h, radius)
    else:
        ni, nj, nd = cross_pairs(h, new_rows, radius)
    i = np.concatenate([pi, ni]).astype(np.int64)
    j = np.concatenate([pj, nj]).astype(np.int64)
    d = np.concatenate([pdist, nd]).astype(np.int16)
    order = np.lexsort((j, i))
    log.info(
        "dedup: %d hashes indexed, %d searched, %d old pairs reused, %d new pairs",
        n,
        len(new_rows),
        len(pi),
        len(ni),
    )
    return PairSearch(i[order], j[order], d[order], n, len(new_rows), len(pi))


def pairs_frame(item_ids: np.ndarray, search: PairSearch) -> pd.DataFrame:
    """The pair list as item ids (the state a later run reuses)."""
    ids = np.asarray(item_ids, dtype=object)
    return pd.DataFrame(
        {
            "item_a": pd.Series(ids[search.i], dtype=object),
            "item_b": pd.Series(ids[search.j], dtype=object),
            "distance": pd.Series(search.distance, dtype="int16"),
        }
    )
