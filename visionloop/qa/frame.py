"""The annotation table as the checks read it: one normalised working frame.

Every check needs the same few things (which item, which label, which annotator, the box as
floats, the image size, whether the shape has an area at all); ``prepare`` derives them once,
so tables written before a column existed (``shape``, ``track_id``, ``frame``) and tables built
by hand read the same. Columns of the working frame start with ``_``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

PREDICTION_PREFIX = "prediction:"  # annotator of a model pre-annotation (issue 5 convention)
# Shapes with no area of their own: their bbox_* may be null, and box checks skip them.
POINT_SHAPES = frozenset({"polyline", "points", "keypoints"})
TAG = "tag"
# Attribute keys the readers (visionloop/annotations/formats) use for geometry, provenance or
# bookkeeping rather than for the label's own attributes; keys starting with "_" are too.
SYSTEM_ATTRIBUTES = frozenset(
    {
        # geometry and tracks (CVAT, Label Studio, MOT)
        "outside",
        "keyframe",
        "occluded",
        "z_order",
        "rotation",
        "visibility",
        "ignored",
        "group_id",
        # provenance
        "declared_bbox",
        "ground_truth",
        "source",
        "origin",
        "meta",
        "part_of",
        "ls_from_name",
        "ls_to_name",
        "ls_point_width",
    }
)

REQUIRED = ("category",)


def item_key(item_id: Any, image_ref: Any, subset: Any = None) -> str | None:
    """The item an annotation belongs to: its ``item_id``, else the export's ``image_ref``
    (as ``subset:image_ref`` when the export has subsets: CVAT projects repeat file names
    across Train/Test/Validation). Tables not yet matched to a manifest know no better."""
    if isinstance(item_id, str) and item_id:
        return item_id
    if isinstance(image_ref, str) and image_ref:
        return f"{subset}:{image_ref}" if isinstance(subset, str) and subset else image_ref
    return None


def _column(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series([default] * len(df), index=df.index, dtype=object)


def _float(df: pd.DataFrame, name: str) -> np.ndarray:
    col = _column(df, name)
    return pd.to_numeric(col, errors="coerce").astype("float64").to_numpy()


def _text(v: Any) -> str | None:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


def parse_attributes(value: Any) -> dict[str, Any]:
    """The ``attributes`` JSON object ({} when absent or not an object)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return {}
    if isinstance(value, dict):
        return value
    try:
        data = json.loads(value)
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def truthy(value: Any) -> bool | None:
    """An ``outside`` / ``keyframe`` flag as written by any tool (None when absent)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "t"):
        return True
    if text in ("0", "false", "no", "n", "f", ""):
        return False
    return None


def shape_of(shape: Any, segmentation: Any) -> str:
    """A row's shape (the ``shape`` column, else inferred from the segmentation)."""
    if isinstance(shape, str) and shape:
        return shape
    if isinstance(segmentation, str) and segmentation.strip():
        return "mask" if segmentation.lstrip().startswith("{") else "polygon"
    return "box"


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The working frame of ``df`` (same index and row order)."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"annotation table lacks required column(s) {missing}")
    n = len(df)
    out = pd.DataFrame(index=df.index)
    ann = _column(df, "annotation_id")
    out["_ann"] = [_text(a) or f"row {i}" for i, a in zip(range(n), ann.tolist(), strict=True)]
    image = _column(df, "image_ref").map(_text)
    out["_image"] = image
    out["_item"] = [
        item_key(i, r, s)
        for i, r, s in zip(
            _column(df, "item_id").tolist(),
            image.tolist(),
            _column(df, "subset").map(_text).tolist(),
            strict=True,
        )
    ]
    out["_cat"] = df["category"].map(lambda v: "" if _text(v) is None else str(v))
    out["_catid"] = pd.to_numeric(_column(df, "category_id"), errors="coerce").astype("Int64")
    annot = _column(df, "annotator").map(_text)
    out["_annotator"] = annot
    out["_human"] = ~annot.fillna("").str.startswith(PREDICTION_PREFIX)
    for src, dst in (("bbox_x", "_x"), ("bbox_y", "_y"), ("bbox_w", "_w"), ("bbox_h", "_h")):
        out[dst] = _float(df, src)
    out["_iw"] = _float(df, "image_width")
    out["_ih"] = _float(df, "image_height")
    seg = _column(df, "segmentation")
    out["_seg"] = seg
    out["_shape"] = [
        shape_of(s, g) for s, g in zip(_column(df, "shape").tolist(), seg.tolist(), strict=True)
    ]
    out["_needs_box"] = ~out["_shape"].isin(POINT_SHAPES | {TAG})
    out["_keypoints"] = _column(df, "keypoints")
    out["_attrs"] = _column(df, "attributes").map(parse_attributes)
    out["_track"] = pd.to_numeric(_column(df, "track_id"), errors="coerce").astype("Int64")
    out["_frame"] = pd.to_numeric(_column(df, "frame"), errors="coerce").astype("Int64")
    source = _column(df, "source_file").map(lambda v: _text(v) or "")
    subset = _column(df, "subset").map(lambda v: _text(v) or "")
    out["_seq"] = source + "|" + subset
    return out


def finite_box(w: pd.DataFrame) -> np.ndarray:
    """Rows whose four box values are finite numbers."""
    vals = w[["_x", "_y", "_w", "_h"]].to_numpy(dtype=float)
    return np.isfinite(vals).all(axis=1)
