"""Coverage of declared slices: how many accepted images each cell holds, what is missing, and
a balanced subset under a budget.

A slice dimension (``params.curate.coverage``) is a derived name or any manifest column:

- ``day_night``: curate's day/night (EXIF capture hour, else estimated from brightness);
- ``time_of_day``: night / morning / afternoon / evening from the EXIF hour ("unknown" without);
- ``camera``: EXIF make and model;
- ``location``: GPS grid cell of ``coverage_cell_deg`` degrees ("no_gps" without a fix);
- ``class``: categories of the matched annotations, once labels exist (an image with two
  classes counts in both cells; "unlabelled" without any);
- any other name: that manifest column as text (missing values read "unknown").

The joint cells are the product of every dimension's observed values, so a combination with
no image at all (night x camera B) shows up as a gap instead of being silently absent.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from visionloop.curate.dedup import hex_to_uint64

UNKNOWN = "unknown"
DERIVED = ("day_night", "time_of_day", "camera", "location", "class")
TIME_OF_DAY_BINS = ((0, "night"), (6, "morning"), (12, "afternoon"), (18, "evening"))
CELL_SEP = " | "
COVERAGE_COLUMNS = ["slice", "cell", "count", "share", "needed", "surplus", "status"]
GAP_COLUMNS = ["slice", "cell", "count", "needed"]
BALANCED_COLUMNS = ["item_id", "source_uri", "cell", "rank", "why"]


def _text(values: pd.Series) -> pd.Series:
    out = values.astype(object).where(values.notna(), None)
    out = out.map(lambda v: UNKNOWN if v is None or str(v).strip() == "" else str(v).strip())
    return out.astype(object)


def _hour(capture: object) -> int | None:
    if not isinstance(capture, str) or len(capture) < 13 or capture[10] not in "T ":
        return None
    try:
        hour = int(capture[11:13])
    except ValueError:
        return None
    return hour if 0 <= hour <= 23 else None


def _time_of_day(capture: object) -> str:
    hour = _hour(capture)
    if hour is None:
        return UNKNOWN
    label = TIME_OF_DAY_BINS[0][1]
    for start, name in TIME_OF_DAY_BINS:
        if hour >= start:
            label = name
    return label


def _grid(lat: object, lon: object, deg: float) -> str:
    try:
        la, lo = float(lat), float(lon)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "no_gps"
    if not (math.isfinite(la) and math.isfinite(lo)):
        return "no_gps"
    cell_la = math.floor(la / deg) * deg
    cell_lo = math.floor(lo / deg) * deg
    return f"{cell_la:+.{_decimals(deg)}f},{cell_lo:+.{_decimals(deg)}f}"


def _decimals(deg: float) -> int:
    return max(0, -math.floor(math.log10(deg))) if deg < 1 else 0


def slice_values(
    df: pd.DataFrame,
    dim: str,
    *,
    cell_deg: float = 1.0,
    annotations: pd.DataFrame | None = None,
) -> pd.Series:
    """One text value per row of ``df`` for slice dimension ``dim`` (lists for ``class``).

    Raises ``KeyError`` naming the dimension when it is neither derived nor a column.
    """
    if dim == "day_night":
        col = "curate_day_night"
        return _text(df[col]) if col in df.columns else pd.Series(UNKNOWN, index=df.index)
    if dim == "time_of_day":
        cap = df["capture_time"] if "capture_time" in df.columns else pd.Series(None, df.index)
        return cap.map(_time_of_day).astype(object)
    if dim == "camera":
        parts = [
            _text(df[c]) if c in df.columns else pd.Series(UNKNOWN, index=df.index)
            for c in ("camera_make", "camera_model")
        ]
        return pd.Series(
            [
                " ".join(p for p in (make, model) if p != UNKNOWN) or UNKNOWN
                for make, model in zip(parts[0], parts[1], strict=True)
            ],
            index=df.index,
            dtype=object,
        )
    if dim == "location":
        if "gps_lat" not in df.columns or "gps_lon" not in df.columns:
            return pd.Series("no_gps", index=df.index, dtype=object)
        return pd.Series(
            [_grid(a, b, cell_deg) for a, b in zip(df["gps_lat"], df["gps_lon"], strict=True)],
            index=df.index,
            dtype=object,
        )
    if dim == "class":
        if annotations is None or annotations.empty:
            raise KeyError("class: no imported annotations yet (coverage by class needs labels)")
        matched = annotations[annotations["match_status"] == "matched"]
        per_item = matched.groupby("item_id")["category"].agg(lambda s: sorted(set(map(str, s))))
        got = df["item_id"].map(per_item)
        return got.map(lambda v: v if isinstance(v, list) and v else ["unlabelled"])
    if dim in df.columns:
        return _text(df[dim])
    raise KeyError(
        f"coverage dimension {dim!r} is neither one of {', '.join(DERIVED)} nor a manifest column"
    )


def slice_frame(
    df: pd.DataFrame,
    dims: list[str],
    *,
    cell_deg: float = 1.0,
    annotations: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Rows of ``df`` with one column per usable dimension (+ ``cell``), and skipped dims.

    ``class`` without annotations is skipped (reported), any other unknown name raises.
    Multi-valued ``class`` explodes rows: the frame keeps ``df``'s index (repeated).
    """
    out = pd.DataFrame(index=df.index)
    skipped: list[str] = []
    for dim in dims:
        try:
            out[dim] = slice_values(df, dim, cell_deg=cell_deg, annotations=annotations)
        except KeyError:
            if dim == "class":
                skipped.append(dim)
                continue
            raise
    used = [d for d in dims if d in out.columns]
    if "class" in used:
        out = out.explode("class")
    out["cell"] = _cell_labels(out, used)
    return out, skipped


def _cell_labels(frame: pd.DataFrame, dims: list[str]) -> pd.Series:
    if not dims:
        return pd.Series("all", index=frame.index, dtype=object)
    label = frame[dims[0]].astype(str)
    for d in dims[1:]:
        label = label + CELL_SEP + frame[d].astype(str)
    return label.astype(object)


def coverage_table(
    frame: pd.DataFrame, dims: list[str], min_count: int, max_share: float, max_cells: int
) -> pd.DataFrame:
    """Cell -> count, share, images still needed and surplus, per slice.

    ``frame`` comes from ``slice_frame`` over the accepted images. Slices: each dimension alone
    (when there are several) and their joint cells (the product of observed values, unless it
    exceeds ``max_cells``: then observed cells only). ``needed`` = min_count - count (>= 0);
    ``surplus`` = count - floor(max_share x total) (>= 0), for the joint cells only (a
    dimension with two values always has one at >= 50 %); status gap / over / ok.
    """
    slices: list[tuple[str, list[str]]] = []
    if len(dims) > 1:
        slices += [(d, [d]) for d in dims]
    slices.append(("×".join(dims) if dims else "all", dims))
    rows = []
    for name, sdims in slices:
        joint = sdims == dims
        total = len(frame)
        if sdims:
            counts = frame.groupby(sdims, dropna=False).size()
            levels = [sorted(frame[d].dropna().astype(str).unique()) for d in sdims]
            n_cells = math.prod(len(v) for v in levels)
            if 0 < n_cells <= max_cells:
                full = pd.MultiIndex.from_product(levels, names=sdims)
                if len(sdims) == 1:
                    full = full.get_level_values(0)
                counts = counts.reindex(full, fill_value=0)
        else:
            counts = pd.Series([total], index=pd.Index(["all"], name="cell"))
        for key, count in counts.items():
            values = key if isinstance(key, tuple) else (key,)
            row: dict[str, object] = {
                "slice": name,
                "cell": CELL_SEP.join(map(str, values)) if sdims else "all",
            }
            for d in dims:
                row[d] = values[sdims.index(d)] if d in sdims else None
            share = count / total if total else 0.0
            cap = math.floor(max_share * total)
            row.update(
                count=int(count),
                share=float(share),
                needed=int(max(0, min_count - count)),
                surplus=int(max(0, count - cap)) if total and joint else 0,
            )
            row["status"] = "gap" if row["needed"] else ("over" if row["surplus"] else "ok")
            rows.append(row)
    cols = ["slice", "cell", *dims, "count", "share", "needed", "surplus", "status"]
    out = pd.DataFrame(rows, columns=cols)
    return out.astype({"count": "int64", "needed": "int64", "surplus": "int64"})


def gap_table(coverage: pd.DataFrame) -> pd.DataFrame:
    """The cells still short of images ("cell -> images still needed"), largest need first."""
    extra = [c for c in coverage.columns if c not in COVERAGE_COLUMNS]
    gaps = coverage[coverage["needed"] > 0]
    gaps = gaps.sort_values(["needed", "slice", "cell"], ascending=[False, True, True])
    return gaps[["slice", "cell", *extra, "count", "needed"]].reset_index(drop=True)


def allocate(counts: dict[str, int], budget: int, max_share: float) -> dict[str, int]:
    """Even water-filling of ``budget`` over cells, each capped by its count and by
    ``max_share`` of the budget. Balance wins over size: when the small cells cannot absorb
    the rest under the cap, the subset stays below the budget rather than skew."""
    total = sum(counts.values())
    budget = min(budget, total)
    if budget <= 0:
        return dict.fromkeys(counts, 0)
    cap = max(1, math.floor(max_share * budget))
    limits = {c: min(n, cap) for c, n in counts.items()}
    quota = dict.fromkeys(counts, 0)
    left = budget
    open_cells = sorted((c for c in counts if limits[c] > 0), key=lambda c: (limits[c], c))
    while left > 0 and open_cells:
        share = left // len(open_cells)
        if share == 0:  # fewer images left than open cells: one each, smallest cells first
            for c in open_cells[:left]:
                quota[c] += 1
            break
        nxt = []
        for c in open_cells:
            give = min(share, limits[c] - quota[c])
            quota[c] += give
            left -= give
            if quota[c] < limits[c]:
                nxt.append(c)
        open_cells = nxt
    return quota


def balanced_subset(
    items: pd.DataFrame, budget: int, max_share: float, min_distance: int
) -> pd.DataFrame:
    """Pick ``budget`` images spread evenly over cells, without near copies inside a cell.

    ``items`` (one row per accepted image): item_id, source_uri, cell, phash, blur. Per cell
    (quota from ``allocate``) the sharpest images go first, each taken only if its pHash is
    more than ``min_distance`` bits from every image already taken in that cell; when a cell
    runs out of such images its quota is filled with the sharpest remaining ones (why says so).
    Each candidate is compared with the picks of its cell only (a popcount against at most
    the quota), so the cost follows the budget, not the dataset.
    """
    if budget <= 0 or items.empty:
        return pd.DataFrame(columns=BALANCED_COLUMNS)
    items = items.drop_duplicates("item_id").reset_index(drop=True)
    counts = items.groupby("cell").size().to_dict()
    quota = allocate({str(k): int(v) for k, v in counts.items()}, budget, max_share)
    has_hash = items["phash"].notna().to_numpy()
    hashes = hex_to_uint64(items["phash"])
    picks: list[tuple[int, int, str, str]] = []  # (turn within cell, row, cell, why)
    ranked = items.assign(_blur=items["blur"].astype(float).fillna(-1.0)).sort_values(
        ["cell", "_blur", "item_id"], ascending=[True, False, True], kind="stable"
    )
    for c, group in ranked.groupby("cell", sort=True):
        want = quota.get(str(c), 0)
        taken = np.empty(want, dtype=np.uint64)
        got = 0
        rest = []
        for r in group.index.to_numpy():
            if got >= want:
                break
            near = (
                has_hash[r]
                and got > 0
                and bool((np.bitwise_count(taken[:got] ^ hashes[r]) <= min_distance).any())
            )
            if near:
                rest.append(r)
                continue
            taken[got] = hashes[r]
            picks.append((got, r, str(c), f"sharpest not within {min_distance} bits of a pick"))
            got += 1
        for r in rest:
            if got >= want:
                break
            picks.append((got, r, str(c), "filled: no image farther from the picks left"))
            got += 1
    # Round-robin order (every cell's first pick, then every cell's second...), so that any
    # prefix of the list is balanced too.
    picks.sort(key=lambda p: (p[0], p[2]))
    out = items.loc[[p[1] for p in picks], ["item_id", "source_uri", "cell"]].copy()
    out["why"] = [p[3] for p in picks]
    out = out.reset_index(drop=True)
    out.insert(3, "rank", np.arange(1, len(out) + 1, dtype=np.int64))
    return out[BALANCED_COLUMNS]
