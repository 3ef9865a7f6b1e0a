"""Small faces: run any detector over an image pyramid in tiles, and merge the results.

A face detector sees faces down to some size in *its input* (about 10-16 px for YuNet and
CenterFace). A 12 MP photo shrunk to ``max_side`` for detection loses its 30 px faces, and a
640 px frame holds 10 px faces that no network input of that size resolves. So, besides the
whole-image pass, :class:`MultiScaleDetector` runs the detector

- at full resolution, in overlapping tiles of ``max_side``, when the image is larger than that;
- on the image upscaled by ``upscale`` (tiled the same way), when its longer side is at most
  ``upscale_max_side`` (small images, where the small faces are and where it is affordable),
  or by the smaller ``upscale_large`` when it is at most ``upscale_large_max_side``.
  That pass only reports faces up to ``upscale_max_face`` px (in the original image): larger
  ones are the whole-image pass's job, and an upscaled photo of a badge or a patch is where
  the upscaled pass makes its confident false positives.

Tiles overlap by ``tile_overlap`` of their side, so every face smaller than the overlap lies
whole inside some tile; larger faces are the whole-image pass's job. :func:`merge` then unions
the passes: overlapping boxes of one kind collapse into the highest-scoring one, *grown to
cover all of them* (for redaction a larger box is safe, a dropped one is not).

The wrapper works with any registered detector, including third-party plug-ins, and keeps the
wrapped detector's identity (name, version, model hash) for the audit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from visionloop.anonymize.detectors import Detector, Regions, to_rgb

MERGE_IOU = 0.3
MERGE_CONTAIN = 0.7  # a box lying this much inside a better one is the same object (or a part)
WINDOWS_MAX_SHARE = 0.7  # change windows covering more of the image: search all of it


def _iou_and_containment(box: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of ``box`` with each of ``others``, and the share of each other box inside ``box``."""
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    iou = inter / np.maximum(area + areas - inter, 1e-9)
    inside = inter / np.maximum(areas, 1e-9)
    return iou, inside


def merge(regions: Regions, iou: float = MERGE_IOU, contain: float = MERGE_CONTAIN) -> Regions:
    """Greedy NMS per kind, except that the kept box grows to the union of what it suppressed.

    A box is suppressed by a higher-scoring one of the same kind when their IoU is at least
    ``iou`` or when at least ``contain`` of it lies inside the better box (a part of a face
    found in a tile). Output is sorted by descending score; the input is not modified.
    """
    if len(regions) <= 1:
        return regions
    out_boxes, out_scores, out_kind = [], [], []
    for kind in np.unique(regions.kind):
        sel = regions[regions.kind == kind]
        order = np.argsort(-sel.scores, kind="stable")
        boxes, scores = sel.boxes[order].astype(np.float64), sel.scores[order]
        alive = np.ones(len(boxes), bool)
        for i in range(len(boxes)):
            if not alive[i]:
                continue
            rest = np.nonzero(alive)[0]
            rest = rest[rest > i]
            kept = boxes[i].copy()
            if len(rest):
                ov, inside = _iou_and_containment(boxes[i], boxes[rest])
                gone = rest[(ov >= iou) | (inside >= contain)]
                if len(gone):
                    kept[:2] = np.minimum(kept[:2], boxes[gone, :2].min(axis=0))
                    kept[2:] = np.maximum(kept[2:], boxes[gone, 2:].max(axis=0))
                    alive[gone] = False
            out_boxes.append(kept)
            out_scores.append(scores[i])
            out_kind.append(kind)
    merged = Regions(np.asarray(out_boxes), np.asarray(out_scores), np.asarray(out_kind))
    return merged[np.argsort(-merged.scores, kind="stable")]


def tile_grid(
    width: int, height: int, tile: int, overlap: float
) -> list[tuple[int, int, int, int]]:
    """Equal-sized tiles (``tile`` x ``tile``, or the whole side if shorter) covering the image.

    Neighbours overlap by at least ``overlap`` x ``tile`` pixels; the last tile of a row or
    column is shifted back inside the image rather than cut, so every tile has the same size
    (one network input size: no re-allocation between tiles).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"tile overlap must be in [0, 1), got {overlap}")

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        step = max(1, int(tile * (1 - overlap)))
        count = math.ceil((n - tile) / step) + 1
        # spread the tiles evenly: overlap only grows
        return [round(i * (n - tile) / (count - 1)) for i in range(count)]

    tw, th = min(tile, width), min(tile, height)
    return [(x, y, x + tw, y + th) for y in starts(height) for x in starts(width)]


def even_tiles(
    width: int, height: int, max_tile: int, min_overlap: int
) -> list[tuple[int, int, int, int]]:
    """The fewest equal tiles of at most ``max_tile`` px a side that cover the image with
    neighbours overlapping by at least ``min_overlap`` px (a box that small lies whole in one).

    For the upscaled pass, where only small faces count: a 640x480 image at 4x (2560x1920)
    is two 1408x1920 tiles (5.4 MP) instead of :func:`tile_grid`'s two 1920x1920 (7.4 MP).
    Sides are rounded up to multiples of 32 (the networks pad to that anyway).
    """
    if min_overlap >= max_tile:
        raise ValueError(f"overlap {min_overlap} px must be below the tile side {max_tile}")

    def axis(n: int) -> tuple[int, list[int]]:
        if n <= max_tile:
            return n, [0]
        count = math.ceil((n - min_overlap) / (max_tile - min_overlap))
        side = math.ceil((n + (count - 1) * min_overlap) / count)
        side = min(max_tile, n, math.ceil(side / 32) * 32)
        return side, [round(i * (n - side) / (count - 1)) for i in range(count)]

    tw, xs = axis(width)
    th, ys = axis(height)
    return [(x, y, x + tw, y + th) for y in ys for x in xs]


def plan_passes(
    width: int,
    height: int,
    max_side: int,
    upscale: float,
    upscale_max_side: int,
    upscale_large: float = 1.0,
    upscale_large_max_side: int = 0,
) -> list[float]:
    """Scales (relative to full resolution) that get a tiled pass besides the whole image:
    ``upscale`` up to ``upscale_max_side``, else ``upscale_large`` (a cheaper factor: the cost
    grows with the square of both) up to ``upscale_large_max_side``."""
    scales: list[float] = []
    side = max(width, height)
    if side > max_side:
        scales.append(1.0)
    if upscale > 1 and side <= upscale_max_side:
        scales.append(float(upscale))
    elif upscale_large > 1 and upscale_max_side < side <= upscale_large_max_side:
        scales.append(float(upscale_large))
    return scales


class MultiScaleDetector:
    """Any detector, run on the whole image and on tiles at full and upscaled resolution."""

    def __init__(
        self,
        base: Detector,
        *,
        max_side: int,
        upscale: float = 2.0,
        upscale_max_side: int = 1280,
        upscale_max_face: int = 64,
        tile_overlap: float = 0.25,
        merge_iou: float = MERGE_IOU,
        upscale_large: float = 1.0,
        upscale_large_max_side: int = 0,
    ) -> None:
        if upscale < 1 or upscale_large < 1:
            raise ValueError(f"upscale factors must be >= 1, got {upscale}, {upscale_large}")
        self.base = base
        self.max_side = int(max_side)
        self.upscale = float(upscale)
        self.upscale_max_side = int(upscale_max_side)
        self.upscale_max_face = int(upscale_max_face)
        self.upscale_large = float(upscale_large)
        self.upscale_large_max_side = int(upscale_large_max_side)
        self.tile_overlap = float(tile_overlap)
        self.merge_iou = float(merge_iou)
        self.name = base.name
        self.version = base.version
        self.model_sha256 = base.model_sha256
        self.licence = base.licence

    def __getattr__(self, attr: str) -> Any:  # models, score_threshold... of the wrapped one
        if attr == "base":
            raise AttributeError(attr)
        return getattr(self.base, attr)

    def detect_size(self, width: int, height: int) -> tuple[int, int]:
        size = getattr(self.base, "detect_size", None)
        return size(width, height) if callable(size) else (width, height)

    def passes(self, width: int, height: int) -> list[float]:
        return plan_passes(
            width,
            height,
            self.max_side,
            self.upscale,
            self.upscale_max_side,
            self.upscale_large,
            self.upscale_large_max_side,
        )

    def detect(self, image_rgb: np.ndarray) -> Regions:
        return self.detect_changed(image_rgb, None)

    def detect_changed(self, image_rgb: np.ndarray, changed: np.ndarray | None) -> Regions:
        """Detections on an image that differs from one already searched only in ``changed``.

        ``changed`` is ``None`` (search everything) or ``(N, 4)`` boxes in image pixels outside
        which the pixels are the ones a previous :meth:`detect` searched. The whole image and
        the full-resolution tiles are searched again in any case; the upscaled small-face pass
        only in :func:`change_windows` around ``changed``. It reports faces of at most
        ``upscale_max_face`` px, so a small face touching a changed pixel lies inside a window;
        one that touches none lies in pixels the previous pass already searched (see
        ``visionloop.stages.anonymize.anonymize_image`` for why that keeps verification sound).
        So a window's detections that touch no changed box are dropped: they are in unchanged
        pixels, seen with the window's edges instead of the whole image around them (a
        borderline score flips with that context: 2 such boxes in 12 one-face images of the
        bench's backgrounds, none in the whole-image pass).
        """
        import cv2

        rgb = to_rgb(image_rgb)
        height, width = rgb.shape[:2]
        found = [self.base.detect(rgb).clipped(width, height)]
        for scale in self.passes(width, height):
            windows = [(0, 0, width, height)]
            touching: np.ndarray | None = None
            if scale > 1 and changed is not None:
                near = change_windows(changed, width, height, self.upscale_max_face)
                area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in near)
                if area < WINDOWS_MAX_SHARE * width * height:  # else one pass costs less
                    windows, touching = near, np.asarray(changed, np.float64).reshape(-1, 4)
            for wx0, wy0, wx1, wy1 in windows:
                crop = rgb[wy0:wy1, wx0:wx1]
                if scale == 1.0:
                    scaled = crop
                else:
                    size = (round((wx1 - wx0) * scale), round((wy1 - wy0) * scale))
                    scaled = cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)
                sh, sw = scaled.shape[:2]
                if scale == 1.0:
                    tiles = tile_grid(sw, sh, self.max_side, self.tile_overlap)
                else:  # small faces only: an overlap of the largest one reported suffices
                    overlap = min(math.ceil(self.upscale_max_face * scale), self.max_side // 2)
                    tiles = even_tiles(sw, sh, self.max_side, overlap)
                for x0, y0, x1, y1 in tiles:
                    r = self.base.detect(np.ascontiguousarray(scaled[y0:y1, x0:x1]))
                    if len(r):
                        shift = np.array([x0, y0, x0, y0], np.float32)
                        origin = np.array([wx0, wy0, wx0, wy0], np.float32)
                        boxes = (r.boxes + shift) / scale + origin
                        r = Regions(boxes, r.scores, r.kind).clipped(width, height)
                        if scale > 1:  # the upscaled pass is for small faces only
                            side = np.maximum(
                                r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]
                            )
                            r = r[side <= self.upscale_max_face]
                        if touching is not None:  # a window's own context: see the docstring
                            r = r[_touches(r.boxes, touching)]
                        found.append(r)
        return merge(Regions.concat(found), iou=self.merge_iou)


def _touches(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(N,) bool: box n shares some area (or an edge) with one of ``others``."""
    if len(boxes) == 0 or len(others) == 0:
        return np.zeros(len(boxes), bool)
    return (
        (boxes[:, None, 0] <= others[None, :, 2])
        & (others[None, :, 0] <= boxes[:, None, 2])
        & (boxes[:, None, 1] <= others[None, :, 3])
        & (others[None, :, 1] <= boxes[:, None, 3])
    ).any(axis=1)


def change_windows(
    changed: np.ndarray, width: int, height: int, margin: int
) -> list[tuple[int, int, int, int]]:
    """Integer windows covering every ``changed`` box grown by ``margin`` px on each side.

    Overlapping windows are joined (their bounding box) until none overlap, so no pixel is
    searched twice for the same reason. Empty ``changed``: no window.
    """
    b = np.asarray(changed, np.float64).reshape(-1, 4)
    if len(b) == 0:
        return []
    grown = np.stack(
        [
            np.floor(b[:, 0] - margin).clip(0, width),
            np.floor(b[:, 1] - margin).clip(0, height),
            np.ceil(b[:, 2] + margin).clip(0, width),
            np.ceil(b[:, 3] + margin).clip(0, height),
        ],
        axis=1,
    ).astype(np.int64)
    windows = [tuple(int(v) for v in w) for w in grown if w[2] > w[0] and w[3] > w[1]]
    joined = True
    while joined:
        joined = False
        out: list[tuple[int, int, int, int]] = []
        for w in windows:
            for i, o in enumerate(out):
                if w[0] < o[2] and o[0] < w[2] and w[1] < o[3] and o[1] < w[3]:
                    out[i] = (min(w[0], o[0]), min(w[1], o[1]), max(w[2], o[2]), max(w[3], o[3]))
                    joined = True
                    break
            else:
                out.append(w)
        windows = out
    return sorted(windows)
