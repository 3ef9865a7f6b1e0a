"""Geometry checks: every shape against its image, its own box, and its annotator's other shapes.

- ``box_outside_image``: the box reaches past an image edge by more than the tolerance
  (``validate.bbox_tolerance_px``, the same slack the gate's GX box expectations allow);
- ``shape_outside_image``: a polygon vertex (also oriented boxes and ellipses, whose outline is
  their segmentation) or a labelled point lies outside the image by more than that;
- ``mask_size_mismatch``: an RLE mask whose size is not its image's;
- ``degenerate_polygon``: a ring with fewer than 3 points (or an odd number of coordinates) or
  zero area; ``self_intersecting_polygon``: a ring whose edges cross (shapely's validity test);
- ``mask_bbox_mismatch``: the extent of the mask or polygon and the box (or, for COCO masks, the
  box the export declared, kept in ``attributes.declared_bbox``) differ by more than
  ``qa.mask_bbox_tolerance_px`` on some edge. Ellipses are skipped: their stored outline is a
  32-gon whose extent is smaller than the ellipse's by up to 0.5% of its radius;
- ``empty_mask``: an RLE without a foreground pixel, or a polygon annotation without a ring;
- ``duplicate_annotation``: one annotator (or one unattributed export), one item, one label,
  two boxes with IoU > ``qa.duplicate_iou`` (two annotators drawing the same object is
  agreement, not duplication).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from visionloop.config import QAParams
from visionloop.qa.checks import Finding
from visionloop.qa.frame import finite_box
from visionloop.qa.shapes import (
    box_iou_paired,
    extent_gap,
    parse_points,
    parse_segmentation,
    ring_is_flat,
    ring_self_intersection,
    rings_extent,
)


def _finding(check: str, r: Mapping[str, Any], reason: str, **kw: object) -> Finding:
    return Finding(
        check,
        reason,
        item=r["_item"],
        image_ref=r["_image"],
        annotation_ids=[r["_ann"]],
        category=r["_cat"],
        annotator=r["_annotator"],
        **kw,  # type: ignore[arg-type]
    )


def geometry_findings(w: pd.DataFrame, q: QAParams, tolerance_px: float = 1.0) -> list[Finding]:
    """Every geometry finding of the working frame ``w`` (see ``frame.prepare``)."""
    out = _boxes_outside(w, tolerance_px)
    has_seg = w["_seg"].map(lambda v: isinstance(v, str) and bool(v.strip())).astype(bool)
    for r in w[has_seg].to_dict("records"):
        out += _segmentation(r, q, tolerance_px)
    has_points = w["_keypoints"].map(lambda v: isinstance(v, str) and bool(v.strip()))
    for r in w[has_points.astype(bool)].to_dict("records"):
        out += _points(r, tolerance_px)
    out += _duplicates(w, q)
    return out


def _boxes_outside(w: pd.DataFrame, tol: float) -> list[Finding]:
    ok = w["_needs_box"].to_numpy() & finite_box(w)
    iw, ih = w["_iw"].to_numpy(), w["_ih"].to_numpy()
    x, y = w["_x"].to_numpy(), w["_y"].to_numpy()
    right, bottom = x + w["_w"].to_numpy(), y + w["_h"].to_numpy()
    with np.errstate(invalid="ignore"):
        over = np.stack([-x, -y, right - iw, bottom - ih], axis=1)  # NaN where size unknown
    over[:, 2:] = np.where(np.isfinite(iw)[:, None] & np.isfinite(ih)[:, None], over[:, 2:], np.nan)
    with np.errstate(invalid="ignore"):
        bad = ok & (np.nan_to_num(over, nan=-np.inf) > tol).any(axis=1)
    out = []
    edges = ("left", "top", "right", "bottom")
    for pos in np.flatnonzero(bad):
        r = w.iloc[pos]
        past = [f"{e} edge by {v:.4g} px" for e, v in zip(edges, over[pos], strict=True) if v > tol]
        size = f"{r['_iw']:g}x{r['_ih']:g}" if np.isfinite(r["_iw"]) else "unknown size"
        out.append(
            _finding(
                "box_outside_image",
                r,
                f"box [{r['_x']:g}, {r['_y']:g}, {r['_w']:g}, {r['_h']:g}] passes the image's "
                + ", ".join(past)
                + f" (image {size}, tolerance {tol:g} px)",
                value=float(np.nanmax(over[pos])),
                threshold=tol,
            )
        )
    return out


def _outside(points: np.ndarray, iw: float, ih: float, tol: float) -> float:
    """How far (px) the farthest point lies outside [0, iw] x [0, ih] (<= 0 when inside)."""
    over = [-points[:, 0].min(), -points[:, 1].min()]
    if np.isfinite(iw):
        over.append(points[:, 0].max() - iw)
    if np.isfinite(ih):
        over.append(points[:, 1].max() - ih)
    return float(max(over))


def _segmentation(r: Mapping[str, Any], q: QAParams, tol: float) -> list[Finding]:
    g = parse_segmentation(r["_seg"])
    out: list[Finding] = []
    if g.kind == "invalid":
        return [_finding("invalid_geometry", r, g.error or "unreadable segmentation")]
    box = [r["_x"], r["_y"], r["_w"], r["_h"]]
    box_ok = bool(np.isfinite(box).all())
    declared = r["_attrs"].get("declared_bbox")
    declared_ok = (
        isinstance(declared, list)
        and len(declared) == 4
        and all(isinstance(v, int | float) for v in declared)
    )
    if g.kind == "rle":
        h, wd = g.mask_size or (0, 0)
        if np.isfinite(r["_iw"]) and np.isfinite(r["_ih"]) and (wd, h) != (r["_iw"], r["_ih"]):
            out.append(
                _finding(
                    "mask_size_mismatch",
                    r,
                    f"mask is {wd}x{h} but the image is {r['_iw']:g}x{r['_ih']:g}",
                )
            )
        if not g.mask_area:
            out.append(_finding("empty_mask", r, "the mask has no foreground pixel", value=0.0))
            return out
        extent = g.mask_bbox
        what = "mask"
    else:
        if not g.rings:
            return [_finding("empty_mask", r, "the segmentation holds no polygon")]
        problems = []
        crossings = []
        for k, (raw, ring) in enumerate(zip(g.raw_rings, g.rings, strict=True)):
            n = len(raw) if isinstance(raw, list) else 2 * len(ring)
            if n % 2:
                problems.append(f"ring {k} has an odd number of coordinates ({n})")
            elif len(ring) < 3:
                problems.append(f"ring {k} has {len(ring)} point(s) (< 3)")
            elif ring_is_flat(ring):
                problems.append(f"ring {k} has zero area (its {len(ring)} points are collinear)")
            else:
                why = ring_self_intersection(ring)
                if why:
                    crossings.append(f"ring {k}: {why}")
        if problems:
            out.append(_finding("degenerate_polygon", r, "; ".join(problems)))
        if crossings:
            out.append(_finding("self_intersecting_polygon", r, "; ".join(crossings)))
        pts = np.concatenate([ring for ring in g.rings if len(ring)] or [np.zeros((0, 2))])
        if len(pts):
            past = _outside(pts, r["_iw"], r["_ih"], tol)
            if past > tol:
                out.append(
                    _finding(
                        "shape_outside_image",
                        r,
                        f"a polygon vertex lies {past:.4g} px outside the image "
                        f"({_size(r)}, tolerance {tol:g} px)",
                        value=past,
                        threshold=tol,
                    )
                )
        extent = rings_extent(g.rings)
        what = "polygon"
        if r["_shape"] == "ellipse":
            extent = None  # see the module docstring
    if extent is None:
        return out
    pairs: list[tuple[str, Sequence[float]]] = []
    if box_ok:
        pairs.append(("box", box))
    if declared_ok:
        pairs.append(("declared box", declared))
    for name, other in pairs:
        gap = extent_gap(extent, list(other))
        if gap > q.mask_bbox_tolerance_px:
            out.append(
                _finding(
                    "mask_bbox_mismatch",
                    r,
                    f"the {what}'s extent {[round(v, 2) for v in extent]} and the {name} "
                    f"{[round(float(v), 2) for v in other]} differ by {gap:.4g} px",
                    value=gap,
                    threshold=q.mask_bbox_tolerance_px,
                )
            )
    return out


def _size(r: Mapping[str, Any]) -> str:
    if np.isfinite(r["_iw"]) and np.isfinite(r["_ih"]):
        return f"image {r['_iw']:g}x{r['_ih']:g}"
    return "image size unknown"


def _points(r: Mapping[str, Any], tol: float) -> list[Finding]:
    pts, err = parse_points(r["_keypoints"])
    if err:
        return [_finding("invalid_geometry", r, err)]
    if pts is None or not len(pts):
        return []
    labelled = pts[pts[:, 2] > 0][:, :2]
    if not len(labelled):
        return []
    if not np.isfinite(labelled).all():
        return [
            _finding("invalid_geometry", r, "a labelled point has a NaN or infinite coordinate")
        ]
    past = _outside(labelled, r["_iw"], r["_ih"], tol)
    if past > tol:
        return [
            _finding(
                "shape_outside_image",
                r,
                f"a labelled point lies {past:.4g} px outside the image "
                f"({_size(r)}, tolerance {tol:g} px)",
                value=past,
                threshold=tol,
            )
        ]
    return []


def _duplicates(w: pd.DataFrame, q: QAParams) -> list[Finding]:
    ok = w["_needs_box"].to_numpy() & finite_box(w)
    ok &= (w["_w"].to_numpy() > 0) & (w["_h"].to_numpy() > 0)
    sub = w[ok & w["_item"].notna().to_numpy()]
    if not len(sub):
        return []
    sub = sub.assign(_who=sub["_annotator"].fillna(""))
    keys = ["_item", "_who", "_cat"]
    sub = sub[sub.groupby(keys)["_ann"].transform("size").to_numpy() > 1]
    if not len(sub):
        return []
    sub = sub.sort_values(keys, kind="stable")
    key = (sub["_item"] + "\x1f" + sub["_who"] + "\x1f" + sub["_cat"]).to_numpy(dtype=object)
    boxes = sub[["_x", "_y", "_w", "_h"]].to_numpy(dtype=float)
    rows = sub[["_item", "_image", "_ann", "_cat", "_annotator"]].to_numpy(dtype=object)
    cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(key)]
    sizes = ends - starts
    out: list[Finding] = []
    # Every pair within a group, one group size at a time (a table has 10^4 small groups).
    for m in np.unique(sizes):
        first = starts[sizes == m]
        a, b = np.triu_indices(int(m), k=1)
        ii = (first[:, None] + a[None, :]).ravel()
        jj = (first[:, None] + b[None, :]).ravel()
        iou = box_iou_paired(boxes[ii], boxes[jj])
        for i, j, v in zip(
            ii[iou > q.duplicate_iou],
            jj[iou > q.duplicate_iou],
            iou[iou > q.duplicate_iou],
            strict=True,
        ):
            item, image, a_id, cat, who = rows[i]
            out.append(
                Finding(
                    "duplicate_annotation",
                    f"two {cat!r} boxes of the same annotator overlap with IoU "
                    f"{v:.3f} (> {q.duplicate_iou:g})",
                    item=item,
                    image_ref=image,
                    annotation_ids=[a_id, rows[j][2]],
                    category=cat,
                    annotator=who,
                    value=float(v),
                    threshold=q.duplicate_iou,
                )
            )
    return out
