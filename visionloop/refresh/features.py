"""The drift features of a set of items: named statistics, metadata slices and the embedding.

``feature_frame(manifest, embeddings)`` turns curate manifest rows (plus their cached
embedding rows) into the short-named features the drift tests compare:

numeric      brightness, blur, entropy (curate's metrics); contrast, saturation, colour_a,
             colour_b, colourfulness (``embed.py``); size (sqrt of the pixel count), aspect
             (width / height)
categorical  camera (EXIF make + model), day_night (curate's), time_of_day (EXIF hour bins)

The slice dimensions use the same names and values as curate's coverage tables
(``visionloop.curate.coverage.slice_values``), so a drifted slice and a coverage gap name the
same cell. ``embedding_matrix`` stacks the embedding vector, the embedding statistics and the
curate metrics into one row per item (NaN rows where an item has no embedding).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from visionloop.refresh.embed import STAT_COLUMNS, VECTOR_DIM

# short name -> curate manifest column
CURATE_NUMERIC = {
    "brightness": "curate_brightness",
    "blur": "curate_blur_score",
    "entropy": "curate_entropy",
}
EMBED_NUMERIC = {c: c for c in STAT_COLUMNS}
DERIVED_NUMERIC = ("size", "aspect")
NUMERIC_FEATURES: tuple[str, ...] = (
    "brightness",
    "contrast",
    "blur",
    "colour_a",
    "colour_b",
    "saturation",
    "colourfulness",
    "entropy",
    "size",
    "aspect",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("camera", "day_night", "time_of_day")
# curate metrics appended to the embedding vector (those present)
EMBED_METRICS = (
    "curate_blur_score",
    "curate_brightness",
    "curate_brightness_low",
    "curate_brightness_high",
    "curate_entropy",
)


def slice_values(df: pd.DataFrame, dim: str) -> pd.Series:
    """Text value per row for a slice dimension (curate coverage's naming and values)."""
    from visionloop.curate.coverage import slice_values as coverage_values

    return coverage_values(df, dim).astype(object)


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def with_embeddings(manifest: pd.DataFrame, embeddings: pd.DataFrame | None) -> pd.DataFrame:
    """``manifest`` rows with the embedding columns of their item (NaN/None when missing)."""
    out = manifest.reset_index(drop=True).copy()
    cols = [*STAT_COLUMNS, "vector"]
    if embeddings is None or embeddings.empty:
        for c in cols:
            out[c] = np.nan if c != "vector" else None
        return out
    emb = embeddings.drop_duplicates("item_id", keep="last").set_index("item_id")
    ok = emb["error"].isna() if "error" in emb.columns else pd.Series(True, index=emb.index)
    emb = emb[ok]
    for c in cols:
        if c in out.columns:
            out = out.drop(columns=c)
        mapped = out["item_id"].map(emb[c]) if c in emb.columns else None
        out[c] = mapped if mapped is not None else (np.nan if c != "vector" else None)
    return out


def feature_frame(
    rows: pd.DataFrame,
    numeric: Sequence[str] = NUMERIC_FEATURES,
    categorical: Sequence[str] = CATEGORICAL_FEATURES,
    slices: Sequence[str] = (),
) -> pd.DataFrame:
    """One column per requested feature (short names), one row per row of ``rows``.

    ``rows`` is a curate manifest slice, with the embedding columns (``with_embeddings``) when
    embedding statistics are requested. Unknown names raise KeyError."""
    out = pd.DataFrame(index=rows.index)
    for name in numeric:
        if name in CURATE_NUMERIC:
            out[name] = _num(rows, CURATE_NUMERIC[name])
        elif name in EMBED_NUMERIC:
            out[name] = _num(rows, EMBED_NUMERIC[name])
        elif name == "size":
            out[name] = np.sqrt(_num(rows, "width") * _num(rows, "height"))
        elif name == "aspect":
            h = _num(rows, "height")
            out[name] = _num(rows, "width") / h.where(h > 0)
        else:
            raise KeyError(f"unknown numeric drift feature {name!r}")
    for name in dict.fromkeys([*categorical, *slices]):
        if name not in out.columns:
            out[name] = slice_values(rows, name).to_numpy()
    return out.reset_index(drop=True)


def embedding_matrix(rows: pd.DataFrame) -> np.ndarray:
    """(n, d) float64: embedding vector, embedding statistics, curate metrics; NaN rows where
    the item has no embedding."""
    n = len(rows)
    vec = np.full((n, VECTOR_DIM), np.nan)
    if "vector" in rows.columns:
        for i, v in enumerate(rows["vector"].tolist()):
            if (
                v is not None
                and not (isinstance(v, float) and np.isnan(v))
                and len(v) == VECTOR_DIM
            ):
                vec[i] = np.asarray(v, dtype=np.float64)
    stats = np.column_stack([_num(rows, c).to_numpy() for c in STAT_COLUMNS])
    metrics = [_num(rows, c).to_numpy() for c in EMBED_METRICS if c in rows.columns]
    parts = [vec, stats, *(m[:, None] for m in metrics)]
    return np.hstack(parts)


__all__ = [
    "CATEGORICAL_FEATURES",
    "NUMERIC_FEATURES",
    "embedding_matrix",
    "feature_frame",
    "slice_values",
    "with_embeddings",
]
