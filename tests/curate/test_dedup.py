"""Near-duplicate index and grouping: exact pair sets, keep rule, no chaining, flat images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.curate import synthetic as S
from visionloop.curate import dedup
from visionloop.curate.dedup import (
    MultiIndexHash,
    choose_blocks,
    cross_pairs,
    find_near_duplicates,
    group_near_duplicates,
    hamming_pairs,
    incremental_pairs,
    keep_priority,
    pairs_frame,
    pixel_duplicates,
)
from visionloop.curate.metrics import compute_metrics


def _brute(hashes: np.ndarray, radius: int) -> set[tuple[int, int, int]]:
    out = set()
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            d = (int(hashes[i]) ^ int(hashes[j])).bit_count()
            if d <= radius:
                out.add((i, j, d))
    return out


@pytest.mark.parametrize("block_elements", [1, 7, 64, 4_000_000])
def test_hamming_pairs_equal_brute_force(block_elements) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.int64).astype(np.uint64)
    # plant neighbours: flip 0..10 random bits of some hashes
    planted = []
    for k in range(40):
        flips = rng.choice(64, int(rng.integers(0, 11)), replace=False)
        mask = np.uint64(sum(1 << int(f) for f in flips))
        planted.append(base[k % 10] ^ mask)
    hashes = np.concatenate([base, np.array(planted, dtype=np.uint64)])
    i, j, d = hamming_pairs(hashes, 8, block_elements=block_elements)
    got = set(zip(i.tolist(), j.tolist(), d.tolist(), strict=True))
    expected = _brute(hashes, 8)
    assert got == expected
    assert len(expected) > 20  # the planted neighbours are really there


def test_hamming_pairs_of_nothing() -> None:
    for n in (0, 1):
        i, j, d = hamming_pairs(np.zeros(n, np.uint64), 8)
        assert len(i) == len(j) == len(d) == 0


def test_no_chaining_through_a_middle_copy() -> None:
    """A~B and B~C within the radius, A and C not: C is not declared a copy of A."""
    a = 0
    b = a ^ 0b111111  # 6 bits from A
    c = b ^ (0b111111 << 6)  # 6 bits from B, 12 from A
    hashes = np.array([a, b, c], np.uint64)
    groups = group_near_duplicates(hashes, 8, priority=np.array([0, 1, 2]))
    assert groups.keeper.tolist() == [-1, 0, -1]
    assert groups.distance.tolist() == [-1, 6, -1]
    assert groups.n_groups == 1


def test_middle_copy_kept_when_it_is_best() -> None:
    hashes = np.array([0, 0b111111, 0b111111 ^ (0b111111 << 6)], np.uint64)
    groups = group_near_duplicates(hashes, 8, priority=np.array([1, 0, 2]))
    assert groups.keeper.tolist() == [1, -1, 1]


def test_keep_rule_order() -> None:
    """Passing quality first, then sharpest, then largest, then source_uri."""
    rank = keep_priority(
        passes_quality=np.array([False, True, True, True, True]),
        sharpness=np.array([0.99, 0.7, 0.8, 0.8, 0.8]),
        pixels=np.array([9e6, 1e6, 1e6, 2e6, 1e6]),
        order=pd.Series(["a", "b", "d", "e", "c"]),
    )
    # best: 3 (sharp 0.8, 2 MP), then 4 ("c") and 2 ("d") at 0.8 / 1 MP, then 1, then 0 (flagged)
    assert rank.tolist() == [4, 3, 2, 0, 1]


def _items(images: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    for uri, img in images.items():
        m = compute_metrics(img)
        rows.append(
            {
                "source_uri": uri,
                "phash": m["phash"],
                "entropy": m["entropy"],
                "blur": m["blur"],
                "width": img.shape[1],
                "height": img.shape[0],
                "passes_quality": True,
            }
        )
    return pd.DataFrame(rows)


def test_near_copies_found_distinct_images_not_and_sharpest_kept() -> None:
    rng = np.random.default_rng(11)
    originals = {f"s3://b/orig_{k}.jpg": S.roundtrip(S.texture(rng, 400, 300)) for k in range(6)}
    images = dict(originals)
    # a q=60 + 95 % copy of orig_0, and a slightly blurred copy of orig_1 named so that it
    # would win on source_uri order: the sharper original must still be the kept copy
    images["s3://b/copy_0.jpg"] = S.near_copy(originals["s3://b/orig_0.jpg"])
    images["s3://b/a_soft_1.jpg"] = S.roundtrip(S.blurred(originals["s3://b/orig_1.jpg"], 1.0))
    items = _items(images)
    out = find_near_duplicates(items, radius=8, min_entropy=1.4)
    of = dict(zip(items["source_uri"], out["near_duplicate_of"], strict=True))
    assert of["s3://b/copy_0.jpg"] == "s3://b/orig_0.jpg"
    assert of["s3://b/a_soft_1.jpg"] == "s3://b/orig_1.jpg"
    assert {u for u, k in of.items() if k is not None} == {
        "s3://b/copy_0.jpg",
        "s3://b/a_soft_1.jpg",
    }
    dist = dict(zip(items["source_uri"], out["near_duplicate_distance"], strict=True))
    assert 0 <= dist["s3://b/copy_0.jpg"] <= 8
    assert dist["s3://b/orig_0.jpg"] == -1


def test_flagged_copy_never_wins_over_a_clean_one() -> None:
    rng = np.random.default_rng(12)
    img = S.roundtrip(S.texture(rng, 400, 300))
    items = _items({"a.jpg": img, "b.jpg": S.near_copy(img)})
    items.loc[0, "passes_quality"] = False  # "a" is sharper but (say) overexposed
    items.loc[0, "blur"] = 0.99
    out = find_near_duplicates(items, radius=8, min_entropy=1.4)
    assert out["near_duplicate_of"].tolist() == ["b.jpg", None]


def test_flat_images_stay_out_of_matching() -> None:
    flats = {f"flat_{k}.jpg": np.full((240, 320, 3), 100 + k, np.uint8) for k in range(4)}
    items = _items(flats)
    # the degenerate hashes of flat frames (DC bit + float noise) all "match" each other
    h = [int(x, 16) for x in items["phash"]]
    assert max((a ^ b).bit_count() for a in h for b in h) <= 8
    out = find_near_duplicates(items, radius=8, min_entropy=1.4)
    assert out["near_duplicate_of"].isna().all()
    # with the guard off they would all collapse into one group
    off = find_near_duplicates(items, radius=8, min_entropy=0.0)
    assert off["near_duplicate_of"].notna().sum() == 3


def test_missing_hashes_are_ignored() -> None:
    items = pd.DataFrame(
        {
            "source_uri": ["a", "b", "c"],
            "phash": ["00000000000000ff", None, "00000000000000fe"],
            "entropy": [7.0, 7.0, 7.0],
            "blur": [0.8, 0.9, 0.7],
            "width": [10, 10, 10],
            "height": [10, 10, 10],
            "passes_quality": [True, True, True],
        },
        index=[10, 20, 30],
    )
    out = find_near_duplicates(items, radius=2, min_entropy=1.0)
    assert out.index.tolist() == [10, 20, 30]
    assert out["near_duplicate_of"].tolist() == [None, None, "a"]
    assert out["near_duplicate_distance"].tolist() == [-1, -1, 1]


# --- multi-index hashing, incremental search, pixel tier -----------------------------------------


def _planted(n: int, seed: int, max_flips: int = 12) -> np.ndarray:
    """n random hashes, the second half copies of the first with 0..max_flips bits flipped."""
    rng = np.random.default_rng(seed)
    half = rng.integers(0, 2**63, n // 2, dtype=np.int64).astype(np.uint64)
    half ^= rng.integers(0, 2, n // 2).astype(np.uint64) << np.uint64(63)
    copies = half.copy()
    for k in range(len(copies)):
        for b in rng.choice(64, int(rng.integers(0, max_flips + 1)), replace=False):
            copies[k] ^= np.uint64(1) << np.uint64(int(b))
    return np.concatenate([half, copies])


@pytest.mark.parametrize(
    ("radius", "blocks"),
    [(0, None), (1, None), (4, None), (8, None), (12, None), (1, 2), (4, 2), (8, 3), (12, 5)],
)
def test_multi_index_hashing_equals_the_scan(radius: int, blocks: int | None) -> None:
    """Exact: the same pairs and distances, whatever the block layout (2 blocks of 32 bits use
    the sorted-array lookup, narrower blocks the dense bucket table)."""
    h = _planted(600, seed=radius)
    si, sj, sd = hamming_pairs(h, radius, method="scan")
    index = MultiIndexHash(h, radius, blocks=blocks)
    qi, ci, d = index.query(h, exclude_self=np.arange(len(h)))
    keep = qi < ci
    got = set(zip(qi[keep].tolist(), ci[keep].tolist(), d[keep].tolist(), strict=True))
    assert got == set(zip(si.tolist(), sj.tolist(), sd.tolist(), strict=True))
    # each pair once per direction (never again from another block), and no self-matches
    assert len(qi) == 2 * len(si)
    mi, mj, md = hamming_pairs(h, radius, method="mih")
    assert (mi.tolist(), mj.tolist(), md.tolist()) == (si.tolist(), sj.tolist(), sd.tolist())
    if radius == 8:
        assert len(si) > 100  # the planted copies are really found


def test_block_choice_follows_the_cost_model() -> None:
    assert choose_blocks(300, 8) == 9  # tiny index: exact 7-bit blocks
    assert choose_blocks(1_000_000, 8) == 3  # 21-22 bit blocks, 2 flips each
    assert choose_blocks(10_000, 0) == 1  # exact match: one 64-bit block


def test_cross_pairs_are_new_versus_all() -> None:
    h = _planted(400, seed=7, max_flips=8)
    new = np.array([5, 150, 201, 399])
    ci, cj, cd = cross_pairs(h, new, 8)
    si, sj, sd = hamming_pairs(h, 8, method="scan")
    expected = {
        (a, b, d)
        for a, b, d in zip(si.tolist(), sj.tolist(), sd.tolist(), strict=True)
        if a in set(new.tolist()) or b in set(new.tolist())
    }
    assert set(zip(ci.tolist(), cj.tolist(), cd.tolist(), strict=True)) == expected
    assert len(expected) >= 3  # rows 5 and 150 / 201 have planted copies
    assert all(a < b for a, b in zip(ci, cj, strict=True))


def _hex(h: np.ndarray) -> np.ndarray:
    return np.array([f"{int(x):016x}" for x in h], dtype=object)


def test_incremental_pairs_equal_a_search_from_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    h = _planted(500, seed=9, max_flips=8)
    ids = np.array([f"item{k:04d}" for k in range(len(h))], dtype=object)
    old = np.arange(490)
    first = incremental_pairs(ids[old], _hex(h[old]), 8)
    assert (first.indexed, first.queried, first.reused_pairs) == (490, 490, 0)
    state_pairs = pairs_frame(ids[old], first)
    state_index = pd.DataFrame({"item_id": ids[old], "phash": _hex(h[old])})

    searched: list[int] = []
    real = MultiIndexHash.query

    def spy(self, queries, exclude_self=None):  # type: ignore[no-untyped-def]
        searched.append(len(queries))
        return real(self, queries, exclude_self)

    monkeypatch.setattr(MultiIndexHash, "query", spy)
    monkeypatch.setattr(dedup, "BRUTE_MAX", 16)  # force the index even at this size
    # 10 new items; one old item's hash changed (re-published image): it is searched again
    h2 = h.copy()
    h2[3] ^= np.uint64(0xFF00FF00)
    again = incremental_pairs(
        ids, _hex(h2), 8, previous_index=state_index, previous_pairs=state_pairs, previous_radius=8
    )
    assert searched == [11]  # the 10 new + the changed one, against all 500
    assert (again.indexed, again.queried) == (500, 11)
    scratch = incremental_pairs(ids, _hex(h2), 8)
    assert (again.i.tolist(), again.j.tolist(), again.distance.tolist()) == (
        scratch.i.tolist(),
        scratch.j.tolist(),
        scratch.distance.tolist(),
    )
    assert again.reused_pairs > 0
    # a smaller radius reuses the old pairs (filtered); a larger one searches everything
    smaller = incremental_pairs(
        ids, _hex(h2), 5, previous_index=state_index, previous_pairs=state_pairs, previous_radius=8
    )
    assert smaller.queried == 11
    assert smaller.i.tolist() == incremental_pairs(ids, _hex(h2), 5).i.tolist()
    larger = incremental_pairs(
        ids, _hex(h2), 10, previous_index=state_index, previous_pairs=state_pairs, previous_radius=8
    )
    assert larger.queried == 500 and larger.reused_pairs == 0


def test_pixel_duplicates_keep_one_copy_by_the_keep_rule() -> None:
    items = pd.DataFrame(
        {
            "source_uri": ["b.png", "a.jpg", "c.bmp", "d.jpg", "e.jpg"],
            "pixel_hash": ["p1", "p1", "p1", "p2", None],
            "blur": [0.5, 0.5, 0.5, 0.5, 0.5],
            "width": [640, 640, 640, 640, 640],
            "height": [480, 480, 480, 480, 480],
            "passes_quality": [True, True, True, True, True],
        },
        index=[10, 11, 12, 13, 14],
    )
    out = pixel_duplicates(items)
    # equal pixels, sharpness and size: the first source_uri is kept
    assert out.tolist() == ["a.jpg", None, "a.jpg", None, None]
    # a copy of another size is another picture
    items.loc[12, "width"] = 320
    assert pixel_duplicates(items).tolist() == ["a.jpg", None, None, None, None]
