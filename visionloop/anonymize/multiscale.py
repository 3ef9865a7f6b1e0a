"""Small faces: run any detector over an image pyramid in tiles, and merge the results.

A face detector sees faces down to some size in *its input* (about 10-16 px for YuNet and
CenterFace). A 12 MP photo shrunk to ``max_side`` for detection loses its 30 px faces, and a
640 px frame holds 10 px faces that no network input of that size resolves. So, besides the
whole-image pass, :class:`MultiScaleDetector` runs the detector

- at full resolution, in overlapping tiles of ``max_side``, when the image is larger than that;
- on the image upscaled by ``upscale`` (tiled the same way), when its longer side is at most
  ``upscale_max_side`` (small images, where the small faces are and where it is affordable).
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


def plan_passes(
    width: int, height: int, max_side: int, upscale: float, upscale_max_side: int
) -> list[float]:
    """Scales (relative to full resolution) that get a tiled pass besides the whole image."""
    scales: list[float] = []
    if max(width, height) > max_side:
        scales.append(1.0)
    if upscale > 1 and max(width, height) <= upscale_max_side:
        scales.append(float(upscale))
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
    ) -> None:
        if upscale < 1:
            raise ValueError(f"upscale must be >= 1, got {upscale}")
        self.base = base
        self.max_side = int(max_side)
        self.upscale = float(upscale)
        self.upscale_max_side = int(upscale_max_side)
        self.upscale_max_face = int(upscale_max_face)
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
        return plan_passes(width, height, self.max_side, self.upscale, self.upscale_max_side)

    def detect(self, image_rgb: np.ndarray) -> Regions:
        import cv2

        rgb = to_rgb(image_rgb)
        height, width = rgb.shape[:2]
        found = [self.base.detect(rgb).clipped(width, height)]
        for scale in self.passes(width, height):
            if scale == 1.0:
                scaled = rgb
            else:
                size = (round(width * scale), round(height * scale))
                scaled = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
            sh, sw = scaled.shape[:2]
            for x0, y0, x1, y1 in tile_grid(sw, sh, self.max_side, self.tile_overlap):
                r = self.base.detect(np.ascontiguousarray(scaled[y0:y1, x0:x1]))
                if len(r):
                    boxes = (r.boxes + np.array([x0, y0, x0, y0], np.float32)) / scale
                    r = Regions(boxes, r.scores, r.kind).clipped(width, height)
                    if scale > 1:  # the upscaled pass is for small faces only
                        side = np.maximum(
                            r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]
                        )
                        r = r[side <= self.upscale_max_face]
                    found.append(r)
        return merge(Regions.concat(found), iou=self.merge_iou)
