"""Geometry primitives for label QA: parsing the table's geometry columns, areas, IoU and the
Hungarian matching every agreement and track check is built on.

Boxes are absolute pixel ``[x, y, w, h]`` (the canonical table's ``bbox_*``); polygons are the
``segmentation`` JSON ``[[x1, y1, x2, y2, ...], ...]`` (several rings = parts of one object, as
COCO); masks are COCO RLE objects ``{"size": [h, w], "counts": ...}`` decoded with the importer's
validated numpy RLE code; points are ``[[x, y, v], ...]`` (``keypoints`` column).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from visionloop.annotations.formats.coco import RleError, rle_bbox_area, rle_counts


@dataclass
class Geometry:
    """What a ``segmentation`` value holds."""

    kind: str  # "none" | "polygons" | "rle" | "invalid"
    rings: list[np.ndarray] = field(default_factory=list)  # polygons: (k, 2) float arrays
    raw_rings: list[Any] = field(default_factory=list)  # as written (to report odd lengths)
    mask_size: tuple[int, int] | None = None  # rle: (height, width)
    mask_bbox: list[float] | None = None  # rle: pixel extent [x, y, w, h]
    mask_area: int | None = None
    error: str | None = None


def parse_segmentation(value: Any) -> Geometry:
    """Parse the ``segmentation`` column (JSON text, or null for a box-only annotation)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Geometry("none")
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except (TypeError, ValueError) as e:
        return Geometry("invalid", error=f"segmentation is not JSON ({e})")
    if data is None:
        return Geometry("none")
    if isinstance(data, dict):
        try:
            h, w, counts = rle_counts(data)
        except RleError as e:
            return Geometry("invalid", error=f"mask RLE is invalid: {e}")
        bbox, area = rle_bbox_area(counts, h)
        return Geometry("rle", mask_size=(h, w), mask_bbox=bbox, mask_area=area)
    if not isinstance(data, list):
        return Geometry("invalid", error=f"segmentation is a {type(data).__name__}")
    if data and all(_is_number(v) for v in data):
        data = [data]  # a flat list: one ring
    rings: list[np.ndarray] = []
    for k, ring in enumerate(data):
        if not isinstance(ring, list) or not all(_is_number(v) for v in ring):
            return Geometry("invalid", error=f"polygon {k} is not a list of numbers")
        flat = np.asarray(ring, dtype=float)
        if flat.size % 2:
            flat = flat[:-1]  # reported as degenerate by the caller (odd coordinate count)
        rings.append(flat.reshape(-1, 2))
    return Geometry("polygons", rings=rings, raw_rings=list(data))


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_points(value: Any) -> tuple[np.ndarray | None, str | None]:
    """``keypoints`` JSON -> (n, 3) array of [x, y, v] (None when absent), or an error."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, None
    try:
        data = json.loads(value) if isinstance(value, str) else value
        arr = np.asarray(data, dtype=float)
    except (TypeError, ValueError) as e:
        return None, f"keypoints are not a list of [x, y, v] ({e})"
    if arr.size == 0:
        return np.zeros((0, 3)), None
    if arr.ndim != 2 or arr.shape[1] != 3:
        return None, f"keypoints must be [[x, y, v], ...], got shape {list(arr.shape)}"
    return arr, None


def ring_area(ring: np.ndarray) -> float:
    """Unsigned shoelace area of one ring (closed implicitly)."""
    if len(ring) < 3:
        return 0.0
    x, y = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def ring_is_flat(ring: np.ndarray) -> bool:
    """True when a ring has no area at all: its points lie on one line (or one point).

    Not the shoelace sum: a symmetric bow-tie's two lobes cancel to 0 but it has area; that is
    a self-intersection, not a degenerate ring.
    """
    if len(ring) < 3:
        return True
    centred = ring - ring.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    return bool(s[1] <= 1e-9 * max(1.0, float(s[0])))


def ring_self_intersection(ring: np.ndarray) -> str | None:
    """Where a ring's edges cross (shapely's validity explanation), or None when simple.

    Only crossings count: shapely also calls a ring invalid for too few points (reported as
    degenerate by the caller) or for a repeated closing vertex, which is harmless.
    """
    from shapely.geometry import Polygon
    from shapely.validation import explain_validity

    if ring_is_flat(ring):
        return None
    pts = ring
    if len(pts) > 3 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]  # an explicitly closed ring
    why = explain_validity(Polygon(pts))
    if "Self-intersection" in why:  # "Self-intersection[x y]" or "Ring Self-intersection[...]"
        return why
    return None


def rings_extent(rings: list[np.ndarray]) -> list[float] | None:
    """The tight [x, y, w, h] extent of polygon vertices (COCO's convention for polygon boxes)."""
    pts = [r for r in rings if len(r)]
    if not pts:
        return None
    allp = np.concatenate(pts)
    x0, y0 = allp.min(axis=0)
    x1, y1 = allp.max(axis=0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def extent_gap(a: list[float], b: list[float]) -> float:
    """The largest distance between corresponding edges of two xywh boxes (pixels)."""
    ax0, ay0, ax1, ay1 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx0, by0, bx1, by1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    return float(max(abs(ax0 - bx0), abs(ay0 - by0), abs(ax1 - bx1), abs(ay1 - by1)))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4), xywh -> (n, m)."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    ax0, ay0 = a[:, 0:1], a[:, 1:2]
    ax1, ay1 = ax0 + a[:, 2:3], ay0 + a[:, 3:4]
    bx0, by0 = b[:, 0][None, :], b[:, 1][None, :]
    bx1, by1 = bx0 + b[:, 2][None, :], by0 + b[:, 3][None, :]
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2:3], 0, None) * np.clip(a[:, 3:4], 0, None)
    area_b = (np.clip(b[:, 2], 0, None) * np.clip(b[:, 3], 0, None))[None, :]
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0)


def box_iou_paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``a[k]`` with ``b[k]`` for every k (both (n, 4) xywh) -> (n,)."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    iw = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = np.clip(a[:, 2], 0, None) * np.clip(a[:, 3], 0, None)
    area_b = np.clip(b[:, 2], 0, None) * np.clip(b[:, 3], 0, None)
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0)


def hungarian(iou: np.ndarray, min_iou: float) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(i, j, iou)`` maximising the summed IoU of pairs with
    IoU >= ``min_iou`` (pairs below it cannot match and do not steer the assignment)."""
    if iou.size == 0:
        return []
    usable = np.where(iou >= min_iou, iou, 0.0)
    rows, cols = linear_sum_assignment(usable, maximize=True)
    return [
        (int(i), int(j), float(iou[i, j]))
        for i, j in zip(rows, cols, strict=True)
        if iou[i, j] >= min_iou and iou[i, j] > 0
    ]
